"""Multichannel Wiener filtering of estimated magnitudes, as Hybrid Demucs applies it.

The magnitudes first take the mix's phase; then each iteration of expectation-maximisation
models every stem as a power spectral density times a spatial covariance matrix per frequency
(both estimated from the current stems) and re-separates the mix with the resulting Wiener
gains. Hybrid Demucs runs it on stretches of `WINDOW` frames, each on its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

WINDOW = 300  # frames filtered together
EPS = 1e-10  # regularisation of the mix covariance (its square root) and of the covariance weights
MAX_MAGNITUDE = 10.0  # stretches are scaled so that the mix's largest magnitude is at most this


def wiener(magnitudes: Tensor, mix: Tensor, iterations: int, residual: bool) -> Tensor:
    """Complex stems (B, S, C, F, T) from estimated magnitudes (B, S, C, F, T) and the mix's
    spectrogram (B, C, F, T). `residual`: the mix minus the stems joins as one more stem while
    filtering (and is dropped after)."""
    stretches = []
    for start in range(0, mix.shape[-1], WINDOW):
        frames = slice(start, start + WINDOW)
        stretches.append(filter_stretch(magnitudes[..., frames], mix[..., frames], iterations, residual))
    return torch.cat(stretches, dim=-1)


def filter_stretch(magnitudes: Tensor, mix: Tensor, iterations: int, residual: bool) -> Tensor:
    sources = magnitudes.shape[1]
    stems = torch.polar(magnitudes, mix.angle()[:, None].expand_as(magnitudes))
    if residual:
        stems = torch.cat([stems, mix[:, None] - stems.sum(1, keepdim=True)], dim=1)
    if iterations > 0:
        scale = (mix.abs().amax(dim=(1, 2, 3), keepdim=True) / MAX_MAGNITUDE).clamp(min=1.0)
        stems = scale[:, None] * refine(stems / scale[:, None], mix / scale, iterations)
    return stems[:, :sources]


def refine(stems: Tensor, mix: Tensor, iterations: int) -> Tensor:
    """Expectation-maximisation: stems (B, S, C, F, T) re-separated from the mix (B, C, F, T)."""
    channels = mix.shape[1]
    identity = EPS ** 0.5 * torch.eye(channels, dtype=mix.dtype, device=mix.device)
    for _ in range(iterations):
        density = stems.abs().square().mean(dim=2)  # (B, S, F, T)
        covariance = torch.einsum("bsift,bsjft->bsfij", stems, stems.conj())
        covariance = covariance / (EPS + density.sum(-1))[..., None, None]  # (B, S, F, C, C)
        mix_covariance = identity + torch.einsum("bsft,bsfij->bftij", density.to(mix.dtype), covariance)
        inverse = torch.linalg.inv(mix_covariance)  # (B, F, T, C, C)
        gains = density[..., None, None] * (covariance[:, :, :, None] @ inverse[:, None])  # (B, S, F, T, C, C)
        stems = torch.einsum("bsftij,bjft->bsift", gains, mix)
    return stems
