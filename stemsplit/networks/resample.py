"""Resampling by a ratio of small integers with a windowed-sinc filter.

This is the filter of the `julius` package (J. O. Smith's bandlimited interpolation), which
the time-domain Demucs was trained behind: a sinc lowpass at `rolloff` times the lower
Nyquist frequency, `zeros` zero crossings each side, tapered by a raised-cosine window
and normalised to unit gain; one such kernel per output phase, the input extended by
repeating its edge samples. It is implemented here (a few lines) rather than imported, so
that stemsplit does not depend on julius for two calls.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

ZEROS = 24
ROLLOFF = 0.945


@functools.lru_cache(maxsize=8)
def kernels(old: int, new: int, zeros: int = ZEROS, rolloff: float = ROLLOFF) -> tuple[Tensor, int]:
    """(new, 1, taps) kernels, one per output phase, and the padding `width` before the input."""
    cutoff = min(old, new) * rolloff
    width = math.ceil(zeros * old / cutoff)
    offsets = torch.arange(-width, width + old, dtype=torch.float64)
    phases = torch.arange(new, dtype=torch.float64)[:, None]
    t = ((offsets / old - phases / new) * cutoff).clamp(-zeros, zeros) * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * torch.cos(t / zeros / 2) ** 2
    kernel = kernel / kernel.sum(dim=-1, keepdim=True)
    with torch.inference_mode(False):  # usable outside inference mode too, though cached inside it
        return kernel.float()[:, None, :].clone(), width


def resample(x: Tensor, old: int, new: int) -> Tensor:
    """(..., T) at rate `old` -> (..., floor(T * new / old)) at rate `new` (rates as a reduced ratio)."""
    kernel, width = kernels(old, new)
    *batch, length = x.shape
    padded = F.pad(x.reshape(-1, 1, length), (width, width + old), mode="replicate")
    out = F.conv1d(padded, kernel.to(x), stride=old)  # (N, new phases, steps)
    return out.transpose(1, 2).reshape(*batch, -1)[..., :new * length // old]
