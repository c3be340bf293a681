"""Archives of model files (tar.gz, zip), unpacked safely: regular files and folders only (no links,
devices or pipes), no absolute path or `..`, no name twice, at most MAX_MEMBERS members and
MAX_UNPACKED_BYTES in all, into a temporary folder that is renamed into place when whole.
Each unpacked file's SHA-256 is taken as it is written: the folder's manifest, checked before use."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import ModelError
from .files import partial_name, sha256_of

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
MAX_UNPACKED_BYTES = 8 << 30  # the largest published model archives are a few hundred MB
MAX_MEMBERS = 10_000

Manifest = dict[str, str]  # a file's path inside the folder -> its SHA-256


class HostileArchive(ModelError):
    """An archive that would write outside its folder, make a link or device, or unpack too much."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, destination: Path) -> Manifest:
    """Unpack `archive` into the new folder `destination`; the manifest of what it holds."""
    temporary = partial_name(destination)
    temporary.mkdir(parents=True)
    try:
        manifest = _unpack_into(archive, temporary)
        os.replace(temporary, destination)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return manifest


def matches(folder: Path, manifest: Manifest) -> bool:
    """Whether `folder` holds exactly the manifest's files, each with its SHA-256."""
    found = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir()}
    if found != set(manifest):
        return False
    return all((folder / name).is_file() and sha256_of(folder / name) == sha256
               for name, sha256 in manifest.items())


def _unpack_into(archive: Path, folder: Path) -> Manifest:
    unpacking = _Unpacking(archive.name, folder)
    try:
        members = _zip_members(archive) if archive.name.lower().endswith(".zip") else _tar_members(archive)
        with members as entries:
            for name, kind, size, source in entries:
                unpacking.add(name, kind, size, source)
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise ModelError(f"{archive.name} cannot be unpacked: {error}") from error
    return unpacking.manifest


Entry = tuple[str, str, int, Callable[[], IO[bytes]]]  # name, kind, size, how to read it


@contextmanager
def _tar_members(archive: Path) -> Iterator[Iterator[Entry]]:
    with tarfile.open(archive, "r:*") as tar:
        yield ((member.name, _tar_kind(member), member.size, lambda member=member: tar.extractfile(member))
               for member in tar)


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isfile():
        return "file"
    return "folder" if member.isdir() else "link" if member.issym() or member.islnk() else "device"


@contextmanager
def _zip_members(archive: Path) -> Iterator[Iterator[Entry]]:
    with zipfile.ZipFile(archive) as zipped:
        yield ((info.filename, _zip_kind(info), info.file_size, lambda info=info: zipped.open(info))
               for info in zipped.infolist())


def _zip_kind(info: zipfile.ZipInfo) -> str:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the archiver recorded no Unix file type
    if info.is_dir():
        return "folder"
    if kind == stat.S_IFLNK:
        return "link"
    return "file" if kind in (0, stat.S_IFREG) else "device"


class _Unpacking:
    """The members written so far, their bytes and SHA-256, with the bounds checked as they come."""

    def __init__(self, label: str, folder: Path) -> None:
        self.label, self.folder = label, folder
        self.manifest: Manifest = {}
        self.members = self.written = 0

    def add(self, name: str, kind: str, size: int, source: Callable[[], IO[bytes]]) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            self.refuse(name, f"is past the {MAX_MEMBERS} members an archive may hold")
        if kind not in ("file", "folder"):
            self.refuse(name, f"is a {kind}, and an archive may hold only files and folders")
        target = self.folder / self.relative(name)
        if kind == "folder":
            target.mkdir(parents=True, exist_ok=True)
            return
        if self.written + size > MAX_UNPACKED_BYTES:
            self.refuse(name, f"takes the archive past the {MAX_UNPACKED_BYTES} bytes it may unpack to")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy(name, source(), target)

    def relative(self, name: str) -> str:
        path = PurePosixPath(name)
        if "\\" in name or name.startswith("/") or path.is_absolute() or (path.parts and ":" in path.parts[0]):
            self.refuse(name, "is an absolute path")
        if ".." in path.parts:
            self.refuse(name, "goes up a folder ('..')")
        parts = [part for part in path.parts if part != "."]
        if not parts:
            self.refuse(name, "has no name")
        return "/".join(parts)

    def copy(self, name: str, source: IO[bytes], target: Path) -> None:
        relative = self.relative(name)
        if relative in self.manifest or target.exists():
            self.refuse(name, "is in the archive twice")
        digest = hashlib.sha256()
        with source, open(target, "xb") as output:
            while chunk := source.read(1 << 20):
                self.written += len(chunk)
                if self.written > MAX_UNPACKED_BYTES:
                    self.refuse(name, f"takes the archive past the {MAX_UNPACKED_BYTES} bytes it may unpack to")
                digest.update(chunk)
                output.write(chunk)
        self.manifest[relative] = digest.hexdigest()

    def refuse(self, name: str, reason: str) -> None:
        raise HostileArchive(f"the archive {self.label} is refused: its member {name!r} {reason}")
