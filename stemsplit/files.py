"""Files: their SHA-256, and temporary names that say which run made them, so that a later run can
remove what a killed one left."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

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


def partial_name(path: Path) -> Path:
    """A hidden temporary name beside `path`, short enough for any file system, naming this process."""
    return path.parent / f".{path.name[:64]}.partial-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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
