"""audio-separator's VR-architecture networks (uvr_lib_v5.vr_network) as test oracles, with random weights."""

from __future__ import annotations

import torch
from torch import nn

# UVR's size names (a checkpoint's size in KiB, audio-separator's `nn_arch_size`) and what each builds.
ASPP_SIZES = (31191, 33966, 129605, 123821, 123812, 537238, 537227)
LSTM_SIZES = (56817, 218409)


def randomise(network: nn.Module, seed: int) -> nn.Module:
    """Every weight and batch-norm statistic drawn at random (variances kept positive), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return network.eval()


def oracle_network(size: int, bins: int, seed: int = 0, nout: int | None = None, nout_lstm: int = 128) -> nn.Module:
    """The network audio-separator's VRSeparator builds for a checkpoint of `size` KiB (or with model data's nout)."""
    from audio_separator.separator.uvr_lib_v5.vr_network import nets, nets_new

    if size in LSTM_SIZES or nout is not None:
        network = nets_new.CascadedNet(bins * 2, size, nout=nout or 32, nout_lstm=nout_lstm)
    else:
        network = nets.determine_model_capacity(bins * 2, size)
    return randomise(network, seed)
