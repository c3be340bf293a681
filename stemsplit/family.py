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

from .files import sha256_of

if TYPE_CHECKING:
    from .bag import Bag, Network
    from .catalogue import ModelInfo, WeightFile


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
        """What the files were, for identity records: path, size and time of the checkpoint, the config's SHA-256."""
        stat = self.checkpoint.stat()
        config = sha256_of(self.config) if self.config is not None else ""
        return f"{self.checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{config}"


PackageBuilder = Callable[[tuple, dict[str, Any]], "Network"]  # a demucs package's (args, kwargs) -> its network


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
