"""Files: their SHA-256, temporary names that say which run made them, and publishing a song's outputs
all at once, so that no run, failed or killed, leaves half of them or a record vouching for others."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import OutputError

# Temporary files and folders name the host and process that made them, so that a later run can tell
# those of a killed run (same host, process gone) from those of a run still going, here or elsewhere.
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
PARTIAL_FILE = re.compile(r"^\..*\.partial-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}(\.f32)?$")
TEMPORARY_FOLDER = re.compile(r"^stemsplit-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


MAX_RECORD_BYTES = 1 << 20  # a record of a few files is a few hundred bytes; a longer one is not ours


def read_record(path: Path, valid: Callable[[object], bool]) -> dict[str, dict]:
    """A JSON record of verified files (key -> what was verified); an unreadable record is empty, and an
    entry that is not `valid` is left out: neither is trusted."""
    try:
        with open(path, "rb") as file:
            record = json.loads(file.read(MAX_RECORD_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {key: value for key, value in record.items() if valid(value)}


def write_record(path: Path, record: Mapping[str, dict]) -> None:
    """Replace the record at once; a cache that cannot be written only loses it (the files are verified again)."""
    temporary = partial_name(path)
    try:
        temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)


def partial_name(path: Path) -> Path:
    """A hidden temporary name beside `path`, short enough for any file system, naming this process."""
    return path.parent / f".{path.name[:64]}.partial-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def abandoned_partial(path: Path) -> Path | None:
    """A temporary file of `path` that a run killed on this host left, e.g. half a download to resume."""
    prefix = f".{path.name[:64]}.partial-"
    for entry in _entries(path.parent):
        found = PARTIAL_FILE.match(entry.name)
        if entry.name.startswith(prefix) and found and _abandoned(found) and entry.is_file():
            return entry
    return None


def temporary_prefix() -> str:
    """The prefix of this process's temporary folders."""
    return f"stemsplit-{HOST}-{os.getpid()}-"


def remove_stale(folders: set[Path]) -> None:
    """Remove the partial stems in `folders`, and our temporary folders in the temporary directory,
    that runs killed on this host left behind (SIGKILL, power loss: no clean-up ran)."""
    for folder in folders:
        for entry in _entries(folder):
            if PARTIAL_FILE.match(entry.name) and _abandoned(PARTIAL_FILE.match(entry.name)):
                entry.unlink(missing_ok=True)
    for entry in _entries(Path(tempfile.gettempdir())):
        found = TEMPORARY_FOLDER.match(entry.name)
        if found and _abandoned(found) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _abandoned(found: re.Match) -> bool:
    if found["host"] != HOST:
        return False
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


def output_error(path: Path, exc: Exception) -> OutputError:
    """"cannot write PATH: REASON", with the bare reason of an OSError ("No space left on device")."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return OutputError(f"cannot write {path}: {reason}")


@contextmanager
def publishing(paths: Iterable[Path], record: tuple[Path, str] | None = None) -> Iterator[dict[Path, Path]]:
    """The temporary name beside each of `paths` to write it under, their folders made.

    When the context exits normally all are renamed into place at once, `record` (path, text) last,
    the record already at that path removed before anything is replaced; if one rename fails, those
    done are removed. On any failure, or an exception in the body (Ctrl-C included), nothing stays:
    neither the temporaries nor the folders made for them.
    """
    paths = [Path(path) for path in paths]
    new_folders = sorted({folder for path in paths for folder in (path.parent, *path.parent.parents)
                          if not folder.exists()}, key=lambda folder: len(folder.parts), reverse=True)
    temporaries = {path: partial_name(path) for path in paths}
    published = False
    try:
        for path in paths:
            _make_folder(path.parent)
        yield dict(temporaries)
        if record is not None:
            temporaries[record[0]] = partial_name(record[0])
            _stage_record(record, temporaries[record[0]])
        _rename_all(temporaries)
        published = True
    finally:
        for temporary in temporaries.values():
            with suppress(OSError):  # never written, or already in place
                temporary.unlink()
        if not published:
            for folder in new_folders:  # deepest first
                with suppress(OSError):
                    folder.rmdir()


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _stage_record(record: tuple[Path, str], temporary: Path) -> None:
    """Write the record's text to `temporary` and remove the record it will replace."""
    path, text = record
    try:
        temporary.write_text(text, encoding="utf-8")
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from None


def _rename_all(temporaries: Mapping[Path, Path]) -> None:
    """Rename each temporary to its path, in order; if one fails, those already renamed are removed too."""
    placed = []
    try:
        for path, temporary in temporaries.items():
            try:
                os.replace(temporary, path)
            except OSError as exc:
                raise output_error(path, exc) from None
            placed.append(path)
    except BaseException:
        for path in placed:
            with suppress(OSError):
                path.unlink()
        raise
