"""MDX23C (TFC-TDF v3), as audio-separator's MDXC separator runs it.

A model is a community checkpoint: a `.ckpt` torch pickle of a state dict plus an MSST-style YAML
config with `audio` (STFT), `model` (the network), `training` (stems) and `inference` (chunking)
sections; its model section has `num_subbands` and `num_scales`, which no RoFormer's has. Chunks
go over a song as `PaddedChunks` (chunking.py). A single-target model gives its target and
`no_{target}`, the mix minus the target.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..bounds import Bounds
from ..checkpoint import config_section, load_fitting, read_yaml
from ..chunking import PaddedChunks
from ..errors import ModelError
from ..family import CheckpointAndConfig, Family, LocalFiles
from ..networks.tfc_tdf import TfcTdfConfig, TfcTdfNet

FAMILY = "mdx23c"
MARKS = frozenset({"num_subbands", "num_scales"})  # model keys that say a YAML is an MDX23C's
AUDIO_KEYS = ("n_fft", "hop_length", "dim_f")
MODEL_KEYS = ("num_subbands", "num_scales", "num_blocks_per_scale", "num_channels", "growth", "bottleneck_factor")
# Upper bounds on every size a config gives, checked before anything is built from it: about four times the
# largest published MDX23C (UVR's MDX23C-8KFFT-InstVoc_HQ: n_fft 8192, dim_f 4096, dim_t 256, 128 channels,
# growth 128, 5 scales, 4 subbands; aufr33 and jarredou's DrumSep: 6 stems).
BOUNDS = Bounds({
    "n_fft": 32768, "hop_length": 8192, "dim_f": 16384, "sample_rate": 192000, "num_channels": 512, "growth": 512,
    "num_scales": 8, "num_blocks_per_scale": 8, "num_subbands": 16, "bottleneck_factor": 64, "scale": 8,
    "dim_t": 1024, "num_overlap": 32, "stems": 32,
}, "about four times the largest published MDX23C")
DEFAULT_NUM_OVERLAP = 8  # what audio-separator uses when `inference` has no num_overlap
SHORT_SONG_FRAMES = 256  # audio-separator's segment size for songs under 10 seconds
STEREO = 2  # the network's inverse STFT assumes two channels


@dataclass(frozen=True)
class MdxcConfig:
    network: TfcTdfConfig
    sources: tuple[str, ...]  # the stems the network outputs, in order
    dim_t: int  # STFT frames per chunk
    num_overlap: int  # chunks covering each sample

    def chunking(self) -> PaddedChunks:
        hop = self.network.hop_length
        return PaddedChunks(hop * (self.dim_t - 1), hop * (SHORT_SONG_FRAMES - 1), self.num_overlap)


def read_config(path: Path) -> MdxcConfig:
    try:
        return _config(read_yaml(path))
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from error


def _config(data: Any) -> MdxcConfig:
    audio, model, training, inference = (config_section(data, name)
                                         for name in ("audio", "model", "training", "inference"))
    sources = _sources(training)
    network = _network_config(audio, model, len(sources))
    config = MdxcConfig(network, sources, BOUNDS.integer(inference, "dim_t", "inference", minimum=2),
                        BOUNDS.integer({"num_overlap": DEFAULT_NUM_OVERLAP, **inference}, "num_overlap", "inference"))
    _check_fit(config)
    _check_layers(config.network)
    return config


def _sources(training: dict) -> tuple[str, ...]:
    instruments = training.get("instruments")
    if not isinstance(instruments, list) or not instruments or not all(isinstance(name, str) for name in instruments):
        raise ModelError("training.instruments must be a list of stem names")
    target = training.get("target_instrument") or None
    if target is not None and not isinstance(target, str):
        raise ModelError("training.target_instrument must be a stem name")
    names = [name.lower() for name in ([target] if target else instruments)]  # file names: Vocals -> vocals.wav
    if len(set(names)) < len(names) or len(names) > BOUNDS.maxima["stems"]:
        raise ModelError(f"training.instruments must name distinct stems, at most {BOUNDS.maxima['stems']}")
    return tuple(names)


def _network_config(audio: dict, model: dict, stems: int) -> TfcTdfConfig:
    known = set(MODEL_KEYS) | {"scale", "norm", "act"}
    unknown = sorted(set(model) - known)
    if unknown:
        raise ModelError(f"model.{unknown[0]} is not supported")
    if audio.get("num_channels", STEREO) != STEREO:
        raise ModelError(f"audio.num_channels must be {STEREO}: MDX23C networks are stereo")
    values = {key: BOUNDS.integer(audio, key, "audio") for key in AUDIO_KEYS}
    values |= {key: BOUNDS.integer(model, key, "model") for key in MODEL_KEYS}
    return TfcTdfConfig(**values, scale=_scale(model), num_stems=stems, norm=_choice(model, "norm", None),
                        act=_choice(model, "act", "gelu"),
                        sample_rate=BOUNDS.integer({"sample_rate": 44100, **audio}, "sample_rate", "audio"))


def _scale(model: dict) -> tuple[int, int]:
    scale = model.get("scale")
    if not isinstance(scale, (list, tuple)) or len(scale) != 2:
        raise ModelError("model.scale must be two integers (time, frequency)")
    return tuple(BOUNDS.integer({"scale": factor}, "scale", "model") for factor in scale)


def _choice(model: dict, key: str, default: str | None) -> str | None:
    value = model.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ModelError(f"model.{key} must be a name, not {reprlib.repr(value)}")
    return value


def _check_fit(config: MdxcConfig) -> None:
    """What the network needs of its sizes: each scale halves (by `scale`) whole numbers of frames and bins."""
    network = config.network
    frames_factor, bins_factor = (factor ** network.num_scales for factor in network.scale)
    if network.dim_f > network.n_fft // 2 + 1 or network.dim_f % network.num_subbands:
        raise ModelError(f"audio.dim_f ({network.dim_f}) must divide into num_subbands and be at most n_fft / 2 + 1")
    if network.subband_bins % bins_factor or network.subband_bins // bins_factor < network.bottleneck_factor:
        raise ModelError(f"audio.dim_f / num_subbands ({network.subband_bins}) must be a multiple of "
                         f"{bins_factor} (scale ** num_scales) and leave bins for the bottleneck")
    for frames in (config.dim_t, SHORT_SONG_FRAMES):
        if frames % frames_factor:
            raise ModelError(f"chunks of {frames} frames do not divide into {frames_factor} (scale ** num_scales)")
    if network.hop_length * (config.dim_t - 1) < config.num_overlap:
        raise ModelError("inference.num_overlap is larger than a chunk")


def _check_layers(network: TfcTdfConfig) -> None:
    """A norm or activation that is not known, or groups that do not divide the channels, found by
    building the network without its weights."""
    try:
        with torch.device("meta"):
            TfcTdfNet(network)
    except ValueError as error:
        raise ModelError(f"model: {error}") from error


def build_network(config: MdxcConfig) -> TfcTdfNet:
    """The (unloaded) network of `config`, carrying its stems and chunking."""
    network = TfcTdfNet(config.network)
    network.family, network.sources, network.chunking = FAMILY, list(config.sources), config.chunking()
    return network


def load_network(checkpoint: Path, config: Path | MdxcConfig) -> TfcTdfNet:
    """The network of `config` (a YAML file or one read) with the weights of `checkpoint`, float32, eval mode."""
    if not isinstance(config, MdxcConfig):
        config = read_config(config)
    network = build_network(config)
    load_fitting(network, checkpoint, "MDX23C")
    return network.float().eval()


BAGS = CheckpointAndConfig(load_network, "one checkpoint file and its config")


def recognises(local: LocalFiles) -> bool:
    """A checkpoint file whose YAML's model section has the MDX23C keys."""
    if local.config is None or not local.checkpoint.is_file():
        return False
    data = read_yaml(local.config)
    model = data.get("model") if isinstance(data, dict) else None
    return isinstance(model, dict) and MARKS <= model.keys()


FAMILIES = (Family(name=FAMILY, architecture="MDX23C, TFC-TDF v3 (audio-separator 0.47.1's TFC_TDF_net and MDXC demix)",
                   catalogue_bag=BAGS.catalogue_bag, entry_keys=frozenset({"config"}), recognises=recognises,
                   local_bag=BAGS.local_bag),)
