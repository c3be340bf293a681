"""The Hugging Face Hub and its cache: downloads verified against a pinned SHA-256, or against the
Hub's own for unpinned files (then recorded in the cache as a *verification*), and clear errors when offline."""

from __future__ import annotations

import json
import os
import socket
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .catalogue import SHA256_PATTERN
from .errors import ModelError
from .files import sha256_of

if TYPE_CHECKING:
    from .catalogue import ModelInfo, WeightFile

VERIFICATIONS = "stemsplit-verified.json"  # in a model's cache folder: the commit and SHA-256 of its unpinned files
HUB_PROBE_SECONDS = 3  # how long the Hub's host may take to accept a connection before a download
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


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


def files_cached(info: ModelInfo) -> bool:
    """Whether every file of a (non-ensemble) model is in the cache, looked up on disk."""
    verifications = _read_verifications(info)
    for file in info.files:
        commit = info.revision if file.sha256 else verifications.get(_verification_key(info, file), {}).get("commit")
        if commit is None or not (_repo_folder(info) / "snapshots" / commit / file.name).is_file():
            return False
    return True


def fetch(info: ModelInfo, file: WeightFile) -> tuple[Path, str]:
    """The cached path of a verified weight file and its SHA-256, downloading it if needed.

    A file without a pinned SHA-256 is checked against the one the Hub publishes for it (its LFS
    object id) at the commit the revision pointed to on first download; both are then recorded
    in the cache, so later runs, online or not, check against that verification.
    """
    commit, sha256 = info.revision, file.sha256
    if sha256 is None:
        commit, sha256 = _verified_origin(info, file)
    path = _download(info, file, commit)
    try:
        corrupt = sha256_of(path) != sha256
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


def _download(info: ModelInfo, file: WeightFile, revision: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    _check_reachable(info, file, revision)
    try:
        return Path(hf_hub_download(info.repo, file.name, revision=revision, repo_type=info.repo_type,
                                    cache_dir=hub_cache(),
                                    endpoint=os.environ.get("HF_ENDPOINT") or None,
                                    local_files_only=hub_offline()))
    except LocalEntryNotFoundError as error:
        raise _not_downloaded(info) from error
    except Exception as error:  # whatever the network or the Hub did wrong
        raise ModelError(
            f"downloading {file.name} of model '{info.name}' from {info.repo} failed "
            f"({_first_line(error)}); check the connection and run again, or use --repo DIR"
        ) from error


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
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        metadata = get_hf_file_metadata(hf_hub_url(info.repo, file.name, revision=info.revision,
                                                   repo_type=info.repo_type,
                                                   endpoint=os.environ.get("HF_ENDPOINT") or None))
    except Exception as error:  # whatever the network or the Hub did wrong
        raise ModelError(f"asking the Hub about {file.name} of model '{info.name}' failed "
                         f"({_first_line(error)}); check the connection and run again") from error
    etag = (metadata.etag or "").strip('"')
    if not SHA256_PATTERN.fullmatch(etag) or not metadata.commit_hash:
        raise ModelError(f"the Hub publishes no SHA-256 for {file.name} of model '{info.name}', "
                         "so it cannot be verified")
    return metadata.commit_hash, etag


def _verification_key(info: ModelInfo, file: WeightFile) -> str:
    return f"{info.revision}/{file.name}"


def _read_verifications(info: ModelInfo) -> dict[str, dict[str, str]]:
    try:
        verifications = json.loads((_repo_folder(info) / VERIFICATIONS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return verifications if isinstance(verifications, dict) else {}


def _write_verification(info: ModelInfo, file: WeightFile, commit: str, sha256: str) -> None:
    verifications = _read_verifications(info)
    verifications[_verification_key(info, file)] = {"commit": commit, "sha256": sha256}
    path = _repo_folder(info) / VERIFICATIONS
    temporary = path.with_name(f".{VERIFICATIONS}.{os.getpid()}")
    with suppress(OSError):  # a read-only cache only loses the verification, and the next run asks the Hub again
        temporary.write_text(json.dumps(verifications, indent=1), encoding="utf-8")
        os.replace(temporary, path)


def _check_reachable(info: ModelInfo, file: WeightFile, revision: str) -> None:
    """Fail at once when a file to download is on a Hub that does not answer, rather than after
    huggingface_hub's half a minute of retries. Behind a proxy the Hub's host is not probed."""
    proxied = any(os.environ.get(name) for name in PROXY_VARIABLES)
    if hub_offline() or proxied or (_repo_folder(info) / "snapshots" / revision / file.name).is_file():
        return
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError:
        raise _not_downloaded(info) from None


def _remove_cached(pointer: Path) -> None:
    """Remove a cached file: the snapshot link and the blob it points to."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
