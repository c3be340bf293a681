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


def params_path(name: str):
    """One of the model-parameter JSONs audio-separator ships (uvr_lib_v5/vr_network/modelparams)."""
    from pathlib import Path

    import audio_separator

    return Path(audio_separator.__file__).parent / "separator/uvr_lib_v5/vr_network/modelparams" / f"{name}.json"


def oracle_separate(network: nn.Module, song, params: str, lstm: bool, primary: str = "Vocals",
                    window: int = 512, aggression: int = 5, tta: bool = False, post_process: bool = False):
    """audio-separator's VRSeparator `loading_mix`, `inference_vr` and `spec_to_wav` on a song file at the params'
    rate, with `network` as its model: (primary, secondary) as (channels, samples) float arrays."""
    import logging

    import numpy as np
    from audio_separator.separator.architectures.vr_separator import VRSeparator
    from audio_separator.separator.uvr_lib_v5.vr_network.model_param_init import ModelParameters

    separator = VRSeparator.__new__(VRSeparator)  # its constructor reads model files; these are what the steps use
    separator.logger = logging.getLogger("vr-oracle")
    separator.model_params = ModelParameters(str(params_path(params)))
    separator.audio_file_path, separator.wav_subtype = str(song), "FLOAT"
    separator.torch_device, separator.torch_device_mps = torch.device("cpu"), None
    separator.is_vr_51_model, separator.high_end_process = lstm, False
    separator.input_high_end_h = separator.input_high_end = None
    separator.model_run, separator.batch_size, separator.window_size = network, 1, window
    separator.enable_tta, separator.enable_post_process, separator.post_process_threshold = tta, post_process, 0.2
    separator.primary_stem_name = primary
    aggressiveness = {"value": aggression / 100, "split_bin": separator.model_params.param["band"][1]["crop_stop"],
                      "aggr_correction": separator.model_params.param.get("aggr_correction")}
    y_spec, v_spec = separator.inference_vr(separator.loading_mix(), torch.device("cpu"), aggressiveness)
    return tuple(separator.spec_to_wav(np.nan_to_num(spec)) for spec in (y_spec, v_spec))
