"""USS's cost per query: seconds of wall and CPU time per second of audio, and peak memory, on random weights of
the released configuration (ResUNet30 + Cnn14), through stemsplit's engine.

    python benchmarks/uss_bench.py --seconds 30 60          # a label query and an example query, each length

The song is generated window by window as the engine reads it (no song is held in memory), stereo at 32 kHz,
so the peak RSS over lengths shows whether the engine's memory stays flat; the stems are discarded as they come.
A label query runs Cnn14 on every segment and channel, then ResUNet30 where the label is likely; an example
query's condition is computed once, then only ResUNet30 runs. Random weights make every label likely here.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from stemsplit.bag import query_bag
from stemsplit.networks.cnn14 import Cnn14
from stemsplit.networks.query import Conditioned, FixedCondition
from stemsplit.networks.resunet import ResUNet30, ResUNetConfig
from stemsplit.networks.uss import LabelQueried
from stemsplit.precision import describe_cpu
from stemsplit.separation import Settings, decide, separate_stream

RATE = 32000


class NoiseMix:
    """A stereo song of `length` samples whose every window is generated when read (seeded by its position)."""

    def __init__(self, length: int):
        self.length = length

    def read(self, start: int, length: int) -> np.ndarray:
        rng = np.random.default_rng(start)
        audio = 0.1 * rng.standard_normal((2, length)).astype(np.float32)
        positions = np.arange(start, start + length)
        audio[:, (positions < 0) | (positions >= self.length)] = 0
        return audio


def networks(kind: str) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    separator, tagger = ResUNet30(ResUNetConfig()).eval(), Cnn14().eval()
    if kind == "label":
        tagger.fc_audioset.bias.data.fill_(5.0)  # every label likely: the separator runs on every segment
        return [LabelQueried(separator, tagger, [137], "Music")]
    return [Conditioned(separator, FixedCondition(torch.rand(527)), "example")]


def measure(kind: str, seconds: float) -> dict[str, float]:
    bag = query_bag("uss", networks(kind), "bench")
    decided = decide(Settings(), "cpu")
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in separate_stream(bag, NoiseMix(int(seconds * RATE)), decided):
        pass
    return {"wall_per_second": (time.perf_counter() - wall) / seconds,
            "cpu_per_second": (time.process_time() - cpu) / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0])
    parser.add_argument("--kinds", nargs="+", default=["label", "example"], choices=["label", "example"])
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}; torch threads: {torch.get_num_threads()}")
    for kind in args.kinds:
        for seconds in args.seconds:
            result = measure(kind, seconds)
            print(f"{kind} query, {seconds:g} s song: {result['wall_per_second']:.3f} s wall and "
                  f"{result['cpu_per_second']:.3f} s CPU per second of audio; peak RSS {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
