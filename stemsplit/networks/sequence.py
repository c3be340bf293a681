"""Sequence layers of the Demucs v3 generation: a bidirectional LSTM run over overlapping
windows, and local attention whose reach is learned as a decay with distance.

Both work on (batch, channels, time) activations and are named like the reference's
modules so that its weight files load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def overlapping_windows(x: Tensor, width: int, stride: int) -> Tensor:
    """(..., T) -> (..., ceil(T / stride), width): windows every `stride` steps, the tail zero-padded."""
    count = math.ceil(x.shape[-1] / stride)
    x = F.pad(x, (0, (count - 1) * stride + width - x.shape[-1]))
    return x.unfold(-1, width, stride)


class BLSTM(nn.Module):
    """A bidirectional LSTM projected back to its width, over windows of at most `max_steps`
    steps that overlap by half; each window keeps its middle (the ends keep their outer part)."""

    def __init__(self, dim: int, layers: int, max_steps: int | None = None, skip: bool = False):
        super().__init__()
        self.max_steps = max_steps
        self.skip = skip
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def run(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T) through the LSTM and the projection."""
        return self.linear(self.lstm(x.permute(2, 0, 1))[0]).permute(1, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        windowed = self.max_steps is not None and x.shape[-1] > self.max_steps
        out = self.run_windowed(x) if windowed else self.run(x)
        return out + x if self.skip else out

    def run_windowed(self, x: Tensor) -> Tensor:
        batch, channels, length = x.shape
        width, stride = self.max_steps, self.max_steps // 2
        windows = overlapping_windows(x, width, stride)  # (B, C, N, W)
        count = windows.shape[2]
        out = self.run(windows.permute(0, 2, 1, 3).reshape(-1, channels, width)).view(batch, count, channels, width)
        margin = stride // 2
        kept = [out[:, 0, :, :-margin]]
        kept += [out[:, index, :, margin:-margin] for index in range(1, count - 1)]
        kept.append(out[:, -1, :, margin:])
        return torch.cat(kept, dim=-1)[..., :length]


class LocalState(nn.Module):
    """Attention over time from content alone, each head penalising distance by a learned mix of
    `ndecay` linear decays; a step never attends to itself."""

    def __init__(self, channels: int, heads: int = 4, ndecay: int = 4):
        super().__init__()
        self.heads = heads
        self.ndecay = ndecay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, length = x.shape
        heads = self.heads
        queries = self.query(x).view(batch, heads, -1, length)
        keys = self.key(x).view(batch, heads, -1, length)
        # scores[b, h, t, s]: how much query step s attends to key step t
        scores = torch.einsum("bhct,bhcs->bhts", keys, queries) / keys.shape[2] ** 0.5
        steps = torch.arange(length, device=x.device, dtype=x.dtype)
        distance = (steps[:, None] - steps[None, :]).abs()
        rates = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
        decay = -rates[:, None, None] * distance / self.ndecay ** 0.5  # (ndecay, T, T)
        decay_weights = torch.sigmoid(self.query_decay(x).view(batch, heads, -1, length)) / 2
        scores = scores + torch.einsum("fts,bhfs->bhts", decay, decay_weights)
        scores = scores.masked_fill(torch.eye(length, device=x.device, dtype=torch.bool), -100)
        weights = torch.softmax(scores, dim=2)
        content = self.content(x).view(batch, heads, -1, length)
        attended = torch.einsum("bhts,bhct->bhcs", weights, content).reshape(batch, -1, length)
        return x + self.proj(attended)
