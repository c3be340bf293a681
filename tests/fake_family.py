"""`fake`, a family for tests only: networks that cost nothing, for the tests of the command's plumbing
(inputs, outputs, errors, records, which networks run) where what a real network computes is not what is
proven. The package's family table never names it; `registered()` adds it for as long as a test needs it.

Its networks are demucs packages (safetensors) whose `klass` is KLASS: each source is a fixed gain times
the (normalised) mix, gone over the song in HT Demucs's centred segments, so settings are checked and
errors worded as for HT Demucs. Every call is counted in CALLS, by the network's name.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from oracle import encode_fraction
from stemsplit import families
from stemsplit.chunking import CentredSegments
from stemsplit.family import Family
from stemsplit.packages import catalogue_bag

NAME = "fake"
KLASS = "fake_family.Gains"
CALLS: Counter[str] = Counter()  # network name -> calls in this process


class Gains(torch.nn.Module):
    """Each source a fixed gain (its one tensor) times the mix; counts its calls."""

    family = NAME

    def __init__(self, name: str, sources: list[str], samplerate: int = 44100, audio_channels: int = 2,
                 segment: Fraction = Fraction(1)):
        super().__init__()
        self.name, self.sources = name, list(sources)
        self.samplerate, self.audio_channels, self.segment = samplerate, audio_channels, Fraction(segment)
        self.gains = torch.nn.Parameter(torch.zeros(len(self.sources)), requires_grad=False)

    @property
    def chunking(self) -> CentredSegments:
        return CentredSegments(self.segment)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        CALLS[self.name] += 1
        return self.gains[:, None, None] * mix[:, None]


def build(args: tuple, kwargs: dict[str, Any]) -> Gains:
    return Gains(*args, **kwargs)


FAMILIES = (Family(name=NAME, architecture="test-only: each source a fixed gain times the mix",
                   catalogue_bag=catalogue_bag, package_classes={KLASS: build}),)


@contextmanager
def registered() -> Iterator[None]:
    """The family table with `fake` in it, as if stemsplit/families/fake_family.py were its module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, f"{families.__name__}.fake_family", sys.modules[__name__])
        patch.setitem(families.TABLE, NAME, "fake_family")
        families.family.cache_clear()
        try:
            yield
        finally:
            families.family.cache_clear()


def package(name: str, gains: Mapping[str, float], samplerate: int = 44100) -> bytes:
    """A fake network `name` as a demucs package in the Hub's format."""
    kwargs = {"name": name, "sources": list(gains), "samplerate": samplerate}
    metadata = {"klass": KLASS, "args": "[]", "kwargs": json.dumps(kwargs, default=encode_fraction)}
    return safetensors.torch.save({"gains": torch.tensor(list(gains.values()))}, metadata)


def write_repo(folder: Path, bags: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Path:
    """A `--repo` folder: for each bag name, its networks (signature -> gain of each source), equally shared."""
    for bag, networks in bags.items():
        for signature, gains in networks.items():
            (folder / f"{signature}.safetensors").write_bytes(package(signature, gains))
        (folder / f"{bag}.yaml").write_text(f"models: {json.dumps(list(networks))}\n")
    return folder
