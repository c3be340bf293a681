"""How a network goes over a whole song: where its chunks are, what it reads for each, how outputs blend.

Each family of networks was trained and published with one procedure, and matching
its implementation means cutting the song the same way:

- `CentredSegments` (HT Demucs): segments at a fixed stride, each read with its real
  surroundings as context and centred in the network's window, blended with triangular
  windows, the song normalised by its mono mix first; optional random time shifts.
- `FittedSegments` (Demucs and Hybrid Demucs, the v2/v3 generation): the same segments,
  blending and shifts, but each chunk read as it is, only widened (around its centre) to
  the length its network fits.
- `AlignedChunks` (band-split RoFormers): chunks of the network's length at a stride of
  length // num_overlap, the last one aligned to the song's end, no context, blended
  with a Hamming window, the song as it is.
- `FrameSegments` (Spleeter): the song's STFT frames taken T at a time, no overlap between
  segments; each segment's audio is read with the frame tails it shares with its neighbours
  and the overlapping outputs are added, not blended, as one inverse STFT of the whole song adds them.
- `PaddedChunks` (MDX23C): chunks at a stride of length // num_overlap, the first starting a chunk
  less a stride before the song and the last running into silence after it; outputs are added and
  divided by num_overlap; songs under 10 seconds go in chunks of 256 STFT frames.
- `TrimmedChunks` (MDX-Net): the song after half an FFT of silence, chunks at a stride of
  (1 - overlap) * length, each blended with a Hann window of its own length (a last, shorter
  chunk gets a shorter window).
- `WholeSong` (UVR's VR architecture): the whole song in one run, the network windowing it itself.
- `AbuttingSegments` (USS): segments of a fixed length end to end, no overlap, the last one read on into
  silence; the outputs joined as they are.
- `ContextChunks` (AudioSep's `use_chunk`): windows of left context + centre + right context at a stride
  of the centre, each keeping its centre only (the first also its left context); the last window is cut
  at the song's end and keeps all after its left context; a song no longer than one window in one run.

A family picks one of these as its networks' `chunking`, or adds its own here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Protocol

import numpy as np
import torch

from .limits import MAX_OVERLAP

MAX_SHIFT_SECONDS = 0.5  # the reference's random time shifts are up to half a second
DEFAULT_OVERLAP = 0.25
MIN_SEGMENT_FRACTION = 0.125  # of the network's own segment


@dataclass(frozen=True)
class Chunk:
    """One run of a network: it reads [read_start, read_start + read_length) of the song
    and contributes [start, start + length) of its output to the song's stems."""

    start: int
    length: int
    read_start: int
    read_length: int

    @property
    def trim(self) -> int:
        """Where the kept output begins within the network's output."""
        return self.start - self.read_start


class ChunkSettings(Protocol):
    shifts: int
    overlap: float | None
    segment: float | None


def refuse_chunk_settings(settings: ChunkSettings, why: str) -> None:
    """A procedure of its own takes none of the chunk settings HT Demucs and RoFormers take."""
    for name in ("shifts", "overlap", "segment"):
        if getattr(settings, name):
            raise ValueError(f"{name} is for HT Demucs and RoFormer models; {why}")


class Chunking(Protocol):
    """A family's procedure; `normalised` says whether the network sees the song scaled by
    the mean and standard deviation of its mono mix; `summed` that overlapping outputs are added
    as they are instead of blended by their windows."""

    normalised: bool
    summed: bool

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        """The chunks of each pass over a song of `length` samples, in song order."""

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor:
        """How a full chunk's output is blended with its neighbours' (shorter chunks use its first samples)."""

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        """Raise ValueError naming the setting that this procedure cannot follow."""


@dataclass(frozen=True)
class CentredSegments:
    """HT Demucs's procedure for a network trained on `segment` seconds."""

    segment: Fraction  # exact, so that segment * samplerate is the reference's whole number of samples
    normalised = True
    summed = False

    def segment_length(self, samplerate: int, settings: ChunkSettings) -> int:
        return int((settings.segment or self.segment) * samplerate)

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        if not settings.shifts:
            return [self._pass(0, length, samplerate, settings)]
        max_shift = int(MAX_SHIFT_SECONDS * samplerate)
        shifts = [random.randint(0, max_shift) for _ in range(settings.shifts)]
        return [self._pass(shift - max_shift, length + max_shift - shift, samplerate, settings) for shift in shifts]

    def _pass(self, origin: int, length: int, samplerate: int, settings: ChunkSettings) -> list[Chunk]:
        """A pass covering song positions [origin, origin + length); a shift makes `origin` negative,
        as the reference pads the song with silence and drops what comes before it."""
        segment = self.segment_length(samplerate, settings)
        overlap = DEFAULT_OVERLAP if settings.overlap is None else settings.overlap
        stride = int((1 - overlap) * segment)
        chunks = []
        for offset in range(0, length, stride):
            kept = min(segment, length - offset)
            start = origin + offset
            read = self.read_length(kept, segment)
            chunks.append(Chunk(start, kept, start - (read - kept) // 2, read))
        return chunks

    def read_length(self, kept: int, segment: int) -> int:
        """HT Demucs reads a whole segment around every chunk: it only runs on its training length."""
        return segment

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor:
        """Triangular, highest at the centre of a segment."""
        segment = self.segment_length(samplerate, settings)
        half = segment // 2
        rising = torch.arange(1, half + 1, dtype=torch.float32)
        falling = torch.arange(segment - half, 0, -1, dtype=torch.float32)
        window = torch.cat([rising, falling])
        return window / window.max()

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        if settings.overlap is not None and not 0 <= settings.overlap <= MAX_OVERLAP:
            raise ValueError(f"overlap must be from 0 to {MAX_OVERLAP}, got {settings.overlap:g}")
        shortest, longest = MIN_SEGMENT_FRACTION * float(self.segment), float(self.segment)
        if settings.segment is not None and not shortest <= settings.segment <= longest:
            raise ValueError(f"segment must be from {shortest:g} to {longest:g} seconds for this model, "
                             f"got {settings.segment:g}")


@dataclass(frozen=True)
class FittedSegments(CentredSegments):
    """The procedure of Demucs and Hybrid Demucs: chunks read with no context beyond what
    `valid_length` (kept samples -> samples the network needs; none: as many) asks for."""

    valid_length: Callable[[int], int] | None = None

    def read_length(self, kept: int, segment: int) -> int:
        return kept if self.valid_length is None else self.valid_length(kept)


@dataclass(frozen=True)
class AlignedChunks:
    """The band-split RoFormers' procedure: chunks of `chunk_size` samples, `num_overlap` per stretch.

    A song shorter than a chunk is one chunk of its own length, as audio-separator runs it, unless it is
    shorter than `shortest` (what the network's STFT can reflect-pad): that one is read as a whole
    chunk, the song and silence after it, as the trainer pads a short chunk."""

    chunk_size: int
    num_overlap: int
    shortest: int = 1
    normalised = False
    summed = False

    def chunk_length(self, samplerate: int, settings: ChunkSettings) -> int:
        return int(settings.segment * samplerate) if settings.segment else self.chunk_size

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        size = self.chunk_length(samplerate, settings)
        step = size // self.num_overlap
        chunks = []
        for start in range(0, length, step):
            if start + size >= length:
                last = max(length - size, 0)
                if not chunks or chunks[-1].start != last:
                    read = size if length < self.shortest else min(size, length)
                    chunks.append(Chunk(last, min(size, length), last, read))
                break
            chunks.append(Chunk(start, size, start, size))
        return [chunks]

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor:
        return torch.hamming_window(self.chunk_length(samplerate, settings), periodic=False)

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        if settings.shifts:
            raise ValueError("shifts are for HT Demucs models; RoFormer models run without them")
        if settings.overlap is not None:
            raise ValueError(f"overlap is for HT Demucs models; this model overlaps {self.num_overlap} chunks "
                             "as its configuration says")
        longest = self.chunk_size / samplerate
        shortest = max(self.num_overlap / samplerate, MIN_SEGMENT_FRACTION * longest)
        if settings.segment is not None and not shortest <= settings.segment <= longest:
            raise ValueError(f"segment must be in [{shortest:.2g}, {longest:g}] seconds for this model")


@dataclass(frozen=True)
class FrameSegments:
    """Spleeter's procedure: the song, after `frame_length` samples of silence, framed at
    `frame_step` with its end padded to a whole frame, frames grouped `frames` at a time and the
    last group filled with silent frames. A chunk is one group: it reads the samples its frames
    cover (song position -frame_length onwards) and its output is added to its neighbours'."""

    frames: int
    frame_length: int
    frame_step: int
    normalised = False
    summed = True

    @property
    def span(self) -> int:
        return (self.frames - 1) * self.frame_step + self.frame_length

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        song_frames = -(-(length + self.frame_length) // self.frame_step)
        groups = -(-song_frames // self.frames)
        starts = [group * self.frames * self.frame_step - self.frame_length for group in range(groups)]
        return [[Chunk(start, self.span, start, self.span) for start in starts]]

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor:
        return torch.ones(self.span)

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        refuse_chunk_settings(settings, "Spleeter models cut the song into segments of their own length")


SHORT_SONG_SECONDS = 10.0


@dataclass(frozen=True)
class PaddedChunks:
    """MDX23C's procedure (audio-separator's MDXC `demix`): the song with `chunk_size - step` samples of
    silence in front and enough behind to end on a whole step, cut into every chunk at that step; the
    summed outputs divided by `num_overlap` (not by how many chunks cover a sample, which differs where
    `chunk_size` is no multiple of `num_overlap`). Songs shorter than 10 seconds use `short_chunk_size`."""

    chunk_size: int
    short_chunk_size: int
    num_overlap: int
    normalised = False
    summed = True

    def chunk_length(self, length: int, samplerate: int) -> int:
        return self.short_chunk_size if length < SHORT_SONG_SECONDS * samplerate else self.chunk_size

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        size = self.chunk_length(length, samplerate)
        step = size // self.num_overlap
        behind = step - (length - size) % step
        padded = (size - step) + length + behind + (size - step)
        starts = [index * step - (size - step) for index in range((padded - size) // step + 1)]
        return [[Chunk(start, size, start, size) for start in starts]]

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor:
        return torch.full((max(self.chunk_size, self.short_chunk_size),), 1 / self.num_overlap)

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        refuse_chunk_settings(settings, f"this model overlaps {self.num_overlap} chunks as its configuration says")


class HannWindows:
    """numpy's (symmetric) Hann window of every length: `windows[:n]` is the window of an n-sample chunk,
    for procedures whose shorter chunks are blended with a whole window of their own length."""

    def __getitem__(self, lengths: slice) -> torch.Tensor:
        return torch.from_numpy(np.hanning(lengths.stop)).float()


@dataclass(frozen=True)
class TrimmedChunks:
    """MDX-Net's procedure (audio-separator's MDXSeparator `demix`): the song with `trim` samples of silence in
    front and, behind, enough to end on a whole `chunk_size - 2 * trim`; chunks of `chunk_size` at a stride of
    (1 - overlap) * chunk_size, the last ones cut at that end (and read on in silence), each blended with a Hann
    window of its own length (none at overlap 0). Chunks starting after the song change none of it."""

    chunk_size: int
    trim: int
    normalised = False
    summed = False

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        generated = self.chunk_size - 2 * self.trim
        padded = self.trim + length + generated + self.trim - length % generated
        starts = range(0, padded, self._stride(settings))
        return [[Chunk(start - self.trim, min(self.chunk_size, padded - start), start - self.trim, self.chunk_size)
                 for start in starts if start - self.trim < length]]

    def _stride(self, settings: ChunkSettings) -> int:
        return int((1 - self._overlap(settings)) * self.chunk_size)

    @staticmethod
    def _overlap(settings: ChunkSettings) -> float:
        return DEFAULT_OVERLAP if settings.overlap is None else settings.overlap

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor | HannWindows:
        return HannWindows() if self._overlap(settings) else torch.ones(self.chunk_size)

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        if settings.overlap is not None and not 0 <= settings.overlap <= MAX_OVERLAP:
            raise ValueError(f"overlap must be from 0 to {MAX_OVERLAP}, got {settings.overlap:g}")
        for name in ("shifts", "segment"):
            if getattr(settings, name):
                raise ValueError(f"{name} is for HT Demucs and RoFormer models; MDX-Net models run chunks of "
                                 "the frames their ONNX file takes")


class Ones:
    """A blend of ones of every length: `ones[:n]` for an n-sample chunk."""

    def __getitem__(self, lengths: slice) -> torch.Tensor:
        return torch.ones(lengths.stop)


@dataclass(frozen=True)
class WholeSong:
    """UVR's VR procedure (audio-separator's VRSeparator): the network takes the whole song in one run,
    since it scales the song's spectrogram by its global maximum before cutting it into windows."""

    normalised = False
    summed = False

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        return [[Chunk(0, length, 0, length)]]

    def window(self, samplerate: int, settings: ChunkSettings) -> Ones:
        return Ones()

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        refuse_chunk_settings(settings, "VR models go over the whole song in windows of their own")


@dataclass(frozen=True)
class AbuttingSegments:
    """USS's procedure (uss.inference.separate_by_query_condition): the song cut into segments of `segment`
    samples end to end, the last one padded with silence to a whole segment; outputs joined, no blending."""

    segment: int
    normalised = False
    summed = False

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        return [[Chunk(start, min(self.segment, length - start), start, self.segment)
                 for start in range(0, length, self.segment)]]

    def window(self, samplerate: int, settings: ChunkSettings) -> torch.Tensor:
        return torch.ones(self.segment)

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        refuse_chunk_settings(settings, "query models cut the song into segments of their own length")


@dataclass(frozen=True)
class ContextChunks:
    """AudioSep's `use_chunk` procedure (models/resunet.py, ResUNet30.chunk_inference): windows of
    `left + centre + right` samples at a stride of `centre`. While a window ends before the song does, it
    contributes its centre (the first window from its start); the first window that reaches the end is
    read only up to the end and contributes everything after its left context. AudioSep leaves a song no
    longer than one window silent; here it goes through the network in one run, as without `use_chunk`."""

    left: int
    centre: int
    right: int
    normalised = False
    summed = False

    def passes(self, length: int, samplerate: int, settings: ChunkSettings) -> list[list[Chunk]]:
        window = self.left + self.centre + self.right
        if length <= window:
            return [[Chunk(0, length, 0, length)]]
        chunks = [Chunk(0, self.left + self.centre, 0, window)]
        start = self.centre
        while start + window < length:
            chunks.append(Chunk(start + self.left, self.centre, start, window))
            start += self.centre
        return [chunks + [Chunk(start + self.left, length - start - self.left, start, length - start)]]

    def window(self, samplerate: int, settings: ChunkSettings) -> Ones:
        return Ones()

    def check(self, samplerate: int, settings: ChunkSettings) -> None:
        AbuttingSegments.check(self, samplerate, settings)
