"""Audio in and out: decode anything ffmpeg reads, resample, and write stems as an `Encoding` says, all at once.

Songs and stems stream through temporary files block by block, so memory does not grow with their length.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import BinaryIO

import ffmpeg
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from .errors import FfmpegError, InputError, OutputError
from .files import output_error, publishing, temporary_prefix

# Output formats and the bit depths each accepts; lossy formats take none (bit_depth is ignored).
FORMATS: dict[str, tuple[int, ...]] = {"wav": (16, 24, 32), "flac": (16, 24), "mp3": (), "ogg": (), "m4a": ()}
CLIP_MODES = ("rescale", "clamp", "none")
# ffmpeg muxer and encoder for each lossy format. Opus is absent: it only stores 48 kHz.
LOSSY_CODECS = {"mp3": ("mp3", "libmp3lame"), "ogg": ("ogg", "libvorbis"), "m4a": ("ipod", "aac")}
# The rates each lossy encoder stores as they are (ffmpeg would silently resample to another one, or fail).
LOSSY_SAMPLE_RATES = {
    "mp3": frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}),
    "m4a": frozenset({7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}),
    "ogg": range(1, 192001),
}
VORBIS_QUALITY = 9  # Vorbis in quality mode (about 320 kbit/s at 44.1 kHz): a fixed bitrate fails at many rates
TAG_KEYS = ("title", "artist", "album", "album_artist", "date", "genre", "track")
# How soundfile names the tags it can store in wav and flac files.
SOUNDFILE_TAGS = {"title": "title", "artist": "artist", "album": "album", "date": "date", "genre": "genre",
                  "track": "tracknumber"}

# Resampler design: windowed sinc with this many zero crossings each side, a Kaiser window,
# and the cutoff at this fraction of the lower Nyquist frequency. Flat to 20 kHz at 44.1 kHz,
# aliases above 23 kHz attenuated by more than 90 dB.
SINC_ZEROS = 48
KAISER_BETA = 12.0
ROLLOFF = 0.97
RESAMPLE_CHUNK = 1 << 22  # samples gathered into frames at once per channel, to bound memory
BLOCK_FRAMES = 1 << 18  # frames held at once when streaming audio (about 6 s at 44.1 kHz)
# ffmpeg 5.1 (Debian 12) decodes AAC in MP4 with the encoder's end padding (100352 frames for 100001)
# and muxes AAC that newer versions decode short; 9.0 is exact both ways. Versions between are untested.
EXACT_AAC_FFMPEG = (9, 0)
FFMPEG_VARIABLE = "STEMSPLIT_FFMPEG"  # the ffmpeg binary to use, whatever its version
# The input rates read: 1 kHz to 768 kHz (the highest rate of audio interfaces and DSD-to-PCM),
# checked before the resampler's filters, which grow with the ratio of the rates, are sized from one.
INPUT_RATES = range(1000, 768001)
RAW_SAMPLE = np.dtype("<f4")  # temporary files hold float32 frames, channels interleaved


@dataclass(frozen=True)
class AudioInfo:
    """What the input was, before conversion: `frames` is its exact length at `sample_rate`."""

    sample_rate: int
    channels: int
    frames: int
    tags: dict[str, str] = field(default_factory=dict)
    notices: tuple[str, ...] = ()


@cache
def find_ffmpeg() -> tuple[str, str]:
    """The ffmpeg binary to use and, in words, which one it is: the one named by $STEMSPLIT_FFMPEG, else
    the system's unless it is older than EXACT_AAC_FFMPEG and imageio-ffmpeg's can stand in, else that one."""
    forced = os.environ.get(FFMPEG_VARIABLE)
    if forced:
        path = shutil.which(forced)
        if path is None:
            raise FfmpegError(f"{FFMPEG_VARIABLE}={forced} is not an executable file")
        return path, f"ffmpeg {_ffmpeg_version(path)} from {FFMPEG_VARIABLE}"
    system, bundled = shutil.which("ffmpeg"), _bundled_ffmpeg()
    if system:
        version = _ffmpeg_version(system)
        if bundled is None or _version_number(version) >= EXACT_AAC_FFMPEG:
            return system, f"system ffmpeg {version} on PATH"
        path, origin = bundled
        older = ".".join(map(str, EXACT_AAC_FFMPEG))
        return path, f"{origin}, as the system's ffmpeg {version} is older than {older} (inexact AAC lengths)"
    if bundled is None:
        raise FfmpegError(f"ffmpeg not found: install ffmpeg or the imageio-ffmpeg package, "
                          f"or name one in {FFMPEG_VARIABLE}")
    return bundled


def _bundled_ffmpeg() -> tuple[str, str] | None:
    try:
        import imageio_ffmpeg

        path = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None
    return path, f"ffmpeg {_ffmpeg_version(path)} bundled with imageio-ffmpeg {imageio_ffmpeg.__version__}"


def _ffmpeg_version(path: str) -> str:
    """The version `path -version` reports ("5.1.9-0+deb12u1", "n9.0.2-17-g2a571b6068-20260930")."""
    try:
        result = subprocess.run([path, "-version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FfmpegError(f"{path} does not run: {getattr(exc, 'strerror', None) or exc}") from None
    found = re.match(rb"ffmpeg version (\S+)", result.stdout)
    if result.returncode or not found:
        raise FfmpegError(f"{path} does not run as ffmpeg (exit status {result.returncode})")
    return found.group(1).decode(errors="replace")


def _version_number(version: str) -> tuple[float, int]:
    """(major, minor) of a release version; development builds ("N-112345-g...") count as the newest."""
    found = re.match(r"n?(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else (math.inf, 0)


def ffmpeg_command(stream: ffmpeg.nodes.OutputStream) -> list[str]:
    return stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").overwrite_output().compile(
        cmd=find_ffmpeg()[0])


def ffmpeg_reason(stderr: bytes) -> str:
    """What went wrong, from the last line ffmpeg printed ("Error opening input files: <reason>")."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].rsplit(": ", 1)[-1] if lines else "ffmpeg failed"


@dataclass(frozen=True)
class Song:
    """A decoded song at the requested rate and channel count, kept in a temporary file.

    `length` is its number of frames.
    """

    info: AudioInfo
    length: int
    channels: int
    file: BinaryIO = field(repr=False)
    native: BinaryIO | None = field(default=None, repr=False)  # the same at the input's rate, where that differs

    def read(self, start: int, length: int) -> np.ndarray:
        """Frames `start` to `start + length` as float32 `(channels, length)`, zero where outside the song."""
        return _read_window(self.file, self.channels, self.length, start, length)

    def read_native(self, start: int, length: int) -> np.ndarray:
        """Like `read`, at the input's own rate (`info.sample_rate`, `info.frames` long)."""
        return _read_window(self.native or self.file, self.channels, self.info.frames, start, length)


def _read_window(file: BinaryIO, channels: int, frames: int, start: int, length: int) -> np.ndarray:
    window = np.zeros((channels, length), np.float32)
    first, end = max(start, 0), min(start + length, frames)
    if first < end:
        file.seek(first * channels * RAW_SAMPLE.itemsize)
        window[:, first - start:end - start] = _read_raw(file, channels, end - first)
    return window


@contextmanager
def open_song(source: str | Path, sample_rate: int = 44100, channels: int = 2,
              cancelled: threading.Event | None = None) -> Iterator[Song]:
    """Decode `source` ("-" for stdin) to a `Song` at `sample_rate`, readable until the context exits.

    Mono is duplicated to stereo; more than two channels are downmixed by ffmpeg; `channels=1`
    averages the stereo signal. The song's info describes the input at its native rate.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    notices = []
    with tempfile.TemporaryDirectory(prefix=temporary_prefix()) as folder:
        work = Path(folder)
        name, path = _locate(source, work)
        decoded, tags = _decode(path, name, work, cancelled=cancelled)
        native_rate, native_channels, frames = _wav_format(decoded)
        if frames == 0:
            raise InputError(f"{name} contains no audio samples")
        if native_rate not in INPUT_RATES:
            raise InputError(f"{name} claims a sample rate of {native_rate} Hz; stemsplit reads "
                             f"{INPUT_RATES.start} to {INPUT_RATES.stop - 1} Hz")
        if native_channels > 2:
            surround, decoded = decoded, _decode(decoded, name, work, channels=2, cancelled=cancelled)[0]
            surround.unlink()
            notices.append(f"{native_channels}-channel input downmixed to stereo")
        with open(work / "song.f32", "w+b") as file, ExitStack() as native:
            # Residuals are formed at the input's rate, from this copy (see separation.at_input_rate).
            native_file = None if native_rate == sample_rate else native.enter_context(open(work / "native.f32",
                                                                                            "w+b"))
            try:
                with sf.SoundFile(decoded) as wav:
                    length, replaced = _store_song(wav, (file, native_file), sample_rate, channels, cancelled)
            except OSError as exc:
                if exc.errno in DISK_FULL:
                    raise _temporary_error(work, exc.strerror) from None
                raise InputError(f"cannot decode {name}: {exc.strerror or exc}") from None
            decoded.unlink()
            if replaced:
                notices.append(f"replaced {replaced} NaN/inf samples with 0")
            info = AudioInfo(native_rate, native_channels, frames, tags, tuple(notices))
            yield Song(info, length, channels, file, native_file)


def _locate(source: str | Path, work: Path) -> tuple[str, Path]:
    """The name to show for `source` and a file to decode; stdin is spooled into `work`."""
    if str(source) == "-":
        spool = work / "stdin"
        try:
            with open(spool, "wb") as file:
                shutil.copyfileobj(sys.stdin.buffer, file)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise _temporary_error(work, exc.strerror) from None
            raise InputError(f"cannot read stdin: {exc.strerror or exc}") from None
        return "stdin", spool
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if path.is_dir():
        raise InputError(f"{source} is a directory, not an audio file")
    if not _utf8(str(path)):  # bytes of another encoding (Latin-1 archives): ffmpeg-python cannot take the name
        link = work / "input"
        link.symlink_to(path.resolve())
        return str(source), link
    return str(source), path


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(path: Path, name: str, work: Path, channels: int | None = None,
            cancelled: threading.Event | None = None) -> tuple[Path, dict[str, str]]:
    """First audio stream of `path` as a float32 WAV file in `work` at its native rate, and its tags.

    ffmpeg writes to a file (a seekable file gets a header with the exact length) and the
    metadata in ffmetadata form next to it. `channels` makes ffmpeg mix down to that many.
    """
    decoded, metadata = work / f"decoded{channels or ''}.wav", work / "metadata.txt"
    audio_stream = ffmpeg.input(f"file:{path}")["a:0"]
    mixdown = {"ac": channels} if channels else {}
    wav = audio_stream.output(f"file:{decoded}", f="wav", acodec="pcm_f32le", rf64="auto", **mixdown)
    tags = audio_stream.output(f"file:{metadata}", f="ffmetadata", c="copy")
    returncode, stderr = run_cancellable(ffmpeg_command(ffmpeg.merge_outputs(wav, tags)), cancelled)
    if returncode:
        if b"matches no streams" in stderr:
            raise InputError(f"{name} has no audio stream")
        reason = ffmpeg_reason(stderr)
        if reason in (os.strerror(code) for code in DISK_FULL):
            raise _temporary_error(work, reason)
        raise InputError(f"cannot decode {name}: {reason}")
    return decoded, _parse_ffmetadata(metadata.read_text(encoding="utf-8", errors="replace"))


def run_cancellable(command: list[str], cancelled: threading.Event | None) -> tuple[int, bytes]:
    """Run `command` to its end, or kill it as soon as `cancelled` is set; its exit code and stderr."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    with process:
        try:
            while True:
                try:
                    _, stderr = process.communicate(timeout=0.2)
                    return process.returncode, stderr
                except subprocess.TimeoutExpired:
                    if cancelled is not None and cancelled.is_set():
                        raise Cancelled() from None
        except BaseException:  # Ctrl-C, SIGTERM, cancelled: stop ffmpeg now rather than wait for it
            process.kill()
            raise


def _wav_format(path: Path) -> tuple[int, int, int]:
    """Sample rate, channels and frames of a WAV file."""
    with sf.SoundFile(path) as wav:
        return wav.samplerate, wav.channels, wav.frames


class Cancelled(Exception):
    """A decoding stopped because its result is no longer wanted."""


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _temporary_error(work: Path, reason: str) -> OutputError:
    return OutputError(f"cannot write temporary files in {work.parent}: {reason}")


def _store_song(wav: sf.SoundFile, files: tuple[BinaryIO, BinaryIO | None], sample_rate: int, channels: int,
                cancelled: threading.Event | None = None) -> tuple[int, int]:
    """Append `wav` to `files[0]` with NaN/inf zeroed, `channels` channels and `sample_rate`, and to
    `files[1]` (if any) the same at its own rate.

    Returns the number of frames stored and the number of samples zeroed.
    """
    replaced = 0

    def conformed() -> Iterator[np.ndarray]:
        nonlocal replaced
        for block in wav.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            finite = np.isfinite(block)
            replaced += block.size - np.count_nonzero(finite)
            block[~finite] = 0
            block = np.repeat(block.T, 2, axis=0) if block.shape[1] == 1 else block.T
            block = block.mean(axis=0, keepdims=True) if channels == 1 else block
            if files[1] is not None:
                _append_raw(files[1], block)
            yield block

    length = 0
    for block in resample_blocks(conformed(), wav.samplerate, sample_rate):
        _append_raw(files[0], block)
        length += block.shape[1]
    return length, replaced


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Tags of interest from ffmpeg's ffmetadata text: the file's, then its audio stream's."""
    tags: dict[str, str] = {}
    section = "file"
    # An entry ends at a newline that is not escaped; `\` escapes `=`, `;`, `#`, `\` and newline.
    for entry in re.findall(r"((?:[^\\\n]|\\.)*)\n", text + "\n", flags=re.S):
        if entry.startswith("["):
            section = entry.strip("[]").lower()
            continue
        pair = re.fullmatch(r"((?:[^\\=]|\\.)*)=(.*)", entry, flags=re.S)
        if entry.startswith((";", "#")) or not pair or section not in ("file", "stream"):
            continue
        key, value = (re.sub(r"\\(.)", r"\1", part, flags=re.S) for part in pair.groups())
        if key.lower() in TAG_KEYS and value:
            tags.setdefault(key.lower(), value)
    return tags


def resample(x: torch.Tensor, old_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling over the last axis with a polyphase windowed-sinc filter.

    Output sample j sits at input time j * old_rate / new_rate; there are ceil(n * new / old)
    of them, every one whose time falls inside the input. The signal is zero outside the input.
    """
    if old_rate == new_rate:
        return x
    up, down, cutoff, half_width = _filter(old_rate, new_rate)
    length = x.shape[-1]
    out_length = -(-length * up // down)
    # Small ratios (2:1, 1:2...) are handled as several periods at once (e.g. 100:50), so each
    # gathered input frame serves many output samples.
    periods = -(-half_width // down)
    up, down = up * periods, down * periods
    blocks = -(-out_length // up)
    flat = x.reshape(-1, length)
    padded = F.pad(flat, (half_width, blocks * down + half_width - length))
    out = flat.new_empty(flat.shape[0], blocks, up)
    # Output j = q * up + p reads input from q * down + floor(p * down / up). Phases are handled
    # in groups whose read offsets span about half_width samples, keeping each kernel short.
    group = min(up, math.ceil(half_width * up / down))
    for first in range(0, up, group):
        offsets = np.arange(first, min(first + group, up)) * down / up
        start = int(offsets[0])
        kernels = _sinc_kernels(offsets - start, half_width, int(offsets[-1]) - start, cutoff).to(x.dtype)
        frames = padded[:, start:].unfold(-1, kernels.shape[1], down)  # a view: (rows, blocks, taps)
        step = max(1, RESAMPLE_CHUNK // kernels.shape[1])  # bounds the copy matmul makes of frames
        for block in range(0, blocks, step):
            out[:, block:block + step, first:first + len(offsets)] = frames[:, block:block + step] @ kernels.T
    return out.reshape(flat.shape[0], blocks * up)[:, :out_length].reshape(*x.shape[:-1], out_length)


def resample_blocks(blocks: Iterable[np.ndarray], old_rate: int, new_rate: int) -> Iterator[np.ndarray]:
    """`resample` of the concatenation of float32 `(channels, n)` `blocks`, in pieces that concatenate to it.

    Each piece is resampled from input starting at a multiple of old_rate/gcd, so that its output
    samples fall where the whole signal's do, with at least the filter's half width of real
    input (or the zeros `resample` pads with) on either side. Memory is bounded by the block size.
    """
    if old_rate == new_rate:
        yield from blocks
        return
    up, down, _, half_width = _filter(old_rate, new_rate)
    margin = -(-half_width // down) * down
    held, start = None, -margin  # input kept for the next piece, and the position of its first sample
    for block in blocks:
        held = np.concatenate([np.zeros((block.shape[0], margin), np.float32) if held is None else held, block], 1)
        ready = (start + held.shape[1] - margin) // down * down  # input before this has all the context it needs
        if ready > start + margin:
            piece = resample(torch.from_numpy(held[:, :ready + margin - start]), old_rate, new_rate).numpy()
            yield piece[:, margin * up // down:(ready - start) * up // down]
            held, start = held[:, ready - margin - start:], ready - margin
    if held is not None:
        yield resample(torch.from_numpy(held), old_rate, new_rate).numpy()[:, margin * up // down:]


def _filter(old_rate: int, new_rate: int) -> tuple[int, int, float, int]:
    """The resampling pattern (`up` output samples for every `down` input samples), the cutoff as a
    fraction of the input's Nyquist frequency, and the filter's half width in input samples."""
    gcd = math.gcd(old_rate, new_rate)
    up, down = new_rate // gcd, old_rate // gcd
    cutoff = min(1.0, up / down) * ROLLOFF
    return up, down, cutoff, math.ceil(SINC_ZEROS / cutoff)


def _sinc_kernels(delays: np.ndarray, half_width: int, spread: int, cutoff: float) -> torch.Tensor:
    """Low-pass kernels over taps -half_width..half_width + spread, one per output phase,
    each centred `delay` samples after tap 0."""
    t = np.arange(-half_width, half_width + spread + 1)[None, :] - delays[:, None]
    window = np.i0(KAISER_BETA * np.sqrt(np.clip(1 - (t / half_width) ** 2, 0, None)))
    kernels = np.where(np.abs(t) <= half_width, np.sinc(cutoff * t) * window, 0.0)
    return torch.from_numpy(kernels / kernels.sum(axis=1, keepdims=True))  # unit gain at DC for every phase


def prevent_clipping(audio: np.ndarray, mode: str, peak: float) -> np.ndarray:
    """The reference's strategies: "rescale" divides by max(1.01 * peak, 1), where `peak` is the
    largest magnitude of the whole signal `audio` is part of, "clamp" clips to +-0.99, "none"
    leaves the signal alone."""
    if mode == "rescale":
        return audio / max(1.01 * peak, 1.0)
    if mode == "clamp":
        return np.clip(audio, -0.99, 0.99)
    return audio


@dataclass(frozen=True)
class Encoding:
    """How stems are written: `rate` and `channels` of the file, its `format` (one of FORMATS, or "stem" for a
    Native Instruments stem file, of `stem_codec`), `bit_depth` (lossless formats), `bitrate` in kbit/s (lossy
    ones), how clipping is avoided (one of CLIP_MODES) and the `tags` (see TAG_KEYS) it stores where it can."""

    rate: int = 44100
    channels: int = 2
    format: str = "wav"
    bit_depth: int = 24
    bitrate: int = 320
    clip_mode: str = "rescale"
    stem_codec: str = "aac"
    tags: Mapping[str, str] = field(default_factory=dict)


def check_output(encoding: Encoding) -> None:
    """Raise OutputError if `encoding.format` cannot store its bit depth, InputError if it cannot store
    its rate (the input's: a failure of that input alone)."""
    format, bit_depth, sample_rate = encoding.format, encoding.bit_depth, encoding.rate
    if encoding.clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {encoding.clip_mode!r}")
    if format not in FORMATS:
        raise OutputError(f"unknown output format {format!r}; choose from {', '.join(FORMATS)}")
    if FORMATS[format] and bit_depth not in FORMATS[format]:
        raise OutputError(f"{format} supports bit depths {', '.join(map(str, FORMATS[format]))}, not {bit_depth}")
    if sample_rate not in LOSSY_SAMPLE_RATES.get(format, range(1, sample_rate + 1)):
        raise InputError(f"{format} cannot store {sample_rate} Hz audio; use wav or flac")


class StemWriters:
    """Collects each stem, block by block, in a raw temporary file next to its destination."""

    def __init__(self, outputs: Mapping[Path, Encoding], files: Sequence[BinaryIO]):
        self.paths = list(outputs)
        self.encodings = list(outputs.values())
        self.files = files
        self.written = [False] * len(files)
        self.peaks = [0.0] * len(files)

    def write(self, blocks: Sequence[np.ndarray]) -> None:
        """Append one float32 `(channels, n)` block to each stem, in the order of the paths."""
        if len(blocks) != len(self.paths):
            raise ValueError(f"expected one block for each of the {len(self.paths)} stems, got {len(blocks)}")
        for encoding, block in zip(self.encodings, blocks):
            if block.ndim != 2 or block.shape[0] != encoding.channels:
                raise ValueError(f"stem audio must be (channels, samples) with {encoding.channels} channels, "
                                 f"got shape {block.shape}")
        for index, (path, file, block) in enumerate(zip(self.paths, self.files, blocks)):
            self.written[index] = True
            self.peaks[index] = max(self.peaks[index], float(np.abs(block).max(initial=0.0)))
            try:
                _append_raw(file, block)
            except OSError as exc:
                raise output_error(path, exc) from None


@contextmanager
def open_stem_writers(outputs: Mapping[Path, Encoding], *, frames: int, source_rate: int = 44100, jobs: int = 1,
                      record: tuple[Path, str] | None = None) -> Iterator[StemWriters]:
    """Stems to write, given block by block at `source_rate`, each saved at its path as its encoding says
    with exactly `frames` frames.

    When the context exits normally each stem is resampled, clipped (its peak over the whole song sets
    the "rescale" factor) and encoded to a temporary name, `jobs` stems at once; then all are published
    with `record` (see `files.publishing`). On any failure nothing is renamed and nothing stays behind.
    """
    outputs = {Path(path): encoding for path, encoding in outputs.items()}
    for encoding in outputs.values():
        check_output(encoding)
    with publishing(outputs, record) as temporaries, ExitStack() as files:
        raws = [files.enter_context(_raw_file(temporary)) for temporary in temporaries.values()]
        writers = StemWriters(outputs, raws)
        yield writers

        def finish(index: int) -> None:
            path, encoding, raw = writers.paths[index], writers.encodings[index], raws[index]
            if not writers.written[index]:
                raise ValueError(f"no audio was written for {path}")
            blocks = to_input_rate(_raw_blocks(raw, encoding.channels, path), encoding.channels, source_rate,
                                   encoding.rate, frames)
            blocks = (prevent_clipping(block, encoding.clip_mode, writers.peaks[index]) for block in blocks)
            _encode(blocks, temporaries[path], path, encoding)
            raw.truncate(0)  # its disk space is free for the next stem

        _run_all(finish, len(raws), jobs)


def _run_all(task: Callable[[int], None], count: int, jobs: int) -> None:
    """`task(0)` ... `task(count - 1)`, `jobs` at a time; on a failure the others still to start don't."""
    if jobs <= 1:
        for index in range(count):
            task(index)
        return
    with ThreadPoolExecutor(jobs) as pool:
        try:
            for _ in pool.map(task, range(count)):
                pass
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # callers remove what the tasks wrote
            raise


@contextmanager
def _raw_file(temporary: Path) -> Iterator[BinaryIO]:
    """A new raw file beside `temporary`, open for writing and reading back, removed when done with;
    failing early and clearly where the place is unwritable."""
    path = temporary.with_name(f"{temporary.name}.f32")
    try:
        file = path.open("x+b")
    except OSError as exc:
        raise OutputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        with file:
            yield file
    finally:
        path.unlink(missing_ok=True)


def to_input_rate(blocks: Iterable[np.ndarray], channels: int, source_rate: int, sample_rate: int,
                  frames: int) -> Iterator[np.ndarray]:
    """A stem given in float32 `(channels, n)` blocks at the model's `source_rate`, resampled to the
    input's `sample_rate` and trimmed or zero-padded at the end to the input's exact `frames`."""
    done = 0
    for block in resample_blocks(blocks, source_rate, sample_rate):
        block = block[:, :frames - done]
        done += block.shape[1]
        yield block
    for start in range(done, frames, BLOCK_FRAMES):
        yield np.zeros((channels, min(BLOCK_FRAMES, frames - start)), np.float32)


def _encode(blocks: Iterable[np.ndarray], temporary: Path, path: Path, encoding: Encoding) -> None:
    """Write float `(channels, n)` blocks to `temporary` as `encoding` says; errors name the final `path`."""
    if encoding.format in ("wav", "flac"):
        _encode_soundfile(blocks, temporary, path, encoding)
    else:
        _encode_ffmpeg(blocks, temporary, path, encoding)


def _encode_soundfile(blocks: Iterable[np.ndarray], temporary: Path, path: Path, encoding: Encoding) -> None:
    bit_depth = encoding.bit_depth
    subtype = "FLOAT" if bit_depth == 32 else f"PCM_{bit_depth}"
    try:
        with sf.SoundFile(os.fsencode(temporary), "w", encoding.rate, encoding.channels, subtype,  # bytes: any name
                          format=encoding.format.upper()) as file:
            for key, value in encoding.tags.items():
                if key in SOUNDFILE_TAGS:
                    setattr(file, SOUNDFILE_TAGS[key], value)
            for block in blocks:
                file.write(_pcm(block, bit_depth).T)
    except (OSError, sf.SoundFileRuntimeError) as exc:
        # libsndfile reports a full disk as a bare "System error.".
        full = shutil.disk_usage(temporary.parent).free < BLOCK_FRAMES * RAW_SAMPLE.itemsize
        raise output_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if full else exc) from None


def _pcm(samples: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float samples as soundfile writes them at `bit_depth`: float32 for 32 bits, else integers.

    Integer PCM uses the same scale ffmpeg decodes with (x * 2^(bits-1)), so 16/24-bit inputs
    written back at their own depth come out bit-identical. float32 holds these exactly.
    """
    if bit_depth == 32:
        return samples
    scale = 2 ** (bit_depth - 1)
    ints = np.clip(np.rint(samples * scale), -scale, scale - 1)
    return ints.astype(np.int16) if bit_depth == 16 else ints.astype(np.int32) << 8  # soundfile: top 24 bits


def _encode_ffmpeg(blocks: Iterable[np.ndarray], temporary: Path, path: Path, encoding: Encoding) -> None:
    muxer, codec = LOSSY_CODECS[encoding.format]
    quality = ["-q:a", str(VORBIS_QUALITY)] if encoding.format == "ogg" else ["-b:a", f"{encoding.bitrate}k"]
    # Tags go through an ffmetadata file: on the command line a long one would exceed the system's limit.
    with tempfile.TemporaryDirectory(prefix=temporary_prefix()) as folder:
        metadata = Path(folder) / "metadata.txt"
        metadata.write_text(ffmetadata(encoding.tags), encoding="utf-8")
        command = [find_ffmpeg()[0], "-nostdin", "-hide_banner", "-loglevel", "error",
                   "-f", "f32le", "-ar", str(encoding.rate), "-ac", str(encoding.channels), "-i", "pipe:",
                   "-f", "ffmetadata", "-i", f"file:{metadata}", "-map", "0:a", "-map_metadata", "1",
                   "-f", muxer, "-c:a", codec, *quality, "-y", f"file:{temporary}"]
        _pipe_to_ffmpeg(command, blocks, path, Path(folder) / "log.txt")


def _pipe_to_ffmpeg(command: list[str], blocks: Iterable[np.ndarray], path: Path, log_path: Path) -> None:
    """Feed float `(channels, n)` blocks to ffmpeg's stdin; its messages go to a file (a pipe read only at
    the end could fill up and stall it); a failure is an OutputError naming `path`."""
    with open(log_path, "w+b") as log:
        with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=log) as process:
            try:
                for block in blocks:
                    process.stdin.write(np.ascontiguousarray(np.clip(block.T, -1, 1), dtype="<f4"))
                process.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg stopped early: its exit status and messages say why
            except BaseException:
                process.kill()
                raise
        if process.returncode:
            log.seek(0)
            raise OutputError(f"cannot write {path}: {ffmpeg_reason(log.read())}")


def ffmetadata(tags: Mapping[str, str]) -> str:
    """`tags` in ffmpeg's ffmetadata form, with `=`, `;`, `#`, `\\` and newlines escaped."""
    escaped = {key: re.sub(r"([=;#\\\n])", r"\\\1", value) for key, value in tags.items()}
    return ";FFMETADATA1\n" + "".join(f"{key}={value}\n" for key, value in escaped.items())


def _append_raw(file: BinaryIO, block: np.ndarray) -> None:
    file.write(np.ascontiguousarray(block.T, dtype=RAW_SAMPLE))


def _read_raw(file: BinaryIO, channels: int, frames: int) -> np.ndarray:
    """Up to `frames` frames from the current position of a raw file, as `(channels, n)`."""
    return np.frombuffer(file.read(frames * channels * RAW_SAMPLE.itemsize), RAW_SAMPLE).reshape(-1, channels).T


def _raw_blocks(file: BinaryIO, channels: int, path: Path) -> Iterator[np.ndarray]:
    """The whole of a raw file, in `(channels, n)` blocks; errors name the stem's `path`."""
    file.seek(0)
    while True:
        try:
            block = _read_raw(file, channels, BLOCK_FRAMES)
        except OSError as exc:
            raise output_error(path, exc) from None
        if not block.shape[1]:
            return
        yield block
