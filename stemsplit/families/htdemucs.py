"""Hybrid Transformer Demucs (Demucs v4), as demucs 4.1 runs it.

Its models are demucs packages (see packages.py): the Hub's safetensors files, or legacy `.th`
files in a `--repo` folder, whose `klass` is the reference's HTDemucs. Segments go over a song
as `CentredSegments` (chunking.py), the song normalised by its mono mix.
"""

from __future__ import annotations

from typing import Any

from ..family import Family
from ..networks.htdemucs import HTDemucs, HTDemucsConfig
from ..packages import catalogue_bag


def build(args: tuple, kwargs: dict[str, Any]) -> HTDemucs:
    return HTDemucs(HTDemucsConfig.from_reference(*args, **kwargs))


FAMILIES = (
    Family(name="htdemucs", architecture="Hybrid Transformer Demucs (demucs 4.1's HTDemucs)",
           catalogue_bag=catalogue_bag, package_classes={"demucs.htdemucs.HTDemucs": build}),
)
