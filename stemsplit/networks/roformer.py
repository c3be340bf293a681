"""Band-split RoFormers (BS-RoFormer and Mel-Band RoFormer), inference only.

The mixture's complex spectrogram is cut into frequency bands, each band projected to one
feature vector per frame. Transformers with rotary position embeddings then alternate
between attending across time (within a band) and across bands (within a frame). Per stem,
a small MLP per band turns the features back into a complex mask for that band's bins;
the masked spectrogram is turned back into audio.

BS-RoFormer uses contiguous bands of given widths. Mel-Band RoFormer uses overlapping bands
shaped like a mel filter bank; a bin's mask is the average over the bands that hold it.

Module and parameter names follow the community checkpoints, so they load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from .layers import Linear

ROTARY_THETA = 10000.0
RMS_EPS = 1e-24  # only keeps an all-zero vector at zero, as normalising by max(norm, tiny) does
FEED_FORWARD_EXPANSION = 4
# On a CPU a transformer runs on a few sequences at a time, about this many positions in all, so
# that each layer's activations stay in cache: a fifth faster than all at once, and equal to it.
CPU_POSITIONS_PER_BLOCK = 2048
# Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.
MEL_LINEAR_HZ_PER_MEL = 200.0 / 3
MEL_LOG_START_HZ = 1000.0
MEL_LOG_STEP = np.log(6.4) / 27.0


@dataclass(frozen=True)
class RoformerConfig:
    """Shape of a RoFormer. Exactly one of `freqs_per_bands` (BS-RoFormer: widths of
    contiguous bands, in STFT bins from low to high) and `num_bands` (Mel-Band RoFormer)
    is set."""

    dim: int
    depth: int
    freqs_per_bands: tuple[int, ...] | None = None
    num_bands: int | None = None
    stereo: bool = False
    num_stems: int = 2
    time_transformer_depth: int = 2
    freq_transformer_depth: int = 2
    dim_head: int = 64
    heads: int = 8
    mask_estimator_depth: int = 2
    mlp_expansion_factor: int = 4
    # Zero the DC bin of every stem's spectrogram before the inverse STFT.
    zero_dc: bool = False
    # Add the outputs of all earlier layers to each layer's input.
    skip_connection: bool = False
    sample_rate: int = 44100
    stft_n_fft: int = 2048
    stft_hop_length: int = 512
    stft_win_length: int = 2048
    stft_normalized: bool = False

    def __post_init__(self) -> None:
        if (self.freqs_per_bands is None) == (self.num_bands is None):
            raise ModelError("a RoFormer needs exactly one of freqs_per_bands and num_bands")
        if self.freqs_per_bands is not None:
            if len(self.freqs_per_bands) < 2 or sum(self.freqs_per_bands) != self.freqs:
                raise ModelError(f"freqs_per_bands must split the {self.freqs} STFT bins of "
                                 f"stft_n_fft={self.stft_n_fft} into at least 2 bands")
        elif self.num_bands < 2:
            raise ModelError("num_bands must be at least 2")
        else:
            mel_band_bins(self.num_bands, self.sample_rate, self.stft_n_fft)  # raises on an empty band
        if self.stft_win_length > self.stft_n_fft:
            raise ModelError(f"stft_win_length {self.stft_win_length} is longer than stft_n_fft {self.stft_n_fft}")

    @property
    def family(self) -> str:
        return "bs_roformer" if self.freqs_per_bands is not None else "mel_band_roformer"

    @property
    def freqs(self) -> int:
        return self.stft_n_fft // 2 + 1


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # x / ||x|| * sqrt(dim) is x / rms(x): one fused kernel instead of a norm, a division and two products.
        return F.rms_norm(x, (x.shape[-1],), self.gamma, eps=RMS_EPS)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, shared by every attention layer along one axis."""

    def __init__(self, dim_head: int):
        super().__init__()
        freqs = 1.0 / ROTARY_THETA ** (torch.arange(0, dim_head, 2).float() / dim_head)
        self.freqs = nn.Parameter(freqs, requires_grad=False)
        self.cache: tuple[tuple, Tensor] | None = None  # (length, device, which freqs), rotations

    def rotations(self, length: int, device: torch.device) -> Tensor:
        """(length, dim_head / 2) unit complex numbers, made once per length: every layer shares them."""
        # An inference tensor (weights loaded in inference mode) has no version counter; its storage names it.
        version = None if self.freqs.is_inference() else self.freqs._version
        key = (length, device, self.freqs.data_ptr(), version)
        if self.cache is None or self.cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # usable in and out of inference mode
                angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * self.freqs.float()
                self.cache = key, torch.polar(torch.ones_like(angles), angles)
        return self.cache[1]

    def forward(self, x: Tensor) -> Tensor:
        """Rotate each (even, odd) channel pair of x (..., positions, dim_head) by its angle, as a
        complex product."""
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * self.rotations(x.shape[-2], x.device)).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a sigmoid gate per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding):
        super().__init__()
        self.heads = heads
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = Linear(dim, heads)
        self.to_out = nn.Sequential(Linear(heads * dim_head, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        batch, length, _ = x.shape
        q, k, v = self.to_qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.rotary_embed(q), self.rotary_embed(k), v)
        out = out * self.to_gates(x).transpose(1, 2).unsqueeze(-1).sigmoid()
        return self.to_out(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        inner = dim * FEED_FORWARD_EXPANSION
        # The checkpoints number the layers as below; the GELU is applied fused into the first
        # product, and the identity holds the place of the training-time dropout.
        self.net = nn.Sequential(RMSNorm(dim), Linear(dim, inner), nn.GELU(), nn.Identity(),
                                 Linear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        norm, expand, _, _, project = self.net
        return project(expand(norm(x), "gelu"))


class Transformer(nn.Module):
    def __init__(self, config: RoformerConfig, depth: int, rotary_embed: RotaryEmbedding,
                 norm_output: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(config.dim, config.heads, config.dim_head, rotary_embed),
                           FeedForward(config.dim)])
            for _ in range(depth))
        self.norm = RMSNorm(config.dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(sequences, positions, dim) -> same: sequences are independent of each other."""
        if x.device.type != "cpu":
            return self.run(x)
        sequences_per_block = max(1, CPU_POSITIONS_PER_BLOCK // x.shape[1])
        return torch.cat([self.run(block) for block in x.split(sequences_per_block)])

    def run(self, x: Tensor) -> Tensor:
        for attention, feed_forward in self.layers:
            x = attention(x) + x
            x = feed_forward(x) + x
        return self.norm(x)


class BandSplit(nn.Module):
    """(batch, frames, sum of band widths) -> (batch, frames, bands, dim)."""

    def __init__(self, dim: int, band_widths: tuple[int, ...]):
        super().__init__()
        self.band_widths = band_widths
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(width), Linear(width, dim))
                                         for width in band_widths)

    def forward(self, x: Tensor) -> Tensor:
        bands = x.split(self.band_widths, dim=-1)
        return torch.stack([project(band) for project, band in zip(self.to_features, bands)], dim=-2)


class MLP(nn.Sequential):
    """Linear layers with a tanh between each two, numbered as the checkpoints number them."""

    def __init__(self, dim_in: int, dim_out: int, dim_hidden: int, hidden_layers: int):
        dims = [dim_in, *[dim_hidden] * hidden_layers, dim_out]
        layers: list[nn.Module] = []
        for layer_in, layer_out in zip(dims, dims[1:]):
            layers += [Linear(layer_in, layer_out), nn.Tanh()]
        super().__init__(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        *hidden, last = list(self)[::2]
        for linear in hidden:
            x = linear(x, "tanh")
        return last(x)


class MaskEstimator(nn.Module):
    """(batch, frames, bands, dim) -> (batch, frames, sum of band widths): one stem's mask."""

    def __init__(self, config: RoformerConfig, band_widths: tuple[int, ...], hidden_layers: int):
        super().__init__()
        dim_hidden = config.dim * config.mlp_expansion_factor
        self.to_freqs = nn.ModuleList(
            nn.Sequential(MLP(config.dim, 2 * width, dim_hidden, hidden_layers), nn.GLU(dim=-1))
            for width in band_widths)

    def forward(self, x: Tensor) -> Tensor:
        bands = x.unbind(dim=-2)
        return torch.cat([estimate(band) for estimate, band in zip(self.to_freqs, bands)], dim=-1)


class BandRoformer(nn.Module):
    """What both families share. Spectrograms are (batch, bins * channels, frames), bin-major:
    the channels of one bin sit next to each other. A band's width counts real and imaginary
    parts of every channel of its bins."""

    def __init__(self, config: RoformerConfig, band_widths: tuple[int, ...],
                 mask_hidden_layers: int, norm_transformer_output: bool):
        super().__init__()
        self.config = config
        self.samplerate = config.sample_rate
        self.audio_channels = 2 if config.stereo else 1
        time_rotary, freq_rotary = RotaryEmbedding(config.dim_head), RotaryEmbedding(config.dim_head)
        self.layers = nn.ModuleList(
            nn.ModuleList([
                Transformer(config, config.time_transformer_depth, time_rotary, norm_transformer_output),
                Transformer(config, config.freq_transformer_depth, freq_rotary, norm_transformer_output),
            ])
            for _ in range(config.depth))
        self.band_split = BandSplit(config.dim, band_widths)
        self.mask_estimators = nn.ModuleList(MaskEstimator(config, band_widths, mask_hidden_layers)
                                             for _ in range(config.num_stems))
        self.register_buffer("window", torch.hann_window(config.stft_win_length), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        """(batch, channels, samples) -> (batch, stems, channels, samples)."""
        spectrogram = self.stft(audio)
        x = self.band_split(self.band_inputs(spectrogram))
        x = self.final_norm(self.transform(x))
        masks = torch.stack([estimate(x) for estimate in self.mask_estimators], dim=1)
        masks = torch.view_as_complex(masks.unflatten(-1, (-1, 2)).transpose(2, 3))
        return self.istft(spectrogram.unsqueeze(1) * self.bin_masks(masks), audio.shape[-1])

    def transform(self, x: Tensor) -> Tensor:
        batch, frames, bands, dim = x.shape
        layer_outputs: list[Tensor] = []
        for time_transformer, freq_transformer in self.layers:
            if self.config.skip_connection:
                for earlier in layer_outputs:
                    x = x + earlier
            x = time_transformer(x.transpose(1, 2).reshape(batch * bands, frames, dim))
            x = x.view(batch, bands, frames, dim).transpose(1, 2)
            x = freq_transformer(x.reshape(batch * frames, bands, dim)).view(batch, frames, bands, dim)
            if self.config.skip_connection:
                layer_outputs.append(x)
        return x

    def stft(self, audio: Tensor) -> Tensor:
        batch, channels, samples = audio.shape
        config = self.config
        spectrogram = torch.stft(audio.reshape(batch * channels, samples), config.stft_n_fft,
                                 config.stft_hop_length, config.stft_win_length, self.window,
                                 normalized=config.stft_normalized, return_complex=True)
        return spectrogram.unflatten(0, (batch, channels)).transpose(1, 2).flatten(1, 2)

    def istft(self, spectrogram: Tensor, samples: int) -> Tensor:
        """(batch, stems, bins * channels, frames) -> (batch, stems, channels, samples)."""
        batch, stems = spectrogram.shape[:2]
        channels = self.audio_channels
        spectrogram = spectrogram.unflatten(2, (-1, channels)).transpose(2, 3).flatten(0, 2)
        if self.config.zero_dc:
            spectrogram = spectrogram.index_fill(1, torch.tensor([0], device=spectrogram.device), 0)
        config = self.config
        audio = torch.istft(spectrogram, config.stft_n_fft, config.stft_hop_length,
                            config.stft_win_length, self.window,
                            normalized=config.stft_normalized, length=samples)
        return audio.view(batch, stems, channels, samples)

    @staticmethod
    def as_band_input(spectrogram: Tensor) -> Tensor:
        """(batch, bins, frames) complex -> (batch, frames, bins * 2) real."""
        return torch.view_as_real(spectrogram).transpose(1, 2).flatten(2)


class BSRoformer(BandRoformer):
    def __init__(self, config: RoformerConfig):
        channels = 2 if config.stereo else 1
        band_widths = tuple(2 * channels * width for width in config.freqs_per_bands)
        super().__init__(config, band_widths, config.mask_estimator_depth - 1,
                         norm_transformer_output=False)
        self.final_norm = RMSNorm(config.dim)

    def band_inputs(self, spectrogram: Tensor) -> Tensor:
        return self.as_band_input(spectrogram)

    def bin_masks(self, masks: Tensor) -> Tensor:
        return masks


class MelBandRoformer(BandRoformer):
    def __init__(self, config: RoformerConfig):
        channels = 2 if config.stereo else 1
        bands = mel_band_bins(config.num_bands, config.sample_rate, config.stft_n_fft)
        band_widths = tuple(2 * channels * int(width) for width in bands.sum(dim=1))
        super().__init__(config, band_widths, config.mask_estimator_depth,
                         norm_transformer_output=True)
        self.final_norm = nn.Identity()
        bins = torch.arange(config.freqs).expand_as(bands)[bands]
        # Rows of the spectrogram each band reads, band after band, channels within a bin.
        rows = (bins[:, None] * channels + torch.arange(channels)).flatten()
        bands_per_row = bands.sum(dim=0).repeat_interleave(channels).float()
        self.register_buffer("band_rows", rows, persistent=False)
        self.register_buffer("bands_per_row", bands_per_row[:, None], persistent=False)

    def band_inputs(self, spectrogram: Tensor) -> Tensor:
        return self.as_band_input(spectrogram[:, self.band_rows])

    def bin_masks(self, masks: Tensor) -> Tensor:
        """Each row's mask is the mean of the masks of the bands holding it."""
        batch, stems, _, frames = masks.shape
        rows = self.band_rows[None, None, :, None].expand(batch, stems, -1, frames)
        summed = masks.new_zeros(batch, stems, len(self.bands_per_row), frames).scatter_add_(2, rows, masks)
        return summed / self.bands_per_row


def mel_band_bins(num_bands: int, sample_rate: int, n_fft: int) -> Tensor:
    """(bands, bins) bool: the STFT bins in each band, the support of a Slaney mel filter
    bank (triangles between neighbouring mel points from 0 Hz to Nyquist). The first band
    also holds the lowest bin and the last band the highest, so every bin is covered."""
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), num_bands + 2))
    widths = np.diff(points)
    offsets = points[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    bands = torch.from_numpy(np.minimum(rising, falling) > 0)
    bands[0, 0] = bands[-1, -1] = True
    if not (bands.any(dim=0).all() and bands.any(dim=1).all()):
        raise ModelError(f"num_bands={num_bands} does not fit stft_n_fft={n_fft}: "
                         "some band would hold no STFT bin")
    return bands


def hz_to_mel(hz: float) -> float:
    if hz < MEL_LOG_START_HZ:
        return hz / MEL_LINEAR_HZ_PER_MEL
    return MEL_LOG_START_HZ / MEL_LINEAR_HZ_PER_MEL + np.log(hz / MEL_LOG_START_HZ) / MEL_LOG_STEP


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    log_start_mel = MEL_LOG_START_HZ / MEL_LINEAR_HZ_PER_MEL
    hz = MEL_LINEAR_HZ_PER_MEL * mels
    logarithmic = mels >= log_start_mel
    hz[logarithmic] = MEL_LOG_START_HZ * np.exp(MEL_LOG_STEP * (mels[logarithmic] - log_start_mel))
    return hz


NETWORKS = {"bs_roformer": BSRoformer, "mel_band_roformer": MelBandRoformer}


def roformer(config: RoformerConfig) -> BandRoformer:
    """The network of the config's family, with initial weights."""
    return NETWORKS[config.family](config)
