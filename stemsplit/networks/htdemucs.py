"""Hybrid Transformer Demucs (Demucs v4), inference only.

Two U-Nets run side by side: one over the complex spectrogram (real and imaginary
parts as channels), convolving along frequency, and one over the waveform. At the
bottom a transformer mixes them, alternating self-attention within each branch and
cross-attention between them. The spectrogram branch is turned back into audio and
added to the waveform branch.

Module and parameter names follow the reference implementation so that its weight
files load unchanged.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..chunking import CentredSegments
from ..errors import ModelError
from .layers import Linear, describe, linear
from .sequence import BLSTM, LocalState


def sin_embedding(length: int, dim: int, max_period: float, device: torch.device) -> Tensor:
    """(length, dim) positions: cosines in the first half of the channels, sines in the second."""
    half = dim // 2
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    periods = max_period ** (torch.arange(half, device=device) / (half - 1))
    angles = positions / periods
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def sin_embedding_2d(height: int, width: int, dim: int, max_period: float, device: torch.device) -> Tensor:
    """(width * height, dim) positions of a (height, width) grid, flattened width-major.

    The first half of the channels encodes the column, the second half the row, each as
    interleaved (sin, cos) pairs.
    """
    half = dim // 2
    inverse_periods = torch.exp(torch.arange(0.0, half, 2, device=device) * -(math.log(max_period) / half))

    def interleaved(count: int) -> Tensor:
        angles = torch.arange(count, device=device, dtype=torch.float32)[:, None] * inverse_periods
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)

    columns = interleaved(width)[:, None, :].expand(width, height, half)
    rows = interleaved(height)[None, :, :].expand(width, height, half)
    return torch.cat([columns, rows], dim=-1).reshape(width * height, dim)


@functools.lru_cache(maxsize=8)
def positions(freqs: int, frames: int, length: int, dim: int, max_period: float, weight: float,
              device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Weighted position embeddings of the spectral grid and of the time sequence, made once per shape."""
    # Cached tensors made in inference mode could not be used outside it.
    with torch.inference_mode(False):
        grid = weight * sin_embedding_2d(freqs, frames, dim, max_period, device)
        sequence = weight * sin_embedding(length, dim, max_period, device)
        return grid.to(dtype), sequence.to(dtype)


def reflect_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Reflect padding that also works on signals no longer than the padding: those are first
    extended with zeros (on the right as far as the right padding allows) until it fits."""
    length = x.shape[-1]
    short = max(left, right) - length + 1
    if short > 0:
        extra_right = min(right, short)
        x = F.pad(x, (short - extra_right, extra_right))
        left, right = left - (short - extra_right), right - extra_right
    return F.pad(x, (left, right), mode="reflect")


def stft(audio: Tensor, nfft: int, zero_padded: bool = False) -> Tensor:
    """Complex spectrogram (..., nfft // 2, ceil(T / hop)) with hop nfft // 4, Nyquist bin dropped.

    The signal is reflect-padded (zero-padded for `zero_padded`) so that frame k starts at sample
    (k - 1.5) * hop: the frame count is exactly the length divided by the hop, as for every
    strided layer.
    """
    hop = nfft // 4
    *batch, length = audio.shape
    frames = math.ceil(length / hop)
    pad = hop // 2 * 3
    flat, padding = audio.reshape(-1, length), (pad, pad + frames * hop - length)
    padded = F.pad(flat, padding) if zero_padded else reflect_pad(flat, *padding)
    window = torch.hann_window(nfft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(padded, nfft, hop, window=window, normalized=True, center=False, return_complex=True)
    return spec[:, :-1, :].reshape(*batch, nfft // 2, frames)


def istft(spec: Tensor, length: int, unaligned: bool = False) -> Tensor:
    """Inverse of `stft`: (..., F, frames) complex -> (..., length) audio.

    `unaligned` reproduces the padding bug some MDX 2021 hybrids were trained with: the
    audio is taken from the start of the inverse, 1.5 hops before where `stft` began.
    """
    *batch, freqs, frames = spec.shape
    nfft = 2 * freqs
    hop = nfft // 4
    pad = 0 if unaligned else hop // 2 * 3
    # A zero Nyquist bin, and two empty frames at each end so that centred frame k + 2 lands
    # where `stft` took frame k.
    spec = F.pad(spec.reshape(-1, freqs, frames), (2, 2, 0, 1))
    window = torch.hann_window(nfft, device=spec.device, dtype=spec.real.dtype)
    audio = torch.istft(spec, nfft, hop, window=window, normalized=True, center=True,
                        length=hop * math.ceil(length / hop) + 2 * pad)
    return audio[:, pad:pad + length].reshape(*batch, length)


def optional_group_norm(enabled: bool, groups: int, channels: int) -> nn.Module:
    return nn.GroupNorm(groups, channels) if enabled else nn.Identity()


def token_norm(dim: int, group_norm: bool) -> nn.Module:
    return TokenGroupNorm(dim) if group_norm else nn.LayerNorm(dim)


class LayerScale(nn.Module):
    """Learned per-channel gain on a residual branch."""

    def __init__(self, channels: int, init: float, channels_last: bool):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), init))
        self.channels_last = channels_last

    def add_to(self, x: Tensor, branch: Tensor) -> Tensor:
        """`x + scale * branch` in one pass; the scale takes the branch's dtype, so that under
        autocast a half-precision residual stays half."""
        scale = self.scale if self.channels_last else self.scale[:, None]
        return torch.addcmul(x, branch, scale.to(branch.dtype))


class DConvLayer(nn.Sequential):
    """Dilated convolution, norm, GELU, 1x1 convolution, norm, GLU: a layer-scaled residual branch."""

    def forward(self, x: Tensor) -> Tensor:
        *body, scale = self
        branch = x
        for module in body:
            branch = module(branch)
        return scale.add_to(x, branch)


class DConv(nn.Module):
    """Residual stack of dilated convolutions over time, in a compressed channel space."""

    def __init__(self, channels: int, depth: int, compress: float, init: float, lstm: bool = False,
                 attn: bool = False):
        """`lstm` and `attn` (the Demucs v3 generation's deepest layers) add a windowed BLSTM and
        local attention after the GELU."""
        super().__init__()
        hidden = int(channels / compress)
        self.layers = nn.ModuleList()
        for index in range(abs(depth)):
            dilation = 2**index if depth > 0 else 1
            sequence = [BLSTM(hidden, layers=2, max_steps=200, skip=True)] if lstm else []
            sequence += [LocalState(hidden)] if attn else []
            self.layers.append(DConvLayer(
                nn.Conv1d(channels, hidden, 3, dilation=dilation, padding=dilation),
                nn.GroupNorm(1, hidden),
                nn.GELU(),
                *sequence,
                nn.Conv1d(hidden, 2 * channels, 1),
                nn.GroupNorm(1, 2 * channels),
                nn.GLU(1),
                LayerScale(channels, init, channels_last=False),
            ))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T), or (B, C, F, T) where each frequency row is processed on its own."""
        spectral = x.dim() == 4
        if spectral:
            batch, channels, freqs, frames = x.shape
            x = x.permute(0, 2, 1, 3).reshape(batch * freqs, channels, frames)
        for layer in self.layers:
            x = layer(x)
        if spectral:
            x = x.view(batch, freqs, channels, frames).permute(0, 2, 1, 3)
        return x


class EncoderLayer(nn.Module):
    """Strided convolution (along frequency when `freq`), GELU, DConv, GLU rewrite.

    `pad=False`: no padding (a layer whose kernel spans all the frequencies left); `empty`: the
    convolution alone (a time layer whose output joins the frequency branch).
    """

    def __init__(self, chin: int, chout: int, *, freq: bool, kernel_size: int, stride: int, norm: bool,
                 norm_groups: int, context: int, rewrite: bool, dconv: dict | None, pad: bool = True,
                 empty: bool = False):
        super().__init__()
        self.freq = freq
        self.stride = stride
        self.empty = empty
        pad = kernel_size // 4 if pad else 0
        if freq:
            self.conv = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1), (pad, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, pad)
        if empty:
            return
        self.norm1 = optional_group_norm(norm, norm_groups, chout)
        self.dconv = DConv(chout, **dconv) if dconv else None
        self.rewrite = None
        if rewrite:
            conv = nn.Conv2d if freq else nn.Conv1d
            self.rewrite = conv(chout, 2 * chout, 1 + 2 * context, 1, context)
            self.norm2 = optional_group_norm(norm, norm_groups, 2 * chout)

    def forward(self, x: Tensor, inject: Tensor | None = None) -> Tensor:
        """`inject`: the time branch's output, added after the convolution where the branches merge."""
        if not self.freq:
            x = F.pad(x, (0, -x.shape[-1] % self.stride))
        x = self.conv(x)
        if self.empty:
            return x
        if inject is not None:
            x = x + (inject[:, :, None] if x.dim() > inject.dim() else inject)
        x = F.gelu(self.norm1(x))
        if self.dconv is not None:
            x = self.dconv(x)
        if self.rewrite is not None:
            x = F.glu(self.norm2(self.rewrite(x)), dim=1)
        return x


class DecoderLayer(nn.Module):
    """Adds the skip connection, GLU rewrite, DConv, then a transposed strided convolution.

    `pad`, `empty` as for EncoderLayer (an empty layer is the transposed convolution alone);
    `context_freq=False`: the rewrite sees context along time only.
    """

    def __init__(self, chin: int, chout: int, *, freq: bool, last: bool, kernel_size: int, stride: int,
                 norm: bool, norm_groups: int, context: int, rewrite: bool, dconv: dict | None, pad: bool = True,
                 empty: bool = False, context_freq: bool = True):
        super().__init__()
        self.freq = freq
        self.last = last
        self.stride = stride
        self.pad = kernel_size // 4 if pad else 0
        if freq:
            self.conv_tr = nn.ConvTranspose2d(chin, chout, (kernel_size, 1), (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
        self.norm2 = optional_group_norm(norm, norm_groups, chout)
        self.empty = empty
        if empty:
            return
        self.rewrite = None
        if rewrite:
            conv = nn.Conv2d if freq else nn.Conv1d
            kernel, padding = (1 + 2 * context, context) if context_freq else ((1, 1 + 2 * context), (0, context))
            self.rewrite = conv(chin, 2 * chin, kernel, 1, padding)
            self.norm1 = optional_group_norm(norm, norm_groups, 2 * chin)
        self.dconv = DConv(chin, **dconv) if dconv else None

    def forward(self, x: Tensor, skip: Tensor | None, length: int | None = None) -> Tensor:
        """`length`: samples to keep (time layers); frequency layers trim their padding on both sides."""
        return self.expand(self.refine(x, skip), length)

    def refine(self, x: Tensor, skip: Tensor | None) -> Tensor:
        """Everything before the transposed convolution (where a hybrid's branches part)."""
        if self.empty:
            return x
        x = x + skip
        if self.rewrite is not None:
            x = F.glu(self.norm1(self.rewrite(x)), dim=1)
        if self.dconv is not None:
            x = self.dconv(x)
        return x

    def expand(self, x: Tensor, length: int | None = None) -> Tensor:
        x = self.norm2(self.conv_tr(x))
        if self.freq:
            x = x[:, :, self.pad:x.shape[2] - self.pad]
        else:
            x = x[..., self.pad:self.pad + length]
        return x if self.last else F.gelu(x)


class FrequencyEmbedding(nn.Module):
    """A learned vector per frequency row, stored divided by `scale`."""

    def __init__(self, freqs: int, channels: int, scale: float):
        super().__init__()
        self.embedding = nn.Embedding(freqs, channels)
        self.scale = scale

    def forward(self) -> Tensor:
        """(channels, freqs, 1), to add to a (B, channels, freqs, T) activation."""
        return (self.embedding.weight * self.scale).t()[:, :, None]


class TokenGroupNorm(nn.GroupNorm):
    """Single-group norm over all tokens and channels of a (B, T, C) sequence."""

    def __init__(self, channels: int):
        super().__init__(1, channels)

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(x, x.shape[-2:], eps=self.eps)
        return torch.addcmul(self.bias.to(normed.dtype), normed, self.weight.to(normed.dtype))


def attention(q: Tensor, k: Tensor, v: Tensor, block: int = 1024) -> Tensor:
    """softmax(q kᵀ / √d) v over (B, heads, T, d) tensors.

    PyTorch's fused CPU kernel computes bfloat16 in float32, no faster than float32 itself,
    so on CPU bfloat16 goes through plain matmuls, which run at bfloat16 speed. Their scores
    are rounded to bfloat16, an error of the order that the bfloat16 queries and keys already
    carry. Blocks of queries bound the memory the scores take.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v)
    keys = k.transpose(-1, -2) * k.shape[-1] ** -0.5
    return torch.cat([torch.softmax(rows @ keys, dim=-1) @ v for rows in q.split(block, dim=2)], dim=2)


class Attention(nn.Module):
    """Multi-head attention laid out like nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        """Attend from `x` (B, T, C) to `memory` (B, S, C), or to `x` itself when None."""
        dim = x.shape[-1]
        if memory is None:
            q, k, v = linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = linear(x, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
            k, v = linear(memory, self.in_proj_weight[dim:], self.in_proj_bias[dim:]).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TransformerLayer(nn.Module):
    """Attention then feed-forward, each a layer-scaled residual, with norms first or after."""

    def __init__(self, dim: int, hidden: int, *, norm_first: bool, norm_out: bool, group_norm: bool,
                 layer_scale: bool, gelu: bool):
        super().__init__()
        self.linear1 = Linear(dim, hidden)
        self.linear2 = Linear(hidden, dim)
        self.norm1 = token_norm(dim, group_norm)
        self.norm2 = token_norm(dim, group_norm)
        self.norm_first = norm_first
        self.norm_out = TokenGroupNorm(dim) if norm_first and norm_out else None
        self.gamma_1 = LayerScale(dim, 1e-4, channels_last=True) if layer_scale else None
        self.gamma_2 = LayerScale(dim, 1e-4, channels_last=True) if layer_scale else None
        self.activation = "gelu" if gelu else "relu"

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.linear1(x, self.activation))

    @staticmethod
    def residual(x: Tensor, branch: Tensor, gain: LayerScale | None) -> Tensor:
        return x + branch if gain is None else gain.add_to(x, branch)


class SelfAttentionLayer(TransformerLayer):
    def __init__(self, dim: int, heads: int, hidden: int, **options):
        super().__init__(dim, hidden, **options)
        self.self_attn = Attention(dim, heads)

    def forward(self, x: Tensor) -> Tensor:
        if not self.norm_first:
            x = self.norm1(self.residual(x, self.self_attn(x), self.gamma_1))
            return self.norm2(self.residual(x, self.feed_forward(x), self.gamma_2))
        x = self.residual(x, self.self_attn(self.norm1(x)), self.gamma_1)
        x = self.residual(x, self.feed_forward(self.norm2(x)), self.gamma_2)
        return x if self.norm_out is None else self.norm_out(x)


class CrossAttentionLayer(TransformerLayer):
    def __init__(self, dim: int, heads: int, hidden: int, **options):
        super().__init__(dim, hidden, **options)
        self.cross_attn = Attention(dim, heads)
        self.norm3 = token_norm(dim, options["group_norm"])

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        if not self.norm_first:
            x = self.norm1(self.residual(x, self.cross_attn(x, memory), self.gamma_1))
            return self.norm2(self.residual(x, self.feed_forward(x), self.gamma_2))
        x = self.residual(x, self.cross_attn(self.norm1(x), self.norm2(memory)), self.gamma_1)
        x = self.residual(x, self.feed_forward(self.norm3(x)), self.gamma_2)
        return x if self.norm_out is None else self.norm_out(x)


class CrossTransformer(nn.Module):
    """Layers alternate: each branch attends to itself, then each attends to the other."""

    def __init__(self, dim: int, layers: int, heads: int, hidden_scale: float, *, cross_first: bool,
                 norm_in: bool, norm_in_group: bool, max_period: float, weight_pos_embed: float, **options):
        super().__init__()
        self.max_period = max_period
        self.weight_pos_embed = weight_pos_embed
        self.cross_parity = 0 if cross_first else 1
        if norm_in:
            self.norm_in, self.norm_in_t = nn.LayerNorm(dim), nn.LayerNorm(dim)
        elif norm_in_group:
            self.norm_in, self.norm_in_t = TokenGroupNorm(dim), TokenGroupNorm(dim)
        else:
            self.norm_in, self.norm_in_t = nn.Identity(), nn.Identity()
        hidden = int(dim * hidden_scale)
        self.layers = nn.ModuleList()
        self.layers_t = nn.ModuleList()
        for index in range(layers):
            kind = CrossAttentionLayer if index % 2 == self.cross_parity else SelfAttentionLayer
            self.layers.append(kind(dim, heads, hidden, **options))
            self.layers_t.append(kind(dim, heads, hidden, **options))

    def forward(self, x: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, F, T1) spectral features; xt: (B, C, T2) temporal features."""
        batch, channels, freqs, frames = x.shape
        # Under autocast the residual streams stay in the weights' float32: they are small, and
        # rounding them to half precision costs more accuracy than anywhere else in the network.
        dtype = self.layers[0].linear1.weight.dtype
        x = x.permute(0, 3, 2, 1).reshape(batch, frames * freqs, channels).to(dtype)
        xt = xt.transpose(1, 2).to(dtype)
        pos, pos_t = positions(freqs, frames, xt.shape[1], channels, self.max_period, self.weight_pos_embed,
                               x.device, x.dtype)
        x = self.norm_in(x) + pos
        xt = self.norm_in_t(xt) + pos_t
        for index, (layer, layer_t) in enumerate(zip(self.layers, self.layers_t)):
            if index % 2 == self.cross_parity:
                x, xt = layer(x, xt), layer_t(xt, x)
            else:
                x, xt = layer(x), layer_t(xt)
        x = x.reshape(batch, frames, freqs, channels).permute(0, 3, 2, 1)
        return x, xt.transpose(1, 2)


# Reference constructor arguments that only matter for training, or for initialisation: accepted and ignored.
TRAINING_ONLY = frozenset({
    "wiener_iters", "end_iters", "wiener_residual", "time_stride", "multi_freqs_depth", "emb_smooth", "rescale",
    "t_dropout", "t_max_positions", "t_weight_decay", "t_lr", "t_cape_mean_normalize", "t_cape_augment",
    "t_cape_glob_loc_scale", "t_mask_type", "t_mask_random_seed", "t_sparse_attn_window", "t_global_window",
    "t_sparsity", "t_auto_sparsity",
})
# Reference arguments whose other values change the network in ways not implemented here: value, why.
ONLY_SUPPORTED = {
    "cac": (True, "cac=False (magnitude masks with Wiener filtering)"),
    "multi_freqs": (None, "multi_freqs (split frequency bands)"),
    "t_emb": ("sin", "t_emb={value!r} (only 'sin')"),
    "t_sparse_self_attn": (False, "sparse attention"),
    "t_sparse_cross_attn": (False, "sparse attention"),
    "t_sin_random_shift": (0, "t_sin_random_shift (random positions)"),
    "use_train_segment": (True, "use_train_segment=False"),
}


@dataclass(frozen=True)
class HTDemucsConfig:
    """The shape of an HT Demucs network, named as the reference's constructor arguments."""

    sources: tuple[str, ...]
    audio_channels: int = 2
    channels: int = 48
    growth: int = 2
    nfft: int = 4096
    depth: int = 4
    rewrite: bool = True
    freq_emb: float = 0.2
    emb_scale: float = 10
    kernel_size: int = 8
    stride: int = 4
    context: int = 1
    context_enc: int = 0
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: float = 8
    dconv_init: float = 1e-3
    bottom_channels: int = 0
    t_layers: int = 5
    t_hidden_scale: float = 4.0
    t_heads: int = 8
    t_norm_in: bool = True
    t_norm_in_group: bool = False
    t_group_norm: bool = False
    t_norm_first: bool = True
    t_norm_out: bool = True
    t_max_period: float = 10000.0
    t_weight_pos_embed: float = 1.0
    t_layer_scale: bool = True
    t_gelu: bool = True
    t_cross_first: bool = False
    samplerate: int = 44100
    segment: Fraction = Fraction(10)

    @classmethod
    def from_reference(cls, *args: object, **kwargs: object) -> HTDemucsConfig:
        """The configuration the reference's constructor arguments describe (as weight files store them)."""
        if len(args) > 1:
            raise ModelError("only `sources` may be given by position")
        kwargs = {**dict(zip(["sources"], args)), **kwargs, "multi_freqs": kwargs.get("multi_freqs") or None}
        names = {field.name for field in fields(cls)}
        unknown = kwargs.keys() - names - TRAINING_ONLY - ONLY_SUPPORTED.keys() - {"channels_time"}
        if unknown:
            raise ModelError(f"unknown model options: {', '.join(sorted(unknown))}")
        reasons = [why.format(value=kwargs[key]) for key, (value, why) in ONLY_SUPPORTED.items()
                   if kwargs.get(key, value) != value]
        if kwargs.get("channels_time") not in (None, kwargs.get("channels", 48)):
            reasons.append("channels_time different from channels")
        try:
            config = cls(**{key: value for key, value in kwargs.items() if key in names})
        except TypeError as error:
            raise ModelError(f"incomplete model options: {error}") from error
        if config.nfft // 2 // config.stride ** (config.depth - 1) <= config.kernel_size:
            reasons.append("so few frequencies that the two branches merge before the transformer")
        if reasons:
            raise ModelError(f"unsupported model options: {'; '.join(dict.fromkeys(reasons))}")
        return replace(config, sources=tuple(config.sources), segment=Fraction(config.segment).limit_denominator())


class HTDemucs(nn.Module):
    """Hybrid Transformer Demucs, built from its configuration."""

    family = "htdemucs"

    def __init__(self, config: HTDemucsConfig):
        super().__init__()
        describe(self, config, config.segment)
        self.nfft = config.nfft
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()
        self.freq_emb = None
        width = self.build_unets(config)
        self.build_bottom(config, width)

    def build_unets(self, c: HTDemucsConfig) -> int:
        """Both U-Nets, layer by layer; returns the width at their bottom."""
        dconv = {"depth": c.dconv_depth, "compress": c.dconv_comp, "init": c.dconv_init}
        chin, chout = c.audio_channels, c.channels
        for index in range(c.depth):
            options = {"kernel_size": c.kernel_size, "stride": c.stride, "norm": index >= c.norm_starts,
                       "norm_groups": c.norm_groups, "rewrite": c.rewrite}
            encoder_options = {**options, "context": c.context_enc, "dconv": dconv if c.dconv_mode & 1 else None}
            decoder_options = {**options, "context": c.context, "dconv": dconv if c.dconv_mode & 2 else None,
                               "last": index == 0}
            # The spectrogram enters and leaves with real and imaginary parts as separate channels.
            complex_channels = 2 if index == 0 else 1
            restored = c.audio_channels * len(c.sources) if index == 0 else chin
            self.encoder.append(EncoderLayer(complex_channels * chin, chout, freq=True, **encoder_options))
            self.tencoder.append(EncoderLayer(chin, chout, freq=False, **encoder_options))
            self.decoder.insert(0, DecoderLayer(chout, complex_channels * restored, freq=True, **decoder_options))
            self.tdecoder.insert(0, DecoderLayer(chout, restored, freq=False, **decoder_options))
            if index == 0 and c.freq_emb:
                self.freq_emb = FrequencyEmbedding(c.nfft // 2 // c.stride, chout, c.emb_scale)
                self.freq_emb_scale = c.freq_emb
            chin, chout = chout, int(c.growth * chout)
        return chin

    def build_bottom(self, c: HTDemucsConfig, width: int) -> None:
        """The cross-domain transformer, with 1x1 convolutions to its own width if it has one."""
        if c.bottom_channels:
            self.channel_upsampler = nn.Conv1d(width, c.bottom_channels, 1)
            self.channel_downsampler = nn.Conv1d(c.bottom_channels, width, 1)
            self.channel_upsampler_t = nn.Conv1d(width, c.bottom_channels, 1)
            self.channel_downsampler_t = nn.Conv1d(c.bottom_channels, width, 1)
        self.bottom_channels = c.bottom_channels
        dim = c.bottom_channels or width
        if c.t_layers and (dim % c.t_heads or dim % 4):
            raise ModelError(f"transformer width {dim} must be divisible by 4 and by t_heads={c.t_heads}")
        self.crosstransformer = CrossTransformer(
            dim, c.t_layers, c.t_heads, c.t_hidden_scale, cross_first=c.t_cross_first, norm_in=c.t_norm_in,
            norm_in_group=c.t_norm_in_group, max_period=c.t_max_period, weight_pos_embed=c.t_weight_pos_embed,
            norm_first=c.t_norm_first, norm_out=c.t_norm_out, group_norm=c.t_group_norm,
            layer_scale=c.t_layer_scale, gelu=c.t_gelu,
        ) if c.t_layers else None

    @property
    def chunking(self) -> CentredSegments:
        return CentredSegments(self.segment)

    @property
    def training_length(self) -> int:
        """Samples per forward pass: shorter inputs are zero-padded to it."""
        return int(self.segment * self.samplerate)

    def forward(self, mix: Tensor) -> Tensor:
        """(B, C, T) audio with T <= training_length -> (B, len(sources), C, T) stems."""
        length = mix.shape[-1]
        if length > self.training_length:
            raise ValueError(f"input has {length} samples, more than the model's {self.training_length}")
        if length < self.training_length:
            mix = F.pad(mix, (0, self.training_length - length))

        spec = stft(mix, self.nfft)
        batch, audio_channels, freqs, frames = spec.shape
        x = torch.view_as_real(spec).permute(0, 1, 4, 2, 3).reshape(batch, 2 * audio_channels, freqs, frames)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        mean_t = mix.mean(dim=(1, 2), keepdim=True)
        std_t = mix.std(dim=(1, 2), keepdim=True)
        xt = (mix - mean_t) / (1e-5 + std_t)

        skips, skips_t, lengths_t = [], [], []
        for index, (encode, encode_t) in enumerate(zip(self.encoder, self.tencoder)):
            lengths_t.append(xt.shape[-1])
            xt = encode_t(xt)
            x = encode(x)
            if index == 0 and self.freq_emb is not None:
                x = x + (self.freq_emb_scale * self.freq_emb()).to(x.dtype)
            skips.append(x)
            skips_t.append(xt)

        if self.crosstransformer is not None:
            x, xt = self.run_transformer(x, xt)

        for decode, decode_t in zip(self.decoder, self.tdecoder):
            x = decode(x, skips.pop())
            xt = decode_t(xt, skips_t.pop(), lengths_t.pop())

        # Back in float32 whatever autocast ran the network in, for the output scale and the inverse STFT.
        sources = len(self.sources)
        x = torch.addcmul(mean[:, None], x.float().view(batch, sources, -1, freqs, frames), std[:, None])
        x = x.view(batch, sources, audio_channels, 2, freqs, frames)
        x = istft(torch.complex(x[:, :, :, 0], x[:, :, :, 1]), self.training_length)
        xt = torch.addcmul(mean_t[:, None], xt.float().view(batch, sources, audio_channels, -1), std_t[:, None])
        return (xt + x)[..., :length]

    def run_transformer(self, x: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """The cross-domain transformer, in the bottom width when it differs from the encoder's."""
        if not self.bottom_channels:
            return self.crosstransformer(x, xt)
        shape = x.shape
        x = self.channel_upsampler(x.flatten(2)).unflatten(2, shape[2:])
        x, xt = self.crosstransformer(x, self.channel_upsampler_t(xt))
        x = self.channel_downsampler(x.flatten(2)).unflatten(2, shape[2:])
        return x, self.channel_downsampler_t(xt)
