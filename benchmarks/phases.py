"""Where the time of one HT Demucs song goes, phase by phase: stemsplit's CLI against demucs 4.1's.

    python benchmarks/phases.py --seconds 180            # the 3-minute song, one run of each tool
    python benchmarks/phases.py --seconds 30 --repeat 2  # alternated runs; the fastest total of each counts
    python benchmarks/phases.py --seconds 60 --before /tmp/old   # also stemsplit from an older source tree

Both tools get the same random htdemucs-shaped weights (bench.py's) and the same synthesised song, and
each runs in its own process as its command line would (`stemsplit ... --repo`, `demucs.separate`
`--repo`), with timers wrapped around the functions that make up each phase. A phase's time is its own:
time spent in a phase nested inside it (resampling inside decoding, the network inside overlap-add)
counts for the inner one only. "other" is the rest of the run (imports, argument parsing, start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from bench import random_weights, synthesise

ROOT = Path(__file__).resolve().parents[1]
OURS_PHASES = {  # module, attribute (a function, or Class.method) -> phase
    ("stemsplit.audio", "_decode"): "decode",
    ("stemsplit.audio", "_store_song"): "decode",
    ("stemsplit.audio", "resample"): "resampling",
    ("stemsplit.separation", "Normalisation.of"): "mean/std read",
    ("stemsplit.separation", "Pass.read"): "chunk reads",
    ("stemsplit.separation", "run_network"): "network",
    ("stemsplit.separation", "Pass.add"): "overlap-add",
    ("stemsplit.separation", "mix_members"): "overlap-add",
    ("stemsplit.audio", "StemWriters.write"): "writing",
    ("stemsplit.audio", "_encode"): "writing",
    ("stemsplit.registry", "load_bag"): "loading the model",
}
REFERENCE_PHASES = {
    ("demucs.api", "Separator._load_audio"): "decode",
    ("demucs.api", "convert_audio"): "resampling",
    ("demucs.api", "Separator.separate_tensor"): "mean/std read",
    ("demucs.api", "apply_model"): "overlap-add",
    ("demucs.htdemucs", "HTDemucs.forward"): "network",
    ("demucs.separate", "save_audio"): "writing",
    ("demucs.api", "get_model"): "loading the model",
}
ROWS = ["loading the model", "decode", "mean/std read", "resampling", "chunk reads", "network", "overlap-add",
        "writing", "other", "total"]


class Phases:
    """Exclusive time per phase: entering a phase pauses the one it is nested in."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.stack: list[tuple[str, tuple[float, float]]] = []

    def wrap(self, function: Callable, phase: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._switch(phase)
            try:
                return function(*args, **kwargs)
            finally:
                self._switch(None)
        return timed

    def _switch(self, entered: str | None) -> None:
        """Charge the clocks so far to the phase running, then enter `entered` (None: leave the phase)."""
        now = (time.perf_counter(), time.process_time())
        if self.stack:
            phase, (wall, cpu) = self.stack[-1]
            self.seconds[phase] += now[0] - wall
            self.cpu[phase] += now[1] - cpu
            if entered is None:
                self.stack.pop()
        if entered is not None:
            self.stack.append((entered, now))
        elif self.stack:
            self.stack[-1] = (self.stack[-1][0], now)

    def install(self, table: dict[tuple[str, str], str]) -> None:
        import importlib

        for (module_name, attribute), phase in table.items():
            owner: Any = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, self.wrap(getattr(owner, name), phase))


def run_tool(tool: str, repo: Path, song: Path, out: Path) -> dict[str, float]:
    """One tool's run in this process: the wall and CPU seconds of its phases and in all."""
    started = (time.perf_counter(), time.process_time())
    phases = Phases()
    common = ["-n", "htdemucs", "--repo", str(repo), "-o", str(out), "--shifts", "0", "--overlap", "0.25",
              "-d", "cpu", "--clip-mode", "none"]
    if tool == "stemsplit":
        phases.install(OURS_PHASES)
        from stemsplit.cli import main

        try:
            main([*common, "--bit-depth", "32", "-q", str(song)])
        except SystemExit as stop:
            if stop.code:
                raise
    else:
        phases.install(REFERENCE_PHASES)
        from demucs.separate import main

        main([*common, "--float32", str(song)])
    totals = (time.perf_counter() - started[0], time.process_time() - started[1])
    return {clock: {**seconds, "other": total - sum(seconds.values()), "total": total}
            for clock, seconds, total in zip(("wall", "cpu"), (phases.seconds, phases.cpu), totals)}


def measure(tool: str, repo: Path, song: Path, out: Path, tree: Path | None = None) -> dict[str, dict[str, float]]:
    """One run of `tool` in a process of its own; `tree`: import stemsplit from that source tree."""
    command = [sys.executable, __file__, "--tool", tool, str(repo), str(song), str(out)]
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"error: {shlex.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(runs: dict[str, dict[str, dict[str, float]]], seconds: int) -> list[str]:
    """Wall and CPU seconds of each phase, each tool's beside the others'."""
    tools = list(runs)
    head = [f"{tool} {clock}" for clock in ("wall s", "CPU s") for tool in tools]
    lines = [f"| phase, {seconds} s song | " + " | ".join(head) + " |", "|" + " --- |" * (len(head) + 1)]
    for row in ROWS:
        cells = [runs[tool][clock].get(row) for clock in ("wall", "cpu") for tool in tools]
        lines.append(f"| {row} | " + " | ".join("-" if cell is None else f"{cell:.2f}" for cell in cells) + " |")
    for tool in tools[:1] + tools[2:]:
        ratios = [runs[tool][clock]["total"] / runs["demucs 4.1"][clock]["total"] for clock in ("wall", "cpu")]
        lines.append(f"\n{tool} / demucs 4.1: {ratios[0]:.2f} wall, {ratios[1]:.2f} CPU")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternated")
    parser.add_argument("--before", type=Path, help="a source tree of stemsplit to time as well (its PYTHONPATH)")
    parser.add_argument("--tool", nargs=4, metavar=("TOOL", "REPO", "SONG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tool:
        tool, *paths = args.tool
        print(json.dumps(run_tool(tool, *map(Path, paths))))
        return
    from bench import machine

    tools = {"stemsplit": ("stemsplit", None), "demucs 4.1": ("reference", None)}
    if args.before:
        tools["stemsplit before"] = ("stemsplit", args.before)

    with tempfile.TemporaryDirectory(prefix="stemsplit-phases-") as folder:
        tmp = Path(folder)
        (tmp / "weights").mkdir()
        random_weights(tmp / "weights")
        song = tmp / "song.wav"
        synthesise(song, args.seconds)
        runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in tools}
        for _ in range(args.repeat):
            for name, (tool, tree) in tools.items():
                runs[name].append(measure(tool, tmp / "weights", song, tmp / f"out-{tool}-{tree is None}", tree))
                total = runs[name][-1]["wall"]["total"]
                print(f"  {name}: {total:.1f} s, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    best = {tool: min(tool_runs, key=lambda run: run["wall"]["total"]) for tool, tool_runs in runs.items()}
    print(f"`{shlex.join(['python', *sys.argv])}` on {machine()}; load average {os.getloadavg()[0]:.1f} at the end\n")
    print("\n".join(table(best, args.seconds)))


if __name__ == "__main__":
    main()
