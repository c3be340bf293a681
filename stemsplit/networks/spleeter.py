"""Spleeter (Deezer), inference only: one U-Net per instrument over magnitude spectrograms.

The song's STFT (4096-point frames, hop 1024, periodic Hann) is cut into segments of T
frames; only its lowest F bins are modelled. Each instrument's U-Net (six strided 5x5
convolutions down, six transposed ones up, skip connections from the convolutions before
their normalisation) estimates that instrument's magnitude: a sigmoid mask times the mix
(`unet.unet`), or a softmax across instruments times the mix (`unet.softmax_unet`). The
estimates become ratio masks (each estimate to the power `separation_exponent` over their
sum), the bins above F get a zero (or average) mask, and the masked STFT is turned back
into audio by a plain overlap-add, as spleeter 2.4.2 does it.

Names: `instruments`, `T`, `F`, `frame_length`, `frame_step`, `separation_exponent` and
`mask_extension` are spleeter's configuration keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..chunking import FrameSegments
from ..errors import ModelError

EPSILON = 1e-10  # keeps the ratio masks defined where every estimate is zero
# The synthesis window is the analysis one; Hann squared at a quarter-frame hop sums to 3/2.
WINDOW_COMPENSATION = 2.0 / 3.0
KERNEL = 5
BATCH_NORM_EPS = 1e-3  # Keras's default, which spleeter keeps
LEAKY_SLOPE = 0.2
# TensorFlow's "same" padding of a stride-2, 5-wide kernel: one before, two after.
SAME_PADDING = (1, 2)
MODEL_TYPES = {"unet.unet": False, "unet.softmax_unet": True}  # -> softmax across instruments
# Keys of spleeter's JSON configurations that only training reads.
TRAINING_KEYS = frozenset({
    "train_csv", "validation_csv", "model_dir", "mix_name", "learning_rate", "batch_size", "training_cache",
    "validation_cache", "train_max_steps", "throttle_secs", "random_seed", "save_checkpoints_steps",
    "save_summary_steps", "loss_type", "optimizer", "MWF"})


@dataclass(frozen=True)
class SpleeterConfig:
    """Shape of a Spleeter model, in the terms of spleeter's JSON configurations."""

    instruments: tuple[str, ...]
    softmax: bool = False  # "unet.softmax_unet": the masks of all instruments sum to one
    # Spleeter's rule: "ReLU" or "ELU", anything else LeakyReLU(0.2) for the convolutions and
    # "LeakyReLU" or "ELU", anything else ReLU for the transposed convolutions.
    conv_activation: str = "LeakyReLU"
    deconv_activation: str = "ReLU"
    conv_n_filters: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    sample_rate: int = 44100
    frame_length: int = 4096
    frame_step: int = 1024
    T: int = 512
    F: int = 1024
    n_channels: int = 2
    separation_exponent: float = 2.0
    mask_extension: str = "zeros"

    def __post_init__(self) -> None:
        if len(self.conv_n_filters) != 6:
            raise ModelError(f"a Spleeter U-Net has 6 convolution layers, not {len(self.conv_n_filters)}")
        if self.mask_extension not in ("zeros", "average"):
            raise ModelError(f"mask_extension must be zeros or average, got {self.mask_extension!r}")
        if not 0 < self.F <= self.bins or self.T % 64 or self.F % 64:
            raise ModelError(f"T and F must be multiples of 64 and F at most {self.bins}, got T={self.T}, F={self.F}")
        if self.frame_length % self.frame_step:
            raise ModelError(f"frame_length {self.frame_length} is not a whole number of frame_step {self.frame_step}")
        if not self.instruments:
            raise ModelError("a Spleeter model needs at least one instrument")

    @property
    def bins(self) -> int:
        return self.frame_length // 2 + 1

    @property
    def segment_span(self) -> int:
        """Samples a segment of T frames covers."""
        return (self.T - 1) * self.frame_step + self.frame_length

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SpleeterConfig:
        """A configuration from spleeter's JSON (as a dict); unknown keys are refused by name."""
        known = {field.name for field in fields(cls)} - {"instruments", "softmax", "conv_activation",
                                                        "deconv_activation", "conv_n_filters"}
        unknown = sorted(set(params) - known - TRAINING_KEYS - {"instrument_list", "model"})
        if unknown:
            raise ModelError(f"unknown Spleeter configuration key '{unknown[0]}'")
        if params.get("MWF"):
            raise ModelError("Spleeter's multichannel Wiener filtering (MWF) is not supported")
        kept = {key: value for key, value in params.items() if key in known}
        return cls(instruments=tuple(params["instrument_list"]), **kept, **_model_params(params.get("model", {})))


def _model_params(model: dict[str, Any]) -> dict[str, Any]:
    kind = model.get("type", "unet.unet")
    if kind not in MODEL_TYPES:
        raise ModelError(f"Spleeter model type '{kind}' is not supported (only {', '.join(MODEL_TYPES)})")
    params = dict(model.get("params") or {})
    unknown = sorted(set(params) - {"conv_activation", "deconv_activation", "conv_n_filters"})
    if unknown:
        raise ModelError(f"unknown Spleeter model parameter '{unknown[0]}'")
    if "conv_n_filters" in params:
        params["conv_n_filters"] = tuple(params["conv_n_filters"])
    return {"softmax": MODEL_TYPES[kind], **params}


# Spleeter 2.4.2's resources/{2,4,5}stems.json: 2stems keeps the default activations.
PRESETS = {
    2: SpleeterConfig(instruments=("vocals", "accompaniment")),
    4: SpleeterConfig(instruments=("vocals", "drums", "bass", "other"), conv_activation="ELU",
                      deconv_activation="ELU"),
    5: SpleeterConfig(instruments=("vocals", "piano", "drums", "bass", "other"), softmax=True,
                      conv_activation="ELU", deconv_activation="ELU"),
}


def conv_activation(name: str) -> nn.Module:
    return {"ReLU": nn.ReLU, "ELU": nn.ELU}.get(name, lambda: nn.LeakyReLU(LEAKY_SLOPE))()


def deconv_activation(name: str) -> nn.Module:
    return {"LeakyReLU": lambda: nn.LeakyReLU(LEAKY_SLOPE), "ELU": nn.ELU}.get(name, nn.ReLU)()


class Down(nn.Module):
    """A strided convolution; its raw output is the skip connection, its normalised and activated
    output feeds the next layer."""

    def __init__(self, channels: int, filters: int, activation: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, filters, KERNEL, stride=2)
        self.norm = nn.BatchNorm2d(filters, eps=BATCH_NORM_EPS)
        self.activation = conv_activation(activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.conv(F.pad(x, SAME_PADDING * 2))
        return skip, self.activation(self.norm(skip))


class Up(nn.Module):
    """A strided transposed convolution cropped to twice its input, activated, then normalised."""

    def __init__(self, channels: int, filters: int, activation: str):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, filters, KERNEL, stride=2)
        self.activation = deconv_activation(activation)
        self.norm = nn.BatchNorm2d(filters, eps=BATCH_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        before, after = SAME_PADDING
        full = self.conv(x)
        return self.norm(self.activation(full[..., before:-after, before:-after]))


class UNet(nn.Module):
    """One instrument's U-Net: (batch, channels, T, F) magnitudes -> (batch, channels, T, F) mask logits."""

    def __init__(self, config: SpleeterConfig):
        super().__init__()
        filters = config.conv_n_filters
        inputs = (config.n_channels, *filters[:-1])
        self.down = nn.ModuleList(Down(i, o, config.conv_activation) for i, o in zip(inputs, filters))
        ups = [(filters[5], filters[4])] + [(2 * filters[i], filters[i - 1]) for i in range(4, 0, -1)]
        ups.append((2 * filters[0], 1))
        self.up = nn.ModuleList(Up(i, o, config.deconv_activation) for i, o in ups)
        self.logits = nn.Conv2d(1, config.n_channels, 4, dilation=2, padding=3)
        # oneDNN's convolutions on CPUs are faster with channels last (numbers the same to float32 rounding).
        self.to(memory_format=torch.channels_last)

    def forward(self, magnitude: Tensor) -> Tensor:
        skips, x = [], magnitude.contiguous(memory_format=torch.channels_last)
        for down in self.down:
            skip, x = down(x)
            skips.append(skip)
        x = skips.pop()  # the bottom convolution feeds the decoder before its normalisation
        for up in self.up[:-1]:
            x = torch.cat([skips.pop(), up(x)], dim=1)
        return self.logits(self.up[-1](x))


class Spleeter(nn.Module):
    """(batch, channels, samples) -> (batch, instruments, channels, samples), spleeter's procedure on
    the input as if it were a whole (padded) song: frames at `frame_step` from its first sample,
    grouped T at a time, the last group filled with silent frames."""

    family = "spleeter"

    def __init__(self, config: SpleeterConfig):
        super().__init__()
        self.config = config
        self.samplerate = config.sample_rate
        self.audio_channels = config.n_channels
        self.sources = list(config.instruments)
        self.chunking = FrameSegments(config.T, config.frame_length, config.frame_step)
        self.unets = nn.ModuleList(UNet(config) for _ in config.instruments)
        self.register_buffer("window", torch.hann_window(config.frame_length, periodic=True), persistent=False)

    def forward(self, mix: Tensor) -> Tensor:
        stft = self.stft(mix)
        estimates = self.estimates(self.segments(stft.abs()))
        masks = self.masks(estimates, stft.shape[-1])
        return self.istft(masks * stft.unsqueeze(1), mix.shape[-1])

    def stft(self, mix: Tensor) -> Tensor:
        """(batch, channels, bins, frames), the end padded with zeros to a whole frame."""
        step, length = self.config.frame_step, self.config.frame_length
        frames = -(-max(mix.shape[-1] - length, 0) // step) + 1
        padded = F.pad(mix, (0, (frames - 1) * step + length - mix.shape[-1]))
        flat = padded.reshape(-1, padded.shape[-1])
        spectrum = torch.stft(flat, length, step, window=self.window, center=False, return_complex=True)
        return spectrum.reshape(*mix.shape[:-1], *spectrum.shape[-2:])

    def segments(self, magnitude: Tensor) -> Tensor:
        """(batch, channels, bins, frames) -> (batch * segments, channels, T, F)."""
        T = self.config.T
        batch, channels, _, frames = magnitude.shape
        padded = F.pad(magnitude[:, :, :self.config.F], (0, -frames % T))
        segments = padded.reshape(batch, channels, self.config.F, -1, T)
        return segments.permute(0, 3, 1, 4, 2).reshape(-1, channels, T, self.config.F)

    def estimates(self, magnitude: Tensor) -> Tensor:
        """(instruments, batch * segments, channels, T, F): each instrument's estimated magnitude."""
        logits = torch.stack([unet(magnitude) for unet in self.unets])
        masks = logits.softmax(dim=0) if self.config.softmax else logits.sigmoid()
        return masks * magnitude

    def masks(self, estimates: Tensor, frames: int) -> Tensor:
        """(batch, instruments, channels, bins, frames) ratio masks, extended above F."""
        powers = estimates ** self.config.separation_exponent
        masks = (powers + EPSILON / len(estimates)) / (powers.sum(dim=0) + EPSILON)
        return self._unsegment(self._extend(masks.transpose(-1, -2)), frames)

    def _extend(self, masks: Tensor) -> Tensor:
        missing = self.config.bins - self.config.F
        if self.config.mask_extension == "zeros":
            return F.pad(masks, (0, 0, 0, missing))
        average = masks.mean(dim=-2, keepdim=True)
        return torch.cat([masks, average.expand(*average.shape[:-2], missing, average.shape[-1])], dim=-2)

    def _unsegment(self, masks: Tensor, frames: int) -> Tensor:
        """(instruments, batch * segments, channels, bins, T) -> (batch, instruments, channels, bins, frames)."""
        instruments, _, channels, bins, T = masks.shape
        segments = -(-frames // T)
        masks = masks.reshape(instruments, -1, segments, channels, bins, T).permute(1, 0, 3, 4, 2, 5)
        return masks.reshape(*masks.shape[:4], segments * T)[..., :frames]

    def istft(self, spectrum: Tensor, samples: int) -> Tensor:
        """(..., bins, frames) -> (..., samples): windowed inverse FFTs added at `frame_step`, unnormalised.
        A frame is `frame_length // frame_step` hops long, so the overlap-add is that many shifted sums of hops."""
        step, length = self.config.frame_step, self.config.frame_length
        hops, frames = length // step, spectrum.shape[-1]
        flat = spectrum.reshape(-1, *spectrum.shape[-2:])
        pieces = (torch.fft.irfft(flat, n=length, dim=-2) * self.window[:, None]).reshape(len(flat), hops, step, frames)
        audio = pieces.new_zeros(len(flat), step, frames + hops - 1)
        for hop in range(hops):
            audio[..., hop:hop + frames] += pieces[:, hop]
        audio = audio.transpose(1, 2).reshape(*spectrum.shape[:-2], -1)
        return audio[..., :samples] * WINDOW_COMPENSATION
