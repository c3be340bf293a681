"""MDX-Net (UVR's ONNX models, KUIELab's MDX 2021 network), run by onnxruntime.

The network is the ONNX file itself: it maps a stereo chunk's spectrogram (real and imaginary
parts of each channel stacked as 4 channels, the lowest `dim_f` bins, 256 frames) to the primary
stem's spectrogram. Around it, as audio-separator's MDXSeparator runs it: the lowest three bins
are zeroed before the model, `denoise` averages the model's output with its negated output for
the negated input, and the secondary stem is the chunk minus `compensate` times the primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .tfc_tdf import stacked_istft, stacked_stft

ZEROED_BINS = 3  # the lowest bins audio-separator zeroes before the model
FRAMES = 256  # frames per chunk: audio-separator's segment_size for MDX-Net models


@dataclass(frozen=True)
class MdxNetConfig:
    """An ONNX model's parameters: what audio-separator looks up by the file's hash."""

    n_fft: int
    dim_f: int
    compensate: float  # how much of the primary the secondary stem loses
    primary: str  # the stem the model gives
    secondary: str  # the mix less compensate * primary
    hop_length: int = 1024
    denoise: bool = False
    sample_rate: int = 44100

    @property
    def chunk_size(self) -> int:
        return self.hop_length * (FRAMES - 1)


def providers(available: list[str]) -> list[str]:
    """onnxruntime's accelerated providers where this build has them, the CPU always last."""
    fast = [name for name in ("CUDAExecutionProvider", "CoreMLExecutionProvider") if name in available]
    return [*fast, "CPUExecutionProvider"]


class MdxNet(nn.Module):
    """(batch, 2, chunk_size) -> (batch, [primary, secondary], 2, chunk_size)."""

    def __init__(self, session: Any, config: MdxNetConfig):
        super().__init__()
        self.session, self.config = session, config
        self.input_name = session.get_inputs()[0].name
        self.samplerate, self.audio_channels = config.sample_rate, 2
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, mix: Tensor) -> Tensor:
        spectrum = stacked_stft(mix, self.config.n_fft, self.config.hop_length, self.config.dim_f, self.window)
        spectrum[:, :, :ZEROED_BINS] = 0
        predicted = self.denoised(spectrum) if self.config.denoise else self.run(spectrum)
        primary = stacked_istft(predicted, self.config.n_fft, self.config.hop_length, self.window)
        secondary = mix[..., :primary.shape[-1]] - self.config.compensate * primary
        return torch.stack([primary, secondary], 1)

    def denoised(self, spectrum: Tensor) -> Tensor:
        return self.run(-spectrum) * -0.5 + self.run(spectrum) * 0.5

    def run(self, spectrum: Tensor) -> Tensor:
        """The ONNX model on each chunk's spectrogram (one at a time where its batch size is fixed)."""
        fixed_batch = isinstance(self.session.get_inputs()[0].shape[0], int)
        groups = spectrum.split(1) if fixed_batch else [spectrum]
        outputs = [self.session.run(None, {self.input_name: group.cpu().numpy()})[0] for group in groups]
        return torch.from_numpy(np.concatenate(outputs)).to(spectrum.device)
