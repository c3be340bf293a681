"""Building blocks the networks share."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_linear():
    """oneDNN's fused matrix product and activation, where this torch has it."""
    try:
        return torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


ONEDNN_LINEAR = _onednn_linear()
ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu}
# oneDNN's name for the form of each activation: GELU with erf, as nn.GELU computes it.
ONEDNN_ALGORITHMS = {"none": "", "relu": "", "tanh": "", "gelu": "none"}


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str = "none") -> Tensor:
    """F.linear and then `activation`. For float32 on a CPU, without autograd or autocast, both
    run in one oneDNN call: a tenth or more faster than MKL's product on the CPUs measured (AMD
    EPYC, AVX-512), as exact in float32."""
    if (ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")):
        return ONEDNN_LINEAR(x, weight, bias, activation, [], ONEDNN_ALGORITHMS[activation])
    return ACTIVATIONS[activation](F.linear(x, weight, bias))


class Linear(nn.Linear):
    """nn.Linear with an optional activation after it, computed by `linear`."""

    def forward(self, x: Tensor, activation: str = "none") -> Tensor:
        return linear(x, self.weight, self.bias, activation)


def describe(network: nn.Module, config: Any, segment: Fraction) -> None:
    """What the engine reads off a network (bag.Network): its config, stems, rate, channels and segment."""
    network.config, network.sources = config, list(config.sources)
    network.samplerate, network.audio_channels, network.segment = config.samplerate, config.audio_channels, segment
