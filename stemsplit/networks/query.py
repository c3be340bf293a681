"""One query's network: a query-conditioned separator with that query's condition (see stemsplit/queries.py).

A query family's separator (USS's and AudioSep's ResUNet30) takes the mix and a condition vector per chunk;
`Conditioned` fixes the condition of one query, so that the engine runs it as any single-source network.
The condition is either one vector, computed once when the bag is built (an embedding of a text or of an
example recording), or computed from each chunk itself (USS's AudioSet labels: the chunk's own label
probabilities kept at the asked labels only).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..chunking import Chunking


class QuerySeparator(Protocol):
    """(batch, channels, samples) and (batch, condition size) in, (batch, channels, samples) out."""

    family: str
    samplerate: int
    audio_channels: int
    chunking: Chunking

    def __call__(self, mix: torch.Tensor, condition: torch.Tensor) -> torch.Tensor: ...


class FixedCondition(nn.Module):
    """The same condition vector for every chunk (a buffer: it moves with the network)."""

    def __init__(self, vector: torch.Tensor):
        super().__init__()
        self.register_buffer("vector", vector.detach().float().reshape(-1))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.vector.expand(mix.shape[0], -1)


class Conditioned(nn.Module):
    """`separator` asked for one query, whose stem is its one source."""

    def __init__(self, separator: nn.Module, condition: nn.Module, stem: str):
        super().__init__()
        self.separator, self.condition = separator, condition
        self.sources = [stem]
        self.family, self.samplerate = separator.family, separator.samplerate
        self.audio_channels, self.chunking = separator.audio_channels, separator.chunking

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.separator(mix, self.condition(mix))[:, None]
