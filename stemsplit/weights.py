"""Reading weight files: the Hub's safetensors format and the legacy torch pickles.

Legacy files are pickles, which can run arbitrary code when loaded, so they are read
with an unpickler that accepts tensors, plain data and the names of the network classes
in PACKAGE_CLASSES only.
"""

from __future__ import annotations

import builtins
import json
import pickle
import types
import zipfile
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open

from .errors import ModelError
from .networks.htdemucs import HTDemucs, HTDemucsConfig

Builder = Callable[[list, dict], torch.nn.Module]  # (args, kwargs) as a package stores them -> network


def build_htdemucs(args: list, kwargs: dict) -> torch.nn.Module:
    return HTDemucs(HTDemucsConfig.from_reference(*args, **kwargs))


def build_hdemucs(args: list, kwargs: dict) -> torch.nn.Module:
    from .networks.hdemucs import HDemucs, HDemucsConfig

    return HDemucs(HDemucsConfig.from_reference(*args, **kwargs))


def build_demucs(args: list, kwargs: dict) -> torch.nn.Module:
    from .networks.demucs import Demucs, DemucsConfig

    return Demucs(DemucsConfig.from_reference(*args, **kwargs))


# The names weight files give the model class, mapped to what builds the network that runs them.
PACKAGE_CLASSES: dict[str, Builder] = {
    "demucs.htdemucs.HTDemucs": build_htdemucs,
    "demucs.hdemucs.HDemucs": build_hdemucs,
    "demucs.demucs.Demucs": build_demucs,
}
SUPPORTED = "HTDemucs, HDemucs and Demucs models only"


def load_safetensors(path: Path) -> torch.nn.Module:
    """A model from the Hub's format: tensors plus the model class and its init
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
        klass_name = metadata["klass"]
        args = json.loads(metadata["args"], object_hook=_decode_fraction)
        kwargs = json.loads(metadata["kwargs"], object_hook=_decode_fraction)
    except (KeyError, json.JSONDecodeError) as error:
        raise ModelError(f"{path} does not describe its model (klass, args, kwargs)") from error
    if klass_name not in PACKAGE_CLASSES:
        raise ModelError(f"{path} holds a {klass_name} model; stemsplit runs {SUPPORTED}")
    return _build(PACKAGE_CLASSES[klass_name], args, kwargs, state, path)


def _decode_fraction(value: dict[str, Any]) -> Any:
    if value.get("_type") == "fraction":
        return Fraction(value["numerator"], value["denominator"])
    return value


def load_legacy(path: Path) -> torch.nn.Module:
    """A model from the reference's original format: a torch pickle of
    {klass, args, kwargs, state, training_args}, unpickled with an allow-list."""
    if _is_torchscript(path):
        # torch.load would hand such an archive to torch.jit.load, bypassing the allow-list.
        raise ModelError(f"{path} is a TorchScript archive, not a model package")
    try:
        package = torch.load(path, map_location="cpu", weights_only=False,
                             pickle_module=restricted_pickle)
    except Exception as error:  # a refused global, a truncated or foreign file
        raise ModelError(f"cannot load {path}: {error}") from error
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= package.keys():
        raise ModelError(f"{path} is not a model package (klass, args, kwargs, state)")
    # `training_args` is never used, so it alone may hold configuration placeholders.
    inside = [package["klass"], package["args"], package["kwargs"], package["state"]]
    if _holds_placeholder(inside):
        raise ModelError(f"{path} holds configuration objects where model settings belong")
    if not any(package["klass"] is builder for builder in PACKAGE_CLASSES.values()):
        raise ModelError(f"{path} does not hold a network stemsplit runs ({SUPPORTED})")
    if not isinstance(package["state"], dict) or package["state"].get("__quantized"):
        raise ModelError(f"{path} holds a quantized model, which stemsplit does not support")
    return _build(package["klass"], package["args"], package["kwargs"], package["state"], path)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[-1] == "constants.pkl" for name in archive.namelist())


def _build(build: Builder, args: Any, kwargs: Any, state: dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ModelError(f"{path} has malformed model arguments")
    try:
        model = build(list(args), kwargs)
    except ModelError as error:
        raise ModelError(f"{path} has a model configuration stemsplit does not support: {error}") from error
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ModelError(
            f"the weights in {path} do not fit its model configuration; the file is damaged"
        ) from error
    return model.float().eval()


# The restricted unpickler for legacy files

class ConfigPlaceholder:
    """Stands in for the training configuration objects (omegaconf) some legacy
    files hold under `training_args`: it keeps nothing and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("fractions", "Fraction"): Fraction,
    ("typing", "Any"): Any,
    **{("builtins", name): getattr(builtins, name)
       for name in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool")},
}


def _find_global(module: str, name: str) -> Any:
    if module == "__builtin__":  # how pickle protocol 2, which torch.save uses, names builtins
        module = "builtins"
    qualified = f"{module}.{name}"
    if qualified in PACKAGE_CLASSES:  # the class stands for its builder: nothing of it is imported
        return PACKAGE_CLASSES[qualified]
    if (module, name) in SAFE_GLOBALS:
        return SAFE_GLOBALS[module, name]
    if module == "omegaconf" or module.startswith("omegaconf."):
        return ConfigPlaceholder
    if module == "demucs" or module.startswith("demucs."):
        raise pickle.UnpicklingError(f"it holds a {qualified} model; stemsplit runs {SUPPORTED}")
    raise pickle.UnpicklingError(f"it refers to {qualified}, which a weight file must not contain")


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _find_global(module, name)


# torch.load wants a module with `Unpickler` and `load`.
restricted_pickle = types.ModuleType("restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()


def _holds_placeholder(value: Any) -> bool:
    if isinstance(value, ConfigPlaceholder):
        return True
    if isinstance(value, dict):
        return any(_holds_placeholder(key) or _holds_placeholder(item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_placeholder(item) for item in value)
    return False
