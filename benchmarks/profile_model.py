"""Time one forward pass of the htdemucs network: stemsplit's against the reference's.

Both networks get the same seeded random weights and the same input, a batch of full
segments of tones and noise. Runs alternate between the two networks so that load from
other processes hits both alike; the report gives medians (and minima) per forward and per
second of audio at the engine's default overlap, and how far the outputs differ.

    python benchmarks/profile_model.py                          # batch 1, float32, 5 runs each
    python benchmarks/profile_model.py --batch 2 --repeat 3
    python benchmarks/profile_model.py --precision bfloat16     # ours under autocast, vs float32
    python benchmarks/profile_model.py --profile                # per-part and per-op times of ours
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference_configs import PRETRAINED_KWARGS  # noqa: E402

from stemsplit.model import HTDemucs  # noqa: E402

OVERLAP = 0.25  # the engine's default: each forward advances the song by 3/4 of a segment
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="htdemucs", choices=sorted(PRETRAINED_KWARGS))
    parser.add_argument("--batch", type=int, default=1, help="segments per forward")
    parser.add_argument("--repeat", type=int, default=5, help="timed forwards per network")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="autocast dtype for ours (the reference always runs float32)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--profile", action="store_true", help="per-part and per-op times of ours")
    return parser.parse_args()


def networks(name: str, seed: int = 0) -> tuple[torch.nn.Module, HTDemucs]:
    from demucs.htdemucs import HTDemucs as ReferenceHTDemucs

    kwargs = PRETRAINED_KWARGS[name]
    torch.manual_seed(seed)
    reference = ReferenceHTDemucs(**kwargs).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            # Moved off the initialisation, with layer scales large enough that every branch counts.
            parameter.add_(0.05 * torch.randn_like(parameter))
            if name.endswith(".scale"):
                parameter.normal_(0, 0.3)
    ours = HTDemucs(**kwargs).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def song_like(batch: int, length: int, rate: int, seed: int = 0) -> torch.Tensor:
    """Stereo chords, bass and noise, normalised as the engine feeds the network."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / rate
    notes = torch.tensor([220.0, 277.2, 329.6, 110.0])
    tones = torch.sin(2 * math.pi * notes[:, None] * t).sum(0)
    mix = tones + 0.3 * torch.randn(batch, 2, length, generator=generator)
    return (mix - mix.mean()) / mix.std()


def timed(run) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def sdr(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return (10 * torch.log10(target.pow(2).sum() / (estimate - target).pow(2).sum())).item()


def part_times(model: HTDemucs, run) -> dict[str, float]:
    """Wall time spent in each top-level part of `model` during `run()`."""
    parts = {f"{kind}[{index}]": layer for kind in ("encoder", "tencoder", "decoder", "tdecoder")
             for index, layer in enumerate(getattr(model, kind))}
    parts["transformer"] = model.crosstransformer
    times: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name, module in parts.items():
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda *_, n=name: times.__setitem__(n, times[n] + time.perf_counter() - starts[n])))
    total, _ = timed(run)
    for handle in handles:
        handle.remove()
    times["rest (stft, istft, norms, bottom)"] = total - sum(times.values())
    times["total"] = total
    return times


def profile(model: HTDemucs, run) -> None:
    for name, seconds in part_times(model, run).items():
        print(f"  {name:36s} {seconds * 1000:8.1f} ms")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference, ours = networks(args.model)
    mix = song_like(args.batch, ours.training_length, ours.samplerate)
    dtype = PRECISIONS[args.precision]

    def run_ours() -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return ours(mix).float()

    audio_seconds = args.batch * float(ours.segment) * (1 - OVERLAP)
    print(f"{args.model}: batch {args.batch} x {float(ours.segment):g} s, {args.precision}, "
          f"{torch.get_num_threads()} threads, {audio_seconds:g} s of song per forward")
    with torch.inference_mode():
        expected = reference(mix)
        actual = run_ours()
        exact = ours(mix)
        print(f"relative error vs reference: {((actual - expected).norm() / expected.norm()).item():.2e}, "
              f"SDR vs float32 ours: {sdr(actual, exact):.1f} dB")
        times = defaultdict(list)
        for _ in range(args.repeat):
            times["ours"].append(timed(run_ours)[0])
            if not args.no_reference:
                times["reference"].append(timed(lambda: reference(mix))[0])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:10s} median {median:6.3f} s  min {min(values):6.3f} s per forward, "
                  f"{median / audio_seconds:.3f} s per second of audio")
        if not args.no_reference:
            ratios = [a / b for a, b in zip(times["ours"], times["reference"])]
            print(f"ours / reference: median {statistics.median(ratios):.3f}, "
                  f"of minima {min(times['ours']) / min(times['reference']):.3f}")
        if args.profile:
            profile(ours, run_ours)


if __name__ == "__main__":
    main()
