"""Where a catalogue file comes from: the Hugging Face Hub (hub.py), or plain URLs.

A URL file is pinned by its SHA-256 (and its size, where a page publishes it: without it the download is
bounded by MAX_UNPINNED_BYTES and the SHA-256 decides); its `urls` (a primary and mirrors) are tried in
order, since the same bytes are the same file wherever they come from. Where no page publishes its
SHA-256, its first complete download is checked as far as the catalogue can (its size, the first hex
digits of its SHA-256 that its name carries) and its SHA-256 and size are recorded in the cache's
stemsplit-verified.json (keyed by the primary URL): from then on it is pinned by them. A record the
catalogue contradicts is not trusted and the file is verified again. It is kept in stemsplit's
own cache, beside the Hub's: STEMSPLIT_CACHE, or `stemsplit` under XDG_CACHE_HOME (~/.cache),
one folder per SHA-256. A download is written under a temporary name and renamed when its size
and SHA-256 are right; a cut transfer resumes where it stopped (HTTP Range) or restarts, and one
a killed run left is taken up by the next. Archives (tar.gz, zip) are unpacked safely
(archives.py) and the family is handed the folder. Offline (HF_HUB_OFFLINE=1) a cached file is
used and an uncached one fails at once.
"""

from __future__ import annotations


import hashlib
import http.client
import json
import os
import shutil
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from . import hub
from .archives import HostileArchive, Manifest, is_archive, matches, unpack
from .catalogue import SHA256_PATTERN
from .downloads import TIMEOUT_VARIABLE, Announcement, Progress, download_timeout
from .errors import ModelError
from .files import abandoned_partial, partial_name, read_record, sha256_of, write_record

if TYPE_CHECKING:
    from .catalogue import ModelInfo, WeightFile

CACHE_VARIABLE = "STEMSPLIT_CACHE"
ATTEMPTS = 3  # transfers per URL when one is cut short, each resuming where the last stopped
MANIFEST = "manifest.json"  # beside an unpacked archive's folder: its files' SHA-256
MAX_MANIFEST_BYTES = 1 << 22
USER_AGENT = "stemsplit"
RECORD = hub.VERIFICATIONS  # in the URL cache: the SHA-256 and size of URL files verified at first download
FIRST_DOWNLOADS = "first-downloads"  # where such a file is fetched, before its SHA-256 names its folder
MAX_UNPINNED_BYTES = 1 << 34  # a file whose size is not pinned: a bound on what a server may send


class DownloadFailure(Exception):
    """What went wrong with one URL, in a few words; the next URL is tried."""


def url_cache() -> Path:
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "stemsplit"


def fetch_file(info: ModelInfo, file: WeightFile, announcement: Announcement) -> tuple[Path, str]:
    """The verified local path of a catalogue file (an archive's unpacked folder) and its SHA-256."""
    if not file.urls:
        return hub.fetch(hub_origin(info, file), file, announcement)
    pinned = _pinned(info, file, announcement)
    try:
        return _fetch_pinned(info, pinned, announcement), pinned.sha256
    except ModelError as error:
        if file.sha256:
            raise
        raise ModelError(f"{error} (its SHA-256 was recorded at its first download, in {url_cache() / RECORD})") \
            from None


def hub_origin(info: ModelInfo, file: WeightFile) -> ModelInfo:
    """The model as the Hub serves `file`: from the entry's repo, or from the file's own model repo."""
    return replace(info, repo=file.repo, revision=file.revision, repo_type="model") if file.repo else info


def _fetch_pinned(info: ModelInfo, file: WeightFile, announcement: Announcement) -> Path:
    if is_archive(file.name):
        return _unpacked(info, file, announcement)
    return _verified_download(info, file, _folder(file) / file.name, announcement)


def file_cached(info: ModelInfo, file: WeightFile) -> bool:
    """Whether the file is in its cache (looked up, not verified)."""
    if not file.urls:
        return hub.file_cached(hub_origin(info, file), file)
    file = file if file.sha256 else _recorded(file)
    if file is None:
        return False
    if is_archive(file.name):
        return (_folder(file) / _unpacked_name(file)).is_dir() and (_folder(file) / MANIFEST).is_file()
    return (_folder(file) / file.name).is_file()


def _folder(file: WeightFile) -> Path:
    return url_cache() / file.sha256


def _unpacked_name(file: WeightFile) -> str:
    name = file.name
    return name[:-len(".tar.gz")] if name.lower().endswith(".tar.gz") else Path(name).stem


# URL files without a published SHA-256

def _pinned(info: ModelInfo, file: WeightFile, announcement: Announcement) -> WeightFile:
    """The file with its SHA-256 and size: as the catalogue pins them, as recorded at its first download,
    or downloaded now, checked as far as the catalogue can, and recorded."""
    if file.sha256:
        return file
    return _recorded(file) or _first_download(info, file, announcement)


def _recorded(file: WeightFile) -> WeightFile | None:
    """The file as its record pins it; None where there is none, or one the catalogue contradicts."""
    entry = read_record(url_cache() / RECORD, _is_record).get(file.urls[0])
    if entry is None or _mismatch(file, entry["sha256"]) or file.size not in (None, entry["size"]):
        return None
    return replace(file, sha256=entry["sha256"], size=entry["size"])


def _is_record(value: object) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("sha256"), str) and type(value.get("size")) is int
            and SHA256_PATTERN.fullmatch(value["sha256"]) is not None and value["size"] > 0)


def _first_download(info: ModelInfo, file: WeightFile, announcement: Announcement) -> WeightFile:
    """Download the file, move it into the folder its SHA-256 names and record that SHA-256 and its size."""
    key = hashlib.sha256(file.urls[0].encode()).hexdigest()[:16]
    fetched = url_cache() / FIRST_DOWNLOADS / key / file.name
    try:
        sha256 = _download(info, file, fetched, announcement)
        pinned = replace(file, sha256=sha256, size=fetched.stat().st_size)
        _move(fetched, _folder(pinned) / file.name)
    finally:
        with suppress(OSError):  # left only where a move failed; the next run downloads again
            fetched.parent.rmdir()
    records = read_record(url_cache() / RECORD, _is_record)
    write_record(url_cache() / RECORD, {**records, file.urls[0]: {"sha256": sha256, "size": pinned.size}})
    return pinned


def _move(source: Path, target: Path) -> None:
    try:
        target.parent.mkdir(exist_ok=True)
        os.replace(source, target)
    except OSError as error:
        raise ModelError(f"cannot write the model cache {target.parent}: {error.strerror or error}") from None


def _mismatch(file: WeightFile, sha256: str) -> str | None:
    """Why bytes of this SHA-256 are not the file, or None."""
    if file.sha256 is not None:
        return None if sha256 == file.sha256 else "sha256 mismatch"
    prefix = file.sha256_prefix or ""
    return None if sha256.startswith(prefix) else f"its SHA-256 does not begin with {prefix} as its name says"


# Plain files

def _verified_download(info: ModelInfo, file: WeightFile, path: Path, announcement: Announcement) -> Path:
    """`path`, downloaded first if absent; a cached copy whose bytes are not the pinned ones is removed."""
    if not path.is_file():
        _download(info, file, path, announcement)
        return path
    if file.size not in (None, path.stat().st_size) or sha256_of(path) != file.sha256:
        _remove(path)
        raise ModelError(f"{file.name} of model '{info.name}' in the cache was corrupt (sha256 mismatch); "
                         "the bad file was removed, run again to re-download")
    return path


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise ModelError(f"{path} is corrupt and cannot be removed ({error.strerror or error}): "
                         "delete it and run again") from None


def _download(info: ModelInfo, file: WeightFile, path: Path, announcement: Announcement) -> str:
    """Fetch the file from its URLs in order into `path`, through a temporary file; its SHA-256."""
    if hub.hub_offline():
        raise ModelError(f"model '{info.name}' is not downloaded yet and HF_HUB_OFFLINE is set; connect once "
                         "to download it, or use --repo DIR with local weight files")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelError(f"cannot write the model cache {path.parent}: {error.strerror or error}") from None
    partial = _claimed_partial(path)
    failures = []
    for url in file.urls:
        try:
            _fetch_whole(url, partial, file, announcement)
        except DownloadFailure as failure:  # its bytes, if any, are not trusted to go on with
            partial.unlink(missing_ok=True)
            failures.append(f"{urlsplit(url).netloc}: {failure}")
            continue
        sha256 = sha256_of(partial)
        problem = _mismatch(file, sha256)
        if problem is None:
            os.replace(partial, path)
            return sha256
        partial.unlink()
        failures.append(f"{urlsplit(url).netloc}: corrupt ({problem}), removed")
    partial.unlink(missing_ok=True)
    raise ModelError(f"downloading {file.name} of model '{info.name}' failed: {'; '.join(failures)}; "
                     "check the connection and run again")


def _claimed_partial(path: Path) -> Path:
    """This run's temporary file for `path`: half a download a killed run left, taken over, or a new name."""
    partial = partial_name(path)
    left = abandoned_partial(path)
    if left is not None:
        with suppress(OSError):  # another run took it first
            os.replace(left, partial)
    return partial


def _fetch_whole(url: str, partial: Path, file: WeightFile, announcement: Announcement) -> None:
    """All `file.size` bytes (where not pinned: as many as the server says) from `url` into `partial`,
    resuming transfers that are cut short."""
    progress = Progress(file.name, file.size)
    last = "cut short"
    try:
        for _ in range(ATTEMPTS):
            if _size(partial) == file.size:
                return
            try:
                file = _transfer(url, partial, file, (announcement, progress))
            except HTTPError as error:
                last = _http_failure(error, partial)
            except (OSError, http.client.HTTPException) as error:
                last = _network_failure(error)
        if _size(partial) != file.size:
            raise DownloadFailure(f"{last} ({ATTEMPTS} tries)")
    finally:
        progress.done()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _http_failure(error: HTTPError, partial: Path) -> str:
    """What an HTTP error status means: a range past what the server has restarts, anything else fails."""
    if error.code == 416:
        partial.unlink(missing_ok=True)
        return "HTTP 416 (range not satisfiable)"
    raise DownloadFailure(f"HTTP {error.code} {error.reason}") from None


def _network_failure(error: Exception) -> str:
    """A server that does not answer in time, or cannot be reached, fails at once; a cut transfer is tried again."""
    reason = error.reason if isinstance(error, URLError) else error
    if isinstance(reason, TimeoutError):
        raise DownloadFailure(f"no answer within {download_timeout():g} s ({TIMEOUT_VARIABLE})") from None
    if isinstance(error, URLError):
        raise DownloadFailure(f"cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
    return f"cut short ({type(error).__name__})"


def _transfer(url: str, partial: Path, file: WeightFile, listeners: tuple[Announcement, Progress]) -> WeightFile:
    """One request: the rest of the file after what `partial` holds, or all of it if the server ignores the range;
    the file with the size the server gives it."""
    held = _size(partial)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if held:
        headers["Range"] = f"bytes={held}-"
    with urlopen(Request(url, headers=headers), timeout=download_timeout()) as response:
        start = _resumed_from(response, held)
        file = replace(file, size=_sent_size(response, start, file))
        announcement, progress = listeners
        announcement.fetching(file.name, file.size)
        progress.size = file.size
        _receive(response, partial, start, file.size, progress)
    return file


def _sent_size(response: http.client.HTTPResponse, start: int, file: WeightFile) -> int:
    """The whole file's size as the response gives it, which must be the pinned one where there is one."""
    length = response.headers.get("Content-Length", "")
    sent = start + int(length) if length.isdigit() else file.size
    if sent is None:
        raise DownloadFailure("it sends no length, and the file's size is not pinned")
    if file.size is not None and sent != file.size:
        raise DownloadFailure(f"it sends {sent} bytes where {file.size} are pinned")
    if sent > MAX_UNPINNED_BYTES:
        raise DownloadFailure(f"it sends {sent} bytes, more than a model file may have")
    return sent


def _resumed_from(response: http.client.HTTPResponse, held: int) -> int:
    """Where the response's bytes start: after `held` when the range asked for is granted, else at 0."""
    if response.status == 200:
        return 0
    if response.status == 206 and held and response.headers.get("Content-Range", "").startswith(f"bytes {held}-"):
        return held
    raise DownloadFailure(f"HTTP {response.status} with a range it was not asked for")


def _receive(response: http.client.HTTPResponse, partial: Path, start: int, size: int, progress: Progress) -> None:
    received = start
    with open(partial, "ab" if start else "wb") as output:
        while chunk := response.read(1 << 20):
            received += len(chunk)
            if received > size:
                raise DownloadFailure(f"it sends more than the {size} bytes pinned")
            output.write(chunk)
            progress.advance(received)


# Archives

def _unpacked(info: ModelInfo, file: WeightFile, announcement: Announcement) -> Path:
    """The archive's unpacked folder, checked against its manifest; downloaded and unpacked if absent."""
    folder, manifest_path = _folder(file) / _unpacked_name(file), _folder(file) / MANIFEST
    manifest = _read_manifest(manifest_path)
    if folder.is_dir() and manifest is not None:
        if matches(folder, manifest):
            return folder
        _remove_unpacked(folder, manifest_path)
        raise ModelError(f"{file.name} of model '{info.name}' in the cache was corrupt (its files changed); "
                         "the bad files were removed, run again to re-download")
    _remove_unpacked(folder, manifest_path)  # what a killed run left half made
    archive = _verified_download(info, file, _folder(file) / file.name, announcement)
    try:
        manifest = unpack(archive, folder)
    except HostileArchive:
        archive.unlink(missing_ok=True)
        raise
    _write_manifest(manifest_path, manifest)
    archive.unlink(missing_ok=True)
    return folder


def _remove_unpacked(folder: Path, manifest_path: Path) -> None:
    with suppress(OSError):
        manifest_path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def _read_manifest(path: Path) -> Manifest | None:
    try:
        with open(path, "rb") as file:
            manifest = json.loads(file.read(MAX_MANIFEST_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    valid = isinstance(manifest, dict) and all(isinstance(value, str) for value in manifest.values())
    return manifest if valid else None


def _write_manifest(path: Path, manifest: Manifest) -> None:
    temporary = partial_name(path)
    try:
        temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ModelError(f"cannot write the model cache {path.parent}: {error.strerror or error}") from None
