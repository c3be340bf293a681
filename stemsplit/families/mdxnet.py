"""MDX-Net: UVR's ONNX models, run with onnxruntime as audio-separator's MDXSeparator runs them.

A model is an `.onnx` file plus its parameters, which audio-separator looks up by a hash of the
file: for catalogue entries they are the entry's `params` table in models.toml, for a local file a
small YAML or JSON file given as `--config`:

    {"n_fft": 6144, "dim_f": 3072, "compensate": 1.022, "primary": "instrumental", "secondary": "vocals"}

(optional: `hop_length`, default 1024; `denoise`, default false; `sample_rate`, default 44100).
Chunks go over a song as `TrimmedChunks` (chunking.py). onnxruntime is the `mdx` extra.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

from ..bag import Bag, Member
from ..checkpoint import read_yaml
from ..chunking import TrimmedChunks
from ..errors import ModelError
from ..family import CatalogueFiles, Family, LocalFiles
from ..networks.mdxnet import FRAMES, MdxNet, MdxNetConfig, providers

FAMILY = "mdx_net"
REQUIRED = ("n_fft", "dim_f", "compensate", "primary", "secondary")
OPTIONAL = {"hop_length": 1024, "denoise": False, "sample_rate": 44100}
# Bounds: about four times the largest published parameters (n_fft 7680, dim_f 3072, hop 1024, compensate 1.065).
LIMITS = {"n_fft": 32768, "dim_f": 16384, "hop_length": 8192, "sample_rate": 192000, "compensate": 4.0}
INSTALL = "MDX-Net models need onnxruntime: pip install 'stemsplit[mdx]'"


def read_params(path: Path) -> MdxNetConfig:
    try:
        return params_config(read_yaml(path, kind="MDX-Net parameter file"))
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from error


def params_config(data: Any) -> MdxNetConfig:
    """MDX-Net parameters from a parameter file's mapping."""
    if not isinstance(data, dict):
        raise ModelError("MDX-Net parameters must be a mapping")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    missing = [key for key in REQUIRED if key not in data]
    if unknown or missing:
        raise ModelError(f"unknown parameter {unknown[0]}" if unknown else f"parameter {missing[0]} is missing")
    values = {**OPTIONAL, **data}
    config = MdxNetConfig(
        n_fft=_integer(values, "n_fft"), dim_f=_integer(values, "dim_f"), hop_length=_integer(values, "hop_length"),
        sample_rate=_integer(values, "sample_rate"), compensate=_compensate(values), primary=_stem(values, "primary"),
        secondary=_stem(values, "secondary"), denoise=_boolean(values, "denoise"))
    _check_fit(config)
    return config


def _integer(values: dict, key: str) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMITS[key]:
        raise ModelError(f"{key} must be an integer from 1 to {LIMITS[key]}, not {reprlib.repr(value)}")
    return value


def _compensate(values: dict) -> float:
    value = values["compensate"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= LIMITS["compensate"]:
        raise ModelError(f"compensate must be a number above 0, at most {LIMITS['compensate']:g}, "
                         f"not {reprlib.repr(value)}")
    return float(value)


def _stem(values: dict, key: str) -> str:
    value = values[key]
    if not isinstance(value, str) or not value.isidentifier():
        raise ModelError(f"{key} must be a stem name (letters, digits, _), not {reprlib.repr(value)}")
    return value.lower()


def _boolean(values: dict, key: str) -> bool:
    if not isinstance(values[key], bool):
        raise ModelError(f"{key} must be true or false, not {reprlib.repr(values[key])}")
    return values[key]


def _check_fit(config: MdxNetConfig) -> None:
    if config.dim_f > config.n_fft // 2 + 1 or config.dim_f <= 3:
        raise ModelError(f"dim_f ({config.dim_f}) must be above 3 and at most n_fft / 2 + 1")
    if 2 * config.hop_length > config.n_fft:  # a Hann window's inverse STFT needs the frames to overlap by half
        raise ModelError(f"hop_length ({config.hop_length}) must be at most n_fft / 2")
    if config.chunk_size <= config.n_fft:
        raise ModelError(f"a chunk ({FRAMES - 1} hops) must be longer than n_fft")
    if config.primary == config.secondary:
        raise ModelError("primary and secondary must be different stems")


def session(model: Path) -> Any:
    """An onnxruntime session of the ONNX file `model`, on the fastest provider present."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(INSTALL) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return onnxruntime.InferenceSession(str(model), sess_options=options,
                                            providers=providers(onnxruntime.get_available_providers()))
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for unreadable files
        raise ModelError(f"{model} is not an ONNX model onnxruntime can run: {str(error).splitlines()[0]}") from None


def load_network(model: Path, config: MdxNetConfig) -> MdxNet:
    network = MdxNet(session(model), config)
    _check_input(model, network, config)
    network.family, network.sources = FAMILY, [config.primary, config.secondary]
    network.chunking = TrimmedChunks(config.chunk_size, config.n_fft // 2)
    return network.eval()


def _check_input(model: Path, network: MdxNet, config: MdxNetConfig) -> None:
    """The ONNX model must take (batch, 4, dim_f, 256) spectrograms, where its shape names sizes."""
    shape = network.session.get_inputs()[0].shape
    expected = [None, 4, config.dim_f, FRAMES]
    if len(shape) != 4 or any(isinstance(size, int) and want and size != want for size, want in zip(shape, expected)):
        raise ModelError(f"{model} takes inputs of shape {shape}, not (batch, 4, {config.dim_f}, {FRAMES}): "
                         "check its dim_f")


def network_bag(name: str, model: Path, config: MdxNetConfig, identity: str) -> Bag:
    network = load_network(model, config)
    return Bag(name, list(network.sources), [Member(network, dict.fromkeys(network.sources, 1.0))],
               identity=identity)


def _catalogue_bag(files: CatalogueFiles) -> Bag:
    if len(files.files) != 1:
        raise ModelError(f"model '{files.info.name}' needs one ONNX file")
    try:
        config = params_config(dict(files.info.params))
    except ModelError as error:
        raise ModelError(f"model catalogue entry '{files.info.name}' is malformed: params: {error}") from None
    return network_bag(files.info.name, files.files[0].path, config, files.identity)


def _local_bag(local: LocalFiles) -> Bag:
    return network_bag(local.name, local.checkpoint, read_params(local.config), local.identity)


def recognises(local: LocalFiles) -> bool:
    """An `.onnx` file with its parameter file."""
    return local.config is not None and local.checkpoint.is_file() and local.checkpoint.suffix.lower() == ".onnx"


FAMILIES = (Family(name=FAMILY, architecture="MDX-Net ONNX models (audio-separator 0.47.1's MDXSeparator)",
                   catalogue_bag=_catalogue_bag, entry_keys=frozenset({"params"}), recognises=recognises,
                   local_bag=_local_bag),)
