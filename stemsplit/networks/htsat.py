"""CLAP's audio tower as AudioSep conditions on it: HTSAT (a Swin Transformer over a log-mel
spectrogram, non-fused) and CLAP's projection to the joint space, normalised (laion-clap's
`get_audio_embedding` of a clip prepared as its `get_audio_features` prepares one).

The log-mel front end is written here in torch (torch.stft, a Slaney mel filter bank): it computes
what laion-clap's torchlibrosa Spectrogram and LogmelFilterBank compute, without librosa.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Linear
from .roformer import hz_to_mel, mel_to_hz

POWER_FLOOR = 1e-10  # torchlibrosa's amin: the log of silence is -100 dB
SHIFTED_OUT = -100.0  # the attention score HTSAT adds between positions a cyclic shift made neighbours


@dataclass(frozen=True)
class HtsatConfig:
    """HTSAT's shape and its mel front end; the defaults are CLAP's HTSAT-base (AudioSep's)."""

    sample_rate: int = 48000
    clip_samples: int = 480000
    window_size: int = 1024
    hop_size: int = 480
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    spec_size: int = 256
    patch_size: int = 4
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 12, 2)
    heads: tuple[int, ...] = (4, 8, 16, 32)
    window: int = 8
    mlp_ratio: float = 4.0
    joint_dim: int = 512

    @property
    def freq_ratio(self) -> int:
        """How many slices of time are stacked along frequency to make the square image."""
        return self.spec_size // self.mel_bins

    @property
    def features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


def clip_for_tower(wave: Tensor, clip_samples: int) -> Tensor:
    """A mono wave (samples,) made exactly `clip_samples` long as laion-clap's get_audio_features
    (`repeatpad`) does: a shorter one repeated as many whole times as fit, then zero-padded. A longer
    one is cut to its first `clip_samples` (laion-clap cuts at a random place)."""
    if len(wave) >= clip_samples:
        return wave[:clip_samples]
    repeated = wave.repeat(clip_samples // len(wave))
    return F.pad(repeated, (0, clip_samples - len(repeated)))


def slaney_mel_filters(config: HtsatConfig) -> Tensor:
    """(bins, mel_bins) float32: librosa's default mel filter bank (Slaney's scale, area-normalised)."""
    bin_hz = np.fft.rfftfreq(config.window_size, 1.0 / config.sample_rate)
    points = mel_to_hz(np.linspace(hz_to_mel(config.fmin), hz_to_mel(config.fmax), config.mel_bins + 2))
    widths = np.diff(points)
    offsets = points[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (points[2:] - points[:-2]))[:, None]
    return torch.from_numpy(triangles.astype(np.float32).T.copy())


class LogMel(nn.Module):
    """Waves (batch, samples) -> log-mel power (batch, 1, frames, mel_bins) in dB: a centred STFT
    (reflect-padded, periodic Hann), its power through the mel filter bank."""

    def __init__(self, config: HtsatConfig):
        super().__init__()
        self.hop = config.hop_size
        self.register_buffer("window", torch.hann_window(config.window_size), persistent=False)
        self.register_buffer("filters", slaney_mel_filters(config), persistent=False)

    def forward(self, waves: Tensor) -> Tensor:
        spectrum = torch.stft(waves, len(self.window), self.hop, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).transpose(1, 2)
        return 10.0 * torch.log10(torch.clamp(power @ self.filters, min=POWER_FLOOR))[:, None]


def relative_position_index(window: int) -> Tensor:
    """(window², window²): for each pair of positions in a window, the row of their offset in the bias table."""
    rows, columns = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coordinates = torch.stack([rows.flatten(), columns.flatten()])
    offsets = coordinates[:, :, None] - coordinates[:, None, :] + (window - 1)
    return offsets[0] * (2 * window - 1) + offsets[1]


def shifted_window_mask(size: int, window: int, shift: int) -> Tensor:
    """(windows, window², window²): 0 within a region of the shifted image, SHIFTED_OUT across regions."""
    regions = torch.zeros(size, size)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for row, rows in enumerate(bounds):
        for column, columns in enumerate(bounds):
            regions[rows, columns] = 3 * row + column
    labels = partition(regions[None, :, :, None], window).flatten(1)
    return (labels[:, None, :] != labels[:, :, None]).float() * SHIFTED_OUT


def partition(x: Tensor, window: int) -> Tensor:
    """(batch, H, W, C) -> (batch * windows, window, window, C)."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels)


def unpartition(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


class WindowAttention(nn.Module):
    """Multi-head attention within each window, with a learnt bias per relative offset."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_index", relative_position_index(window), persistent=False)
        self.qkv = Linear(dim, dim * 3)
        self.proj = Linear(dim, dim)

    def forward(self, windows: Tensor, batch: int, mask: Tensor | None) -> Tensor:
        """windows (batch * n, positions, dim) -> the same shape."""
        count, positions, dim = windows.shape
        qkv = self.qkv(windows).view(batch, count // batch, positions, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (batch, n, heads, positions, head_dim)
        bias = self.relative_position_bias_table[self.relative_index].permute(2, 0, 1)
        bias = bias if mask is None else bias + mask[:, None]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(attended.transpose(2, 3).reshape(count, positions, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = Linear(dim, hidden), Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x, "gelu"))


class SwinBlock(nn.Module):
    """Attention within windows (cyclically shifted by half a window in every other block), then an MLP."""

    def __init__(self, dim: int, heads: int, size: int, window: int, shifted: bool, mlp_ratio: float):
        super().__init__()
        self.size, self.window = size, min(window, size)
        self.shift = window // 2 if shifted and size > window else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, self.window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(size, self.window, self.shift) if self.shift else None
        self.register_buffer("shift_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, dim = x.shape
        image = self.norm1(x).view(batch, self.size, self.size, dim)
        image = torch.roll(image, (-self.shift, -self.shift), (1, 2)) if self.shift else image
        windows = partition(image, self.window).view(-1, self.window ** 2, dim)
        attended = self.attn(windows, batch, self.shift_mask).view(-1, self.window, self.window, dim)
        image = unpartition(attended, self.window, self.size, self.size)
        image = torch.roll(image, (self.shift, self.shift), (1, 2)) if self.shift else image
        x = x + image.reshape(batch, -1, dim)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Each 2 x 2 group of positions -> one position of twice the width."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.size = size
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, dim = x.shape
        image = x.view(batch, self.size, self.size, dim)
        quarters = [image[:, 0::2, 0::2], image[:, 1::2, 0::2], image[:, 0::2, 1::2], image[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(quarters, -1).view(batch, -1, 4 * dim)))


class SwinStage(nn.Module):
    def __init__(self, config: HtsatConfig, stage: int):
        super().__init__()
        dim, size = config.embed_dim * 2 ** stage, config.spec_size // config.patch_size // 2 ** stage
        self.blocks = nn.ModuleList(
            SwinBlock(dim, config.heads[stage], size, config.window, index % 2 == 1, config.mlp_ratio)
            for index in range(config.depths[stage]))
        self.downsample = PatchMerging(dim, size) if stage < len(config.depths) - 1 else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, config: HtsatConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, config.embed_dim, config.patch_size, stride=config.patch_size)
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, image: Tensor) -> Tensor:
        return self.norm(self.proj(image).flatten(2).transpose(1, 2))


class Htsat(nn.Module):
    """Waves (batch, clip_samples) at sample_rate -> HTSAT's clip embedding (batch, features): the mean
    of the last stage's normalised positions."""

    def __init__(self, config: HtsatConfig):
        super().__init__()
        self.config = config
        self.log_mel = LogMel(config)
        self.bn0 = nn.BatchNorm2d(config.mel_bins)
        self.patch_embed = PatchEmbed(config)
        self.layers = nn.ModuleList(SwinStage(config, stage) for stage in range(len(config.depths)))
        self.norm = nn.LayerNorm(config.features)

    def forward(self, waves: Tensor) -> Tensor:
        mel = self.bn0(self.log_mel(waves).transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(self.image(mel))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)

    def image(self, mel: Tensor) -> Tensor:
        """(batch, 1, frames, mel_bins) -> (batch, 1, spec_size, spec_size): the frames stretched (bicubic)
        to freq_ratio * spec_size, cut into freq_ratio slices of time stacked along frequency."""
        ratio, size = self.config.freq_ratio, self.config.spec_size
        mel = F.interpolate(mel, (ratio * size, mel.shape[3]), mode="bicubic", align_corners=True)
        batch, _, _, bins = mel.shape
        slices = mel.transpose(2, 3).reshape(batch, 1, bins, ratio, size)
        return slices.transpose(2, 3).reshape(batch, 1, ratio * bins, size)


class ClapAudioTower(nn.Module):
    """Waves (batch, clip_samples) at 48 kHz -> CLAP audio embeddings (batch, joint_dim), of unit length."""

    def __init__(self, config: HtsatConfig):
        super().__init__()
        self.config = config
        self.htsat = Htsat(config)
        self.projection = nn.Sequential(Linear(config.features, config.joint_dim), nn.ReLU(),
                                        Linear(config.joint_dim, config.joint_dim))

    def forward(self, waves: Tensor) -> Tensor:
        return F.normalize(self.projection(self.htsat(waves)), dim=-1)
