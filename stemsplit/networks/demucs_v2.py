"""The demucs 2.0.3 generation: its waveform U-Net (Demucs v2) and Conv-TasNet, inference only.

Demucs v2 is the time-domain U-Net of networks/demucs.py without normalisation layers or
DConv branches: each encoder layer a strided convolution, a ReLU and a 1x1 rewrite with a
GLU, each decoder layer a rewrite over `context` steps with no padding (so the output is
shorter than the input), a transposed convolution and a ReLU; a BLSTM at the bottom.

Conv-TasNet (Luo and Mesgarani) learns a filterbank: a strided convolution encodes the
waveform, a stack of dilated depthwise-separable blocks estimates one mask per source over
the encoding, and the masked encodings are decoded by overlap-adding learned basis signals.

Module and parameter names follow demucs 2.0.3 (`demucs.model.Demucs`, `demucs.tasnet.ConvTasNet`)
so that its weight files load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..chunking import FittedSegments
from ..errors import ModelError
from .demucs import centre_trim, fitted_length
from .layers import describe
from .options import config_from_reference
from .resample import resample
from .sequence import BLSTM

TRAINING_ONLY = frozenset({"rescale"})


def centre_pad(x: Tensor, length: int) -> Tensor:
    """`x` widened to `length` samples with zeros, the odd one on the right."""
    surplus = length - x.shape[-1]
    return F.pad(x, (surplus // 2, surplus - surplus // 2))


def segment_seconds(segment_length: int, samplerate: int) -> Fraction:
    return Fraction(int(segment_length), int(samplerate))


@dataclass(frozen=True)
class DemucsV2Config:
    """The shape of a Demucs v2 network, named as demucs 2.0.3's constructor arguments."""

    sources: tuple[str, ...]
    audio_channels: int = 2
    channels: int = 64
    depth: int = 6
    rewrite: bool = True
    glu: bool = True
    resample: bool = True
    kernel_size: int = 8
    stride: int = 4
    growth: float = 2.0
    lstm_layers: int = 2
    context: int = 3
    normalize: bool = False
    samplerate: int = 44100
    segment_length: int = 4 * 10 * 44100

    @classmethod
    def from_reference(cls, *args: object, **kwargs: object) -> DemucsV2Config:
        config = config_from_reference(cls, args, kwargs, TRAINING_ONLY, {})
        config = replace(config, sources=tuple(config.sources))
        if shrinkage(config) % 2:
            raise ModelError("a context and stride whose output shrinks by an odd number of samples")
        return config


def shrinkage(c: DemucsV2Config) -> int:
    """How many samples shorter than a fitted input the output is: each decoder rewrite loses
    `context - 1` steps, widened by every transposed convolution after it."""
    lost = (c.context - 1) * sum(c.stride ** layer for layer in range(1, c.depth + 1)) if c.rewrite else 0
    return lost // 2 if c.resample else lost


def v2_encoder_layer(c: DemucsV2Config, chin: int, chout: int) -> nn.Sequential:
    layers = [nn.Conv1d(chin, chout, c.kernel_size, c.stride), nn.ReLU()]
    if c.rewrite:
        layers += [nn.Conv1d(chout, 2 * chout if c.glu else chout, 1), nn.GLU(dim=1) if c.glu else nn.ReLU()]
    return nn.Sequential(*layers)


def v2_decoder_layer(c: DemucsV2Config, index: int, chin: int, chout: int) -> nn.Sequential:
    layers = []
    if c.rewrite:
        layers += [nn.Conv1d(chin, 2 * chin if c.glu else chin, c.context), nn.GLU(dim=1) if c.glu else nn.ReLU()]
    layers.append(nn.ConvTranspose1d(chin, chout, c.kernel_size, c.stride))
    return nn.Sequential(*layers, nn.ReLU()) if index > 0 else nn.Sequential(*layers)


class DemucsV2(nn.Module):
    """Demucs v2, built from its configuration."""

    family = "demucs_v2"

    def __init__(self, config: DemucsV2Config):
        super().__init__()
        describe(self, config, segment_seconds(config.segment_length, config.samplerate))
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        chin, chout = config.audio_channels, config.channels
        for index in range(config.depth):
            restored = chin if index > 0 else len(config.sources) * config.audio_channels
            self.encoder.append(v2_encoder_layer(config, chin, chout))
            self.decoder.insert(0, v2_decoder_layer(config, index, chout, restored))
            chin, chout = chout, int(config.growth * chout)
        self.lstm = BLSTM(chin, config.lstm_layers) if config.lstm_layers else None

    def valid_length(self, length: int) -> int:
        """The input length whose output covers `length` samples (demucs 2.0.3's `valid_length`)."""
        return fitted_length(self.config, length, self.config.context - 1 if self.config.rewrite else 0)

    @property
    def chunking(self) -> FittedSegments:
        return FittedSegments(self.segment, self.valid_length)

    def forward(self, mix: Tensor) -> Tensor:
        """(B, C, T) -> (B, len(sources), C, T): the estimate of the middle samples the network
        reaches, zero where its output (shorter than its input) does not; an input of
        `valid_length(n)` samples covers its middle n."""
        length = mix.shape[-1]
        x = centre_pad(mix, fitted_length(self.config, length))
        mean, std = self.moments(x)
        x = (x - mean) / std
        x = resample(x, 1, 2) if self.config.resample else x
        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        x = self.lstm(x) if self.lstm is not None else x
        for decode in self.decoder:
            x = decode(x + centre_trim(skips.pop(), x.shape[-1]))
        x = resample(x, 2, 1) if self.config.resample else x
        x = x * std + mean
        x = centre_pad(x, length) if x.shape[-1] < length else centre_trim(x, length)
        return x.view(x.shape[0], len(self.sources), self.audio_channels, length)

    def moments(self, x: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """With `normalize`, the mean and (padded) deviation of the input's mono mix; else none."""
        if not self.config.normalize:
            return 0.0, 1.0
        mono = x.mean(dim=1, keepdim=True)
        return mono.mean(dim=-1, keepdim=True), 1e-5 + mono.std(dim=-1, keepdim=True)


# Conv-TasNet

NORM_EPS = 1e-8
MASKS = {"relu": F.relu, "softmax": lambda score: F.softmax(score, dim=1)}


@dataclass(frozen=True)
class ConvTasNetConfig:
    """The shape of a Conv-TasNet, named as demucs 2.0.3's constructor arguments: N filters of
    L samples, B bottleneck and H block channels, P-tap convolutions, X blocks in each of R repeats."""

    sources: tuple[str, ...]
    N: int = 256
    L: int = 20
    B: int = 256
    H: int = 512
    P: int = 3
    X: int = 8
    R: int = 4
    audio_channels: int = 2
    norm_type: str = "gLN"
    mask_nonlinear: str = "relu"
    samplerate: int = 44100
    segment_length: int = 44100 * 2 * 4

    @classmethod
    def from_reference(cls, *args: object, **kwargs: object) -> ConvTasNetConfig:
        only = {"causal": (False, "causal Conv-TasNet")}
        config = config_from_reference(cls, args, kwargs, frozenset(), only)
        if config.norm_type not in NORMS:
            raise ModelError(f"norm_type {config.norm_type!r} (stemsplit runs {', '.join(NORMS)})")
        if config.mask_nonlinear not in MASKS:
            raise ModelError(f"mask_nonlinear {config.mask_nonlinear!r} (stemsplit runs {', '.join(MASKS)})")
        return replace(config, sources=tuple(config.sources))


class GlobalLayerNorm(nn.Module):
    """Normalised over channels and time together (gLN), with a gain and bias per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, y: Tensor) -> Tensor:
        var, mean = torch.var_mean(y, dim=(1, 2), correction=0, keepdim=True)
        return torch.addcmul(self.beta, self.gamma * torch.rsqrt(var + NORM_EPS), y - mean)


class ChannelwiseLayerNorm(GlobalLayerNorm):
    """Normalised over channels at each step (cLN)."""

    def forward(self, y: Tensor) -> Tensor:
        var, mean = torch.var_mean(y, dim=1, correction=0, keepdim=True)
        return self.gamma * (y - mean) * torch.rsqrt(var + NORM_EPS) + self.beta


NORMS = {"gLN": GlobalLayerNorm, "cLN": ChannelwiseLayerNorm}


class Encoder(nn.Module):
    def __init__(self, c: ConvTasNetConfig):
        super().__init__()
        self.conv1d_U = nn.Conv1d(c.audio_channels, c.N, kernel_size=c.L, stride=c.L // 2, bias=False)

    def forward(self, mix: Tensor) -> Tensor:
        return F.relu(self.conv1d_U(mix))


class Decoder(nn.Module):
    """Masked encodings to waveforms: each frame's basis signals, overlap-added at half a filter."""

    def __init__(self, c: ConvTasNetConfig):
        super().__init__()
        self.audio_channels, self.L = c.audio_channels, c.L
        self.basis_signals = nn.Linear(c.N, c.audio_channels * c.L, bias=False)

    def forward(self, encoded: Tensor, masks: Tensor) -> Tensor:
        """(M, N, K) encodings and (M, C, N, K) masks -> (M, C, audio channels, T)."""
        batch, sources, filters, frames = masks.shape
        masked = (encoded.unsqueeze(1) * masks).view(batch * sources, filters, frames)
        basis = self.basis_signals.weight.t().reshape(filters, self.audio_channels, self.L)
        audio = F.conv_transpose1d(masked, basis, stride=self.L // 2)
        return audio.view(batch, sources, self.audio_channels, -1)


class TemporalBlock(nn.Module):
    """A residual block: 1x1 convolution, PReLU, norm, dilated depthwise convolution, PReLU, norm, 1x1 back."""

    def __init__(self, c: ConvTasNetConfig, dilation: int):
        super().__init__()
        norm = NORMS[c.norm_type]
        depthwise = nn.Conv1d(c.H, c.H, c.P, padding=(c.P - 1) * dilation // 2, dilation=dilation,
                              groups=c.H, bias=False)
        separable = nn.Sequential(depthwise, nn.PReLU(), norm(c.H), nn.Conv1d(c.H, c.B, 1, bias=False))
        self.net = nn.Sequential(nn.Conv1d(c.B, c.H, 1, bias=False), nn.PReLU(), norm(c.H), _Named(separable))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class _Named(nn.Module):
    """Holds a Sequential as `net`, as the reference's DepthwiseSeparableConv names it."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TemporalConvNet(nn.Module):
    """The mask estimator: norm, bottleneck, R repeats of X blocks dilated 1, 2, 4..., one mask per source."""

    def __init__(self, c: ConvTasNetConfig):
        super().__init__()
        self.sources, self.mask = len(c.sources), MASKS[c.mask_nonlinear]
        repeats = [nn.Sequential(*[TemporalBlock(c, 2 ** x) for x in range(c.X)]) for _ in range(c.R)]
        self.network = nn.Sequential(ChannelwiseLayerNorm(c.N), nn.Conv1d(c.N, c.B, 1, bias=False),
                                     nn.Sequential(*repeats), nn.Conv1d(c.B, len(c.sources) * c.N, 1, bias=False))

    def forward(self, encoded: Tensor) -> Tensor:
        batch, filters, frames = encoded.shape
        return self.mask(self.network(encoded).view(batch, self.sources, filters, frames))


class ConvTasNet(nn.Module):
    """Conv-TasNet, built from its configuration."""

    family = "tasnet"

    def __init__(self, config: ConvTasNetConfig):
        super().__init__()
        describe(self, config, segment_seconds(config.segment_length, config.samplerate))
        self.encoder = Encoder(config)
        self.separator = TemporalConvNet(config)
        self.decoder = Decoder(config)

    @property
    def chunking(self) -> FittedSegments:
        return FittedSegments(self.segment)

    def forward(self, mix: Tensor) -> Tensor:
        """(B, C, T) -> (B, len(sources), C, T); samples past the last whole frame are silent."""
        encoded = self.encoder(mix)
        audio = self.decoder(encoded, self.separator(encoded))
        return F.pad(audio, (0, mix.shape[-1] - audio.shape[-1]))
