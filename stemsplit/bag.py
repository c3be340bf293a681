"""A bag: the networks whose outputs make one model's stems.

Words used throughout: a *model* is what a user picks by name (a catalogue entry or a
local checkpoint); a *network* is one nn.Module; a *family* is one architecture, with how its
networks are loaded and go over a song (stemsplit/families/); a *bag* is the loaded networks
of a model with each one's *shares*, how much its output counts in each stem. A bag may also
have a *residual* stem, the mix minus all its other stems (the second stem of a single-target
RoFormer, or `other` in an ensemble that takes the rest from specialists).

The stems written are the bag's, or `no_X`: everything but X, either the sum of the other
stems or (the `minus` method) a residual, the mix minus X. A query model's bag (see queries.py) has one
network per query, giving its stem X, and a residual per query, `no_X`, the mix minus X alone: its
`complements`.
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
    shares: dict[str, float]  # stem of the bag -> share of the network's output of that name


@dataclass
class Bag:
    name: str
    stems: list[str]
    members: list[Member]
    residual: str | None = None
    identity: str = field(default="", compare=False)  # what the weights were (names and SHA-256), for records
    complements: dict[str, str] = field(default_factory=dict)  # no_X -> X: a stem that is the mix minus X alone

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
            missing = [stem for stem in member.shares if stem not in member.network.sources]
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
        """The stems the networks give; the residual, if any, and the complements are derived from them."""
        return [stem for stem in self.stems if stem != self.residual and stem not in self.complements]

    def residual_parts(self) -> dict[int, list[int]]:
        """Each derived stem's index -> the indices of the stems it is the mix minus."""
        index = {stem: position for position, stem in enumerate(self.stems)}
        parts = {index[rest]: [index[target]] for rest, target in self.complements.items()}
        if self.residual is not None:
            parts[index[self.residual]] = [index[stem] for stem in self.computed_stems]
        return parts

    def needing(self, stems: list[str], residual: str | None = None) -> Bag:
        """A bag of only `stems` (one of which may become a residual), with only the networks
        that contribute to them: a stem nobody wants costs nothing."""
        if self.complements:
            return self.needing_queries(stems)
        wanted = [stem for stem in stems if stem != residual]
        if self.residual in wanted:  # it needs every other stem
            return self
        members = [Member(m.network, {s: w for s, w in m.shares.items() if s in wanted and w})
                   for m in self.members]
        members = [m for m in members if m.shares]
        return Bag(self.name, list(stems), members, residual, self.identity)

    def needing_queries(self, stems: list[str]) -> Bag:
        """Only the queries whose stem or residual is among `stems`."""
        targets = {self.complements.get(stem, stem) for stem in stems}
        kept = [stem for stem in self.stems if self.complements.get(stem, stem) in targets]
        members = [member for member in self.members if set(member.shares) & targets]
        complements = {rest: target for rest, target in self.complements.items() if target in targets}
        return Bag(self.name, kept, members, None, self.identity, complements)

    def for_outputs(self, names: list[str], other_method: str = "add") -> Bag:
        """The part of the bag that the outputs `names` need: `no_X` by the `minus` method is the mix minus X,
        a residual needing only X's networks; by `add` it is the sum of the other stems, needing them all."""
        derived = [name for name in names if name not in self.stems]
        if not derived:
            return self.needing(names)
        if other_method == "minus":
            return self.needing(names, residual=derived[0])
        return self.needing(self.stems)

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


def query_bag(name: str, networks: list[Network], identity: str) -> Bag:
    """One single-source network per query, in order: each gives its stem X, and `no_X` is the mix minus X."""
    stems, complements = [], {}
    for network in networks:
        target = network.sources[0]
        stems += [target, f"no_{target}"]
        complements[f"no_{target}"] = target
    members = [Member(network, {network.sources[0]: 1.0}) for network in networks]
    return Bag(name, stems, members, identity=identity, complements=complements)
