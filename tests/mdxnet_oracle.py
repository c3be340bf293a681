"""A small random ONNX model of an MDX-Net's real input and output shapes, and audio-separator's MDXSeparator
`demix` running it, as test oracles."""

from __future__ import annotations

import logging
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

# UVR-MDX-NET-Inst_HQ_3's parameters (UVR's model_data_new.json): n_fft 6144, dim_f 3072, compensate 1.022.
INST_HQ_3 = {"n_fft": 6144, "dim_f": 3072, "compensate": 1.022, "primary": "instrumental", "secondary": "vocals"}


class MaskNet(torch.nn.Module):
    """A tiny random stand-in for an MDX-Net: the spectrogram times a sigmoid mask of a 3x3 convolution of it."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return spectrum * torch.sigmoid(self.conv(spectrum) + 0.3)


def onnx_model(folder: Path, dim_f: int, seed: int = 0, fixed_batch: bool = False) -> Path:
    path = folder / f"mask{seed}{'_fixed' if fixed_batch else ''}.onnx"
    axes = None if fixed_batch else {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, and all UVR's models use it
        torch.onnx.export(MaskNet(seed).eval(), (torch.randn(1, 4, dim_f, 256),), path, input_names=["input"],
                          output_names=["output"], dynamic_axes=axes, dynamo=False)
    return path


def oracle_demix(model: Path, mix: torch.Tensor, params: dict, overlap: float = 0.25) -> dict[str, np.ndarray]:
    """audio-separator's MDXSeparator `demix` with its onnxruntime session of `model` (its defaults: hop 1024,
    segment 256); the secondary as its `separate` makes it, the mix less compensate times the primary (without
    its peak normalisation and scaling of the song)."""
    import onnxruntime

    # Its module imports onnx2torch (for segment sizes other than the model's, not used here), which imports a
    # torchvision built for another torch: a stand-in keeps that import from failing.
    sys.modules.setdefault("onnx2torch", types.ModuleType("onnx2torch"))
    from audio_separator.separator.architectures.mdx_separator import MDXSeparator

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    separator = MDXSeparator.__new__(MDXSeparator)  # its constructor loads files; demix needs only these
    separator.logger = logging.getLogger("oracle")
    separator.n_fft, separator.dim_f, separator.hop_length = params["n_fft"], params["dim_f"], 1024
    separator.segment_size, separator.overlap, separator.batch_size = 256, overlap, 1
    separator.enable_denoise, separator.torch_device = params.get("denoise", False), torch.device("cpu")
    separator.model_run = lambda spectrum: session.run(None, {"input": spectrum.cpu().numpy()})[0]
    primary = separator.demix(mix.numpy())
    return {params["primary"]: primary, params["secondary"]: mix.numpy() - params["compensate"] * primary}
