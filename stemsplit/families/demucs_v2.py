"""Demucs v2 and Conv-TasNet, the demucs 2.0.3 generation, as audio-separator 0.47.1 vendors them.

Their files are demucs 2.0.3 packages: torch pickles of {klass, args, kwargs, state} whose
`klass` is `demucs.model.Demucs` or `demucs.tasnet.ConvTasNet` (v3 and v4 packages name
`demucs.demucs`, `demucs.hdemucs` and `demucs.htdemucs` classes, which are not ours). They are
read through the restricted unpickler (packages.py); `--checkpoint F.th` runs one alone, its
arguments bounded before anything is built. Segments go over a song as `FittedSegments`.
"""

from __future__ import annotations

import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import IO, Any

from ..bag import Bag, mixed_bag
from ..bounds import REACH, SHORTEST, Bounds
from ..errors import ModelError
from ..family import CatalogueFiles, Family, LocalFiles
from ..networks.demucs_v2 import ConvTasNet, ConvTasNetConfig, DemucsV2, DemucsV2Config

DEMUCS_CLASS, TASNET_CLASS = "demucs.model.Demucs", "demucs.tasnet.ConvTasNet"
# Bounds on every size a package gives, checked before anything is built: about four times each size and twice
# the weights of the largest released network (demucs: 64 channels, depth 6, 2 LSTM layers, context 3, 40 s
# segments, 265,679,496 weights; tasnet: N 256, L 20, B 256, H 512, X 10, R 4, 8 s segments, 10,977,872 weights).
DEMUCS_BOUNDS = Bounds({
    "audio_channels": 8, "channels": 256, "depth": 8, "kernel_size": 32, "stride": 16, REACH: 16384, "growth": 4.0,
    "lstm_layers": 8, "context": 12, "samplerate": 192000, "segment_length": 4 * 40 * 192000,
}, "about four times the sizes and twice the weights of the largest released Demucs v2",
    minima={"lstm_layers": 0, "growth": 1.0, **SHORTEST}, numbers=frozenset({"growth"}), weights=532_000_000)
# X: blocks per repeat, whose dilations double up to 2 ** (X - 1): 16 keeps them at 32768 samples.
TASNET_BOUNDS = Bounds({
    "N": 1024, "L": 80, "B": 1024, "H": 2048, "P": 13, "X": 16, "R": 16, "audio_channels": 8,
    "samplerate": 192000, "segment_length": 4 * 8 * 192000,
}, "about four times the sizes and twice the weights of the largest released Conv-TasNet", minima={"L": 2, **SHORTEST},
    weights=22_000_000)
PICKLES_BEFORE_PACKAGE = 4  # a legacy torch file holds a few small pickles before its package


def build_demucs(args: tuple, kwargs: dict[str, Any]) -> DemucsV2:
    return DEMUCS_BOUNDS.build(args, kwargs, DemucsV2Config.from_reference, DemucsV2)


def tasnet_config(*args: object, **kwargs: object) -> ConvTasNetConfig:
    config = ConvTasNetConfig.from_reference(*args, **kwargs)
    if config.P % 2 == 0:
        raise ModelError(f"P must be odd (the blocks keep their length), got {config.P}")
    return config


def build_tasnet(args: tuple, kwargs: dict[str, Any]) -> ConvTasNet:
    return TASNET_BOUNDS.build(args, kwargs, tasnet_config, ConvTasNet)


def package_class(path: Path) -> str | None:
    """The demucs class a torch package names, read from its pickle's opcodes without unpickling it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.split("/")[-1] == "data.pkl"]
                if len(names) != 1:
                    return None
                with archive.open(names[0]) as data:
                    return _demucs_global(data, pickles=1)
        with path.open("rb") as data:
            return _demucs_global(data, pickles=PICKLES_BEFORE_PACKAGE)
    except (OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError):
        return None


def _demucs_global(data: IO[bytes], pickles: int) -> str | None:
    """The first `demucs.` global named by the next `pickles` pickles of `data` (protocol 2 names them by GLOBAL)."""
    for _ in range(pickles):
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL" and str(argument).startswith("demucs."):
                return str(argument).replace(" ", ".")
    return None


def _recognises(local: LocalFiles, klass: str) -> bool:
    path = local.checkpoint
    return local.config is None and path.is_file() and path.suffix.lower() == ".th" and package_class(path) == klass


def _local_bag(local: LocalFiles) -> Bag:
    from ..packages import load_legacy

    return mixed_bag(local.name, [load_legacy(local.checkpoint)], [None], local.identity)


def catalogue_bag(files: CatalogueFiles, klass: str) -> Bag:
    """An entry's released files: bare state dicts (demucs 2.0.3's pretrained files), each built as the
    network `klass` with the entry's `params` as its arguments, mixed with the shares the entry gives."""
    from ..packages import build_package
    from ..unpickling import load_restricted

    kwargs = dict(files.info.params)
    networks = []
    for file in files.files:
        state = load_restricted(file.path)
        if not isinstance(state, dict) or "klass" in state:
            raise ModelError(f"{file.path} is not a state dict of a demucs 2.0.3 network")
        networks.append(build_package(klass, [], dict(kwargs), state, file.path))
    return mixed_bag(files.info.name, networks, [file.entry.shares for file in files.files], files.identity)


FAMILIES = (
    Family(name="demucs_v2", architecture="Demucs v2, the waveform U-Net (demucs 2.0.3's Demucs, as audio-separator "
           "0.47.1 vendors it)", catalogue_bag=lambda files: catalogue_bag(files, DEMUCS_CLASS),
           entry_keys=frozenset({"params"}), local_bag=_local_bag,
           recognises=lambda local: _recognises(local, DEMUCS_CLASS), package_classes={DEMUCS_CLASS: build_demucs}),
    Family(name="tasnet", architecture="Conv-TasNet (demucs 2.0.3's ConvTasNet, as audio-separator 0.47.1 vendors it)",
           catalogue_bag=lambda files: catalogue_bag(files, TASNET_CLASS), entry_keys=frozenset({"params"}),
           local_bag=_local_bag, recognises=lambda local: _recognises(local, TASNET_CLASS),
           package_classes={TASNET_CLASS: build_tasnet}),
)
