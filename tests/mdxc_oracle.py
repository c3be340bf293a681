"""audio-separator's MDX23C network (TFC_TDF_net) and its MDXC `demix` as test oracles, with random weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

# The sizes of UVR's model_2_stem_full_band_8k.yaml, the config of MDX23C-8KFFT-InstVoc_HQ.ckpt (audio-separator
# 0.47.1's separator.py names it but ships no copy: it fetches it from TRvlvr/model_repo's mdx_c_configs). They
# agree with the checkpoint's weight shapes: first_conv.weight [128, 16, 1, 1] (4 subbands x 2 channels x re/im),
# bottleneck tdf.2.weight [8, 32] (1024 bins / 2^5 / 4), final_conv.2.weight [32, 128, 1, 1] (two stems).
INSTVOC_HQ = {
    "audio": {"chunk_size": 261120, "dim_f": 4096, "dim_t": 256, "hop_length": 1024, "n_fft": 8192,
              "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0.001},
    "model": {"act": "gelu", "bottleneck_factor": 4, "growth": 128, "norm": "InstanceNorm", "num_blocks_per_scale": 2,
              "num_channels": 128, "num_scales": 5, "num_subbands": 4, "scale": [2, 2]},
    "training": {"batch_size": 6, "instruments": ["Vocals", "Instrumental"], "lr": 9.0e-05, "target_instrument": None,
                 "num_epochs": 1000, "use_amp": True},
    "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 8},
}


def small_config(norm: str | None = "InstanceNorm", act: str = "gelu", target: str | None = None,
                 instruments: tuple[str, ...] = ("Vocals", "Instrumental"), num_overlap: int = 8,
                 dim_t: int = 64, sample_rate: int = 8000) -> dict:
    """A config of the InstVoc HQ's layout at a toy size: 256-point STFT, 8 channels, 2 scales."""
    return {
        "audio": {"dim_f": 128, "hop_length": 64, "n_fft": 256, "num_channels": 2, "sample_rate": sample_rate,
                  "chunk_size": 64 * (dim_t - 1)},
        "model": {"act": act, "bottleneck_factor": 4, "growth": 4, "norm": norm, "num_blocks_per_scale": 2,
                  "num_channels": 8, "num_scales": 2, "num_subbands": 4, "scale": [2, 2]},
        "training": {"instruments": list(instruments), "target_instrument": target},
        "inference": {"dim_t": dim_t, "num_overlap": num_overlap},
    }


def oracle_network(config: dict, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """audio-separator's TFC_TDF_net for `config` (a YAML's data), each weight and norm statistic moved off its init."""
    pytest.importorskip("audio_separator", reason="audio-separator (the MDX23C oracle) is not installed")
    from audio_separator.separator.uvr_lib_v5.tfc_tdf_v3 import TFC_TDF_net
    from ml_collections import ConfigDict

    torch.manual_seed(seed)
    network = TFC_TDF_net(ConfigDict(config), device="cpu")
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
        for name, buffer in network.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
    return network.eval()


def mdxc_files(folder: Path, config: dict, seed: int = 0, name: str = "small") -> tuple[torch.nn.Module, Path, Path]:
    """The oracle network of `config` saved as a community checkpoint and YAML in `folder`."""
    oracle = oracle_network(config, seed)
    config_path, checkpoint = folder / f"{name}.yaml", folder / f"{name}.ckpt"
    config_path.write_text(yaml.safe_dump(config))
    torch.save(oracle.state_dict(), checkpoint)
    return oracle, checkpoint, config_path


def oracle_demix(network: torch.nn.Module, mix: torch.Tensor, config: dict) -> dict[str, np.ndarray] | np.ndarray:
    """audio-separator's MDXC `demix` (its TFC-TDF branch) on `mix` with the oracle `network`, the segment
    chosen as its `separate` chooses it (256 frames under 10 seconds), without its peak normalisation."""
    from audio_separator.separator.architectures.mdxc_separator import MDXCSeparator
    from ml_collections import ConfigDict

    separator = MDXCSeparator.__new__(MDXCSeparator)  # its constructor loads files; demix needs only these
    separator.logger = logging.getLogger("oracle")
    separator.is_roformer, separator.pitch_shift = False, 0
    separator.overlap, separator.batch_size = config["inference"]["num_overlap"], 1
    separator.override_model_segment_size, separator.segment_size = False, 256
    separator.sample_rate = config["audio"]["sample_rate"]
    separator.torch_device = torch.device("cpu")
    separator.model_data_cfgdict = ConfigDict(config)
    separator.model_run = network
    instruments, target = config["training"]["instruments"], config["training"]["target_instrument"]
    separator.primary_stem_name = target or instruments[0]
    separator.secondary_stem_name = next(name for name in instruments if name != separator.primary_stem_name)
    separator.is_primary_stem_main_target = bool(target)
    short = separator._use_model_segment_override(mix.shape[1] / separator.sample_rate)
    with torch.no_grad():
        return separator.demix(mix.numpy(), override_model_segment_size=short)
