"""The band-split RoFormers (BS-RoFormer and Mel-Band RoFormer), as audio-separator runs them.

A model is a community checkpoint: a `.ckpt`/`.pth` torch pickle of weights plus a YAML
config with `audio`, `model`, `training` and `inference` sections. The model section says
which family it is (`freqs_per_bands`: BS-RoFormer; `num_bands`: Mel-Band RoFormer). Chunks
go over a song as `AlignedChunks` (chunking.py). A single-target model gives its target and
`no_{target}`, the mix minus the target.
"""

from __future__ import annotations

import dataclasses
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bounds import Bounds
from ..checkpoint import config_section, load_fitting, read_yaml
from ..chunking import AlignedChunks
from ..errors import ModelError
from ..family import CheckpointAndConfig, Family, LocalFiles
from ..networks.roformer import BandRoformer, RoformerConfig, roformer

# `model` keys that only matter for training or pick an attention kernel.
IGNORED_KEYS = frozenset({
    "attn_dropout", "ff_dropout", "flash_attn", "sage_attention", "use_torch_checkpoint",
    "multi_stft_resolution_loss_weight", "multi_stft_resolutions_window_sizes",
    "multi_stft_hop_size", "multi_stft_normalized",
    "match_input_audio_length",  # our networks always return the input's length
})
# `model` keys that change the network, accepted only at the value that leaves it unchanged.
NEUTRAL_VALUES = {"linear_transformer_depth": 0, "use_pope": False}
NETWORK_KEYS = frozenset(field.name for field in dataclasses.fields(RoformerConfig))
BOOL_KEYS = frozenset({"stereo", "zero_dc", "skip_connection", "stft_normalized"})
# Mask estimator depth when the config leaves it out: the networks' own defaults.
MASK_ESTIMATOR_DEPTH = {"bs_roformer": 2, "mel_band_roformer": 1}
# Upper bounds on every size a config gives, checked before anything is built or sized from it: about four
# times the largest published config (viperx's BS-RoFormer ep 317: dim 512, depth 12, 62 bands, stft_n_fft
# 2048, num_overlap 4; unwa's Mel-Band RoFormer inst: dim_t 1101, 60 bands; 6 stems in BS-RoFormer SW).
BOUNDS = Bounds({
    "dim": 2048, "depth": 48, "time_transformer_depth": 8, "freq_transformer_depth": 8, "heads": 64,
    "dim_head": 256, "mlp_expansion_factor": 16, "mask_estimator_depth": 8, "num_stems": 32, "num_bands": 512,
    "stft_n_fft": 16384, "stft_hop_length": 8192, "stft_win_length": 16384, "sample_rate": 192000,
    "dim_t": 8192, "num_overlap": 32,
}, "about four times the largest published RoFormer")
DEFAULT_SAMPLE_RATE = 44100
DEFAULT_NUM_OVERLAP = 8  # what audio-separator uses when `inference` has no num_overlap


@dataclass(frozen=True)
class CheckpointConfig:
    family: str  # "bs_roformer" or "mel_band_roformer"
    network: RoformerConfig
    sample_rate: int
    instruments: tuple[str, ...]
    target_instrument: str | None
    dim_t: int  # STFT frames per chunk
    num_overlap: int  # chunks covering each sample

    @property
    def chunk_size(self) -> int:
        """Samples per chunk."""
        return self.network.stft_hop_length * (self.dim_t - 1)

    @property
    def sources(self) -> tuple[str, ...]:
        """The stems the network outputs, in order."""
        return (self.target_instrument,) if self.target_instrument else self.instruments


def read_config(path: Path) -> CheckpointConfig:
    data = read_yaml(path)
    try:
        return _checkpoint_config(data)
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from error


def _checkpoint_config(data: Any) -> CheckpointConfig:
    sections = {name: config_section(data, name) for name in ("audio", "model", "training", "inference")}
    model, training, inference = sections["model"], sections["training"], sections["inference"]
    sample_rate = _sample_rate(sections["audio"], model)
    network = _network_config({**model, "sample_rate": sample_rate})
    instruments = training.get("instruments")
    if not isinstance(instruments, list) or not instruments or not all(isinstance(name, str) for name in instruments):
        raise ModelError("training.instruments must be a list of stem names")
    target = training.get("target_instrument") or None
    if target is not None and not isinstance(target, str):
        raise ModelError("training.target_instrument must be a stem name")
    # Stem names are lower case here, as file names and in ensembles ("Vocals" -> vocals.wav).
    instruments, target = [name.lower() for name in instruments], target and target.lower()
    if len(set(instruments)) < len(instruments):
        raise ModelError("training.instruments names a stem twice")
    config = CheckpointConfig(
        family=network.family, network=network, sample_rate=sample_rate,
        instruments=tuple(instruments), target_instrument=target,
        dim_t=BOUNDS.integer(inference, "dim_t", "inference", minimum=2),
        num_overlap=BOUNDS.integer({"num_overlap": DEFAULT_NUM_OVERLAP, **inference}, "num_overlap", "inference"))
    if network.num_stems != len(config.sources):
        raise ModelError(f"model.num_stems is {network.num_stems} but the config names "
                         f"{len(config.sources)} output stems ({', '.join(config.sources)})")
    if config.chunk_size < config.num_overlap:
        raise ModelError("inference.num_overlap is larger than a chunk")
    return config


def _sample_rate(audio: dict, model: dict) -> int:
    rates = {BOUNDS.integer(section, "sample_rate", name) for section, name in ((audio, "audio"), (model, "model"))
             if "sample_rate" in section}
    if len(rates) > 1:
        raise ModelError("audio.sample_rate and model.sample_rate differ")
    return rates.pop() if rates else DEFAULT_SAMPLE_RATE


def _network_config(model: dict) -> RoformerConfig:
    for key, value in model.items():
        if key in NEUTRAL_VALUES and value != NEUTRAL_VALUES[key]:
            raise ModelError(f"model.{key}={reprlib.repr(value)} is not supported")
        if key not in NETWORK_KEYS | IGNORED_KEYS | NEUTRAL_VALUES.keys() | {"dim_freqs_in"}:
            raise ModelError(f"model.{key} is not supported")
    if ("freqs_per_bands" in model) == ("num_bands" in model):
        raise ModelError("the model section needs exactly one of freqs_per_bands (BS-RoFormer) "
                         "and num_bands (Mel-Band RoFormer)")
    family = "bs_roformer" if "freqs_per_bands" in model else "mel_band_roformer"
    values = {"mask_estimator_depth": MASK_ESTIMATOR_DEPTH[family]}
    for key in NETWORK_KEYS & model.keys():
        if key in BOOL_KEYS:
            values[key] = _boolean(model, key)
        elif key == "freqs_per_bands":
            values[key] = _band_widths(model[key])
        else:
            values[key] = BOUNDS.integer(model, key, "model")
    network = RoformerConfig(**values)
    if "dim_freqs_in" in model and model["dim_freqs_in"] != network.freqs:
        raise ModelError(f"model.dim_freqs_in is {reprlib.repr(model['dim_freqs_in'])} but stft_n_fft "
                         f"{network.stft_n_fft} gives {network.freqs} frequencies")
    return network


def _boolean(section: dict, key: str) -> bool:
    if not isinstance(section[key], bool):
        raise ModelError(f"model.{key} must be true or false, not {reprlib.repr(section[key])}")
    return section[key]


def _band_widths(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(width, int) and not isinstance(width, bool) and width > 0 for width in value):
        raise ModelError("model.freqs_per_bands must be a list of positive integers")
    return tuple(value)


def load_network(checkpoint: Path, config: Path | CheckpointConfig) -> BandRoformer:
    """The network of `config` (a YAML file, or one read already) with the weights of
    `checkpoint`, float32, in eval mode. It also carries what the engine needs to run it:
    the stems it outputs (`sources`) and how it goes over a song (`chunking`)."""
    if not isinstance(config, CheckpointConfig):
        config = read_config(config)
    network = roformer(config.network)
    load_fitting(network, checkpoint, config.family)
    network.sources, network.family = list(config.sources), config.family
    network.chunking = AlignedChunks(config.chunk_size, config.num_overlap, config.network.stft_n_fft // 2 + 1)
    return network.float().eval()


BAGS = CheckpointAndConfig(load_network, "one checkpoint file and its config")


def _family_of(local: LocalFiles) -> str | None:
    """Which RoFormer a checkpoint file's YAML describes, if any: its model section names the bands."""
    if local.config is None or not local.checkpoint.is_file():
        return None
    data = read_yaml(local.config)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return None
    return "bs_roformer" if "freqs_per_bands" in model else "mel_band_roformer" if "num_bands" in model else None


FAMILIES = tuple(
    Family(name=name, architecture=architecture, catalogue_bag=BAGS.catalogue_bag, entry_keys=frozenset({"config"}),
           recognises=lambda local, name=name: _family_of(local) == name, local_bag=BAGS.local_bag)
    for name, architecture in (
        ("bs_roformer", "Band-Split RoFormer (audio-separator 0.47.1's BSRoformer)"),
        ("mel_band_roformer", "Mel-Band RoFormer (audio-separator 0.47.1's MelBandRoformer)"),
    ))
