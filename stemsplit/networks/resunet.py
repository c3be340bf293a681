"""ResUNet30: the query-conditioned separator of USS (ByteDance) and AudioSep, matching uss 0.0.4's
`uss.models.resunet.ResUNet30` (and its FiLM) in inference.

The mix's STFT magnitude goes through a residual U-Net of 2-D convolutions whose every block adds a
learnt projection of the condition vector (FiLM, here a shift only) after each batch norm; the network
gives a magnitude mask and a phase rotation per STFT bin and channel, applied to the mix's spectrogram.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..chunking import AbuttingSegments

EPS = 1e-10  # the reference's floor under |X|^2, and under a mask's magnitude before its phase
SLOPE = 0.01  # leaky ReLU


@dataclass(frozen=True)
class ResUNetConfig:
    """The released USS configuration (ss_model=resunet30,querynet=at_soft,data=full.yaml), and AudioSep's."""

    samplerate: int = 32000
    audio_channels: int = 1
    condition_size: int = 527  # USS at_soft: AudioSet label probabilities; AudioSep: a 512-d CLAP embedding
    segment_seconds: float = 2.0  # USS's inference segment
    n_fft: int = 2048
    hop_length: int = 320
    encoder_channels: tuple[int, ...] = (32, 64, 128, 256, 384, 384)
    # (time, frequency) pooling of each encoder block; the decoders undo them in reverse order
    downsamples: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (1, 2))

    @property
    def time_multiple(self) -> int:
        """Frames are padded to a multiple of the encoders' whole time pooling."""
        multiple = 1
        for time, _ in self.downsamples:
            multiple *= time
        return multiple


class FilmConvBlock(nn.Module):
    """Two 3x3 convolutions, each after batch norm + the condition's shift + leaky ReLU, and a residual path."""

    def __init__(self, ins: int, outs: int, condition_size: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(ins), nn.BatchNorm2d(outs)
        self.conv1 = nn.Conv2d(ins, outs, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(outs, outs, 3, padding=1, bias=False)
        self.film1, self.film2 = nn.Linear(condition_size, ins), nn.Linear(condition_size, outs)
        self.shortcut = nn.Conv2d(ins, outs, 1) if ins != outs else None

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.bn1(x) + shift(self.film1, condition), SLOPE))
        h = self.conv2(F.leaky_relu(self.bn2(h) + shift(self.film2, condition), SLOPE))
        return (x if self.shortcut is None else self.shortcut(x)) + h


def shift(film: nn.Linear, condition: torch.Tensor) -> torch.Tensor:
    return film(condition)[:, :, None, None]


class Encoder(nn.Module):
    def __init__(self, ins: int, outs: int, downsample: tuple[int, int], condition_size: int):
        super().__init__()
        self.block = FilmConvBlock(ins, outs, condition_size)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled, unpooled): the next encoder's input and the matching decoder's skip."""
        features = self.block(x, condition)
        return F.avg_pool2d(features, self.downsample), features


class Decoder(nn.Module):
    def __init__(self, ins: int, outs: int, upsample: tuple[int, int], condition_size: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(ins)
        self.film = nn.Linear(condition_size, ins)
        self.up = nn.ConvTranspose2d(ins, outs, upsample, stride=upsample, bias=False)
        self.block = FilmConvBlock(2 * outs, outs, condition_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        up = self.up(F.leaky_relu(self.bn(x) + shift(self.film, condition), SLOPE))
        return self.block(torch.cat([up, skip], dim=1), condition)


class ResUNet30(nn.Module):
    """(batch, channels, samples) and (batch, condition_size) -> the queried source, (batch, channels, samples)."""

    def __init__(self, config: ResUNetConfig, family: str = "uss"):
        super().__init__()
        self.config, self.family = config, family
        self.samplerate, self.audio_channels = config.samplerate, config.audio_channels
        self.chunking = AbuttingSegments(round(config.segment_seconds * config.samplerate))
        channels, size = config.encoder_channels, config.condition_size
        self.bn0 = nn.BatchNorm2d(config.n_fft // 2 + 1)
        self.pre_conv = nn.Conv2d(config.audio_channels, channels[0], 1)
        ins = (channels[0], *channels[:-1])
        self.encoders = nn.ModuleList(Encoder(i, o, d, size) for i, o, d in zip(ins, channels, config.downsamples))
        self.centre = FilmConvBlock(channels[-1], channels[-1], size)
        outs = tuple(reversed(channels))  # each decoder gives its skip's channels
        ups = tuple(reversed(config.downsamples))
        self.decoders = nn.ModuleList(Decoder(i, o, u, size) for i, o, u in zip((channels[-1], *outs), outs, ups))
        self.after_conv = nn.Conv2d(channels[0], 3 * config.audio_channels, 1)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, mix: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        spectrum = self.stft(mix)  # (batch, channels, frames, bins)
        magnitude = (spectrum.real ** 2 + spectrum.imag ** 2).clamp(min=EPS).sqrt()
        phase = torch.complex(spectrum.real / magnitude, spectrum.imag / magnitude)
        masks = self.masks(magnitude, condition)
        return self.istft(magnitude * masks_applied(masks, phase), mix.shape[-1])

    def masks(self, magnitude: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(batch, channels, 3, frames, bins): magnitude, real and imaginary mask logits."""
        frames = magnitude.shape[2]
        x = self.bn0(magnitude.transpose(1, 3)).transpose(1, 3)
        x = F.pad(x, (0, 0, 0, -frames % self.config.time_multiple))[..., :-1]  # 1025 bins -> 1024
        x = self.pre_conv(x)
        skips = []
        for encoder in self.encoders:
            x, skip = encoder(x, condition)
            skips.append(skip)
        x = self.centre(x, condition)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip, condition)
        x = F.pad(self.after_conv(x), (0, 1))[:, :, :frames]
        return x.reshape(x.shape[0], self.audio_channels, 3, frames, x.shape[-1])

    def stft(self, mix: torch.Tensor) -> torch.Tensor:
        batch, channels, samples = mix.shape
        spectrum = torch.stft(mix.reshape(batch * channels, samples), self.config.n_fft, self.config.hop_length,
                              window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return spectrum.reshape(batch, channels, *spectrum.shape[-2:]).transpose(2, 3)

    def istft(self, spectrum: torch.Tensor, samples: int) -> torch.Tensor:
        batch, channels = spectrum.shape[:2]
        flat = spectrum.transpose(2, 3).reshape(batch * channels, *spectrum.shape[-1:-3:-1])
        audio = torch.istft(flat, self.config.n_fft, self.config.hop_length, window=self.window, center=True,
                            length=samples)
        return audio.reshape(batch, channels, samples)


def masks_applied(masks: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The mix's unit phasors scaled by the sigmoid magnitude mask and rotated by the mask's phase."""
    gain = torch.sigmoid(masks[:, :, 0])
    real, imaginary = torch.tanh(masks[:, :, 1]), torch.tanh(masks[:, :, 2])
    size = (real ** 2 + imaginary ** 2).sqrt().clamp(min=EPS)
    return gain * phase * torch.complex(real / size, imaginary / size)


def from_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """uss's ResUNet30 state dict (keys `base.*`, `film.*`) in this module's names. Its STFT matrices and the
    decoders' unused second batch norm and shift (which the reference keeps only to lay out its FiLM) go."""
    renamed = {}
    for key, value in state.items():
        name = reference_name(key)
        if name is not None:
            renamed[name] = value
    return renamed


def reference_name(key: str) -> str | None:
    head, _, rest = key.partition(".")
    if head == "film":
        path, _, leaf = rest.partition(".")
        parts = path.split("->")  # e.g. decoder_block2->conv_block2->beta1
        if len(parts) == 2:  # a decoder's own shift; its beta2 belongs to the unused batch norm
            return f"{block_name(parts[0])}.film.{leaf}" if parts[1] == "beta1" else None
        return f"{conv_block_name(parts[0])}.film{parts[2][-1]}.{leaf}"
    parts = rest.split(".", 2)
    if parts[0] in ("stft", "istft") or (parts[0].startswith("decoder_block") and parts[1] == "bn2"):
        return None
    if parts[0] in ("bn0", "pre_conv", "after_conv"):
        return rest
    if parts[1] in ("bn1", "conv1"):  # a decoder's batch norm and transposed convolution
        return f"{block_name(parts[0])}.{'bn' if parts[1] == 'bn1' else 'up'}.{parts[2]}"
    return f"{conv_block_name(parts[0])}.{parts[2]}"


def block_name(reference: str) -> str:
    """encoder_block3 -> encoders.2, decoder_block1 -> decoders.0."""
    kind = "encoders" if reference.startswith("encoder_block") else "decoders"
    return f"{kind}.{int(reference[len('encoder_block'):]) - 1}"


def conv_block_name(reference: str) -> str:
    """The residual block of a reference block: conv_block7a's is the centre."""
    return "centre" if reference == "conv_block7a" else f"{block_name(reference)}.block"
