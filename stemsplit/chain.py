"""Chains run: each step's bag over the stem an earlier step gave, all steps in one streamed pass over the song.

Step 1 reads the song. A later step reads its stem as a song of its own: the earlier step's float32 output at
the input's rate (residual formed there, as `separation.at_input_rate` forms it), resampled to the step's network
rate as an input is, never encoded. So each step gives what running its model alone on that stem gives.

Steps pull what they read from the steps before them as the engine asks for it. What a step gives is kept, as
the song itself is, in a float32 temporary file (`Tape`), which holds it for whichever later reader needs it: the
next step's chunks (an HT Demucs step first reads the whole stem, to normalise it), and the final stems, which
are written in step with the last step. Memory stays flat on a song of an hour; the disk holds each step's
stems once. A VR step, like a VR model alone, takes its whole stem in one run (see chunking.WholeSong).

A step's model without a residual stem (HT Demucs, VR) gets one, its `other` (else its last stem) as the stem
minus its other stems, so that every split of a stem sums to that stem and the final stems to the song.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Sequence

import numpy as np
import torch

from .audio import BLOCK_FRAMES, AudioInfo, _append_raw, _filter, _read_window, resample_blocks
from .bag import Bag, Member
from .chain_steps import ChainStep, Layout, Placed, lay_out, parse_then
from .downloads import Notify
from .errors import ModelError
from .files import temporary_prefix
from .separation import Decided, Progress, at_input_rate, separate_stream

if TYPE_CHECKING:
    from .audio import Song


class LayoutError(ModelError):
    """Steps that do not make a chain (a stem it lacks, names given twice)."""


Bars = Callable[[str | None], Progress]  # a step's label (None: a single model's run) -> its progress bar


@dataclass(frozen=True)
class Step:
    plan: ChainStep
    bag: Bag  # with a residual stem (see `summing`)


@dataclass(frozen=True)
class Chain:
    """A chain's loaded steps; used where a bag is (its name, stems, identity, rate, members)."""

    name: str
    steps: tuple[Step, ...]
    layout: Layout = field(init=False, compare=False)

    def __post_init__(self) -> None:
        try:
            layout = lay_out([step.plan for step in self.steps], [step.bag.stems for step in self.steps])
        except ValueError as error:
            raise LayoutError(f"chain '{self.name}': {error}") from None
        object.__setattr__(self, "layout", layout)

    @property
    def stems(self) -> list[str]:
        return self.layout.names

    @property
    def identity(self) -> str:
        """Each step's stem and model identity: a changed step changes it."""
        return " > ".join(f"{step.plan.stem or 'song'}: {step.bag.identity}" for step in self.steps)

    @property
    def samplerate(self) -> int:
        """The rate the song is read at: the first step's."""
        return self.steps[0].bag.samplerate

    @property
    def audio_channels(self) -> int:
        return self.steps[0].bag.audio_channels

    @property
    def members(self) -> list[Member]:
        return [member for step in self.steps for member in step.bag.members]

    def for_outputs(self, names: list[str], other_method: str = "add") -> Chain:
        """Every step runs whatever is asked: a split needs the stem it splits, and that stem every stem beside it."""
        return self

    def labels(self) -> list[str]:
        """How each step's progress bar is named."""
        count = len(self.steps)
        return [f"step {index}/{count} {step.bag.name}" + (f" on {step.plan.stem}" if step.plan.stem else "")
                for index, step in enumerate(self.steps, 1)]

    def records(self) -> list[dict[str, str | None]]:
        """Each step's model and the stem it took, for --json."""
        return [{"model": step.bag.name, "stem": step.plan.stem} for step in self.steps]

    def stream(self, song: Song, decided: Decided, bars: Bars) -> Iterator[torch.Tensor]:
        """The final stems, (stems, channels, samples) blocks at the input's rate, in song order."""
        with ExitStack() as files:
            tapes: list[Tape] = []
            for step, label, taken in zip(self.steps, self.labels(), self.layout.inputs):
                mix = song if taken is None else StemSong.of(self._rows(tapes, taken, song.channels), song, step, files)
                blocks = at_input_rate(separate_stream(step.bag, mix, decided, bars(label)), step.bag, mix)
                tapes.append(Tape(flat(blocks), len(step.bag.stems) * song.channels, song.info.frames,
                                  files.enter_context(temporary_file())))
            yield from self._final(tapes, song)

    def _rows(self, tapes: list[Tape], placed: Placed, channels: int) -> Rows:
        """Where a stem of the chain lies: its step's tape, its rows."""
        index = self.steps[placed.step].bag.stems.index(placed.stem)
        return Rows(tapes[placed.step], slice(index * channels, (index + 1) * channels))

    def _final(self, tapes: list[Tape], song: Song) -> Iterator[torch.Tensor]:
        """The final stems read back block by block; the last step's tape is read as it is written."""
        channels = song.channels
        for start in range(0, song.info.frames, BLOCK_FRAMES):
            length = min(BLOCK_FRAMES, song.info.frames - start)
            stems = [self._rows(tapes, placed, channels).read(start, length) for placed in self.layout.final]
            yield torch.from_numpy(np.stack(stems))


def summing(bag: Bag) -> Bag:
    """`bag`, or where it has no residual stem, the same with its `other` (else its last stem) the input minus
    the others: a chain's splits must sum to what they split."""
    if bag.residual is not None:
        return bag
    residual = "other" if "other" in bag.stems else bag.stems[-1]
    return bag.needing(list(bag.stems), residual=residual)


def flat(blocks: Iterator[torch.Tensor]) -> Iterator[np.ndarray]:
    """(stems, channels, n) blocks as (stems * channels, n) arrays."""
    for block in blocks:
        yield block.reshape(-1, block.shape[-1]).numpy()


def temporary_file() -> BinaryIO:
    return tempfile.TemporaryFile(prefix=temporary_prefix())  # removed when closed, or when the process ends


class Tape:
    """The (rows, n) float32 blocks of a stream, kept in a file as they are pulled, readable window by window:
    reading a window pulls the stream as far as its end."""

    def __init__(self, blocks: Iterator[np.ndarray], rows: int, frames: int, file: BinaryIO):
        self.blocks, self.rows, self.frames, self.file = blocks, rows, frames, file
        self.written = 0

    def read(self, start: int, length: int) -> np.ndarray:
        """Rows over frames [start, start + length), zero outside the stream."""
        self._pull(min(start + length, self.frames))
        return _read_window(self.file, self.rows, self.written, start, length)

    def _pull(self, end: int) -> None:
        while self.written < end:
            block = next(self.blocks, None)
            if block is None:  # the stream ended short: what is missing reads as silence
                self.frames = self.written
                return
            self.file.seek(0, os.SEEK_END)
            _append_raw(self.file, block)
            self.written += block.shape[1]


class Rows:
    """A few rows of a tape (one stem's channels)."""

    def __init__(self, tape: Tape, rows: slice):
        self.tape, self.rows = tape, rows

    def read(self, start: int, length: int) -> np.ndarray:
        return self.tape.read(start, length)[self.rows]

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        for start in range(0, frames, BLOCK_FRAMES):
            yield self.read(start, min(BLOCK_FRAMES, frames - start))


@dataclass(frozen=True)
class StemSong:
    """A stem an earlier step gave, read as a song: at the input's rate (`read_native`) and at a step's network
    rate (`read`), resampled from it as `audio.open_song` resamples an input."""

    info: AudioInfo
    length: int
    channels: int
    native: Rows
    at_rate: Rows | Tape

    @classmethod
    def of(cls, native: Rows, song: Song, step: Step, files: ExitStack) -> StemSong:
        """The stem at `native` of `song`, read at `step`'s rate (its resampled copy in a file of `files`)."""
        channels, rate, frames, bag = song.channels, song.info.sample_rate, song.info.frames, step.bag
        if bag.samplerate == rate:
            return cls(AudioInfo(rate, channels, frames), frames, channels, native, native)
        length = resampled_length(frames, rate, bag.samplerate)
        at_rate = Tape(resample_blocks(native.blocks(frames), rate, bag.samplerate), channels, length,
                       files.enter_context(temporary_file()))
        return cls(AudioInfo(rate, channels, frames), length, channels, native, at_rate)

    def read(self, start: int, length: int) -> np.ndarray:
        return self.at_rate.read(start, length)

    def read_native(self, start: int, length: int) -> np.ndarray:
        return self.native.read(start, length)


def resampled_length(frames: int, old_rate: int, new_rate: int) -> int:
    """How many samples `audio.resample` makes of `frames` (every one whose time falls inside them)."""
    up, down, _, _ = _filter(old_rate, new_rate)
    return -(-frames * up // down)


def separated(model: Bag | Chain, song: Song, decided: Decided, bars: Bars) -> Iterator[torch.Tensor]:
    """A model's or a chain's stems, (stems, channels, samples) blocks at the input's rate, in song order."""
    if isinstance(model, Chain):
        return model.stream(song, decided, bars)
    return at_input_rate(separate_stream(model, song, decided, bars(None)), model, song)


def step_records(model: Bag | Chain) -> list[dict[str, str | None]]:
    """A chain's steps for --json (none for a model)."""
    return model.records() if isinstance(model, Chain) else []


def load_chain(name: str, plans: Sequence[ChainStep], load: Callable[[str], Bag | Chain]) -> Chain:
    """The chain of `plans`, each step's model loaded by `load` (a name -> its bag)."""
    return Chain(name, tuple(loaded_step(plan, load) for plan in plans))


def extended(first: Bag | Chain, plans: Sequence[ChainStep], load: Callable[[str], Bag | Chain]) -> Chain:
    """`first` (a model, or a chain) followed by the steps `plans` (`--then STEM:MODEL`), named after them all."""
    name = first.name + "".join(f"+{plan.stem}-{plan.model}" for plan in plans)
    head = first.steps if isinstance(first, Chain) else (Step(ChainStep(first.name), summing(first)),)
    return Chain(name, head + tuple(loaded_step(plan, load) for plan in plans))


def loaded_step(plan: ChainStep, load: Callable[[str], Bag | Chain]) -> Step:
    model = load(plan.model)
    if isinstance(model, Chain):
        raise ModelError(f"'{plan.model}' is a chain: a chain's step is a model (chains do not nest; add its steps)")
    return Step(plan, summing(model))


def then_chain(first: Bag | Chain, values: Sequence[str], repo: Path | None, notify: Notify) -> Chain:
    """`first` followed by the `--then STEM:MODEL` steps (a ValueError where one is not), their models found as
    -n finds one (in `repo`, if given); steps that make no chain are a LayoutError."""
    from .registry import load_bag

    plans = [parse_then(value) for value in values]
    return extended(first, plans, lambda name: load_bag(name, repo, notify))
