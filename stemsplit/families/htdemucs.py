"""Hybrid Transformer Demucs (Demucs v4), as demucs 4.1 runs it.

Its models are demucs packages (see packages.py): the Hub's safetensors files, or legacy `.th`
files in a `--repo` folder, whose `klass` is the reference's HTDemucs. Segments go over a song
as `CentredSegments` (chunking.py), the song normalised by its mono mix.
"""

from __future__ import annotations

from typing import Any

from ..bounds import REACH, SHORTEST, Bounds
from ..family import Family
from ..networks.htdemucs import HTDemucs, HTDemucsConfig
from ..packages import catalogue_bag

# Bounds on a package's sizes, from the largest published HT Demucs, htdemucs (955717e8: 48 channels, growth 2,
# nfft 4096, depth 4, kernel 8, stride 4, bottom 512 channels, 5 layers of 8 heads, 7.8 s segments, 41,984,456
# weights; htdemucs_6s: 6 sources): about four times each size, twice the weights.
BOUNDS = Bounds({
    "audio_channels": 8, "channels": 192, "growth": 8, "nfft": 16384, "depth": 8, "kernel_size": 32, "stride": 16,
    REACH: 1024, "context": 4, "context_enc": 4, "norm_groups": 16, "dconv_depth": 8, "dconv_comp": 64,
    "bottom_channels": 2048, "t_layers": 20, "t_hidden_scale": 16, "t_heads": 32, "samplerate": 192000,
    "segment": 32,
}, "about four times the sizes and twice the weights of the largest published HT Demucs",
    minima={"context": 0, "context_enc": 0, "dconv_depth": 0, "bottom_channels": 0, **SHORTEST},
    numbers=frozenset({"growth", "dconv_comp", "t_hidden_scale", "segment"}), weights=84_000_000)


def build(args: tuple, kwargs: dict[str, Any]) -> HTDemucs:
    return BOUNDS.build(args, kwargs, HTDemucsConfig.from_reference, HTDemucs)


FAMILIES = (
    Family(name="htdemucs", architecture="Hybrid Transformer Demucs (demucs 4.1's HTDemucs)",
           catalogue_bag=catalogue_bag, package_classes={"demucs.htdemucs.HTDemucs": build}),
)
