"""The reference networks of USS (uss 0.0.4's ResUNet30) with random weights, for exactness tests.

uss's model modules import torchlibrosa and einops only (its `uss.config` and `uss.inference` would fetch
AudioSet metadata from the internet at import, and need lightning: they are not imported).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from stemsplit.networks.resunet import ResUNet30, ResUNetConfig, from_reference

# Perturbations of the reference's (already random, seeded xavier) initial weights: biases, FiLM shifts and
# batch-norm statistics made non-trivial. Larger ones (0.05) make the reference's own float32 result differ
# from its float64 result by 1e-4, so the comparison would measure rounding chaos, not the arithmetic.
SCALE = 0.01


def perturbed(reference: torch.nn.Module, fixed: str) -> torch.nn.Module:
    """`reference` with its weights moved off their initial values and its batch-norm statistics made
    plausible; tensors whose names hold `fixed` (its fixed filter banks) and batch counts left alone."""
    with torch.no_grad():
        for name, value in reference.state_dict().items():
            if fixed in name or "num_batches" in name:
                continue
            if "running_var" in name:
                value.copy_(torch.rand_like(value) * 0.5 + 0.75)
            elif "running_mean" in name:
                value.copy_(torch.randn_like(value) * 0.1)
            else:
                value.add_(torch.randn_like(value) * SCALE)
    return reference


def reference_resunet(seed: int = 0, condition_size: int = 527):
    from uss.models.resunet import ResUNet30 as Reference

    torch.manual_seed(seed)
    reference = Reference(input_channels=1, output_channels=1, condition_size=condition_size).eval()
    return perturbed(reference, "stft")


def resunet_pair(seed: int = 0, condition_size: int = 527) -> tuple[torch.nn.Module, ResUNet30]:
    """uss's ResUNet30 and ours with the same random weights, of the released configuration."""
    reference = reference_resunet(seed, condition_size)
    ours = ResUNet30(ResUNetConfig(condition_size=condition_size)).eval()
    ours.load_state_dict(from_reference(reference.state_dict()))
    return reference, ours


def reference_separation(reference: torch.nn.Module, mono: torch.Tensor, condition: torch.Tensor,
                         segment: int, batch: int = 8) -> torch.Tensor:
    """USS's procedure for one query condition (uss/inference.py, separate_by_query_condition): the mono song
    cut into abutting segments, the last zero-padded, run `batch` at a time, joined and cut to the song."""
    count = -(-mono.shape[-1] // segment)
    padded = torch.nn.functional.pad(mono, (0, count * segment - mono.shape[-1]))
    segments = padded.reshape(count, 1, segment)
    with torch.no_grad():
        outputs = [reference({"mixture": segments[start:start + batch], "condition": condition[None]})["waveform"]
                   for start in range(0, count, batch)]
    return torch.cat(outputs).reshape(-1)[:mono.shape[-1]]


def reference_cnn14(seed: int = 0, home: Path | None = None):
    """panns-inference's Cnn14 (Cnn14_mAP=0.431's configuration) with random weights. panns_inference reads its
    label list from ~/panns_data at import (fetching it when missing): `home` is given our copy, as HOME."""
    import os
    import shutil

    from stemsplit.labels import LABELS_FILE

    if "panns_inference" not in sys.modules:
        (Path(home) / "panns_data").mkdir(parents=True, exist_ok=True)
        shutil.copy(LABELS_FILE, Path(home) / "panns_data" / "class_labels_indices.csv")
        saved, os.environ["HOME"] = os.environ.get("HOME"), str(home)
        try:
            import panns_inference.models  # noqa: F401
        finally:
            os.environ.pop("HOME") if saved is None else os.environ.__setitem__("HOME", saved)
    from panns_inference.models import Cnn14 as Reference

    torch.manual_seed(seed)
    reference = Reference(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                          classes_num=527).eval()
    return perturbed(reference, "extractor")
