"""Hybrid Demucs (Demucs v3) and the time-domain Demucs, as demucs 4.1 runs them.

Their models are demucs packages (see packages.py) whose `klass` is the reference's HDemucs
or Demucs: `.th` files (and safetensors) in a `--repo` folder, alone or mixed in bags with
per-stem shares (mdx: two of each). Segments go over a song as `FittedSegments`
(chunking.py), the song normalised by its mono mix; a bag's segment replaces theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..family import CatalogueFiles, Family

if TYPE_CHECKING:
    from ..bag import Bag, Network


def build_hdemucs(args: tuple, kwargs: dict[str, Any]) -> Network:
    from ..networks.hdemucs import HDemucs, HDemucsConfig

    return HDemucs(HDemucsConfig.from_reference(*args, **kwargs))


def build_demucs(args: tuple, kwargs: dict[str, Any]) -> Network:
    from ..networks.demucs import Demucs, DemucsConfig

    return Demucs(DemucsConfig.from_reference(*args, **kwargs))


def package_bag(files: CatalogueFiles) -> Bag:
    from ..packages import catalogue_bag

    return catalogue_bag(files)


FAMILIES = (
    Family(name="hdemucs", architecture="Hybrid Demucs, Demucs v3 (demucs 4.1's HDemucs)",
           catalogue_bag=package_bag, package_classes={"demucs.hdemucs.HDemucs": build_hdemucs}),
    Family(name="demucs", architecture="time-domain Demucs, v2 and the v3 MDX members (demucs 4.1's Demucs)",
           catalogue_bag=package_bag, package_classes={"demucs.demucs.Demucs": build_demucs}),
)
