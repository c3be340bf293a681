"""Demucs v2 and Conv-TasNet: stemsplit's networks against the demucs 2.0.3 classes audio-separator 0.47.1
vendors, same random weights of a released shape and the same input, float32 on the CPU, in one process.

    python benchmarks/v2_bench.py --network demucs --seconds 10 --repeat 3
    python benchmarks/v2_bench.py --network tasnet --seconds 8 --repeat 3

Each repeat runs the reference's forward and ours on the same input, alternated (so that a busy spell of
the machine hits both); the fastest run of each counts. The input is one chunk as the song procedure cuts
it (`valid_length` of `--seconds` for Demucs), which is where nearly all of a song's time goes. Prints
the machine, both times in seconds per second of audio, their ratio and the relative error between them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed_forward(network: torch.nn.Module, mix: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        start = time.perf_counter()
        out = network(mix)
        return time.perf_counter() - start, out


def main() -> None:
    from stemsplit.networks.demucs import centre_trim
    from test_demucs_v2 import RELEASED, released_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(RELEASED), default="demucs")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reference, ours = released_pair(*RELEASED[args.network])
    samples = int(args.seconds * 44100)
    mix = 0.3 * torch.randn(1, 2, reference.valid_length(samples), generator=torch.Generator().manual_seed(0))
    times, outputs = {"reference": [], "stemsplit": []}, {}
    for _ in range(args.repeat):
        for name, network in (("reference", reference), ("stemsplit", ours)):
            seconds, outputs[name] = timed_forward(network, mix)
            times[name].append(seconds)
    expected = outputs["reference"]
    error = ((centre_trim(outputs["stemsplit"], expected.shape[-1]) - expected).norm() / expected.norm()).item()
    theirs, mine = min(times["reference"]), min(times["stemsplit"])
    print(f"machine: {machine()}")
    print(f"{args.network}, {args.seconds:g} s chunk ({mix.shape[-1]} samples), float32, best of {args.repeat}")
    print(f"reference {theirs / args.seconds:.3f} s/s, stemsplit {mine / args.seconds:.3f} s/s, "
          f"ratio {mine / theirs:.2f}, relative error {error:.1e}")


if __name__ == "__main__":
    sys.exit(main())
