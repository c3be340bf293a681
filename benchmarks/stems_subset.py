"""Only the work asked for: a 4-network bag shaped like htdemucs_ft (one specialist per stem, random
weights of the pretrained configuration), separated in full and with `--stems vocals` in one run.

    python benchmarks/stems_subset.py --seconds 30

Prints both wall times, their ratio, and the SDR of the subset's vocals against the full run's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench import machine, random_weights, stemsplit_exe, synthesise

SPECIALISTS = ["drums", "bass", "other", "vocals"]


def specialists_folder(folder: Path) -> None:
    """`ft.yaml` over four differently seeded networks, each weighted on its own stem only."""
    signatures = []
    for index in range(len(SPECIALISTS)):
        network = folder / str(index)
        network.mkdir()
        random_weights(network, seed=index)
        [path] = network.glob("*.th")
        target = folder / path.name.replace("bench0", f"bench{index}")
        path.rename(target)
        signatures.append(target.name.split("-")[0])
    weights = [[float(i == k) for k in range(4)] for i in range(4)]
    (folder / "ft.yaml").write_text(f"models: {signatures}\nweights: {weights}\n")


def timed_run(repo: Path, song: Path, out: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([stemsplit_exe(), "-n", "ft", "--repo", str(repo), "-o", str(out), "-d", "cpu", "--bit-depth", "32",
                    "--clip-mode", "none", "-q", *extra, str(song)], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        specialists_folder(tmp)
        song = tmp / "song.wav"
        synthesise(song, args.seconds)
        full = timed_run(tmp, song, tmp / "full", [])
        vocals = timed_run(tmp, song, tmp / "vocals", ["--stems", "vocals"])
        expected = sf.read(tmp / "full" / "ft" / "song" / "vocals.wav", dtype="float64")[0]
        actual = sf.read(tmp / "vocals" / "ft" / "song" / "vocals.wav", dtype="float64")[0]
        error = np.square(actual - expected).sum()
        sdr = float("inf") if error == 0 else 10 * np.log10(np.square(expected).sum() / error)
    print(f"machine: {machine()}")
    print(f"{args.seconds} s input, 4-network bag: full {full:.1f} s, --stems vocals {vocals:.1f} s, "
          f"ratio {vocals / full:.2f}; vocals SDR vs full run {sdr:.1f} dB")


if __name__ == "__main__":
    sys.exit(main())
