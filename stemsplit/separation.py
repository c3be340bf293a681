"""The separation engine: a whole song through a bag of models, chunk by chunk.

The procedure reproduces the reference tool's so that results match it: the song
is normalised by the mean and standard deviation of its mono mix, cut into
overlapping segments of the model's length, each segment is run with its real
surroundings as padding, and the outputs are blended with triangular weights.
Optional random time shifts are averaged, and the models of a bag are mixed with
per-source weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Settings:
    shifts: int = 0
    overlap: float = 0.25
    segment: float | None = None
    batch_size: int = 1


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


def window(source: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """`source[..., start:start + length]`, zero-filled where it runs off either end."""
    end = start + length
    inside = source[..., max(start, 0):min(end, source.shape[-1])]
    return F.pad(inside, (max(-start, 0), max(end - source.shape[-1], 0)))


class _Pass:
    """One overlap-added pass of one model over a region of `source`."""

    def __init__(self, model: torch.nn.Module, source: torch.Tensor, start: int, length: int,
                 settings: Settings):
        self.model = model
        self.source = source
        self.start = start
        self.length = length
        if settings.segment is None:
            self.segment_length = model.training_length
            self.input_length = model.training_length
        else:
            self.segment_length = self.input_length = int(settings.segment * model.samplerate)
        self.offsets = chunk_offsets(length, self.segment_length, settings.overlap)
        self.weight = transition_weight(self.segment_length)
        self.out = torch.zeros(len(model.sources), source.shape[0], length)
        self.total_weight = torch.zeros(length)

    def chunk_input(self, offset: int) -> torch.Tensor:
        chunk_length = min(self.segment_length, self.length - offset)
        context = (self.input_length - chunk_length) // 2
        return window(self.source, self.start + offset - context, self.input_length)

    def add(self, offset: int, output: torch.Tensor) -> None:
        chunk_length = min(self.segment_length, self.length - offset)
        trim = (self.input_length - chunk_length) // 2
        output = output[..., trim:trim + chunk_length]
        weight = self.weight[:chunk_length]
        self.out[..., offset:offset + chunk_length] += weight * output
        self.total_weight[offset:offset + chunk_length] += weight

    def result(self) -> torch.Tensor:
        return self.out / self.total_weight


def _run_pass(run: _Pass, device: torch.device, batch_size: int,
              progress: Callable[[], None]) -> torch.Tensor:
    offsets = list(run.offsets)
    for first in range(0, len(offsets), batch_size):
        batch = offsets[first:first + batch_size]
        inputs = torch.stack([run.chunk_input(offset) for offset in batch]).to(device)
        outputs = run.model(inputs).float().cpu()
        for offset, output in zip(batch, outputs):
            run.add(offset, output)
            progress()
    return run.result()


def _apply_model(model: torch.nn.Module, mix: torch.Tensor, settings: Settings,
                 device: torch.device, progress: Callable[[], None]) -> torch.Tensor:
    length = mix.shape[-1]
    if not settings.shifts:
        run = _Pass(model, mix, 0, length, settings)
        return _run_pass(run, device, settings.batch_size, progress)
    max_shift = int(0.5 * model.samplerate)
    padded = F.pad(mix, (max_shift, max_shift))
    out = torch.zeros(len(model.sources), mix.shape[0], length)
    for _ in range(settings.shifts):
        shift = random.randint(0, max_shift)
        run = _Pass(model, padded, shift, length + max_shift - shift, settings)
        out += _run_pass(run, device, settings.batch_size, progress)[..., max_shift - shift:]
    return out / settings.shifts


def chunk_count(bag, length: int, settings: Settings) -> int:
    """How many model calls separating `length` samples takes (for progress bars)."""
    total = 0
    for model in bag.models:
        segment_length = (model.training_length if settings.segment is None
                          else int(settings.segment * model.samplerate))
        if settings.shifts:
            max_shift = int(0.5 * model.samplerate)
            # Each shift covers between `length` and `length + max_shift` samples.
            counts = [len(chunk_offsets(length + max_shift - shift, segment_length, settings.overlap))
                      for shift in (0, max_shift)]
            total += settings.shifts * max(counts)
        else:
            total += len(chunk_offsets(length, segment_length, settings.overlap))
    return total


def separate_tensor(bag, mix: torch.Tensor, settings: Settings = Settings(),
                    device: str | torch.device = "cpu",
                    progress: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Separate `mix` (channels, samples) at the bag's rate into (sources, channels, samples).

    `progress` is called once per segment run through a model.
    """
    check_settings(bag, settings)
    device = torch.device(device)
    mono = mix.mean(0)
    mean, std = mono.mean(), mono.std()
    normalised = (mix - mean) / (std + 1e-8)
    estimate = torch.zeros(len(bag.sources), *mix.shape)
    totals = torch.zeros(len(bag.sources))
    with torch.inference_mode():
        for model, weights in zip(bag.models, bag.weights):
            model.to(device)
            weights = torch.tensor(weights, dtype=torch.float32)
            estimate += weights[:, None, None] * _apply_model(model, normalised, settings, device, progress)
            totals += weights
    return estimate / totals[:, None, None] * (std + 1e-8) + mean


def check_settings(bag, settings: Settings) -> None:
    if settings.shifts < 0:
        raise ValueError("shifts must be >= 0")
    if not 0 <= settings.overlap < 1:
        raise ValueError("overlap must be in [0, 1)")
    if settings.batch_size < 1:
        raise ValueError("batch size must be >= 1")
    if settings.segment is not None:
        longest = min(float(model.segment) for model in bag.models)
        if not 0 < settings.segment <= longest:
            raise ValueError(f"segment must be in (0, {longest:g}] seconds for this model")
