"""One forward of each Demucs v3 network, stemsplit's against demucs 4.1's, on the same random weights.

The released shapes (tests/v3_configs.py): Hybrid Demucs as in hdemucs_mmi and the mdx hybrids,
the time-domain Demucs as in mdx. Runs alternate (ours, theirs, ours, ...) so that a machine's
changing load falls on both; the median of each and their ratio are printed, with the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from demucs.demucs import Demucs as ReferenceDemucs
from demucs.hdemucs import HDemucs as ReferenceHDemucs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from oracle import perturbed_network  # noqa: E402
from stemsplit.networks.demucs import Demucs, DemucsConfig  # noqa: E402
from stemsplit.networks.hdemucs import HDemucs, HDemucsConfig  # noqa: E402
from v3_configs import DEMUCS, HDEMUCS  # noqa: E402

NETWORKS = {
    "hdemucs (hdemucs_mmi, mdx hybrids)": (ReferenceHDemucs, HDemucs, HDemucsConfig, HDEMUCS),
    "demucs (mdx time-domain)": (ReferenceDemucs, Demucs, DemucsConfig, DEMUCS),
}


def cpu_name() -> str:
    with open("/proc/cpuinfo") as file:
        info = file.read()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    return f"{name}, {os.cpu_count()} cores, avx512_bf16 {'yes' if 'avx512_bf16' in info else 'no'}"


def pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference_class, network_class, config_class, kwargs = NETWORKS[name]
    reference = perturbed_network(reference_class, kwargs, seed=1)
    ours = network_class(config_class.from_reference(**kwargs))
    ours.load_state_dict(reference.state_dict())
    return ours.eval(), reference.eval()


def timed(network: torch.nn.Module, mix: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        network(mix)
    return time.perf_counter() - start


def measure(name: str, seconds: float, repeat: int) -> tuple[float, float]:
    ours, reference = pair(name)
    length = int(seconds * 44100)
    if isinstance(reference, ReferenceDemucs):
        length = reference.valid_length(length)
    mix = 0.3 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(0))
    timed(ours, mix), timed(reference, mix)  # warm-up
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for _ in range(repeat):
        times["ours"].append(timed(ours, mix))
        times["reference"].append(timed(reference, mix))
    return statistics.median(times["ours"]), statistics.median(times["reference"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the input of one forward")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each, alternated")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; float32; "
          f"one forward of {args.seconds:g} s, median of {args.repeat} alternated runs")
    print("| network | stemsplit | demucs 4.1 | ratio |\n| --- | --- | --- | --- |")
    for name in NETWORKS:
        ours, reference = measure(name, args.seconds, args.repeat)
        print(f"| {name} | {ours:.2f} s | {reference:.2f} s | {ours / reference:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
