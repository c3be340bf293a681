"""A bag: the networks whose outputs make one model's stems.

Words used throughout: a *model* is what a user picks by name (a catalogue entry or a
local checkpoint); a *network* is one nn.Module; a *family* is one architecture, with how its
networks are loaded and go over a song (stemsplit/families/); a *bag* is the loaded networks
of a model with each one's *shares*, how much its output counts in each stem. A bag may also
have a *residual* stem, the mix minus all its other stems (the second stem of a single-target
RoFormer, or `other` in an ensemble that takes the rest from specialists).

The stems written are the bag's, or `no_X`: everything but X, either the sum of the other
stems or (the `minus` method) a residual, the mix minus X.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence

from .errors import ModelError

if TYPE_CHECKING:  # listing models must not import torch
    import torch

    from .chunking import Chunking

OTHER_METHODS = ("add", "minus")
STEREO = 2


class Network(Protocol):
    """What the engine needs of a network: (batch, channels, samples) in, (batch, sources,
    channels, samples) out, at its rate, cut into chunks by its family's procedure."""

    family: str
    samplerate: int
    audio_channels: int
    sources: list[str]
    chunking: Chunking

    def __call__(self, mix: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Member:
    network: Network
    shares: dict[str, float]  # stem of the bag -> share of the network's output for that stem
    outputs: dict[str, str] = field(default_factory=dict)  # stem of the bag -> the network's name for it, if another

    def output(self, stem: str) -> str:
        """The network's name for the bag's `stem`."""
        return self.outputs.get(stem, stem)


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
            if member.network.samplerate != first.samplerate:
                raise ModelError(f"the networks of model '{self.name}' disagree on sample rate, "
                                 "so they cannot be mixed")
        for stem in self.computed_stems:
            if not any(member.shares.get(stem) for member in self.members):
                raise ModelError(f"no network of model '{self.name}' gives its stem '{stem}'")
        for member in self.members:
            outputs = [member.output(stem) for stem in member.shares]
            missing = [output for output in outputs if output not in member.network.sources]
            if missing:
                raise ModelError(f"a network of model '{self.name}' has no output '{missing[0]}'")

    @property
    def samplerate(self) -> int:
        return self.members[0].network.samplerate

    @property
    def audio_channels(self) -> int:
        """Stems are stereo, like the songs they come from: a mono network runs on each channel."""
        return STEREO

    @property
    def families(self) -> set[str]:
        return {member.network.family for member in self.members}

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
        members = [Member(m.network, {s: w for s, w in m.shares.items() if s in wanted and w}, m.outputs)
                   for m in self.members]
        members = [m for m in members if m.shares]
        return Bag(self.name, list(stems), members, residual, self.identity)

    def for_outputs(self, names: list[str], other_method: str = "add") -> Bag:
        """The part of the bag that the outputs `names` need: `no_X` by the `minus` method is the mix minus X,
        a residual needing only X's networks; by `add` it is the sum of the other stems, needing them all."""
        derived = [name for name in names if name not in self.stems]
        if not derived:
            return self.needing(names)
        if other_method == "minus":
            return self.needing(names, residual=derived[0])
        return self.needing(self.stems)

    def renamed(self, names: dict[str, str]) -> Bag:
        """The same networks with stems called as `names` says (stems it does not name keep theirs): the
        catalogue's word for what a community checkpoint's stems are ("no reverb" -> dry)."""
        def call(stem: str) -> str:
            return names.get(stem, stem)

        stems = [call(stem) for stem in self.stems]
        if len(set(stems)) < len(stems):
            raise ModelError(f"model '{self.name}' would call two of its stems {stems} alike")
        members = [Member(m.network, {call(s): w for s, w in m.shares.items()},
                          {call(s): m.output(s) for s in m.shares}) for m in self.members]
        residual = call(self.residual) if self.residual else None
        return Bag(self.name, stems, members, residual, self.identity)

    def scales(self) -> list[dict[str, float]]:
        """Per member, the share of its output in each computed stem (shares normalised per stem)."""
        totals = {stem: sum(m.shares.get(stem, 0.0) for m in self.members) for stem in self.computed_stems}
        return [{stem: share / totals[stem] for stem, share in m.shares.items() if share and stem in totals}
                for m in self.members]


def output_names(stems: Sequence[str], wanted: Sequence[str] = (), two_stems: str | None = None) -> list[str]:
    """The outputs asked for: the model's stems, a subset, or STEM and no_STEM; a ValueError names an unknown stem."""
    asked = [two_stems] if two_stems else list(wanted)
    unknown = [stem for stem in asked if stem not in stems]
    if unknown:
        raise ValueError(f"unknown stem {unknown[0]!r}; this model has {', '.join(stems)}")
    if two_stems:
        return [two_stems, f"no_{two_stems}"]
    return asked or list(stems)


def pick_outputs(separated: torch.Tensor, stems: list[str], names: list[str]) -> list[torch.Tensor]:
    """One (channels, samples) block per output name from a bag's (stems, channels, samples) block;
    `no_X` that the bag does not give is the sum of its stems but X."""
    outputs = []
    for name in names:
        if name in stems:
            outputs.append(separated[stems.index(name)])
        else:
            outputs.append(separated[[i for i, stem in enumerate(stems) if stem != name[3:]]].sum(0))
    return outputs


def mixed_bag(name: str, networks: list[Network], shares: list[Sequence[float] | None], identity: str) -> Bag:
    """Networks of the same sources mixed with per-stem shares (all 1 where none are given)."""
    sources = list(networks[0].sources)
    if any(list(network.sources) != sources for network in networks):
        raise ModelError(f"the networks of model '{name}' disagree on sources, so they cannot be mixed")
    if any(row is not None and len(row) != len(sources) for row in shares):
        raise ModelError(f"model '{name}' needs {len(sources)} weights (one per source) for each network")
    members = [Member(network, dict(zip(sources, row or [1.0] * len(sources))))
               for network, row in zip(networks, shares)]
    return Bag(name, sources, members, identity=identity)


def single_network_bag(name: str, network: Network, identity: str) -> Bag:
    """One network's stems; a single-target network gives its target and `no_{target}`, the mix minus the target."""
    shares = {source: 1.0 for source in network.sources}
    if len(network.sources) == 1:
        target = network.sources[0]
        return Bag(name, [target, f"no_{target}"], [Member(network, shares)], f"no_{target}", identity)
    return Bag(name, list(network.sources), [Member(network, shares)], identity=identity)
