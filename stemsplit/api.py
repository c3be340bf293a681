"""The Python API: `stemsplit.load_model(...)` once, then `.separate(...)` as often as needed."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import soundfile as sf

from .audio import open_song, to_input_rate
from .bag import Bag
from .precision import choose
from .registry import load_bag
from .separation import Settings, check_settings, resolve_device, separate_stream

AudioSource = Union[str, Path, bytes, tuple[np.ndarray, int]]


class Separated(NamedTuple):
    stems: dict[str, np.ndarray]  # stem name -> float32 (channels, samples)
    sample_rate: int  # the input's own rate; every stem has the input's length


class Separator:
    """A loaded model with its settings, ready to separate many songs."""

    def __init__(self, bag: Bag, device: str, settings: Settings):
        check_settings(bag, settings, device)
        settings = replace(settings, precision=choose(settings.precision, device).precision)  # "auto" decided once
        self.bag, self.device, self.settings = bag, device, settings

    @property
    def stems(self) -> list[str]:
        return self.bag.stems

    def separate(self, source: AudioSource) -> Separated:
        """Stems of a file path, the bytes of an audio file, or a `(samples, rate)` pair where samples
        is (channels, n) or (n,) for mono. Stems are float32 and not clipped."""
        with tempfile.TemporaryDirectory(prefix="stemsplit-") as folder:
            path = as_file(source, Path(folder))
            with open_song(path, self.bag.samplerate, self.bag.audio_channels) as song:
                blocks = list(separate_stream(self.bag, song, self.settings, self.device))
                info = song.info
        channels = self.bag.audio_channels
        stems = {name: np.concatenate(list(to_input_rate((block[index].numpy() for block in blocks), channels,
                                                         self.bag.samplerate, info.sample_rate, info.frames)), axis=1)
                 for index, name in enumerate(self.bag.stems)}
        return Separated(stems, info.sample_rate)


def as_file(source: AudioSource, folder: Path) -> Path:
    """`source` as a path ffmpeg can read, writing bytes or arrays into `folder` if needed."""
    if isinstance(source, (str, Path)):
        return Path(source)
    path = folder / "input"
    if isinstance(source, (bytes, bytearray, memoryview)):
        path.write_bytes(source)
        return path
    samples, rate = source
    samples = np.asarray(samples, dtype=np.float32)
    samples = samples[None] if samples.ndim == 1 else samples
    path = path.with_suffix(".wav")
    sf.write(path, samples.T, int(rate), subtype="FLOAT")
    return path


def load_model(name: str | None = None, *, repo: str | Path | None = None, checkpoint: str | Path | None = None,
               config: str | Path | None = None, device: str = "auto", **settings: object) -> Separator:
    """The named model (default `htdemucs`), or a local RoFormer `checkpoint` with its YAML `config`,
    on `device` ("auto", "cpu", "cuda", "mps").

    `settings` are those of `separation.Settings`: shifts, overlap, segment, batch_size, precision.
    A precision that would run slower than float32 on `device` raises ValueError; "auto" picks the
    fastest there is (`.settings.precision` says which).
    """
    bag = load_bag(name, _path(repo), checkpoint=_path(checkpoint), config=_path(config))
    return Separator(bag, resolve_device(device), replace(Settings(), **settings))


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def separate(source: AudioSource, model: str | None = None, **options: object) -> Separated:
    """One-off separation: `load_model(model, **options).separate(source)`."""
    return load_model(model, **options).separate(source)
