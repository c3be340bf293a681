"""Audio in and out: decode anything ffmpeg reads, resample, and write stems atomically.

Songs and stems stream through temporary files block by block, so memory does not grow with their length.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
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

from .errors import InputError, OutputError, StemsplitError

# Extensions picked up when a folder is given. Video containers are left out on purpose:
# they can still be separated when named explicitly.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aif",
    ".aiff", ".aifc", ".alac", ".ape", ".wv", ".mka", ".webm", ".ac3", ".mp2", ".caf", ".au",
})
# Output formats and the bit depths each accepts; lossy formats take none (bit_depth is ignored).
FORMATS: dict[str, tuple[int, ...]] = {"wav": (16, 24, 32), "flac": (16, 24), "mp3": (), "ogg": (), "m4a": ()}
CLIP_MODES = ("rescale", "clamp", "none")
# ffmpeg muxer and encoder for each lossy format. Opus is absent: it only stores 48 kHz.
LOSSY_CODECS = {"mp3": ("mp3", "libmp3lame"), "ogg": ("ogg", "libvorbis"), "m4a": ("ipod", "aac")}
MP3_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
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
    """The ffmpeg binary to use and where it comes from: the system one first, else imageio-ffmpeg's."""
    system = shutil.which("ffmpeg")
    if system:
        return system, "system ffmpeg on PATH"
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe(), f"bundled with imageio-ffmpeg {imageio_ffmpeg.__version__}"
    except (ImportError, RuntimeError) as exc:
        raise StemsplitError(f"ffmpeg not found: install ffmpeg or the imageio-ffmpeg package ({exc})") from None


def _run_ffmpeg(stream: ffmpeg.nodes.OutputStream, **kwargs: object) -> None:
    stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").overwrite_output().run(
        cmd=find_ffmpeg()[0], quiet=True, **kwargs)


def _ffmpeg_reason(error: ffmpeg.Error) -> str:
    """What went wrong, from the last line ffmpeg printed ("Error opening input files: <reason>")."""
    lines = error.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].rsplit(": ", 1)[-1] if lines else "ffmpeg failed"


def load_audio(source: str | Path, sample_rate: int = 44100, channels: int = 2) -> tuple[np.ndarray, AudioInfo]:
    """Decode `source` ("-" for stdin) to float32 `(channels, n)` at `sample_rate`.

    Mono is duplicated to stereo; more than two channels are downmixed by ffmpeg; `channels=1`
    averages the stereo signal. The returned info describes the input at its native rate.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    notices = []
    with tempfile.TemporaryDirectory(prefix="stemsplit-") as folder:
        work = Path(folder)
        name, path = _locate(source, work)
        audio, native_rate, tags = _decode(path, name, work)
        native_channels = audio.shape[0]
        if native_channels > 2:
            audio = _decode(work / "decoded.wav", name, work, channels=2)[0]
            notices.append(f"{native_channels}-channel input downmixed to stereo")
    frames = audio.shape[-1]
    if frames == 0:
        raise InputError(f"{name} contains no audio samples")
    finite = np.isfinite(audio)
    if not finite.all():
        notices.append(f"replaced {audio.size - finite.sum()} NaN/inf samples with 0")
        audio[~finite] = 0
    audio = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
    audio = audio.mean(axis=0, keepdims=True) if channels == 1 else audio
    audio = resample(torch.from_numpy(audio), native_rate, sample_rate).numpy()
    info = AudioInfo(native_rate, native_channels, frames, tags, tuple(notices))
    return np.ascontiguousarray(audio, dtype=np.float32), info


def _locate(source: str | Path, work: Path) -> tuple[str, Path]:
    """The name to show for `source` and a file to decode; stdin is spooled into `work`."""
    if str(source) == "-":
        spool = work / "stdin"
        with open(spool, "wb") as file:
            shutil.copyfileobj(sys.stdin.buffer, file)
        return "stdin", spool
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if path.is_dir():
        raise InputError(f"{source} is a directory, not an audio file")
    return str(source), path


def _decode(path: Path, name: str, work: Path,
            channels: int | None = None) -> tuple[np.ndarray, int, dict[str, str]]:
    """First audio stream of `path` as float32 `(channels, n)` at its native rate, and its tags.

    ffmpeg writes a float WAV to a file (a seekable file gets a header with the exact length)
    and the metadata in ffmetadata form next to it. `channels` makes ffmpeg mix down to that many.
    """
    decoded, metadata = work / f"decoded{channels or ''}.wav", work / "metadata.txt"
    audio_stream = ffmpeg.input(f"file:{path}")["a:0"]
    mixdown = {"ac": channels} if channels else {}
    wav = audio_stream.output(f"file:{decoded}", f="wav", acodec="pcm_f32le", rf64="auto", **mixdown)
    tags = audio_stream.output(f"file:{metadata}", f="ffmetadata", c="copy")
    try:
        _run_ffmpeg(ffmpeg.merge_outputs(wav, tags))
    except ffmpeg.Error as exc:
        if b"matches no streams" in exc.stderr:
            raise InputError(f"{name} has no audio stream") from None
        raise InputError(f"cannot decode {name}: {_ffmpeg_reason(exc)}") from None
    samples, rate = sf.read(decoded, dtype="float32", always_2d=True)
    found_tags = _parse_ffmetadata(metadata.read_text(encoding="utf-8", errors="replace"))
    return np.ascontiguousarray(samples.T), rate, found_tags


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
    gcd = math.gcd(old_rate, new_rate)
    up, down = new_rate // gcd, old_rate // gcd
    length = x.shape[-1]
    out_length = -(-length * up // down)
    cutoff = min(1.0, up / down) * ROLLOFF  # fraction of the input's Nyquist frequency
    half_width = math.ceil(SINC_ZEROS / cutoff)  # in input samples
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


def _sinc_kernels(delays: np.ndarray, half_width: int, spread: int, cutoff: float) -> torch.Tensor:
    """Low-pass kernels over taps -half_width..half_width + spread, one per output phase,
    each centred `delay` samples after tap 0."""
    t = np.arange(-half_width, half_width + spread + 1)[None, :] - delays[:, None]
    window = np.i0(KAISER_BETA * np.sqrt(np.clip(1 - (t / half_width) ** 2, 0, None)))
    kernels = np.where(np.abs(t) <= half_width, np.sinc(cutoff * t) * window, 0.0)
    return torch.from_numpy(kernels / kernels.sum(axis=1, keepdims=True))  # unit gain at DC for every phase


def prevent_clipping(audio: np.ndarray, mode: str) -> np.ndarray:
    """The reference's strategies: "rescale" divides by max(1.01 * peak, 1), "clamp" clips to
    +-0.99, "none" leaves the signal alone."""
    if mode == "rescale":
        return audio / max(1.01 * float(np.abs(audio).max(initial=0.0)), 1.0)
    if mode == "clamp":
        return np.clip(audio, -0.99, 0.99)
    return audio


def fit_length(audio: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad the last axis to exactly `frames`."""
    missing = frames - audio.shape[-1]
    return np.pad(audio[..., :frames], [(0, 0)] * (audio.ndim - 1) + [(0, max(missing, 0))])


def check_output(format: str, sample_rate: int, bit_depth: int = 16) -> None:
    """Raise OutputError if `format` cannot store audio at `sample_rate` (or `bit_depth`)."""
    if format not in FORMATS:
        raise OutputError(f"unknown output format {format!r}; choose from {', '.join(FORMATS)}")
    if FORMATS[format] and bit_depth not in FORMATS[format]:
        raise OutputError(f"{format} supports bit depths {', '.join(map(str, FORMATS[format]))}, not {bit_depth}")
    if format == "mp3" and sample_rate not in MP3_SAMPLE_RATES:
        raise OutputError(f"mp3 cannot store {sample_rate} Hz audio; use wav or flac")


def write_stems(outputs: Mapping[Path, np.ndarray], sample_rate: int, *, frames: int, source_rate: int = 44100,
                format: str = "wav", bit_depth: int = 24, clip_mode: str = "rescale", bitrate: int = 320) -> None:
    """Write each `(channels, n)` array, given at `source_rate`, at `sample_rate` with exactly `frames`.

    All files go to temporary names first and are renamed into place only once all are written;
    on any failure (or Ctrl-C) the temporaries are removed. `bitrate` (kbit/s) is for lossy formats.
    """
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {clip_mode!r}")
    check_output(format, sample_rate, bit_depth)
    pending: dict[Path, Path] = {}
    try:
        for path, audio in outputs.items():
            path = Path(path)
            temporary = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
            _reserve(temporary)
            pending[path] = temporary
            samples = _prepare(audio, source_rate, sample_rate, frames, clip_mode)
            _encode(samples, temporary, path, sample_rate, format, bit_depth, bitrate)
        for path, temporary in list(pending.items()):
            try:
                os.replace(temporary, path)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
            del pending[path]
    finally:
        for temporary in pending.values():
            temporary.unlink(missing_ok=True)


def _reserve(temporary: Path) -> None:
    """Create the folder and an empty temporary file, so an unwritable place fails early and clearly."""
    folder = temporary.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.open("xb").close()
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _prepare(audio: np.ndarray, source_rate: int, sample_rate: int, frames: int, clip_mode: str) -> np.ndarray:
    if audio.ndim != 2:
        raise ValueError(f"stem audio must be (channels, samples), got shape {audio.shape}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    resampled = resample(torch.from_numpy(audio), source_rate, sample_rate).numpy()
    return prevent_clipping(fit_length(resampled, frames), clip_mode).astype(np.float32, copy=False)


def _encode(samples: np.ndarray, temporary: Path, path: Path, sample_rate: int, format: str, bit_depth: int,
            bitrate: int) -> None:
    """Write `(channels, n)` float samples to `temporary` as `format`; errors name the final `path`."""
    if format == "wav" and bit_depth == 32:
        _write_soundfile(samples.T, temporary, path, sample_rate, "WAV", "FLOAT")
    elif format in ("wav", "flac"):
        # Integer PCM uses the same scale ffmpeg decodes with (x * 2^(bits-1)), so 16/24-bit
        # inputs written back at their own depth come out bit-identical. float32 holds these exactly.
        scale = 2 ** (bit_depth - 1)
        ints = np.clip(np.rint(samples * scale), -scale, scale - 1)
        pcm = ints.astype(np.int16) if bit_depth == 16 else ints.astype(np.int32) << 8  # soundfile: top 24 bits
        _write_soundfile(pcm.T, temporary, path, sample_rate, format.upper(), f"PCM_{bit_depth}")
    else:
        muxer, codec = LOSSY_CODECS[format]
        interleaved = np.ascontiguousarray(np.clip(samples.T, -1, 1), dtype="<f4")
        stream = ffmpeg.input("pipe:", f="f32le", ar=sample_rate, ac=samples.shape[0]).output(
            f"file:{temporary}", f=muxer, acodec=codec, audio_bitrate=f"{bitrate}k")
        try:
            _run_ffmpeg(stream, input=interleaved.tobytes())
        except ffmpeg.Error as exc:
            raise OutputError(f"cannot write {path}: {_ffmpeg_reason(exc)}") from None


def _write_soundfile(frames: np.ndarray, temporary: Path, path: Path, sample_rate: int, format: str,
                     subtype: str) -> None:
    try:
        sf.write(temporary, frames, sample_rate, format=format, subtype=subtype)
    except (OSError, sf.SoundFileRuntimeError) as exc:
        raise OutputError(f"cannot write {path}: {exc}") from None
