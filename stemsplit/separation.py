"""The separation engine: a whole song through a bag of networks, chunk by chunk.

Each network goes over the song the way its family's procedure says (see chunking.py),
so that results match the implementation its weights were made for; the networks of a
bag are then mixed by their per-stem shares, and a residual stem is the mix minus the others.

The song is streamed: chunks are read as they are needed and finished stretches of stems
are handed out as soon as no later chunk can change them, so memory does not grow with
the length of the song.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .audio import to_input_rate
from .bag import Bag, Network
from .chunking import Chunk
from .errors import InputError, SettingsError
from .limits import MAX_SHIFTS
from .precision import Choice, autocast, choose

if TYPE_CHECKING:
    from .audio import Song

MOMENTS_BLOCK = 1 << 20  # frames read at once when measuring a song
# glibc's mallopt parameters, and the size up to which freed blocks stay in the process (see keep_freed_memory).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_BLOCK_BYTES = 1 << 30
Progress = Callable[[int, int], None]  # (chunks done, chunks in all)


@dataclass(frozen=True)
class Settings:
    shifts: int = 0
    overlap: float | None = None  # None: the procedure's own (HT Demucs: 0.25)
    segment: float | None = None  # None: the length each network was made for
    batch_size: int = 1
    precision: str = "float32"  # or "auto" / "bfloat16" / "float16": faster where native (see precision.py)


@dataclass(frozen=True)
class Decided:
    """Settings decided once, for a device: the precision that runs (never "auto") and why. The engine
    takes them as they are; `check` says whether a bag's procedures can follow them."""

    settings: Settings
    device: str
    precision: Choice

    def check(self, bag: Bag) -> None:
        """Raise SettingsError naming the setting that a network of `bag` cannot follow."""
        for member in bag.members:
            try:
                member.network.chunking.check(member.network.samplerate, self.settings)
            except (ValueError, TypeError) as error:
                raise SettingsError(str(error)) from None


def decide(settings: Settings, device: str) -> Decided:
    """The settings to run on `device` (a device name, "auto" resolved): bounds checked and the precision
    chosen, or a SettingsError whose `setting` names the one at fault."""
    if not 0 <= settings.shifts <= MAX_SHIFTS:
        raise SettingsError(f"shifts must be from 0 to {MAX_SHIFTS}, got {settings.shifts}")
    if settings.batch_size < 1:
        raise SettingsError("batch size must be >= 1")
    try:
        choice = choose(settings.precision, device)
    except ValueError as error:
        raise SettingsError(str(error), "precision") from None
    return Decided(replace(settings, precision=choice.precision), device, choice)


class Mix(Protocol):
    """A song at the bag's rate, readable window by window (see `audio.open_song`)."""

    length: int

    def read(self, start: int, length: int) -> np.ndarray | torch.Tensor:
        """Samples [start, start + length), zero outside the song."""


@dataclass(frozen=True)
class Normalisation:
    """The song scaled by the mean and standard deviation of its mono mix, as HT Demucs expects."""

    mean: float
    std: float

    @classmethod
    def of(cls, mix: Mix) -> Normalisation:
        moments = Moments()
        for start in range(0, mix.length, MOMENTS_BLOCK):
            block = np.asarray(mix.read(start, min(MOMENTS_BLOCK, mix.length - start)), dtype=np.float64)
            moments.add(block.mean(axis=0))
        return cls(moments.mean, moments.std + 1e-8)

    def apply(self, audio: torch.Tensor, inside: slice) -> torch.Tensor:
        normalised = torch.zeros_like(audio)  # the reference pads the normalised song with zeros
        normalised[..., inside] = (audio[..., inside] - self.mean) / self.std
        return normalised

    def undo(self, output: torch.Tensor) -> torch.Tensor:
        return output * self.std + self.mean


@dataclass
class Moments:
    """Count, mean and unbiased standard deviation of values given in batches (Chan et al.'s update)."""

    count: int = 0
    mean: float = 0.0
    squares: float = 0.0  # sum of squared deviations from the mean

    def add(self, values: np.ndarray) -> None:
        if not values.size:
            return
        mean = float(values.mean())
        total = self.count + values.size
        delta = mean - self.mean
        self.squares += float(np.square(values - mean).sum()) + delta**2 * self.count * values.size / total
        self.mean += delta * values.size / total
        self.count = total

    @property
    def std(self) -> float:
        """Like torch.std (divides by count - 1), but 0 for a single value."""
        return math.sqrt(self.squares / max(self.count - 1, 1))


class OverlapAdd:
    """Windowed averages (or plain sums) of overlapping outputs, released once they are final."""

    def __init__(self, sources: int, channels: int, start: int, summed: bool = False):
        self.start = start  # song position of the first sample held
        self.summed = summed
        self.total = torch.zeros(sources, channels, 0)
        self.coverage = torch.zeros(0)  # the sum of the windows at each sample

    def add(self, position: int, output: torch.Tensor, window: torch.Tensor) -> None:
        missing = position + output.shape[-1] - self.start - self.coverage.shape[0]
        if missing > 0:
            self.total = F.pad(self.total, (0, missing))
            self.coverage = F.pad(self.coverage, (0, missing))
        at = position - self.start
        self.total[..., at:at + output.shape[-1]] += window * output
        self.coverage[at:at + output.shape[-1]] += window

    def take(self, end: int) -> torch.Tensor:
        """The finished outputs up to song position `end`, forgotten here."""
        count = end - self.start
        out = self.total[..., :count] if self.summed else self.total[..., :count] / self.coverage[:count]
        self.total, self.coverage = self.total[..., count:], self.coverage[count:]
        self.start = end
        return out


class Pass:
    """One overlap-added run of one network over the song along its chunks."""

    def __init__(self, network: Network, chunks: list[Chunk], window: torch.Tensor, channels: int,
                 normalisation: Normalisation | None):
        self.network, self.chunks, self.window = network, chunks, window
        self.normalisation = normalisation
        self.next = 0  # index of the next chunk to run
        self.end = chunks[-1].start + chunks[-1].length
        self.overlap_add = OverlapAdd(len(network.sources), channels, chunks[0].start, network.chunking.summed)

    def position(self) -> int:
        """Song position of the next chunk (the end of the run when none is left)."""
        return self.chunks[self.next].start if self.next < len(self.chunks) else self.end

    def read(self, mix: Mix, chunk: Chunk) -> torch.Tensor:
        audio = torch.as_tensor(mix.read(chunk.read_start, chunk.read_length))
        if self.normalisation is None:
            return audio
        inside = slice(max(-chunk.read_start, 0), max(min(mix.length - chunk.read_start, chunk.read_length), 0))
        return self.normalisation.apply(audio, inside)

    def add(self, chunk: Chunk, output: torch.Tensor) -> None:
        kept = output[..., chunk.trim:chunk.trim + chunk.length]
        self.overlap_add.add(chunk.start, kept, self.window[:chunk.length])

    def take(self, end: int) -> torch.Tensor:
        """The finished outputs of every source up to song position `end`, in the song's scale."""
        if self.overlap_add.start < 0:
            self.overlap_add.take(0)  # what a shift moved before the song starts
        output = self.overlap_add.take(end)
        return output if self.normalisation is None else self.normalisation.undo(output)


def make_passes(bag: Bag, mix: Mix, settings: Settings) -> list[list[Pass]]:
    """The passes of each member of the bag, as its family's procedure cuts the song."""
    needs_normalisation = any(member.network.chunking.normalised for member in bag.members)
    normalisation = Normalisation.of(mix) if needs_normalisation else None
    passes = []
    for member in bag.members:
        network, chunking = member.network, member.network.chunking
        window = chunking.window(network.samplerate, settings)
        passes.append([Pass(network, chunks, window, bag.audio_channels, normalisation if chunking.normalised else None)
                       for chunks in chunking.passes(mix.length, network.samplerate, settings)])
    return passes


def separate_stream(bag: Bag, mix: Mix, decided: Decided,
                    progress: Progress = lambda done, total: None) -> Iterator[torch.Tensor]:
    """Separate `mix` into consecutive blocks of (stems, channels, samples) in `bag.stems` order, in song order,
    with settings decided (and checked against `bag`) already.

    `progress(done, total)` is called at the start and after each batch of chunks run through a network.
    """
    device, settings = torch.device(decided.device), decided.settings
    if mix.length == 0:
        return
    passes = make_passes(bag, mix, settings)
    total, done = sum(len(p.chunks) for member_passes in passes for p in member_passes), 0
    progress(done, total)
    emitted = 0
    scales = bag.scales()
    if device.type == "cpu":
        keep_freed_memory()
    with torch.inference_mode():
        for member in bag.members:
            member.network.to(device)
        while emitted < mix.length:
            done += run_next_batch(passes, mix, device, settings)
            progress(done, total)
            ready = min(min(min(p.position() for p in member_passes) for member_passes in passes), mix.length)
            if ready > emitted:
                yield mix_members(bag, scales, passes, mix, emitted, ready)
                emitted = ready


@functools.cache
def keep_freed_memory() -> None:
    """Make glibc keep freed blocks for reuse instead of returning them to the system.

    By default every block over 32 MiB is unmapped when freed and page-faulted back in, zeroed, on its
    next use: about 480 000 page faults and 1.9 s of system time per HT Demucs segment, an eighth of its
    CPU time. Kept, the network's activations reuse the same memory from segment to segment (peak memory
    about 100 MB higher, and flat). Without glibc (macOS, musl) nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, KEPT_BLOCK_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, KEPT_BLOCK_BYTES)
    except (OSError, AttributeError):
        pass


def mix_members(bag: Bag, scales: list[dict[str, float]], passes: list[list[Pass]], mix: Mix, start: int,
                end: int) -> torch.Tensor:
    """The bag's stems over song positions [start, end): each computed stem the sum of its
    networks' outputs (`scales`: per member, its share of each stem), the residual the mix minus the
    computed stems."""
    stems = torch.zeros(len(bag.stems), bag.audio_channels, end - start)
    index = {stem: position for position, stem in enumerate(bag.stems)}
    for member, member_passes, member_scales in zip(bag.members, passes, scales):
        for p in member_passes:
            output = p.take(end)
            for stem, scale in member_scales.items():
                stems[index[stem]] += scale / len(member_passes) * output[p.network.sources.index(member.output(stem))]
    check_finite(bag, stems)
    derived = bag.residual_parts()
    if derived:
        mixed = torch.as_tensor(mix.read(start, end - start))
        for rest, parts in derived.items():
            stems[rest] = mixed - stems[parts].sum(0)
    return stems


def at_input_rate(blocks: Iterable[torch.Tensor], bag: Bag, song: Song) -> Iterator[torch.Tensor]:
    """`separate_stream`'s blocks resampled to the input's rate and cut to its exact length, block by block.

    A residual stem (and each complement of a query model) is formed anew there, the input as decoded minus
    the stems it complements resampled, so that they sum to the input to float32 rounding: resampled at the
    model's rate and back, the mix loses what lies above the lower rate's band, and a residual taken before
    the return would not null against it.
    """
    stems, channels = len(bag.stems), song.channels
    flat = (block.reshape(stems * channels, -1).numpy() for block in blocks)
    position, derived = 0, bag.residual_parts()
    for piece in to_input_rate(flat, stems * channels, bag.samplerate, song.info.sample_rate, song.info.frames):
        block = torch.from_numpy(piece).reshape(stems, channels, -1)
        if derived:
            native = torch.from_numpy(song.read_native(position, block.shape[-1]))
            for rest, parts in derived.items():
                block[rest] = native - block[parts].sum(0)
        position += block.shape[-1]
        yield block


def check_finite(bag: Bag, stems: torch.Tensor) -> None:
    """Non-finite stems (weights of NaN, a half-precision overflow) fail this input rather than be written."""
    nan, inf = int(stems.isnan().sum()), int(stems.isinf().sum())
    if nan or inf:
        raise InputError(f"model '{bag.name}' gave {nan} NaN and {inf} infinite values for this input, so no "
                         "stems were written; check its weights, or try --precision float32")


def run_next_batch(passes: list[list[Pass]], mix: Mix, device: torch.device, settings: Settings) -> int:
    """Run the chunks furthest behind in the song, up to `batch_size` of one network at once; return how many."""
    pending = [p for member_passes in passes for p in member_passes if p.next < len(p.chunks)]
    if not pending:
        return 0
    network = min(pending, key=Pass.position).network
    jobs = []
    for p in sorted((p for p in pending if p.network is network), key=Pass.position):
        while p.next < len(p.chunks) and len(jobs) < settings.batch_size:
            if jobs and p.chunks[p.next].read_length != jobs[0][1].read_length:
                break  # a song shorter than one chunk gives a shorter one, which cannot be stacked
            jobs.append((p, p.chunks[p.next]))
            p.next += 1
    inputs = torch.stack([p.read(mix, chunk) for p, chunk in jobs])
    with autocast(device, settings.precision):
        outputs = run_network(network, inputs.to(device)).float().cpu()
    for (p, chunk), output in zip(jobs, outputs):
        p.add(chunk, output)
    return len(jobs)


def run_network(network: Network, inputs: torch.Tensor) -> torch.Tensor:
    """`network` on (batch, channels, samples); a mono network on each channel as a song of its own.

    Each channel through the network, rather than their mid, keeps what is panned apart (the mid cancels
    what is out of phase) and the stereo image of every stem; the residual then nulls on both channels.
    """
    batch, channels, samples = inputs.shape
    if network.audio_channels == channels:
        return network(inputs)
    output = network(inputs.reshape(batch * channels, 1, samples))
    return output.reshape(batch, channels, output.shape[1], output.shape[-1]).transpose(1, 2)


def resolve_device(name: str) -> str:
    """"auto" becomes the best device present; a named one must be present."""
    present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return next(device for device, available in present.items() if available)
    if name not in present:
        raise SettingsError(f"unknown device {name!r}; use auto, cpu, cuda or mps", "device")
    if not present[name]:
        raise SettingsError(f"{name} is not available on this machine", "device")
    return name
