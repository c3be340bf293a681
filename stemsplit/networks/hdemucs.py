"""Hybrid Demucs (Demucs v3, the MDX 2021 generation), inference only.

Two U-Nets: one over the spectrogram, convolving along frequency until a single frequency
row is left, and one over the waveform. Where the time branch reaches the spectrogram's
stride it is added into the frequency branch, and the deepest layers run on that single
merged sequence; on the way up the branches part again at the same layer. The spectrogram
branch gives either the stems' complex spectrograms directly (complex as channels) or
magnitudes that take the mix's phase, optionally refined by multichannel Wiener filtering.

Layers are those of HT Demucs (networks/htdemucs.py); module and parameter names follow the
reference implementation so that its weight files load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import torch
from torch import Tensor, nn

from ..chunking import FittedSegments
from ..errors import ModelError
from .bands import BandSplit
from .htdemucs import DecoderLayer, EncoderLayer, FrequencyEmbedding, istft, stft
from .layers import describe
from .options import config_from_reference
from .wiener import wiener

# Reference constructor arguments that only matter for training or initialisation: accepted and ignored.
TRAINING_ONLY = frozenset({"end_iters", "emb_smooth", "rescale", "dconv_init"})
ONLY_SUPPORTED = {"hybrid": (True, "hybrid=False (a spectrogram-only network)")}


@dataclass(frozen=True)
class HDemucsConfig:
    """The shape of a Hybrid Demucs network, named as the reference's constructor arguments."""

    sources: tuple[str, ...]
    audio_channels: int = 2
    channels: int = 48
    channels_time: int | None = None
    growth: float = 2
    nfft: int = 4096
    wiener_iters: int = 0
    wiener_residual: bool = False
    cac: bool = True
    depth: int = 6
    rewrite: bool = True
    hybrid_old: bool = False
    multi_freqs: tuple[float, ...] = ()
    multi_freqs_depth: int = 2
    freq_emb: float = 0.2
    emb_scale: float = 10
    kernel_size: int = 8
    stride: int = 4
    time_stride: int = 2
    context: int = 1
    context_enc: int = 0
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: float = 4
    dconv_attn: int = 4
    dconv_lstm: int = 4
    samplerate: int = 44100
    segment: Fraction = Fraction(40)

    @classmethod
    def from_reference(cls, *args: object, **kwargs: object) -> HDemucsConfig:
        """The configuration the reference's constructor arguments describe (as weight files store them)."""
        config = config_from_reference(cls, args, kwargs, TRAINING_ONLY, ONLY_SUPPORTED)
        if config.multi_freqs and config.norm_starts < min(config.multi_freqs_depth, config.depth):
            raise ModelError("unsupported model options: multi_freqs with group norm in the split layers")
        return replace(config, sources=tuple(config.sources), multi_freqs=tuple(config.multi_freqs or ()),
                       segment=Fraction(config.segment).limit_denominator())

    @property
    def spectral_channels(self) -> int:
        """Channels per audio channel in the spectrogram branch: real and imaginary parts, or a magnitude."""
        return 2 if self.cac else 1


@dataclass(frozen=True)
class LayerShape:
    """One depth of the U-Nets: what its frequency-branch layers do and whether a time layer runs beside it."""

    index: int
    freq: bool  # convolving along frequency (else along time, after the merge)
    kernel_size: int
    stride: int
    pad: bool
    merges: bool  # its kernel spans all remaining frequencies: the time branch joins here
    band_split: bool
    freqs_out: int  # frequency rows it leaves


def layer_shapes(c: HDemucsConfig) -> list[LayerShape]:
    shapes, freqs = [], c.nfft // 2
    for index in range(c.depth):
        freq = freqs > 1
        merges = freq and freqs <= c.kernel_size
        kernel, stride = (c.kernel_size, c.stride) if freq else (2 * c.time_stride, c.time_stride)
        band_split = bool(c.multi_freqs) and index < c.multi_freqs_depth
        freqs_out = (1 if merges else freqs // c.stride) if freq else freqs
        shapes.append(LayerShape(index, freq, freqs if merges else kernel, stride, not merges, merges, band_split,
                                 freqs_out))
        freqs = freqs_out
    return shapes


def layer_options(c: HDemucsConfig, shape: LayerShape) -> tuple[dict, dict]:
    """Encoder and decoder layer options at one depth (both branches)."""
    dconv = {"depth": c.dconv_depth, "compress": c.dconv_comp, "init": 0.0,
             "lstm": shape.index >= c.dconv_lstm, "attn": shape.index >= c.dconv_attn}
    options = {"norm": shape.index >= c.norm_starts, "norm_groups": c.norm_groups, "rewrite": c.rewrite}
    encoder = {**options, "context": c.context_enc, "dconv": dconv if c.dconv_mode & 1 else None}
    decoder = {**options, "context": c.context, "dconv": dconv if c.dconv_mode & 2 else None,
               "last": shape.index == 0}
    return encoder, decoder


class HDemucs(nn.Module):
    """Hybrid Demucs, built from its configuration."""

    family = "hdemucs"

    def __init__(self, config: HDemucsConfig):
        super().__init__()
        describe(self, config, config.segment)
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()
        self.freq_emb = None
        self.build_unets(config)

    def build_unets(self, c: HDemucsConfig) -> None:
        """Both U-Nets, layer by layer: a frequency (or, past the merge, time) layer at every depth,
        a time layer beside it until the merge."""
        chin_t, chout_t = c.audio_channels, c.channels_time or c.channels
        chin, chout = c.spectral_channels * c.audio_channels, c.channels
        for shape in layer_shapes(c):
            if shape.merges:
                chout = chout_t = max(chout, chout_t)
            encoder, decoder = layer_options(c, shape)
            frequency = {"freq": shape.freq, "kernel_size": shape.kernel_size, "stride": shape.stride,
                         "pad": shape.pad}
            time = {"freq": False, "kernel_size": c.kernel_size, "stride": c.stride, "empty": shape.merges}
            self.encoder.append(self.wrapped(EncoderLayer(chin, chout, **frequency, **encoder), shape, c))
            if shape.freq:
                self.tencoder.append(EncoderLayer(chin_t, chout_t, **time, **encoder))
            if shape.index == 0:
                chin_t = c.audio_channels * len(c.sources)
                chin = c.spectral_channels * chin_t
            self.decoder.insert(0, self.wrapped(
                DecoderLayer(chout, chin, **frequency, **decoder, context_freq=not shape.band_split), shape, c))
            if shape.freq:
                self.tdecoder.insert(0, DecoderLayer(chout_t, chin_t, **time, **decoder))
            chin, chin_t = chout, chout_t
            chout, chout_t = int(c.growth * chout), int(c.growth * chout_t)
            if shape.index == 0 and c.freq_emb:
                self.freq_emb = FrequencyEmbedding(shape.freqs_out, chin, c.emb_scale)
                self.freq_emb_scale = c.freq_emb

    @staticmethod
    def wrapped(layer: nn.Module, shape: LayerShape, c: HDemucsConfig) -> nn.Module:
        return BandSplit(layer, c.multi_freqs) if shape.band_split else layer

    @property
    def chunking(self) -> FittedSegments:
        return FittedSegments(self.segment)

    def forward(self, mix: Tensor) -> Tensor:
        """(B, C, T) audio -> (B, len(sources), C, T) stems, for any T."""
        c = self.config
        length = mix.shape[-1]
        spec = stft(mix, c.nfft, zero_padded=c.hybrid_old)
        batch, audio_channels, freqs, frames = spec.shape
        if c.cac:
            x = torch.view_as_real(spec).permute(0, 1, 4, 2, 3).reshape(batch, 2 * audio_channels, freqs, frames)
        else:
            x = spec.abs()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        mean_t = mix.mean(dim=(1, 2), keepdim=True)
        std_t = mix.std(dim=(1, 2), keepdim=True)
        xt = (mix - mean_t) / (1e-5 + std_t)

        x, xt = self.unets(x, xt)

        sources = len(self.sources)
        x = x.view(batch, sources, -1, freqs, frames) * std[:, None] + mean[:, None]
        x = istft(self.spectrogram_of_stems(spec, x), length, unaligned=c.hybrid_old)
        xt = xt.view(batch, sources, -1, length) * std_t[:, None] + mean_t[:, None]
        return xt + x

    def unets(self, x: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised spectral and waveform inputs -> the two branches' outputs, still normalised."""
        skips, skips_t, lengths, lengths_t = [], [], [], []
        for index, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if index < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                xt = self.tencoder[index](xt)
                if self.tencoder[index].empty:
                    inject = xt
                else:
                    skips_t.append(xt)
            if not encode.freq and x.dim() == 4:  # past the merge: one frequency row left
                x = x.flatten(1, 2)
            x = encode(x, inject)
            if index == 0 and self.freq_emb is not None:
                x = x + self.freq_emb_scale * self.freq_emb()
            skips.append(x)

        x = torch.zeros_like(x)
        offset = len(self.decoder) - len(self.tdecoder)
        for index, decode in enumerate(self.decoder):
            if decode.freq and x.dim() == 3:
                x = x[:, :, None]
            decode_t = self.tdecoder[index - offset] if index >= offset else None
            if decode_t is not None and decode_t.empty:
                # Where the branches part, the time branch starts from the merged layer's input
                # to its transposed convolution.
                before = decode.refine(x, skips.pop())
                x = decode.expand(before, lengths.pop())
                xt = decode_t(before[:, :, 0], None, lengths_t.pop())
                continue
            x = decode(x, skips.pop(), lengths.pop())
            if decode_t is not None:
                xt = decode_t(xt, skips_t.pop(), lengths_t.pop())
        return x, xt

    def spectrogram_of_stems(self, mix: Tensor, out: Tensor) -> Tensor:
        """The stems' complex spectrograms (B, S, C, F, T) from the branch's output `out` (B, S, C', F, T)."""
        c = self.config
        if c.cac:
            out = out.view(*out.shape[:2], -1, 2, *out.shape[-2:])
            return torch.complex(out[:, :, :, 0], out[:, :, :, 1])
        if c.wiener_iters < 0:  # the magnitudes with the mix's phase
            mix = mix[:, None]
            return mix / (1e-8 + mix.abs()) * out
        return wiener(out, mix, c.wiener_iters, c.wiener_residual)

