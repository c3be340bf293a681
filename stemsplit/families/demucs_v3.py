"""Hybrid Demucs (Demucs v3) and the time-domain Demucs, as demucs 4.1 runs them.

Their models are demucs packages (see packages.py) whose `klass` is the reference's HDemucs
or Demucs: `.th` files (and safetensors) in a `--repo` folder, alone or mixed in bags with
per-stem shares (mdx: two of each). Segments go over a song as `FittedSegments`
(chunking.py), the song normalised by its mono mix; a bag's segment replaces theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..bounds import REACH, SHORTEST, Bounds
from ..family import CatalogueFiles, Family

if TYPE_CHECKING:
    from ..bag import Bag, Network

# Bounds on a package's sizes: about four times each size and twice the weights of the largest published ones,
# hdemucs_mmi's Hybrid Demucs (48 channels, growth 2, nfft 4096, depth 6, kernel 8, stride 4, 44 s segments,
# 83,637,832 weights) and mdx's time-domain Demucs (64 channels, growth 2, depth 6, 44 s, 133,753,064 weights).
SHARED = {
    "audio_channels": 8, "growth": 8, "depth": 8, "kernel_size": 32, "stride": 16, REACH: 16384,
    "context": 4, "norm_groups": 16, "dconv_depth": 8, "dconv_comp": 64, "samplerate": 192000, "segment": 176,
}
NUMBERS = frozenset({"growth", "dconv_comp", "segment"})
HDEMUCS_BOUNDS = Bounds({
    **SHARED, "channels": 192, "channels_time": 192, "nfft": 16384, "time_stride": 16, "context_enc": 4,
    "wiener_iters": 16, "multi_freqs": 8, "multi_freqs_depth": 8,
}, "about four times the sizes and twice the weights of the largest published Hybrid Demucs",
    minima={"context": 0, "context_enc": 0, "dconv_depth": 0, "wiener_iters": -1, "multi_freqs_depth": 0,
            **SHORTEST},
    numbers=NUMBERS, lists=frozenset({"multi_freqs"}), weights=168_000_000)
DEMUCS_BOUNDS = Bounds({**SHARED, "channels": 256, "lstm_layers": 8},
                       "about four times the sizes and twice the weights of the largest published time-domain Demucs",
                       minima={"context": 0, "dconv_depth": 0, "lstm_layers": 0, **SHORTEST}, numbers=NUMBERS,
                       weights=268_000_000)


def build_hdemucs(args: tuple, kwargs: dict[str, Any]) -> Network:
    from ..networks.hdemucs import HDemucs, HDemucsConfig

    return HDEMUCS_BOUNDS.build(args, kwargs, HDemucsConfig.from_reference, HDemucs)


def build_demucs(args: tuple, kwargs: dict[str, Any]) -> Network:
    from ..networks.demucs import Demucs, DemucsConfig

    return DEMUCS_BOUNDS.build(args, kwargs, DemucsConfig.from_reference, Demucs)


def package_bag(files: CatalogueFiles) -> Bag:
    from ..packages import catalogue_bag

    return catalogue_bag(files)


FAMILIES = (
    Family(name="hdemucs", architecture="Hybrid Demucs, Demucs v3 (demucs 4.1's HDemucs)",
           catalogue_bag=package_bag, package_classes={"demucs.hdemucs.HDemucs": build_hdemucs}),
    Family(name="demucs", architecture="time-domain Demucs, v2 and the v3 MDX members (demucs 4.1's Demucs)",
           catalogue_bag=package_bag, package_classes={"demucs.demucs.Demucs": build_demucs}),
)
