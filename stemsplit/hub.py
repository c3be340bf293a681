"""The Hugging Face Hub and its cache: downloads verified against a pinned SHA-256, or against the
Hub's own for unpinned files (then recorded in the cache as a *verification*), and clear errors when offline
or when the Hub (or a proxy) does not answer within the download timeout (downloads.py), in one line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalogue import COMMIT_PATTERN, SHA256_PATTERN
from .downloads import TIMEOUT_VARIABLE, Announcement, download_timeout
from .errors import ModelError
from .files import read_record, sha256_of, write_record

GIT_BLOB = "git-blob:"  # an expected id that is a git blob id (a small file the Hub keeps in git, not LFS)

if TYPE_CHECKING:
    from .catalogue import ModelInfo, WeightFile

VERIFICATIONS = "stemsplit-verified.json"  # in a model's cache folder: the commit and SHA-256 of its unpinned files


def hub_cache() -> Path:
    """The Hub cache folder, read from the environment now rather than when
    huggingface_hub was imported, so that a changed environment is respected."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or os.path.join(cache_home, "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _repo_folder(info: ModelInfo) -> Path:
    return hub_cache() / f"{info.repo_type}s--{info.repo.replace('/', '--')}"


def file_cached(info: ModelInfo, file: WeightFile) -> bool:
    """Whether a file of the model is in the cache, looked up on disk."""
    verification = _read_verifications(info).get(_verification_key(info, file), {})
    revision = info.revision if file.sha256 else verification.get("commit")
    return revision is not None and _snapshot(info, revision, file.name) is not None


def _snapshot(info: ModelInfo, revision: str, name: str) -> Path | None:
    """The cached file `name` at `revision` (a commit, or a branch or tag the cache's refs/ resolve), if there."""
    commit = revision if COMMIT_PATTERN.fullmatch(revision) else _ref_commit(info, revision)
    if commit is None:
        return None
    path = _repo_folder(info) / "snapshots" / commit / name
    return path if path.is_file() else None


def _ref_commit(info: ModelInfo, revision: str) -> str | None:
    """The commit the cache's refs/REVISION names, as the Hub client keeps it; None if absent or malformed."""
    if ".." in revision.split("/"):
        return None
    try:
        with open(_repo_folder(info) / "refs" / revision, "rb") as file:
            commit = file.read(64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return commit if COMMIT_PATTERN.fullmatch(commit) else None


def fetch(info: ModelInfo, file: WeightFile, announcement: Announcement) -> tuple[Path, str]:
    """The cached path of a verified weight file and its SHA-256, downloading it if needed.

    A file without a pinned SHA-256 is checked against the one the Hub publishes for it (its LFS
    object id; for a small file kept in git rather than LFS, its git blob id) at the commit the
    revision pointed to on first download; the commit and the file's SHA-256 are then recorded
    in the cache, so later runs, online or not, check against that verification.
    """
    commit, expected = info.revision, file.sha256
    if expected is None:
        commit, expected = _verified_origin(info, file)
    path = _download(info, file, commit, announcement)
    try:
        sha256 = sha256_of(path)
        corrupt = (git_blob_id(path) != expected[len(GIT_BLOB):]) if expected.startswith(GIT_BLOB) \
            else sha256 != expected
        if corrupt:
            _remove_cached(path)
    except OSError as error:  # e.g. a read-only cache
        raise ModelError(
            f"{file.name} of model '{info.name}' in the cache is unreadable or corrupt and cannot be "
            f"removed ({error.strerror or error}): delete {path} and run again"
        ) from None
    if corrupt:
        raise ModelError(
            f"{file.name} of model '{info.name}' was corrupt (sha256 mismatch); "
            "the bad file was removed, run again to re-download"
        )
    if file.sha256 is None:
        _write_verification(info, file, commit, sha256)
    return path, sha256


def _download(info: ModelInfo, file: WeightFile, revision: str, announcement: Announcement) -> Path:
    """The cached file, downloaded first if it is not there: the Hub is asked about it (within the
    timeout, no retries), the user told of its size, and then huggingface_hub fetches it."""
    cached = _snapshot(info, revision, file.name)
    if cached is not None:
        return cached
    if hub_offline():
        raise _not_downloaded(info)
    announcement.fetching(file.name, _metadata(info, file, revision).size)
    return _hub_download(info, file, revision)


def _hub_download(info: ModelInfo, file: WeightFile, revision: str) -> Path:
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    # The transfer's own timeout is a module setting of huggingface_hub, read at each request.
    huggingface_hub.constants.HF_HUB_DOWNLOAD_TIMEOUT = download_timeout()
    try:
        return Path(hf_hub_download(info.repo, file.name, revision=revision, repo_type=info.repo_type,
                                    cache_dir=hub_cache(), endpoint=_endpoint(), etag_timeout=download_timeout()))
    except LocalEntryNotFoundError as error:
        raise _not_downloaded(info) from error
    except Exception as error:  # whatever the network or the Hub did wrong
        raise ModelError(
            f"downloading {file.name} of model '{info.name}' from {info.repo} failed "
            f"({_first_line(error)}); check the connection and run again, or use --repo DIR"
        ) from error


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _metadata(info: ModelInfo, file: WeightFile, revision: str) -> Any:
    """The Hub's word on a file (commit, SHA-256 as its ETag, size), asked once within the timeout."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(info.repo, file.name, revision=revision, repo_type=info.repo_type, endpoint=_endpoint())
    try:
        return get_hf_file_metadata(url, timeout=download_timeout(), endpoint=_endpoint())
    except Exception as error:  # whatever the network or the Hub did wrong
        if any(kind.__name__ == "TimeoutException" for kind in type(error).__mro__):
            raise ModelError(f"the Hugging Face Hub did not answer about {file.name} of model '{info.name}' "
                             f"within {download_timeout():g} s ({TIMEOUT_VARIABLE}); check the connection "
                             "or proxy and run again, or use --repo DIR") from None
        if any(kind.__name__ == "ConnectError" for kind in type(error).__mro__):
            raise _not_downloaded(info) from None
        raise ModelError(f"downloading {file.name} of model '{info.name}' from {info.repo} failed "
                         f"({_first_line(error)}); check the connection and run again, or use --repo DIR") from error


def _not_downloaded(info: ModelInfo) -> ModelError:
    reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
    return ModelError(f"model '{info.name}' is not downloaded yet and {reason}; connect once to "
                      "download it, or use --repo DIR with local weight files")


def _verified_origin(info: ModelInfo, file: WeightFile) -> tuple[str, str]:
    """The commit and SHA-256 of an unpinned file: recorded in the cache, or asked of the Hub."""
    verification = _read_verifications(info).get(_verification_key(info, file))
    if verification is not None:
        return verification["commit"], verification["sha256"]
    if hub_offline():
        raise _not_downloaded(info)
    metadata = _metadata(info, file, info.revision)
    etag = (metadata.etag or "").strip('"')
    if not (SHA256_PATTERN.fullmatch(etag) or COMMIT_PATTERN.fullmatch(etag)) or not metadata.commit_hash:
        raise ModelError(f"the Hub publishes no SHA-256 or git blob id for {file.name} of model '{info.name}', "
                         "so it cannot be verified")
    return metadata.commit_hash, etag if SHA256_PATTERN.fullmatch(etag) else GIT_BLOB + etag


def git_blob_id(path: Path) -> str:
    """git's object id of the file's bytes (SHA-1 of "blob <size>\\0" and them), as the Hub names a non-LFS file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verification_key(info: ModelInfo, file: WeightFile) -> str:
    return f"{info.revision}/{file.name}"


def _read_verifications(info: ModelInfo) -> dict[str, dict[str, str]]:
    """The cache's verifications; an unreadable record, or an entry that is not a commit and a SHA-256, is ignored."""
    return read_record(_repo_folder(info) / VERIFICATIONS, _is_verification)


def _is_verification(value: object) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("commit"), str) and isinstance(value.get("sha256"), str)
            and COMMIT_PATTERN.fullmatch(value["commit"]) is not None
            and SHA256_PATTERN.fullmatch(value["sha256"]) is not None)


def _write_verification(info: ModelInfo, file: WeightFile, commit: str, sha256: str) -> None:
    verifications = _read_verifications(info)
    verifications[_verification_key(info, file)] = {"commit": commit, "sha256": sha256}
    write_record(_repo_folder(info) / VERIFICATIONS, verifications)


def _remove_cached(pointer: Path) -> None:
    """Remove a cached file: the snapshot link and the blob it points to."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
