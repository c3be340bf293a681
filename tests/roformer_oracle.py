"""The audio-separator RoFormer classes as test oracles, built with random weights."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from stemsplit.networks.roformer import RoformerConfig


def oracle_module(family: str):
    """The audio-separator module of a family; skips the test when the package is absent."""
    pytest.importorskip("audio_separator", reason="audio-separator (the RoFormer oracle) is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its rotary dependency warns about deprecated autocast
        if family == "bs_roformer":
            from audio_separator.separator.uvr_lib_v5.roformer import bs_roformer as module
        else:
            from audio_separator.separator.uvr_lib_v5.roformer import mel_band_roformer as module
    return module


def oracle_network(config: RoformerConfig, seed: int = 0, scale: float = 0.05,
                   only_vectors: bool = False) -> torch.nn.Module:
    """The oracle network for `config`, its parameters moved off their init so every path
    matters. With `only_vectors`, only the norm gains, biases and rotary frequencies move
    (the matrices keep their random init), which saves time on real-size networks."""
    module = oracle_module(config.family)
    kwargs = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    if config.family == "bs_roformer":
        klass = module.BSRoformer
        del kwargs["num_bands"], kwargs["sample_rate"]
    else:
        klass = module.MelBandRoformer
        del kwargs["freqs_per_bands"]
        kwargs["match_input_audio_length"] = True
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it sizes its bands with an STFT that has no window
        network = klass(**kwargs).eval()
    if config.family == "mel_band_roformer" and config.mlp_expansion_factor != 4:
        # The oracle's MelBandRoformer does not pass mlp_expansion_factor on to its mask
        # estimators (the community trainer does); rebuild them with the oracle's own class.
        dim_inputs = network.mask_estimators[0].dim_inputs
        network.mask_estimators = torch.nn.ModuleList(
            module.MaskEstimator(config.dim, dim_inputs, config.mask_estimator_depth,
                                 mlp_expansion_factor=config.mlp_expansion_factor)
            for _ in range(config.num_stems))
    with torch.no_grad():
        for parameter in network.parameters():
            if not only_vectors or parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * scale)
    return network.eval()


def roformer_files(folder: Path, num_stems: int, num_overlap: int, seed: int = 0):
    """A small random Mel-Band RoFormer of the oracle's as a community checkpoint and YAML (one-second chunks)."""
    from stemsplit.families.roformer import read_config

    target = "null" if num_stems > 1 else "vocals"
    config_path = folder / f"small{num_stems}.yaml"
    config_path.write_text(f"""audio: {{sample_rate: 44100}}
model: {{dim: 16, depth: 1, stereo: true, num_stems: {num_stems}, num_bands: 8, dim_head: 8, heads: 2,
        time_transformer_depth: 1, freq_transformer_depth: 1, stft_hop_length: 441, flash_attn: false,
        attn_dropout: 0.1, ff_dropout: 0.1}}
training: {{instruments: [vocals, other], target_instrument: {target}}}
inference: {{dim_t: 101, num_overlap: {num_overlap}}}
""")
    config = read_config(config_path)
    oracle = oracle_network(config.network, seed=seed)
    checkpoint = folder / f"small{num_stems}.ckpt"
    torch.save({"state_dict": oracle.state_dict()}, checkpoint)
    return oracle, checkpoint, config_path, config


def oracle_demix(network: torch.nn.Module, mix: torch.Tensor, config) -> dict[str, np.ndarray]:
    """audio-separator's MDXC `demix` (its RoFormer branch) on `mix` with the oracle `network`, as its
    separator runs it for a `CheckpointConfig` (without its peak normalisation of the song)."""
    import logging

    from audio_separator.separator.architectures.mdxc_separator import MDXCSeparator
    from ml_collections import ConfigDict

    separator = MDXCSeparator.__new__(MDXCSeparator)  # its constructor loads files; demix needs only these
    separator.logger = logging.getLogger("oracle")
    separator.is_roformer, separator.pitch_shift, separator.overlap = True, 0, config.num_overlap
    separator.override_model_segment_size, separator.segment_size = False, 256
    separator.model_data_cfgdict = ConfigDict({
        "model": {"stft_hop_length": config.network.stft_hop_length}, "inference": {"dim_t": config.dim_t},
        "training": {"instruments": list(config.instruments), "target_instrument": config.target_instrument}})
    separator.model_run = network
    separator.primary_stem_name = config.target_instrument or config.instruments[0]
    separator.secondary_stem_name = next(name for name in config.instruments if name != separator.primary_stem_name)
    separator.is_primary_stem_main_target = bool(config.target_instrument)
    return separator.demix(mix.numpy())
