"""What the tests share: a test signal, a file decoded back, how close two signals are, the command run as a
user runs it, and the whole-array shortcuts the package itself does not need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from stemsplit.audio import AudioInfo, Encoding, open_song, open_stem_writers
from stemsplit.bag import Bag
from stemsplit.separation import Progress, Settings, decide, separate_stream

# Signals


def tone(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A float32 `(frames, channels)` test song, as soundfile writes it: a sine per channel (220 Hz, 330 Hz, ...)
    with a little noise, peak below 0.4."""
    frames = int(round(seconds * rate))
    t = np.arange(frames) / rate
    rng = np.random.default_rng(seed)
    columns = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t + c) + 0.02 * rng.standard_normal(frames)
               for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def read(path: Path | BinaryIO, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """A file decoded back by soundfile: `(channels, n)` samples, as stemsplit's arrays are, and the rate."""
    samples, rate = sf.read(path, dtype=dtype, always_2d=True)
    return samples.T, rate


def sdr(estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """10 log10(sum(reference^2) / sum((estimate - reference)^2)) in dB, in float64; inf when they are equal."""
    estimate, reference = (np.asarray(x, np.float64) for x in (estimate, reference))
    error = np.square(estimate - reference).sum()
    return float("inf") if error == 0 else float(10 * np.log10(np.square(reference).sum() / error))


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).norm() / reference.norm()).item()


# The command


def environment(tmp: Path | None = None, **extra: str) -> dict[str, str]:
    """The command's environment: offline, wide enough that rich's summary table does not wrap the short
    input names used here and, with `tmp`, its temporary files there (to check that none are left)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
    return {**env, **extra}


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "stemsplit", *map(str, args)]


def stemsplit(*args: object, cwd: Path, tmp: Path | None = None, env: Mapping[str, str] | None = None,
              stdin: bytes | None = None, binary: bool = False, **popen: object) -> subprocess.CompletedProcess:
    """Run the `stemsplit` command in a subprocess; stdout stays bytes when `binary`, stderr is always text."""
    result = subprocess.run(command(*args), cwd=cwd, env=environment(tmp, **(env or {})), input=stdin,
                            capture_output=True, timeout=600, **popen)
    stdout = result.stdout if binary else result.stdout.decode("utf-8")
    return subprocess.CompletedProcess(result.args, result.returncode, stdout, result.stderr.decode("utf-8"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def leftovers(folder: Path) -> list[Path]:
    """Temporary stem files (`.NAME.partial-XXXX[.f32]`) anywhere under `folder`."""
    return sorted(p for p in folder.rglob("*") if ".partial" in p.name)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def wait_for(condition: Callable[[], object], process: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, stderr = process.communicate()
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
            pytest.fail(f"the process exited ({process.returncode}) before {what}: {stderr}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def interrupt_promptly(process: subprocess.Popen, signum: int, limit: float = 10) -> str:
    """Send `signum`; the stderr, once the process has exited, which it must do within `limit` seconds."""
    signalled = time.monotonic()
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"still running {limit} s after the signal")
    print(f"exited {time.monotonic() - signalled:.1f} s after the signal")
    return stderr.decode()


# Whole arrays at once: what the package does in blocks, for comparisons


def load_audio(source: str | Path, sample_rate: int = 44100, channels: int = 2) -> tuple[np.ndarray, AudioInfo]:
    """The whole of `open_song(source, sample_rate, channels)` as one float32 `(channels, n)` array."""
    with open_song(source, sample_rate, channels) as song:
        return song.read(0, song.length), song.info


def write_stems(outputs: Mapping[Path, np.ndarray], encoding: Encoding, *, frames: int,
                source_rate: int = 44100) -> None:
    """Write each whole `(channels, n)` array like `open_stem_writers` writes blocks."""
    with open_stem_writers(dict.fromkeys(outputs, encoding), frames=frames, source_rate=source_rate) as writers:
        writers.write([np.asarray(audio, np.float32) for audio in outputs.values()])


def excerpt(source: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """`source[..., start:start + length]`, zero-filled where it runs off either end."""
    end = start + length
    inside = source[..., max(start, 0):min(end, source.shape[-1])]
    return F.pad(inside, (max(-start, 0), max(end - source.shape[-1], 0)))


class TensorMix:
    """A song already in memory as a (channels, samples) tensor."""

    def __init__(self, audio: torch.Tensor):
        self.audio = audio
        self.length = audio.shape[-1]

    def read(self, start: int, length: int) -> torch.Tensor:
        return excerpt(self.audio, start, length)


def separate_tensor(bag: Bag, mix: torch.Tensor, settings: Settings | None = None, device: str = "cpu",
                    progress: Progress = lambda done, total: None) -> torch.Tensor:
    """Separate `mix` (channels, samples) at the bag's rate into (stems, channels, samples), `settings`
    decided for `device` here."""
    decided = decide(settings or Settings(), device)
    decided.check(bag)
    blocks = list(separate_stream(bag, TensorMix(mix), decided, progress))
    return torch.cat(blocks, dim=-1) if blocks else torch.zeros(len(bag.stems), bag.audio_channels, 0)
