"""The separation engine: a whole song through a bag of models, segment by segment.

The procedure reproduces the reference tool's so that results match it: the song
is normalised by the mean and standard deviation of its mono mix, cut into
overlapping segments of the model's length, each segment is run with its real
surroundings as padding, and the outputs are blended with triangular weights.
Optional random time shifts are averaged, and the models of a bag are mixed with
per-source weights.

Unlike the reference, the song is streamed: segments are read as they are needed
and finished stretches of stems are handed out as soon as no later segment can
change them, so memory does not grow with the length of the song.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Settings:
    shifts: int = 0
    overlap: float = 0.25
    segment: float | None = None
    batch_size: int = 1
    precision: str = "float32"  # or "bfloat16" / "float16": faster, very slightly different


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Progress = Callable[[int, int], None]  # (segments done, segments in all)


class Mix(Protocol):
    """A song at the model's rate, readable window by window (see `audio.open_song`)."""

    length: int
    mean: float
    std: float

    def read(self, start: int, length: int) -> np.ndarray | torch.Tensor:
        """Samples [start, start + length), zero outside the song."""


class TensorMix:
    """A song already in memory as a (channels, samples) tensor."""

    def __init__(self, audio: torch.Tensor):
        self.audio = audio
        self.length = audio.shape[-1]
        mono = audio.mean(0)
        self.mean, self.std = mono.mean().item(), mono.std().item() if self.length > 1 else 0.0

    def read(self, start: int, length: int) -> torch.Tensor:
        return window(self.audio, start, length)


def window(source: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """`source[..., start:start + length]`, zero-filled where it runs off either end."""
    end = start + length
    inside = source[..., max(start, 0):min(end, source.shape[-1])]
    return F.pad(inside, (max(-start, 0), max(end - source.shape[-1], 0)))


def chunk_offsets(length: int, segment_length: int, overlap: float) -> range:
    stride = int((1 - overlap) * segment_length)
    return range(0, length, stride)


def transition_weight(segment_length: int) -> torch.Tensor:
    """Triangular blending weight, highest at the centre of a segment."""
    half = segment_length // 2
    rising = torch.arange(1, half + 1, dtype=torch.float32)
    falling = torch.arange(segment_length - half, 0, -1, dtype=torch.float32)
    weight = torch.cat([rising, falling])
    return weight / weight.max()


class OverlapAdd:
    """Weighted sums of overlapping outputs, released once they are final."""

    def __init__(self, sources: int, channels: int, start: int):
        self.start = start  # song position of the first sample held
        self.total = torch.zeros(sources, channels, 0)
        self.weight = torch.zeros(0)

    def add(self, position: int, output: torch.Tensor, weight: torch.Tensor) -> None:
        missing = position + output.shape[-1] - self.start - self.weight.shape[0]
        if missing > 0:
            self.total = F.pad(self.total, (0, missing))
            self.weight = F.pad(self.weight, (0, missing))
        at = position - self.start
        self.total[..., at:at + output.shape[-1]] += weight * output
        self.weight[at:at + output.shape[-1]] += weight

    def take(self, end: int) -> torch.Tensor:
        """The finished outputs up to song position `end`, forgotten here."""
        count = end - self.start
        out = self.total[..., :count] / self.weight[:count]
        self.total, self.weight = self.total[..., count:], self.weight[count:]
        self.start = end
        return out


class Pass:
    """One overlap-added run of one model over the song, possibly time-shifted.

    The run covers song positions [origin, origin + length); a shift makes `origin`
    negative, as the reference pads the song with silence and drops what comes before it.
    """

    def __init__(self, model: torch.nn.Module, origin: int, length: int, settings: Settings, channels: int):
        self.model = model
        self.origin = origin
        self.length = length
        if settings.segment is None:
            self.segment_length = self.input_length = model.training_length
        else:
            self.segment_length = self.input_length = int(settings.segment * model.samplerate)
        self.offsets = list(chunk_offsets(length, self.segment_length, settings.overlap))
        self.next = 0  # index of the next offset to run
        self.weight = transition_weight(self.segment_length)
        self.overlap_add = OverlapAdd(len(model.sources), channels, origin)

    def position(self) -> int:
        """Song position of the next segment (the end of the run when none is left)."""
        offset = self.offsets[self.next] if self.next < len(self.offsets) else self.length
        return self.origin + offset

    def input_window(self, offset: int) -> tuple[int, int]:
        """Song position and length of the input for the segment at `offset`, with its context."""
        chunk_length = min(self.segment_length, self.length - offset)
        return self.origin + offset - (self.input_length - chunk_length) // 2, self.input_length

    def add(self, offset: int, output: torch.Tensor) -> None:
        chunk_length = min(self.segment_length, self.length - offset)
        trim = (self.input_length - chunk_length) // 2
        output = output[..., trim:trim + chunk_length]
        self.overlap_add.add(self.origin + offset, output, self.weight[:chunk_length])

    def take(self, end: int) -> torch.Tensor:
        if self.overlap_add.start < 0:
            self.overlap_add.take(0)  # what a shift moved before the song starts
        return self.overlap_add.take(end)


def make_passes(bag, length: int, settings: Settings, channels: int) -> list[list[Pass]]:
    """The passes of each model: one, or one per random shift."""
    passes = []
    for model in bag.models:
        if not settings.shifts:
            passes.append([Pass(model, 0, length, settings, channels)])
            continue
        max_shift = int(0.5 * model.samplerate)
        shifts = [random.randint(0, max_shift) for _ in range(settings.shifts)]
        passes.append([Pass(model, shift - max_shift, length + max_shift - shift, settings, channels)
                       for shift in shifts])
    return passes


def separate_stream(bag, mix: Mix, settings: Settings = Settings(), device: str | torch.device = "cpu",
                    progress: Progress = lambda done, total: None) -> Iterator[torch.Tensor]:
    """Separate `mix` into consecutive blocks of (sources, channels, samples), in song order.

    `progress(done, total)` is called at the start and after each batch of segments run through a model.
    """
    device = torch.device(device)
    check_settings(bag, settings, device)
    channels = bag.audio_channels
    std = mix.std + 1e-8
    passes = make_passes(bag, mix.length, settings, channels)
    total, done = sum(len(p.offsets) for model_passes in passes for p in model_passes), 0
    progress(done, total)
    weights = torch.tensor(bag.weights, dtype=torch.float32)
    scale = weights / weights.sum(0) / torch.tensor([len(p) for p in passes])[:, None]
    emitted = 0
    with torch.inference_mode():
        for model in bag.models:
            model.to(device)
        while emitted < mix.length:
            done += run_next_batch(passes, mix, std, device, settings)
            progress(done, total)
            ready = min(min(p.position() for p in model_passes) for model_passes in passes)
            ready = min(ready, mix.length)
            if ready <= emitted:
                continue
            block = sum(scale[m, :, None, None] * p.take(ready)
                        for m, model_passes in enumerate(passes) for p in model_passes)
            yield block * std + mix.mean
            emitted = ready


def run_next_batch(passes: list[list[Pass]], mix: Mix, std: float, device: torch.device,
                   settings: Settings) -> int:
    """Run the segments furthest behind in the song, up to `batch_size` of one model at once; return how many."""
    pending = [p for model_passes in passes for p in model_passes if p.next < len(p.offsets)]
    if not pending:
        return 0
    model = min(pending, key=Pass.position).model
    jobs = []
    for p in sorted((p for p in pending if p.model is model), key=Pass.position):
        while p.next < len(p.offsets) and len(jobs) < settings.batch_size:
            jobs.append((p, p.offsets[p.next]))
            p.next += 1
    inputs = torch.stack([read_normalised(mix, *p.input_window(offset), std) for p, offset in jobs])
    dtype = PRECISIONS[settings.precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        outputs = model(inputs.to(device)).float().cpu()
    for (p, offset), output in zip(jobs, outputs):
        p.add(offset, output)
    return len(jobs)


def read_normalised(mix: Mix, start: int, length: int, std: float) -> torch.Tensor:
    audio = torch.as_tensor(mix.read(start, length))
    inside = slice(max(-start, 0), max(min(mix.length - start, length), 0))
    normalised = torch.zeros_like(audio)  # the reference pads the normalised song with zeros
    normalised[..., inside] = (audio[..., inside] - mix.mean) / std
    return normalised


def separate_tensor(bag, mix: torch.Tensor, settings: Settings = Settings(), device: str | torch.device = "cpu",
                    progress: Progress = lambda done, total: None) -> torch.Tensor:
    """Separate `mix` (channels, samples) at the bag's rate into (sources, channels, samples)."""
    return torch.cat(list(separate_stream(bag, TensorMix(mix), settings, device, progress)), dim=-1)


def resolve_device(name: str) -> str:
    """"auto" becomes the best device present; a named one must be present."""
    present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return next(device for device, available in present.items() if available)
    if name not in present:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if not present[name]:
        raise ValueError(f"{name} is not available on this machine")
    return name


def check_settings(bag, settings: Settings, device: str | torch.device) -> None:
    if settings.shifts < 0:
        raise ValueError("shifts must be >= 0")
    if not 0 <= settings.overlap < 1:
        raise ValueError("overlap must be in [0, 1)")
    if settings.batch_size < 1:
        raise ValueError("batch size must be >= 1")
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if settings.precision == "float16" and torch.device(device).type == "cpu":
        # oneDNN has no float16 kernels for most CPUs: it would run several times slower than float32
        raise ValueError("float16 is for GPUs; on CPU use bfloat16")
    if settings.segment is not None:
        longest = min(float(model.segment) for model in bag.models)
        if not 0 < settings.segment <= longest:
            raise ValueError(f"segment must be in (0, {longest:g}] seconds for this model")
