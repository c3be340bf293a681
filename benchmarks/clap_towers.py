"""CLAP's towers (AudioSep's query encoder) on this machine: seconds per text query and per audio example.

    python benchmarks/clap_towers.py --repeat 3

Random weights of the real shapes (roberta-base, HTSAT-base), float32, after one warm-up run: a text query
of 8 tokens through the text tower, one 10 s clip at 48 kHz (what any example becomes) through the audio tower.
Each query is embedded once per run, so this is a run's cost per query on top of the separation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from bench import machine
from stemsplit.networks.clap_text import ClapTextConfig, ClapTextTower
from stemsplit.networks.htsat import ClapAudioTower, HtsatConfig

TEXT_TOKENS = 8


def seconds(run: Callable[[], object], repeat: int) -> list[float]:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    torch.manual_seed(0)
    text, audio = ClapTextTower(ClapTextConfig()).eval(), ClapAudioTower(HtsatConfig()).eval()
    tokens = torch.randint(3, ClapTextConfig().roberta.vocab_size, (1, TEXT_TOKENS))
    clip = torch.randn(1, HtsatConfig().clip_samples) * 0.1
    print(machine())
    with torch.no_grad():
        for name, run in ((f"text tower, {TEXT_TOKENS} tokens", lambda: text(tokens)),
                          ("audio tower, one 10 s clip", lambda: audio(clip))):
            times = seconds(run, repeat)
            print(f"{name}: median {statistics.median(times):.3f} s, best {min(times):.3f} s "
                  f"({repeat} runs, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
