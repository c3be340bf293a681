"""TFC-TDF v3 (MDX23C, KUIELab's SDX 2023 network), inference only.

The stereo mix's STFT (real and imaginary parts as channels, the top bins cropped to `dim_f`)
is folded into `num_subbands` frequency subbands stacked as channels. A U-Net of TFC-TDF
stacks then runs over (time, frequency): each block is a 3x3 convolution (TFC), a bottleneck
of two linear maps across frequency added back (TDF), another 3x3 convolution and a 1x1
shortcut. Strided convolutions halve time and frequency between scales and transposed ones
undo that on the way up, with the encoder's outputs concatenated. The decoder's output gates
the first convolution's features, a 1x1 head turns them (with the input spectrogram) into each
stem's spectrogram, and an inverse STFT without a length gives the audio.

Module and parameter names follow the community checkpoints (audio-separator's
`uvr_lib_v5.tfc_tdf_v3.TFC_TDF_net`, ZFTurbo's MSST), so their state dicts load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

NORMS = ("BatchNorm", "InstanceNorm", "GroupNorm<groups>", "none")
ACTIVATIONS = ("gelu", "relu", "elu<alpha>")


@dataclass(frozen=True)
class TfcTdfConfig:
    """Shape of a TFC-TDF v3 network: the `audio` and `model` values of its YAML."""

    n_fft: int
    hop_length: int
    dim_f: int  # STFT bins kept (from the lowest)
    num_subbands: int
    num_scales: int
    scale: tuple[int, int]  # (time, frequency) factor between scales
    num_blocks_per_scale: int
    num_channels: int
    growth: int  # channels added per scale
    bottleneck_factor: int  # the TDF's narrowing of the frequency axis
    num_stems: int
    norm: str | None = None  # "BatchNorm", "InstanceNorm", "GroupNorm<groups>"; None: no normalisation
    act: str = "gelu"  # "gelu", "relu" or "elu<alpha>"
    audio_channels: int = 2
    sample_rate: int = 44100

    @property
    def spectrum_channels(self) -> int:
        """Channels of the folded input: real and imaginary part of each audio channel in each subband."""
        return self.num_subbands * self.audio_channels * 2

    @property
    def subband_bins(self) -> int:
        return self.dim_f // self.num_subbands


def norm_layer(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "BatchNorm":
        return nn.BatchNorm2d(channels)
    if kind == "InstanceNorm":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind.startswith("GroupNorm"):
        return nn.GroupNorm(int(kind.removeprefix("GroupNorm")), channels)
    raise ValueError(f"unknown norm {kind!r}; known: {', '.join(NORMS)}")


def activation(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "relu":
        return nn.ReLU()
    if kind.startswith("elu"):
        return nn.ELU(float(kind.removeprefix("elu")))
    raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")


def pre_activated(config: TfcTdfConfig, channels: int, layer: nn.Module) -> nn.Sequential:
    """Norm, activation, then `layer`: the order of every layer of the network."""
    return nn.Sequential(norm_layer(config.norm, channels), activation(config.act), layer)


class TfcTdfBlock(nn.Module):
    def __init__(self, config: TfcTdfConfig, in_channels: int, channels: int, bins: int):
        super().__init__()
        narrow = bins // config.bottleneck_factor
        self.tfc1 = pre_activated(config, in_channels, nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False))
        self.tdf = nn.Sequential(*pre_activated(config, channels, nn.Linear(bins, narrow, bias=False)),
                                 *pre_activated(config, channels, nn.Linear(narrow, bins, bias=False)))
        self.tfc2 = pre_activated(config, channels, nn.Conv2d(channels, channels, 3, 1, 1, bias=False))
        self.shortcut = nn.Conv2d(in_channels, channels, 1, 1, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.shortcut(x)
        x = self.tfc1(x)
        x = x + self.tdf(x)
        return self.tfc2(x) + skip


class TfcTdfStack(nn.Module):
    """`num_blocks_per_scale` blocks, the first taking `in_channels`."""

    def __init__(self, config: TfcTdfConfig, in_channels: int, channels: int, bins: int):
        super().__init__()
        widths = [in_channels] + [channels] * (config.num_blocks_per_scale - 1)
        self.blocks = nn.ModuleList(TfcTdfBlock(config, width, channels, bins) for width in widths)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Rescale(nn.Module):
    """A change of scale: a strided convolution (down) or a transposed one (up)."""

    def __init__(self, config: TfcTdfConfig, in_channels: int, out_channels: int, up: bool):
        super().__init__()
        klass = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = pre_activated(config, in_channels, klass(in_channels, out_channels, kernel_size=config.scale,
                                                             stride=config.scale, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class EncoderScale(nn.Module):
    def __init__(self, config: TfcTdfConfig, channels: int, bins: int):
        super().__init__()
        self.tfc_tdf = TfcTdfStack(config, channels, channels, bins)
        self.downscale = Rescale(config, channels, channels + config.growth, up=False)


class DecoderScale(nn.Module):
    def __init__(self, config: TfcTdfConfig, channels: int, bins: int):
        super().__init__()
        self.upscale = Rescale(config, channels + config.growth, channels, up=True)
        self.tfc_tdf = TfcTdfStack(config, 2 * channels, channels, bins)


class TfcTdfNet(nn.Module):
    """(batch, 2, samples) -> (batch, stems, 2, samples'), samples' = hop * (samples // hop)."""

    def __init__(self, config: TfcTdfConfig):
        super().__init__()
        self.config = config
        self.samplerate, self.audio_channels = config.sample_rate, config.audio_channels
        channels, bins, spectrum = config.num_channels, config.subband_bins, config.spectrum_channels
        self.first_conv = nn.Conv2d(spectrum, channels, 1, 1, 0, bias=False)
        widths = [(channels + scale * config.growth, bins // config.scale[1] ** scale)
                  for scale in range(config.num_scales + 1)]
        self.encoder_blocks = nn.ModuleList(EncoderScale(config, *width) for width in widths[:-1])
        deepest, deepest_bins = widths[-1]
        self.bottleneck_block = TfcTdfStack(config, deepest, deepest, deepest_bins)
        self.decoder_blocks = nn.ModuleList(DecoderScale(config, *width) for width in reversed(widths[:-1]))
        self.final_conv = nn.Sequential(nn.Conv2d(channels + spectrum, channels, 1, 1, 0, bias=False),
                                        activation(config.act),
                                        nn.Conv2d(channels, config.num_stems * spectrum, 1, 1, 0, bias=False))
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, mix: Tensor) -> Tensor:
        spectrum = self.subbands(self.spectrogram(mix))
        first = self.first_conv(spectrum)
        features = self.u_net(first.transpose(-1, -2)).transpose(-1, -2)
        stems = self.final_conv(torch.cat([spectrum, features * first], 1))
        return self.audio(self.fullband(stems))

    def u_net(self, x: Tensor) -> Tensor:
        """The encoder, bottleneck and decoder over (batch, channels, time, frequency)."""
        skips = []
        for scale in self.encoder_blocks:
            skips.append(scale.tfc_tdf(x))
            x = scale.downscale(skips[-1])
        x = self.bottleneck_block(x)
        for scale in self.decoder_blocks:
            x = scale.tfc_tdf(torch.cat([scale.upscale(x), skips.pop()], 1))
        return x

    def spectrogram(self, mix: Tensor) -> Tensor:
        return stacked_stft(mix, self.config.n_fft, self.config.hop_length, self.config.dim_f, self.window)

    def subbands(self, spectrum: Tensor) -> Tensor:
        """Each channel's bins cut into `num_subbands` bands, stacked as channels (channel-major)."""
        batch, channels, bins, frames = spectrum.shape
        return spectrum.reshape(batch, channels * self.config.num_subbands, -1, frames)

    def fullband(self, stems: Tensor) -> Tensor:
        """The head's (batch, stems * subband channels, bins, frames) -> (batch, stems, channels, dim_f, frames)."""
        batch, _, bins, frames = stems.shape
        config = self.config
        return stems.reshape(batch, config.num_stems, config.audio_channels * 2, bins * config.num_subbands, frames)

    def audio(self, stems: Tensor) -> Tensor:
        return stacked_istft(stems, self.config.n_fft, self.config.hop_length, self.window)


def stacked_stft(mix: Tensor, n_fft: int, hop_length: int, bins: int, window: Tensor) -> Tensor:
    """(batch, channels, samples) -> (batch, channels * [real, imaginary], bins, frames): the lowest `bins`
    of a centred STFT, each channel's real and imaginary parts as two channels."""
    batch, channels, samples = mix.shape
    spectrum = torch.stft(mix.reshape(batch * channels, samples), n_fft, hop_length, window=window, center=True,
                          return_complex=True)
    spectrum = torch.view_as_real(spectrum[:, :bins]).permute(0, 3, 1, 2)
    return spectrum.reshape(batch, channels * 2, bins, -1)


def stacked_istft(spectrum: Tensor, n_fft: int, hop_length: int, window: Tensor) -> Tensor:
    """(..., channels * [real, imaginary], bins, frames) -> (..., channels, hop * (frames - 1)): the bins
    above `bins` zero, inverted without a length."""
    *leading, parts, bins, frames = spectrum.shape
    spectrum = spectrum.reshape(-1, 2, bins, frames).permute(0, 2, 3, 1).contiguous()
    padded = spectrum.new_zeros(spectrum.shape[0], n_fft // 2 + 1, frames, 2)
    padded[:, :bins] = spectrum
    audio = torch.istft(torch.view_as_complex(padded), n_fft, hop_length, window=window, center=True)
    return audio.reshape(*leading, parts // 2, -1)
