"""Demucs packages: the reference tool's weight files and its local model folders.

A package is one network: the `klass` of the reference that runs it, that class's
constructor arguments and its weights, either in the Hub's safetensors format (arguments
as JSON metadata) or in the legacy torch pickle. The family table says which family builds
each `klass`. Legacy files are pickles, which can run arbitrary code when loaded, so they
are read with an unpickler that accepts tensors and plain data only.

A local folder (`--repo DIR`) holds packages as `<sig>.safetensors` or `<sig>-<sha8>.th`
and bags of them as `<name>.yaml` (`models:`, optional `weights:` per stem and `segment:`).
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open

from .bag import Bag, mixed_bag
from .catalogue import read_catalogue
from .checkpoint import read_yaml
from .chunking import FittedSegments
from .errors import ModelError
from .families import package_builder, package_classes
from .files import sha256_of
from .unpickling import bounded_fraction, load_restricted, safe_global

if TYPE_CHECKING:
    from .bag import Network
    from .family import CatalogueFiles

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
MAX_BAG_SEGMENT = 176  # seconds: each network of the bag runs on chunks that long


@dataclass(frozen=True)
class PackageClass:
    """Stands in, while unpickling, for the reference class a legacy package names: no code of it runs."""

    qualified: str


def load_safetensors(path: Path) -> Network:
    """A network from the Hub's format: tensors plus the reference class and its constructor
    arguments as JSON in the metadata."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            state = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{path} is not a readable safetensors file: {error}") from error
    if "structure" in metadata:
        raise ModelError(f"{path} holds a quantized model, which stemsplit does not support")
    try:
        klass = metadata["klass"]
        args = json.loads(metadata["args"], object_hook=_decode_fraction)
        kwargs = json.loads(metadata["kwargs"], object_hook=_decode_fraction)
    except (KeyError, TypeError, ValueError) as error:  # ValueError: invalid JSON, or an unbounded fraction
        raise ModelError(f"{path} does not describe its model (klass, args, kwargs)") from error
    return build_package(klass, args, kwargs, state, path)


def _decode_fraction(value: dict[str, Any]) -> Any:
    if value.get("_type") == "fraction":
        return bounded_fraction(value["numerator"], value["denominator"])
    return value


def load_legacy(path: Path) -> Network:
    """A network from the reference's original format: a torch pickle of
    {klass, args, kwargs, state, training_args}, unpickled with an allow-list."""
    package = load_restricted(path, _package_global)
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= package.keys():
        raise ModelError(f"{path} is not a model package (klass, args, kwargs, state)")
    # `training_args` is never used, so it alone may hold configuration placeholders.
    inside = [package["klass"], package["args"], package["kwargs"], package["state"]]
    if _holds_placeholder(inside):
        raise ModelError(f"{path} holds configuration objects where model settings belong")
    if not isinstance(package["klass"], PackageClass):
        raise ModelError(f"{path} does not name the reference class of its model")
    if not isinstance(package["state"], dict) or package["state"].get("__quantized"):
        raise ModelError(f"{path} holds a quantized model, which stemsplit does not support")
    return build_package(package["klass"].qualified, package["args"], package["kwargs"], package["state"], path)


def build_package(klass: str, args: Any, kwargs: Any, state: dict[str, torch.Tensor], path: Path) -> Network:
    """The network of class `klass` built from a package's arguments (bounded by its family's builder), with
    `state` loaded strict, float32, eval mode; problems are ModelErrors naming `path`."""
    build = package_builder(klass)
    if build is None:
        raise ModelError(f"{path} holds a {klass} model; stemsplit runs {', '.join(package_classes())} models only")
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ModelError(f"{path} has malformed model arguments")
    try:
        network = build(tuple(args), kwargs)
    except ModelError as error:
        raise ModelError(f"{path} has a model configuration stemsplit does not support: {error}") from error
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ModelError(
            f"the weights in {path} do not fit its model configuration; the file is damaged"
        ) from error
    return network.float().eval()


# What a legacy package's pickle may hold beyond the allow-list

class ConfigPlaceholder:
    """Stands in for the training configuration objects (omegaconf) some legacy
    files hold under `training_args`: it keeps nothing and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _package_global(module: str, name: str) -> Any:
    qualified = f"{module}.{name}"
    if module == "omegaconf" or module.startswith("omegaconf."):
        return ConfigPlaceholder
    if module == "demucs" or module.startswith("demucs."):
        if qualified not in package_classes():
            raise pickle.UnpicklingError(f"it holds a {qualified} model; stemsplit runs "
                                         f"{', '.join(package_classes())} models only")
        return PackageClass(qualified)
    return safe_global(module, name)


def _holds_placeholder(value: Any) -> bool:
    if isinstance(value, ConfigPlaceholder):
        return True
    if isinstance(value, dict):
        return any(_holds_placeholder(key) or _holds_placeholder(item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_placeholder(item) for item in value)
    return False


# Bags of packages: a catalogue model's files, or a local folder (`--repo DIR`)

def catalogue_bag(files: CatalogueFiles) -> Bag:
    """The catalogue model's packages (safetensors) mixed with the shares its entry gives, its segment set."""
    networks = [load_safetensors(file.path) for file in files.files]
    if files.info.segment is not None:
        apply_bag_segment(networks, bounded_fraction(str(files.info.segment)))
    return mixed_bag(files.info.name, networks, [file.entry.shares for file in files.files], files.identity)


def folder_bag(folder: Path, name: str) -> Bag:
    """`name` is either a bag `<name>.yaml` in `folder` or the signature of one package
    there: `<sig>.safetensors` or, in the legacy format, `<sig>-<sha8>.th`."""
    if not folder.is_dir():
        raise ModelError(f"--repo {folder} is not a folder")
    if not NAME_PATTERN.fullmatch(name):
        raise ModelError(f"'{name}' is not a model name (letters, digits, '_' and '-' only)")
    bag_file = folder / f"{name}.yaml"
    if bag_file.is_file():
        signatures, shares, segment = _read_bag_file(bag_file)
    elif _local_package(folder, name):
        signatures, shares, segment = [name], None, None
    else:
        raise ModelError(
            f"{folder} has no model '{name}': expected {name}.yaml, "
            f"{name}.safetensors or {name}-<sha8>.th"
        )
    loaded = [_load_local_package(folder, signature) for signature in signatures]
    networks = [network for network, _ in loaded]
    if shares is not None and len(shares) != len(networks):
        raise ModelError(f"model '{name}' needs one row of weights for each of its {len(networks)} networks")
    if segment is not None:
        apply_bag_segment(networks, segment)
    identity = f"{folder.resolve()}/{name}:" + ",".join(sha256 for _, sha256 in loaded)
    return mixed_bag(name, networks, shares or [None] * len(networks), identity)


def _read_bag_file(path: Path) -> tuple[list[str], list[list[float]] | None, Fraction | None]:
    """A bag file's signatures, shares (its `weights:` rows, the reference's word) and segment."""
    try:
        spec = read_yaml(path, "bag file")
        signatures = [str(signature) for signature in spec["models"]]
        shares = spec.get("weights")
        if shares is not None:
            shares = [[float(share) for share in row] for row in shares]
        segment = spec.get("segment")
        segment = None if segment is None else bounded_fraction(str(segment))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelError(f"{path} is not a valid bag file (it needs a `models:` list): {error!r}") from error
    if not signatures or not all(NAME_PATTERN.fullmatch(signature) for signature in signatures):
        raise ModelError(f"{path}: `models:` must list model signatures")
    if segment is not None and segment <= 0:
        raise ModelError(f"{path}: `segment:` must be a positive number of seconds, not {segment}")
    if segment is not None and segment > MAX_BAG_SEGMENT:
        raise ModelError(f"{path}: `segment:` is {segment} seconds, more than the {MAX_BAG_SEGMENT} stemsplit allows "
                         "(four times the longest published, the MDX bags' 44)")
    return signatures, shares, segment


def apply_bag_segment(networks: list[Network], segment: Fraction) -> None:
    """A bag's segment, as the reference's BagOfModels sets it: networks that run on any length
    (Demucs, Hybrid Demucs) take it; HT Demucs, which runs on its training length, only when
    it is shorter."""
    for network in networks:
        fits_any_length = isinstance(network.chunking, FittedSegments)
        network.segment = segment if fits_any_length else min(network.segment, segment)


def _local_package(folder: Path, signature: str) -> Path | None:
    safetensors = folder / f"{signature}.safetensors"
    if safetensors.is_file():
        return safetensors
    legacy = sorted(folder.glob(f"{signature}-*.th")) + sorted(folder.glob(f"{signature}.th"))
    if len(legacy) > 1:
        raise ModelError(f"{folder} has several weight files for '{signature}'; keep only one")
    return legacy[0] if legacy else None


def _load_local_package(folder: Path, signature: str) -> tuple[Network, str]:
    """A network of the folder and the SHA-256 of its file."""
    path = _local_package(folder, signature)
    if path is None:
        raise ModelError(
            f"{folder} has no weights for network '{signature}': "
            f"expected {signature}.safetensors or {signature}-<sha8>.th"
        )
    sha256 = _check_local_file(path, signature)
    load = load_safetensors if path.suffix == ".safetensors" else load_legacy
    return load(path), sha256


def _check_local_file(path: Path, signature: str) -> str:
    """Check the SHA-256 a file's name promises and, for catalogue files, the pinned one; return it."""
    sha256 = sha256_of(path)
    _, _, prefix = path.stem.partition("-")
    if prefix and not sha256.startswith(prefix):
        raise ModelError(
            f"{path} is corrupt: its sha256 does not start with {prefix} as its name says; "
            "replace it with a good copy"
        )
    pinned = {file.signature: file for info in read_catalogue().values() for file in info.files}
    if signature in pinned:
        file = pinned[signature]
        expected = {file.name: file.sha256, file.legacy: file.legacy_sha256}.get(path.name)
        if expected is not None and sha256 != expected:
            raise ModelError(f"{path} is corrupt (sha256 mismatch with the catalogue); replace it with a good copy")
    return sha256
