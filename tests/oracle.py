"""Reference networks with random weights, paired with ours or saved as official weight files."""

from __future__ import annotations

import json
from fractions import Fraction

import safetensors.torch
import torch


def perturbed_reference(kwargs: dict, seed: int = 0, scale: float = 0.05):
    """The reference HTDemucs with every parameter moved off its init, so every path matters."""
    from demucs.htdemucs import HTDemucs as ReferenceHTDemucs

    torch.manual_seed(seed)
    reference = ReferenceHTDemucs(**kwargs).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return reference


def model_pair(kwargs: dict, seed: int = 0):
    from stemsplit.networks.htdemucs import HTDemucs, HTDemucsConfig

    reference = perturbed_reference(kwargs, seed)
    ours = HTDemucs(HTDemucsConfig.from_reference(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def encode_fraction(value: object) -> dict:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    raise TypeError(value)


def safetensors_file(model: torch.nn.Module, kwargs: dict,
                     klass: str = "demucs.htdemucs.HTDemucs") -> bytes:
    """Weights in the official Hugging Face format: class and init arguments as JSON metadata."""
    metadata = {"klass": klass, "args": "[]", "kwargs": json.dumps(kwargs, default=encode_fraction)}
    return safetensors.torch.save(model.state_dict(), metadata)


def perturbed_network(reference_class: type, kwargs: dict, seed: int = 0, scale: float = 0.05):
    """A reference network of any class with every parameter moved off its init; LayerScale
    gains (which start near 0 and would mute their branches) drawn at 0.3 so every branch counts."""
    torch.manual_seed(seed)
    reference = reference_class(**kwargs).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
            if name.endswith(".scale"):
                parameter.normal_(0, 0.3)
    return reference
