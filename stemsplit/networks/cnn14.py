"""Cnn14 (PANNs, Kong et al. 2020): the AudioSet tagger USS queries with, matching panns-inference 0.1.1's
`Cnn14` in inference: a log-mel spectrogram through six double-convolution blocks, pooled over frequency
and time, gives a 2048-d embedding and the 527 AudioSet label probabilities of a clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

AMIN = 1e-10  # the floor under mel power before its logarithm


@dataclass(frozen=True)
class Cnn14Config:
    """Cnn14_mAP=0.431's configuration, as uss and panns-inference build it."""

    samplerate: int = 32000
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    classes: int = 527
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)


class Tagging(NamedTuple):
    clipwise: torch.Tensor  # (batch, classes): each label's probability for the whole clip
    embedding: torch.Tensor  # (batch, channels[-1])


class ConvBlock(nn.Module):
    def __init__(self, ins: int, outs: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ins, outs, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(outs, outs, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(outs), nn.BatchNorm2d(outs)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """(batch, samples) mono audio at `samplerate` -> Tagging."""

    def __init__(self, config: Cnn14Config = Cnn14Config()):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.window_size), persistent=False)
        self.register_buffer("mel", torch.from_numpy(slaney_mel(config)), persistent=False)
        self.bn0 = nn.BatchNorm2d(config.mel_bins)
        ins = (1, *config.channels[:-1])
        self.conv_blocks = nn.ModuleList(ConvBlock(i, o) for i, o in zip(ins, config.channels))
        self.fc1 = nn.Linear(config.channels[-1], config.channels[-1])
        self.fc_audioset = nn.Linear(config.channels[-1], config.classes)

    def forward(self, audio: torch.Tensor) -> Tagging:
        x = self.bn0(self.log_mel(audio)[:, None].transpose(1, 3)).transpose(1, 3)  # (batch, 1, frames, mels)
        for index, block in enumerate(self.conv_blocks):
            x = block(x, (1, 1) if index == len(self.conv_blocks) - 1 else (2, 2))
        x = x.mean(dim=3)
        embedding = F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))
        return Tagging(torch.sigmoid(self.fc_audioset(embedding)), embedding)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, frames, mel_bins) in dB."""
        spectrum = torch.stft(audio, self.config.window_size, self.config.hop_size, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).transpose(1, 2)
        return 10 * torch.log10((power @ self.mel).clamp(min=AMIN))


def slaney_mel(config: Cnn14Config) -> np.ndarray:
    """(bins, mel_bins) triangular filters on Slaney's mel scale, each normalised to unit area (librosa's
    default `filters.mel`, which torchlibrosa's LogmelFilterBank uses), as float32."""
    bins = np.linspace(0, config.samplerate / 2, config.window_size // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(config.fmin), hz_to_mel(config.fmax), config.mel_bins + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    filters = np.maximum(0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32).T.copy()


LINEAR_HZ_PER_MEL = 200.0 / 3  # Slaney's scale: linear below 1 kHz, logarithmic above
BREAK_HZ, BREAK_MEL = 1000.0, 15.0
LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: float) -> float:
    if hz < BREAK_HZ:
        return hz / LINEAR_HZ_PER_MEL
    return BREAK_MEL + math.log(hz / BREAK_HZ) / LOG_STEP


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = mels * LINEAR_HZ_PER_MEL
    return np.where(mels >= BREAK_MEL, BREAK_HZ * np.exp(LOG_STEP * (mels - BREAK_MEL)), linear)


def from_reference(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The entries of panns-inference's Cnn14 state dict under `prefix` in this module's names; its STFT and mel
    matrices go (this module computes them)."""
    renamed = {}
    for key, value in state.items():
        key = key[len(prefix):] if key.startswith(prefix) else None
        if key is None or key.startswith(("spectrogram_extractor.", "logmel_extractor.")):
            continue
        if key.startswith("conv_block"):
            number, rest = key[len("conv_block"):].split(".", 1)
            key = f"conv_blocks.{int(number) - 1}.{rest}"
        renamed[key] = value
    return renamed
