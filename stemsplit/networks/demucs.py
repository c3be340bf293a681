"""The time-domain Demucs (v2, and the waveform members of the v3 MDX bags), inference only.

A U-Net over the waveform: strided convolutions down, transposed ones up, each layer with
a GLU rewrite and (v3) a DConv residual branch, optionally a BLSTM at the bottom. The input
is upsampled 2x first and the output downsampled back; it is zero-padded to a length the
strided layers divide evenly and the output trimmed around the centre. With `normalize`
each input is scaled by the mean and deviation of its own mono mix.

Module and parameter names follow the reference implementation so that its weight files
load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Protocol

from torch import Tensor, nn

from ..chunking import FittedSegments
from .htdemucs import DConv
from .layers import describe
from .options import config_from_reference
from .resample import resample
from .sequence import BLSTM

TRAINING_ONLY = frozenset({"rescale", "dconv_init"})
ONLY_SUPPORTED: dict = {}


@dataclass(frozen=True)
class DemucsConfig:
    """The shape of a time-domain Demucs network, named as the reference's constructor arguments."""

    sources: tuple[str, ...]
    audio_channels: int = 2
    channels: int = 64
    growth: float = 2.0
    depth: int = 6
    rewrite: bool = True
    lstm_layers: int = 0
    kernel_size: int = 8
    stride: int = 4
    context: int = 1
    gelu: bool = True
    glu: bool = True
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: float = 4
    dconv_attn: int = 4
    dconv_lstm: int = 4
    normalize: bool = True
    resample: bool = True
    samplerate: int = 44100
    segment: Fraction = Fraction(40)

    @classmethod
    def from_reference(cls, *args: object, **kwargs: object) -> DemucsConfig:
        """The configuration the reference's constructor arguments describe (as weight files store them)."""
        config = config_from_reference(cls, args, kwargs, TRAINING_ONLY, ONLY_SUPPORTED)
        return replace(config, sources=tuple(config.sources), segment=Fraction(config.segment).limit_denominator())


def norm(c: DemucsConfig, index: int, channels: int) -> nn.Module:
    return nn.GroupNorm(c.norm_groups, channels) if index >= c.norm_starts else nn.Identity()


def rewrite(c: DemucsConfig, index: int, channels: int, kernel_size: int) -> list[nn.Module]:
    """A convolution to twice the width and a GLU (or to the width and a ReLU)."""
    widened = 2 * channels if c.glu else channels
    return [nn.Conv1d(channels, widened, kernel_size, padding=kernel_size // 2), norm(c, index, widened),
            nn.GLU(dim=1) if c.glu else nn.ReLU()]


def dconv(c: DemucsConfig, index: int, channels: int) -> DConv:
    return DConv(channels, c.dconv_depth, c.dconv_comp, 0.0, lstm=index >= c.dconv_lstm, attn=index >= c.dconv_attn)


def encoder_layer(c: DemucsConfig, index: int, chin: int, chout: int) -> nn.Sequential:
    """Strided convolution, norm, activation, DConv, rewrite (a Sequential: its indices name the weights)."""
    layers = [nn.Conv1d(chin, chout, c.kernel_size, c.stride), norm(c, index, chout),
              nn.GELU() if c.gelu else nn.ReLU()]
    layers += [dconv(c, index, chout)] if c.dconv_mode & 1 else []
    layers += rewrite(c, index, chout, 1) if c.rewrite else []
    return nn.Sequential(*layers)


def decoder_layer(c: DemucsConfig, index: int, chin: int, chout: int) -> nn.Sequential:
    """Rewrite with context, DConv, transposed strided convolution, then norm and activation but at the top."""
    layers = rewrite(c, index, chin, 2 * c.context + 1) if c.rewrite else []
    layers += [dconv(c, index, chin)] if c.dconv_mode & 2 else []
    layers += [nn.ConvTranspose1d(chin, chout, c.kernel_size, c.stride)]
    layers += [norm(c, index, chout), nn.GELU() if c.gelu else nn.ReLU()] if index > 0 else []
    return nn.Sequential(*layers)


class StridedShape(Protocol):
    """What fixes the lengths a waveform U-Net takes: its strided layers, and the 2x resampling around them."""

    depth: int
    kernel_size: int
    stride: int
    resample: bool


def fitted_length(c: StridedShape, length: int, lost_per_layer: int = 0) -> int:
    """The shortest input >= `length` that every strided layer divides evenly, with room for
    `lost_per_layer` more steps at each depth."""
    steps = 2 * length if c.resample else length
    for _ in range(c.depth):
        steps = max(1, math.ceil((steps - c.kernel_size) / c.stride) + 1) + lost_per_layer
    for _ in range(c.depth):
        steps = (steps - 1) * c.stride + c.kernel_size
    return math.ceil(steps / 2) if c.resample else steps


def centre_trim(x: Tensor, length: int) -> Tensor:
    """The middle `length` samples; an odd surplus loses its extra sample on the right."""
    surplus = x.shape[-1] - length
    return x[..., surplus // 2:surplus // 2 + length]


class Demucs(nn.Module):
    """Time-domain Demucs, built from its configuration."""

    family = "demucs"

    def __init__(self, config: DemucsConfig):
        super().__init__()
        describe(self, config, config.segment)
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.skip_scales = nn.ModuleList()  # empty; the reference keeps it, so its files name it
        width = self.build_unet(config)
        self.lstm = BLSTM(width, config.lstm_layers) if config.lstm_layers else None

    def build_unet(self, c: DemucsConfig) -> int:
        """Encoder and decoder, layer by layer; returns the width at the bottom."""
        chin, chout = c.audio_channels, c.channels
        for index in range(c.depth):
            restored = chin if index > 0 else len(c.sources) * c.audio_channels
            self.encoder.append(encoder_layer(c, index, chin, chout))
            self.decoder.insert(0, decoder_layer(c, index, chout, restored))
            chin, chout = chout, int(c.growth * chout)
        return chin

    def valid_length(self, length: int) -> int:
        """The shortest input length >= `length` that every strided layer divides evenly
        (at the doubled rate when resampling), so no sample is left over."""
        return fitted_length(self.config, length)

    @property
    def chunking(self) -> FittedSegments:
        return FittedSegments(self.segment, self.valid_length)

    def forward(self, mix: Tensor) -> Tensor:
        """(B, C, T) audio -> (B, len(sources), C, T) stems, for any T."""
        c = self.config
        length = mix.shape[-1]
        x, mean, std = mix, 0.0, 1.0
        if c.normalize:
            mono = mix.mean(dim=1, keepdim=True)
            mean, std = mono.mean(dim=-1, keepdim=True), mono.std(dim=-1, keepdim=True)
            x = (x - mean) / (1e-5 + std)
        surplus = self.valid_length(length) - length
        x = nn.functional.pad(x, (surplus // 2, surplus - surplus // 2))
        if c.resample:
            x = resample(x, 1, 2)
        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x + centre_trim(skips.pop(), x.shape[-1]))
        if c.resample:
            x = resample(x, 2, 1)
        x = centre_trim(x * std + mean, length)
        return x.view(x.shape[0], len(self.sources), self.audio_channels, length)

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        """Older files numbered the rewrite one place earlier (their layers had no norm); renamed as the
        reference does when loading them."""
        state = dict(state)
        for index in range(self.config.depth):
            for part in ("encoder", "decoder"):
                for kind in ("weight", "bias"):
                    old, new = f"{part}.{index}.2.{kind}", f"{part}.{index}.3.{kind}"
                    if old in state and new not in state:
                        state[new] = state.pop(old)
        return super().load_state_dict(state, strict=strict, assign=assign)
