"""A bag: the networks whose outputs make one model's stems.

Words used throughout: a *model* is what a user picks by name (a catalogue entry or a
local checkpoint); a *network* is one nn.Module; a *bag* is the loaded networks of a
model with how much each contributes to each stem. A bag may also have a *residual*
stem, the mix minus all its other stems (the second stem of a single-target RoFormer,
or `other` in an ensemble that takes the rest from specialists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .errors import ModelError

if TYPE_CHECKING:  # listing models must not import torch
    import torch

    from .chunking import Chunking


class Network(Protocol):
    """What the engine needs of a network: (batch, channels, samples) in, (batch, sources,
    channels, samples) out, at its rate, cut into chunks by its family's procedure."""

    samplerate: int
    audio_channels: int
    sources: list[str]
    chunking: Chunking

    def __call__(self, mix: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Member:
    network: Network
    weights: dict[str, float]  # stem of the bag -> weight of the network's output of that name


@dataclass
class Bag:
    name: str
    stems: list[str]
    members: list[Member]
    residual: str | None = None
    identity: str = field(default="", compare=False)  # what the weights were (names and SHA-256), for records

    def __post_init__(self) -> None:
        if not self.members:
            raise ModelError(f"model '{self.name}' has no networks")
        first = self.members[0].network
        for member in self.members[1:]:
            if (member.network.samplerate, member.network.audio_channels) != (first.samplerate,
                                                                             first.audio_channels):
                raise ModelError(f"the networks of model '{self.name}' disagree on sample rate or channels, "
                                 "so they cannot be mixed")
        for stem in self.computed_stems:
            if not any(member.weights.get(stem) for member in self.members):
                raise ModelError(f"no network of model '{self.name}' gives its stem '{stem}'")
        for member in self.members:
            missing = [stem for stem in member.weights if stem not in member.network.sources]
            if missing:
                raise ModelError(f"a network of model '{self.name}' has no output '{missing[0]}'")

    @property
    def samplerate(self) -> int:
        return self.members[0].network.samplerate

    @property
    def audio_channels(self) -> int:
        return self.members[0].network.audio_channels

    @property
    def computed_stems(self) -> list[str]:
        """The stems the networks give; the residual, if any, is derived from them."""
        return [stem for stem in self.stems if stem != self.residual]

    def needing(self, stems: list[str], residual: str | None = None) -> Bag:
        """A bag of only `stems` (one of which may become a residual), with only the networks
        that contribute to them: a stem nobody wants costs nothing."""
        wanted = [stem for stem in stems if stem != residual]
        if self.residual in wanted:  # it needs every other stem
            return self
        members = [Member(m.network, {s: w for s, w in m.weights.items() if s in wanted and w})
                   for m in self.members]
        members = [m for m in members if m.weights]
        return Bag(self.name, list(stems), members, residual, self.identity)

    def scales(self) -> list[dict[str, float]]:
        """Per member, the share of its output in each computed stem (weights normalised per stem)."""
        totals = {stem: sum(m.weights.get(stem, 0.0) for m in self.members) for stem in self.computed_stems}
        return [{stem: weight / totals[stem] for stem, weight in m.weights.items() if weight and stem in totals}
                for m in self.members]
