"""Frequency bands with layers of their own (Hybrid Demucs's `multi_freqs`).

A frequency layer is replicated once per band: `ratios` are where the bands end, as
fractions of the frequency rows, and a last band runs to the top. Bands are cut so that,
were the copies' weights equal, the result would equal the single layer over all rows:
encoder bands end on whole strides and overlap by a kernel minus a stride; decoder bands'
transposed convolutions overlap by a stride and are added where they meet.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .htdemucs import EncoderLayer


class BandSplit(nn.Module):
    """One layer per band, named `layers.{band}` like the reference's MultiWrap."""

    freq = True

    def __init__(self, layer: nn.Module, ratios: tuple[float, ...]):
        super().__init__()
        self.ratios = [*ratios, 1]
        self.encoding = isinstance(layer, EncoderLayer)
        self.last = getattr(layer, "last", False)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in self.ratios)
        for band in self.layers:
            if self.encoding:
                band.conv.padding = (0, 0)  # the bands are padded at the outer edges only
            else:
                band.pad, band.last = 0, True  # trimmed and activated once they are joined

    def forward(self, x: Tensor, skip: Tensor | None = None, length: int | None = None) -> Tensor:
        """(B, C, F, T) in both directions; an encoder takes no skip (where bands split, no branch merges)."""
        return self.encode(x) if self.encoding else self.decode(x, skip)

    def encode(self, x: Tensor) -> Tensor:
        freqs, start, outs = x.shape[2], 0, []
        for ratio, layer in zip(self.ratios, self.layers):
            kernel, stride = layer.conv.kernel_size[0], layer.stride
            pad = kernel // 4
            below = pad if start == 0 else 0
            end = freqs
            if ratio != 1:
                span = round(freqs * ratio) - start + below
                count = round((span - kernel) / stride + 1)
                end = start + (count - 1) * stride + kernel - below
            band = F.pad(x[:, :, start:end], (0, 0, below, pad if ratio == 1 else 0))
            outs.append(layer(band))
            start = end - kernel + stride
        return torch.cat(outs, dim=2)

    def decode(self, x: Tensor, skip: Tensor) -> Tensor:
        freqs, start, outs = x.shape[2], 0, []
        for ratio, layer in zip(self.ratios, self.layers):
            end = freqs if ratio == 1 else round(freqs * ratio)
            out = layer(x[:, :, start:end], skip[:, :, start:end])
            stride = layer.stride
            if outs:  # the overlap of two bands, with the bias counted once
                outs[-1][:, :, -stride:] += out[:, :, :stride] - layer.conv_tr.bias.view(1, -1, 1, 1)
                out = out[:, :, stride:]
            if ratio == 1:
                out = out[:, :, :(-stride) // 2]
            if start == 0:
                out = out[:, :, stride // 2:]
            outs.append(out)
            start = end
        out = torch.cat(outs, dim=2)
        return out if self.last else F.gelu(out)
