"""What a family of networks declares, and what it is handed to build a bag.

A *family* is one architecture: how its networks are built from their files, how they go
over a song (their chunking procedure, see chunking.py), which catalogue keys it reads, and
which local files (`--checkpoint FILE|DIR [--config FILE]`) are its own. Each family is one
module in stemsplit/families/, one row in that package's table; nothing else names a family.
This module imports nothing heavy: listing models must not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ModelError
from .files import sha256_of

if TYPE_CHECKING:
    from .bag import Bag, Network
    from .catalogue import ModelInfo, WeightFile
    from .queries import Queries


@dataclass(frozen=True)
class Fetched:
    """One verified weight file of a catalogue model, with its catalogue entry."""

    path: Path
    sha256: str
    entry: WeightFile


@dataclass(frozen=True)
class CatalogueFiles:
    """A catalogue model's verified files, its config (if its family uses one) and its identity."""

    info: ModelInfo
    files: tuple[Fetched, ...]
    config: Path | None
    identity: str


@dataclass(frozen=True)
class LocalFiles:
    """`--checkpoint PATH` (a file or a folder) with its `--config FILE`, if given."""

    checkpoint: Path
    config: Path | None = None

    @property
    def name(self) -> str:
        return self.checkpoint.stem if self.checkpoint.is_file() else self.checkpoint.name

    @property
    def identity(self) -> str:
        """What the files were, for identity records: the SHA-256 of the checkpoint (of each file of a
        folder) and of the config, so that other weights copied over with the same size and time differ."""
        files = [self.checkpoint] if self.checkpoint.is_file() else sorted(self.checkpoint.rglob("*"))
        digests = [cached_sha256(path) for path in files if path.is_file()]
        config = cached_sha256(self.config) if self.config is not None else ""
        return f"{self.checkpoint.resolve()}:{','.join(digests)}:{config}"


_DIGESTS: dict[tuple[Path, int, int, int], str] = {}  # (path, size, mtime, ctime) -> SHA-256: hashed once


def cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of(path)
    return _DIGESTS[key]


PackageBuilder = Callable[[tuple, dict[str, Any]], "Network"]  # a demucs package's (args, kwargs) -> its network


@dataclass(frozen=True)
class CheckpointAndConfig:
    """The bags of a family whose model is one weight file and its config file, the same whether the catalogue
    fetched them or `--checkpoint/--config` names them: `load` builds the network from the two paths."""

    load: Callable[[Path, Path], "Network"]
    files_needed: str  # how a catalogue error names them, e.g. "one checkpoint file and its config"

    def catalogue_bag(self, files: CatalogueFiles) -> Bag:
        if len(files.files) != 1 or files.config is None:
            raise ModelError(f"model '{files.info.name}' needs {self.files_needed}")
        return self.bag(files.info.name, files.files[0].path, files.config, files.identity)

    def local_bag(self, local: LocalFiles) -> Bag:
        return self.bag(local.name, local.checkpoint, local.config, local.identity)

    def bag(self, name: str, checkpoint: Path, config: Path, identity: str) -> Bag:
        from .bag import single_network_bag

        return single_network_bag(name, self.load(checkpoint, config), identity)


def _never(local: LocalFiles) -> bool:
    return False


@dataclass(frozen=True)
class Family:
    """One row of the family table."""

    name: str  # the catalogue's `family`, and every network's `family`
    architecture: str  # what it is and whose implementation it matches, in one line
    catalogue_bag: Callable[[CatalogueFiles], Bag]
    entry_keys: frozenset[str] = frozenset()  # catalogue keys it needs beyond the common ones
    recognises: Callable[[LocalFiles], bool] = _never  # whether local files are its own (cheap, no torch)
    local_bag: Callable[[LocalFiles], Bag] | None = None
    package_classes: Mapping[str, PackageBuilder] = field(default_factory=dict)  # demucs packages' `klass`
    # query families (catalogue `queries`): the bag of one network per query (bag.query_bag), each network's
    # condition computed once, here; the third argument hears what the run should say (e.g. a label matched)
    query_bag: Callable[[CatalogueFiles, Queries, Callable[[str], None]], Bag] | None = None
