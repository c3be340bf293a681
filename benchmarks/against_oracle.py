"""What the benchmarks of a checkpoint-and-config family against audio-separator share: the stemsplit command,
both tools run alternated (the fastest run of each counts) and the table and ratio they print."""

from __future__ import annotations

import shlex
from pathlib import Path

from bench import Run, stemsplit_exe, timed


def stemsplit_command(checkpoint: Path, config: Path, out: Path, extra: str, song: Path) -> list[str]:
    """stemsplit on the CPU in float32 (`extra`: more options), stems written as 32-bit floats, unclipped."""
    return [stemsplit_exe(), "--checkpoint", str(checkpoint), "--config", str(config), "-o", str(out), "-d", "cpu",
            "--bit-depth", "32", "--clip-mode", "none", "-q", *shlex.split(extra), str(song)]


def fastest_alternated(commands: dict[str, list[str]], repeat: int, logs: Path) -> list[Run]:
    """The fastest of `repeat` runs of each command, in the order given; runs alternate, so that a busy spell
    of the machine hits every tool."""
    runs = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            runs[name].append(timed(command, logs / f"{name}.log"))
    return [min(runs[name], key=lambda run: run.wall_s) for name in commands]


def print_table(ours: Run, oracle: Run, seconds: float, stem: str, score: float) -> None:
    """Each tool's wall time, its share of the audio's length, peak RSS and CPU time; their ratios and the SDR
    of our `stem` against the oracle's."""
    print("| tool | wall s | s per s of audio | peak RSS MB | CPU s |\n| --- | --- | --- | --- | --- |")
    for name, run in (("stemsplit", ours), ("audio-separator", oracle)):
        print(f"| {name} | {run.wall_s:.1f} | {run.wall_s / seconds:.3f} | {run.peak_rss_mb:.0f} | {run.cpu_s:.1f} |")
    print(f"ratio stemsplit/oracle: {ours.wall_s / oracle.wall_s:.2f} wall, {ours.cpu_s / oracle.cpu_s:.2f} CPU; "
          f"{stem} SDR vs oracle {score:.1f} dB")
