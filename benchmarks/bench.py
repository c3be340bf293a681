"""Benchmark stemsplit against the reference `demucs`: speed, peak memory and agreement.

Each tool separates the same synthesised inputs, with the same weights and settings, in its
own subprocess run as a user would run it. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from stemsplit.hub import sha256_of

ROOT = Path(__file__).resolve().parents[1]
MODEL = "htdemucs"
SIGNATURE = "bench0"  # of the random network; no '-', which separates it from the sha8
RATE = 44100
SONG_SECONDS = 180
TOOLS = ("stemsplit", "reference")


@dataclass
class Run:
    wall_s: float
    peak_rss_mb: float
    cpu_s: float  # user + system time of the process and the children it waited for (ffmpeg)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="30,180,3600", help="input lengths in seconds")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per tool and length")
    parser.add_argument("--only", choices=TOOLS, help="run one tool only")
    parser.add_argument("--weights", help="folder in the reference's --repo layout "
                        "(default $STEMSPLIT_TEST_WEIGHTS, else random weights)")
    parser.add_argument("--folder", type=int, default=0, metavar="N",
                        help="also separate a folder of N different 3-minute songs in one process per tool")
    parser.add_argument("--stemsplit-args", default="", help="extra stemsplit flags, e.g. '--batch-size 4'")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    return args


def synthesise(path: Path, seconds: int, offset: int = 0, chunk: int = 10 * RATE) -> None:
    """A deterministic stereo song-like mix: chords, bass, noisy drum hits and noise, taken from
    `offset` seconds into an endless one (so different offsets give different songs)."""
    chords = np.array([[220.0, 277.2, 329.6], [196.0, 246.9, 293.7],
                       [174.6, 220.0, 261.6], [196.0, 246.9, 311.1]])
    first, end = offset * RATE, (offset + seconds) * RATE
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16") as out:
        for start in range(first, end, chunk):
            n = min(chunk, end - start)
            rng = np.random.default_rng(start)  # seeded by position: the same audio at any length
            t = (start + np.arange(n)) / RATE
            notes = chords[(t // 2).astype(int) % len(chords)]
            tones = 0.1 * np.sin(2 * np.pi * notes * t[:, None]).sum(1)
            bass = 0.2 * np.sin(np.pi * notes[:, 0] * t)
            hit = np.exp(-30 * (t % 0.5))
            drums = hit * (0.2 * rng.standard_normal(n) + 0.4 * np.sin(2 * np.pi * 60 * t))
            mix = np.stack([tones + bass + drums, 0.7 * tones + bass + drums], 1)
            mix += 0.01 * rng.standard_normal((n, 2))
            out.write(np.clip(0.5 * mix, -1, 1))


def random_weights(folder: Path, seed: int = 0) -> None:
    """A pretrained-shaped htdemucs with perturbed random weights, as a legacy package
    `<sig>-<sha8>.th` plus `htdemucs.yaml`: the layout both tools read with --repo."""
    import torch
    from demucs.htdemucs import HTDemucs

    sys.path.insert(0, str(ROOT / "tests"))
    from reference_configs import PRETRAINED_KWARGS

    torch.manual_seed(seed)
    kwargs = dict(PRETRAINED_KWARGS[MODEL])
    model = HTDemucs(**kwargs)
    with torch.no_grad():
        for param in model.parameters():
            # The initial layer scales (1e-3..1e-4) make the init nearly an identity.
            param.add_(0.02 * torch.randn_like(param))
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    package = {"klass": HTDemucs, "args": (), "kwargs": kwargs, "state": state, "training_args": {}}
    path = folder / f"{SIGNATURE}.th"
    torch.save(package, path)
    path.rename(folder / f"{SIGNATURE}-{sha256_of(path)[:8]}.th")
    (folder / f"{MODEL}.yaml").write_text(f"models: ['{SIGNATURE}']\n")


def weights_folder(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    given = args.weights or os.environ.get("STEMSPLIT_TEST_WEIGHTS")
    if given and (Path(given) / f"{MODEL}.yaml").is_file():
        return Path(given), f"official, from {given}"
    if args.weights:
        sys.exit(f"error: {args.weights} has no {MODEL}.yaml")
    folder = tmp / "weights"
    folder.mkdir()
    random_weights(folder)
    return folder, "random (pretrained htdemucs configuration, seeded)"


def stemsplit_exe() -> str:
    return str(Path(sys.executable).with_name("stemsplit"))


def command(tool: str, repo: Path, tracks: list[Path], out: Path, extra: list[str]) -> list[str]:
    common = ["-n", MODEL, "--repo", str(repo), "-o", str(out), "--shifts", "0",
              "--overlap", "0.25", "-d", "cpu", "--clip-mode", "none"]
    if tool == "stemsplit":
        return [stemsplit_exe(), *common, "--bit-depth", "32", *extra, *map(str, tracks)]
    return [sys.executable, "-m", "demucs.separate", *common, "--float32", *map(str, tracks)]


def timed(cmd: list[str], log: Path) -> Run:
    """Wall time, peak RSS (the largest of the child and its own children) and CPU time of a child process."""
    with open(log, "w") as out:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.exit(f"error: {shlex.join(cmd)} failed ({child.returncode}):\n{log.read_text()[-3000:]}")
    return Run(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)  # ru_maxrss is in KiB on Linux


def sdr(ours: Path, ref: Path, block: int = 1 << 20) -> float:
    """10 log10(sum(ref^2) / sum((ours - ref)^2)) in dB, read block by block."""
    signal = error = 0.0
    for a, b in zip(sf.blocks(ours, block, dtype="float64"), sf.blocks(ref, block, dtype="float64"),
                    strict=True):
        signal += float(np.sum(b * b))
        error += float(np.sum((a - b) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(signal / error)


def stem_files(out: Path, track: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((out / MODEL / track.stem).glob("*.wav"))}


def compare(outs: dict[str, Path], track: Path) -> dict[str, float]:
    ours, ref = stem_files(outs["stemsplit"], track), stem_files(outs["reference"], track)
    shapes = {tool: {s: (sf.info(p).frames, sf.info(p).channels) for s, p in files.items()}
              for tool, files in (("stemsplit", ours), ("reference", ref))}
    if shapes["stemsplit"] != shapes["reference"]:
        sys.exit(f"error: the tools wrote different stems: {shapes}")
    return {stem: sdr(ours[stem], ref[stem]) for stem in ours}


def startup(repeat: int) -> dict[str, float]:
    """Median wall time of the commands whose speed users feel before any work starts."""
    result = {}
    for args in (["--help"], ["models"]):
        times = []
        for _ in range(repeat + 1):  # the first run only warms the page cache
            start = time.perf_counter()
            subprocess.run([stemsplit_exe(), *args], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        result[shlex.join(["stemsplit", *args])] = statistics.median(times[1:])
    return result


def machine() -> str:
    """The CPU (name, torch capability, native bfloat16), cores and threads: printed with every table,
    so that numbers from different machines are never mixed."""
    import torch

    from stemsplit.precision import describe_cpu

    return (f"{describe_cpu()}; {len(os.sched_getaffinity(0))} cores usable, {torch.get_num_threads()} torch "
            f"threads, python {platform.python_version()}")


def table(results: dict[int, dict], stems: list[str]) -> list[str]:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    head = ["length", "stemsplit s/s", "reference s/s", "ratio", "stemsplit CPU s/s", "reference CPU s/s",
            "CPU ratio", "stemsplit peak RSS MB",
            "reference peak RSS MB", "stemsplit songs/h", "reference songs/h",
            *(f"SDR {s} dB" for s in stems)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seconds, row in results.items():
        rate = {t: row[t].wall_s / seconds if t in row else None for t in TOOLS}
        ratio = rate["stemsplit"] / rate["reference"] if None not in rate.values() else None
        cpu = {t: row[t].cpu_s / seconds if t in row else None for t in TOOLS}
        cpu_ratio = cpu["stemsplit"] / cpu["reference"] if None not in cpu.values() else None
        songs = {t: None if r is None else 3600 / (r * SONG_SECONDS) for t, r in rate.items()}
        rss = {t: row[t].peak_rss_mb if t in row else None for t in TOOLS}
        cells = [f"{seconds} s", cell(rate["stemsplit"], ".3f"), cell(rate["reference"], ".3f"),
                 cell(ratio, ".2f"), cell(cpu["stemsplit"], ".3f"), cell(cpu["reference"], ".3f"),
                 cell(cpu_ratio, ".2f"), cell(rss["stemsplit"], ".0f"), cell(rss["reference"], ".0f"),
                 cell(songs["stemsplit"], ".0f"), cell(songs["reference"], ".0f"),
                 *(cell(row.get("sdr", {}).get(s), ".1f") for s in stems)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def measure(commands: dict[str, list[str]], repeat: int, log: Path) -> dict[str, Run]:
    """Medians of each tool's runs, the tools alternated so that a busy spell of a shared machine
    falls on both alike."""
    runs: dict[str, list[Run]] = {tool: [] for tool in commands}
    for i in range(repeat):
        for tool, cmd in commands.items():
            runs[tool].append(timed(cmd, log))
            print(f"  {tool} run {i + 1}/{repeat}: {runs[tool][-1].wall_s:.1f} s, {runs[tool][-1].cpu_s:.1f} s CPU, "
                  f"{runs[tool][-1].peak_rss_mb:.0f} MB", file=sys.stderr)
    return {tool: Run(statistics.median(r.wall_s for r in tool_runs), max(r.peak_rss_mb for r in tool_runs),
                      statistics.median(r.cpu_s for r in tool_runs))
            for tool, tool_runs in runs.items()}


def folder_table(runs: dict[str, Run], songs: int) -> list[str]:
    per_hour = {tool: 3600 * songs / run.wall_s for tool, run in runs.items()}
    ratio = f"{runs['stemsplit'].wall_s / runs['reference'].wall_s:.2f}" if len(runs) == 2 else "-"
    return [f"Folder of {songs} different 3-minute songs, one process per tool, on {machine()}:", "",
            "| tool | wall s | songs/h | peak RSS MB |", "| --- | --- | --- | --- |",
            *(f"| {tool} | {run.wall_s:.0f} | {per_hour[tool]:.1f} | {run.peak_rss_mb:.0f} |"
              for tool, run in runs.items()),
            "", f"Wall-time ratio stemsplit/reference: {ratio}."]


def main() -> None:
    args = parse_args()
    tools = [args.only] if args.only else list(TOOLS)
    extra = shlex.split(args.stemsplit_args)
    header = [f"`{shlex.join(['python', *sys.argv])}`", ""]
    print("\n".join(header), flush=True)
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="stemsplit-bench-") as name:
        tmp = Path(name)
        repo, weights = weights_folder(args, tmp)
        outs = {tool: tmp / f"out-{tool}" for tool in tools}
        warm_up = tmp / "warm-up.wav"
        synthesise(warm_up, 10)
        for tool in tools:  # fills the page cache with the tool's code and weights
            cmd = command(tool, repo, [warm_up], outs[tool], extra)
            print(f"warm-up: {shlex.join(cmd)}", file=sys.stderr)
            timed(cmd, tmp / "log.txt")
        for seconds in args.lengths:
            track = tmp / f"mix{seconds}s.wav"
            synthesise(track, seconds)
            print(f"{seconds} s input:", file=sys.stderr)
            commands = {tool: command(tool, repo, [track], outs[tool], extra) for tool in tools}
            results[seconds] = measure(commands, args.repeat, tmp / "log.txt")
            if len(tools) == 2:
                results[seconds]["sdr"] = compare(outs, track)
            track.unlink()  # 60 min of stems is ~5 GB per tool
            for out in outs.values():
                shutil.rmtree(out / MODEL / track.stem)
        folder_runs = {}
        if args.folder:
            folder = tmp / "folder"
            folder.mkdir()
            tracks = [folder / f"song{i:02d}.wav" for i in range(args.folder)]
            for i, track in enumerate(tracks):
                synthesise(track, SONG_SECONDS, offset=i * SONG_SECONDS)
            print(f"folder of {args.folder} songs:", file=sys.stderr)
            folder_runs = measure({tool: command(tool, repo, tracks, outs[tool], extra) for tool in tools}, 1,
                                  tmp / "log.txt")
    stems = sorted({s for row in results.values() for s in row.get("sdr", {})})
    report = [*header, f"Weights: {weights}. Settings: shifts 0, overlap 0.25, default segment, "
              f"CPU, float32 wav, no clipping; stemsplit extra args: `{args.stemsplit_args}`. "
              f"Median of {args.repeat} warm runs, the tools alternated.", "", f"Machine: {machine()}", "",
              *table(results, stems), "",
              "s/s: wall seconds per second of audio (start-up included); ratio: stemsplit/reference; "
              "peak RSS: largest process of the run; songs/h: 3-minute songs per hour at that "
              "row's rate; SDR: stemsplit's stem against the reference's.", "",
              *(folder_table(folder_runs, args.folder) + [""] if folder_runs else []),
              f"Start-up on {machine()}:", "", "| start-up | median s |", "| --- | --- |",
              *(f"| `{c}` | {t:.3f} |" for c, t in startup(max(args.repeat, 5)).items())]
    text = "\n".join(report[len(header):])
    print(text)
    if args.markdown:
        args.markdown.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
