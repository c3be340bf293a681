"""AudioSep on this machine: seconds per text query and per audio example (CLAP's towers, once per query
and run), and the separator's seconds per second of song per query.

    python benchmarks/audiosep_bench.py --repeat 3

Random weights of the real shapes (roberta-base, HTSAT-base, ResUNet30 with a 512-d condition), float32,
after one warm-up run: a text query of 8 tokens through the text tower, one 10 s clip at 48 kHz (what any
example becomes) through the audio tower, and one 5 s window of AudioSep's use_chunk procedure through the
separator (a window keeps 3 s of the song: seconds per second = its time / 3, per channel of a stereo song).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from bench import machine
from stemsplit.networks.clap_text import ClapTextConfig, ClapTextTower
from stemsplit.families.audiosep import CONDITION_SIZE, SAMPLERATE, USE_CHUNK
from stemsplit.networks.htsat import ClapAudioTower, HtsatConfig
from stemsplit.networks.resunet import ResUNet30, ResUNetConfig

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
    separator = ResUNet30(ResUNetConfig(condition_size=CONDITION_SIZE), family="audiosep").eval()
    window = torch.randn(1, 1, USE_CHUNK.left + USE_CHUNK.centre + USE_CHUNK.right) * 0.1
    condition = torch.nn.functional.normalize(torch.randn(1, CONDITION_SIZE), dim=-1)
    print(machine())
    with torch.no_grad():
        for name, run in ((f"text tower, {TEXT_TOKENS} tokens", lambda: text(tokens)),
                          ("audio tower, one 10 s clip", lambda: audio(clip))):
            times = seconds(run, repeat)
            print(f"{name}: median {statistics.median(times):.3f} s, best {min(times):.3f} s "
                  f"({repeat} runs, {torch.get_num_threads()} threads)")
        times = seconds(lambda: separator(window, condition), repeat)
        kept = USE_CHUNK.centre / SAMPLERATE
        print(f"separator, one 5 s window: median {statistics.median(times):.3f} s, so "
              f"{statistics.median(times) / kept:.3f} s per second of mono song per query")


if __name__ == "__main__":
    main()
