"""The Python API: `stemsplit.load_model(...)` once, then `.separate(...)` as often as needed."""

from __future__ import annotations

import tempfile
from dataclasses import fields, replace
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import numpy as np
import soundfile as sf

from .audio import open_song
from .bag import OTHER_METHODS, Bag, output_names, pick_outputs
from .errors import InputError, SettingsError
from .files import temporary_prefix
from .registry import load_bag
from .runner import input_failure
from .chain import Chain, separated, then_chain
from .separation import Decided, Settings, decide, resolve_device

AudioSource = Union[str, Path, bytes, tuple[np.ndarray, int]]
SETTINGS = frozenset(setting.name for setting in fields(Settings))
MAX_CHANNELS = 8  # the most channels an array may have; a longer axis is taken for time


class Separated(NamedTuple):
    stems: dict[str, np.ndarray]  # stem name -> float32 (channels, samples)
    sample_rate: int  # the input's own rate; every stem has the input's length


class Separator:
    """A loaded model with its settings decided, ready to separate many songs into `stems`."""

    def __init__(self, bag: Bag | Chain, decided: Decided, stems: list[str] | None = None):
        decided.check(bag)
        self.bag, self.decided = bag, decided
        self.stems = stems or list(bag.stems)

    @property
    def settings(self) -> Settings:
        return self.decided.settings

    @property
    def device(self) -> str:
        return self.decided.device

    def separate(self, source: AudioSource) -> Separated:
        """Stems of a file path, the bytes of an audio file, or a `(samples, rate)` pair where samples
        is (channels, n), (n, channels) or (n,) for mono, float or integer PCM (scaled to +-1 by its
        type's range). Stems are float32 and not clipped."""
        with tempfile.TemporaryDirectory(prefix=temporary_prefix()) as folder:
            path = as_file(source, Path(folder))
            with open_song(path, self.bag.samplerate, self.bag.audio_channels) as song:
                try:
                    blocks = [pick_outputs(block, self.bag.stems, self.stems) for block in
                              separated(self.bag, song, self.decided, lambda step: lambda done, total: None)]
                except RuntimeError as error:  # e.g. out of memory: that input's failure, worded as the CLI's
                    raise InputError(input_failure(str(source) if isinstance(source, (str, Path)) else "the audio",
                                                   error)) from error
                info = song.info
        stems = {name: np.concatenate([block[index].numpy() for block in blocks], axis=1)
                 for index, name in enumerate(self.stems)}
        return Separated(stems, info.sample_rate)


def as_file(source: AudioSource, folder: Path) -> Path:
    """`source` as a path ffmpeg can read, writing bytes or arrays into `folder` if needed."""
    if isinstance(source, (str, Path)):
        return Path(source)
    path = folder / "input"
    if isinstance(source, (bytes, bytearray, memoryview)):
        path.write_bytes(source)
        return path
    if not (isinstance(source, tuple) and len(source) == 2):
        raise InputError(f"cannot separate a {type(source).__name__}: give a path, the bytes of an audio file, "
                         "or a (samples, rate) pair")
    samples, rate = source
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(f"the rate must be a positive whole number of Hz, got {rate!r}")
    path = path.with_suffix(".wav")
    sf.write(path, channels_first(as_float(np.asarray(samples))).T, int(rate), subtype="FLOAT")
    return path


def as_float(samples: np.ndarray) -> np.ndarray:
    """float32 samples; integer PCM scaled from its type's range to +-1 (int16 by 1/32768)."""
    if samples.dtype.kind in "iu":
        half = 2.0 ** (8 * samples.dtype.itemsize - 1)
        offset = half if samples.dtype.kind == "u" else 0.0
        return ((samples.astype(np.float64) - offset) / half).astype(np.float32)
    if samples.dtype.kind != "f":
        raise InputError(f"samples must be float or integer PCM, not {samples.dtype}")
    return samples.astype(np.float32, copy=False)


def channels_first(samples: np.ndarray) -> np.ndarray:
    """(channels, n) from (n,), (channels, n) or (n, channels): the channel axis is the one of at most
    MAX_CHANNELS when the other is longer."""
    if samples.ndim == 1:
        return samples[None]
    if samples.ndim == 2 and samples.shape[0] <= MAX_CHANNELS:
        return samples
    if samples.ndim == 2 and samples.shape[1] <= MAX_CHANNELS:
        return samples.T
    raise InputError(f"samples of shape {samples.shape}: expected (channels, n), (n, channels) or (n,), "
                     f"with at most {MAX_CHANNELS} channels")


def load_model(name: str | None = None, *, repo: str | Path | None = None, checkpoint: str | Path | None = None,
               config: str | Path | None = None, device: str = "auto", stems: Sequence[str] = (),
               two_stems: str | None = None, other_method: str = "add", then: Sequence[str] = (),
               **settings: object) -> Separator:
    """The named model (default `htdemucs`), or local `checkpoint` files (a RoFormer's with its YAML
    `config`, or a folder of Spleeter checkpoints), on `device` ("auto", "cpu", "cuda", "mps").

    `stems` keeps only those stems; `two_stems="vocals"` gives vocals and no_vocals, the sum of the other
    stems (`other_method="add"`) or the mix minus vocals ("minus": only the networks vocals need run).
    `then=["vocals:MODEL", ...]` makes a chain: each STEM of what came before separated by MODEL (as `--then`).
    `settings` are those of `separation.Settings`: shifts, overlap, segment, batch_size, precision.
    A precision that would run slower than float32 on `device` raises SettingsError (a ValueError); "auto" picks the
    fastest there is (`.settings.precision` says which).
    """
    _check_model_choice(name, repo, checkpoint, config)
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(sorted(SETTINGS))}")
    if other_method not in OTHER_METHODS:
        raise SettingsError(f"other_method must be one of {', '.join(OTHER_METHODS)}, not {other_method!r}")
    try:
        decided = decide(replace(Settings(), **settings), resolve_device(device))
    except TypeError as exc:
        raise SettingsError(str(exc)) from None
    bag = load_bag(name, _path(repo), checkpoint=_path(checkpoint), config=_path(config))
    try:
        bag = then_chain(bag, then, _path(repo), lambda message: None) if then else bag
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    try:
        names = output_names(bag.stems, stems, two_stems)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Separator(bag.for_outputs(names, other_method), decided, names)


def _check_model_choice(name: str | None, repo: object, checkpoint: object, config: object) -> None:
    """As the CLI: `checkpoint` and `config` go together, and leave no model `name` or `repo` to drop."""
    if (checkpoint is None) != (config is None):
        raise SettingsError("checkpoint and config go together")
    if checkpoint is not None and (name is not None or repo is not None):
        raise SettingsError("give either checkpoint with config, or a model name and/or repo")


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def separate(source: AudioSource, model: str | None = None, **options: object) -> Separated:
    """One-off separation: `load_model(model, **options).separate(source)`."""
    return load_model(model, **options).separate(source)
