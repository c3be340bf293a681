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
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from ..bag import Bag, mixed_bag
from ..errors import ModelError
from ..family import CatalogueFiles, Family, LocalFiles
from ..networks.demucs_v2 import ConvTasNet, ConvTasNetConfig, DemucsV2, DemucsV2Config

DEMUCS_CLASS, TASNET_CLASS = "demucs.model.Demucs", "demucs.tasnet.ConvTasNet"
# Upper bounds on every size a package gives, checked before anything is built: about four times the
# largest released network (demucs: 64 channels, depth 6, 2 LSTM layers, context 3, 40 s segments;
# tasnet: N 256, L 20, B 256, H 512, X 10, R 4, 8 s segments).
DEMUCS_LIMITS = {
    "audio_channels": 8, "channels": 256, "depth": 8, "kernel_size": 32, "stride": 16, "growth": 4.0,
    "lstm_layers": 8, "context": 12, "samplerate": 192000, "segment_length": 4 * 40 * 192000,
}
TASNET_LIMITS = {
    "N": 1024, "L": 80, "B": 1024, "H": 2048, "P": 13, "X": 40, "R": 16, "audio_channels": 8,
    "samplerate": 192000, "segment_length": 4 * 8 * 192000,
}
MINIMUMS = {"lstm_layers": 0, "L": 2, "growth": 1.0}  # every other bounded size is at least 1
MAX_SOURCES = 32
MAX_BOTTOM_CHANNELS = 8192  # the widest layer, channels * growth ** (depth - 1): 2048 released
PICKLES_BEFORE_PACKAGE = 4  # a legacy torch file holds a few small pickles before its package


def bounded(config: Any, limits: dict[str, float]) -> Any:
    """`config` if every size in `limits` is a number in its range and the sources are few, distinct names."""
    for field in fields(config):
        if field.name in limits:
            value, kind = getattr(config, field.name), float if field.name == "growth" else int
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise ModelError(f"{field.name} must be a number, not {value!r}")
            if not MINIMUMS.get(field.name, 1) <= value <= limits[field.name]:
                raise ModelError(f"{field.name} must be from {MINIMUMS.get(field.name, 1)} to "
                                 f"{limits[field.name]}, got {value}")
    sources = config.sources
    if not 0 < len(sources) <= MAX_SOURCES or len(set(sources)) != len(sources) or \
            not all(isinstance(source, str) for source in sources):
        raise ModelError(f"sources must be 1 to {MAX_SOURCES} distinct names")
    return config


def build_demucs(args: tuple, kwargs: dict[str, Any]) -> DemucsV2:
    config = bounded(DemucsV2Config.from_reference(*args, **kwargs), DEMUCS_LIMITS)
    if config.channels * config.growth ** (config.depth - 1) > MAX_BOTTOM_CHANNELS:
        raise ModelError(f"its widest layer would have more than {MAX_BOTTOM_CHANNELS} channels")
    return DemucsV2(config)


def build_tasnet(args: tuple, kwargs: dict[str, Any]) -> ConvTasNet:
    config = bounded(ConvTasNetConfig.from_reference(*args, **kwargs), TASNET_LIMITS)
    if config.P % 2 == 0:
        raise ModelError(f"P must be odd (the blocks keep their length), got {config.P}")
    return ConvTasNet(config)


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
    from ..packages import _build as build_package
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
