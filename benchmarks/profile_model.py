"""Time one forward pass of the htdemucs network: stemsplit's against the reference's.

Both networks get the same seeded random weights and the same input, a batch of full
segments of tones and noise. Runs alternate between the two networks so that load from
other processes hits both alike; the report gives medians (and minima) per forward and per
second of audio at the engine's default overlap, and how far the outputs differ.

    python benchmarks/profile_model.py                          # batch 1, float32, 5 runs each
    python benchmarks/profile_model.py --batch 2 --repeat 3
    python benchmarks/profile_model.py --precision bfloat16     # ours under autocast, vs ours in float32
    python benchmarks/profile_model.py --profile                # per-part and per-op times of ours
    python benchmarks/profile_model.py --threads 1 --keep-memory --no-reference
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
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference_configs import PRETRAINED_KWARGS  # noqa: E402

from stemsplit import precision  # noqa: E402
from stemsplit.networks.htdemucs import HTDemucs, HTDemucsConfig  # noqa: E402

OVERLAP = 0.25  # the engine's default: each forward advances the song by 3/4 of a segment


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="htdemucs", choices=sorted(PRETRAINED_KWARGS))
    parser.add_argument("--batch", type=int, default=1, help="segments per forward")
    parser.add_argument("--repeat", type=int, default=5, help="timed forwards per network")
    parser.add_argument("--precision", default="float32", choices=precision.PRECISIONS,
                        help="ours runs in this precision, and in float32 too when it is another "
                        "(the reference always runs float32)")
    parser.add_argument("--layer-scales", default="random", choices=("random", "init"),
                        help="random: drawn at N(0, 0.3) as in the tests, so that every residual branch counts; "
                        "init: the reference's initial 1e-3/1e-4 plus the same noise as every weight (0.05)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--keep-memory", action="store_true",
                        help="keep freed memory in the process (glibc mallopt) instead of returning and "
                        "page-faulting it back on every large tensor")
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--profile", action="store_true", help="per-part and per-op times of ours")
    return parser.parse_args()


def networks(name: str, layer_scales: str = "random", seed: int = 0) -> tuple[torch.nn.Module, HTDemucs]:
    from demucs.htdemucs import HTDemucs as ReferenceHTDemucs

    kwargs = PRETRAINED_KWARGS[name]
    torch.manual_seed(seed)
    reference = ReferenceHTDemucs(**kwargs).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
            if name.endswith(".scale") and layer_scales == "random":
                parameter.normal_(0, 0.3)
    ours = HTDemucs(HTDemucsConfig.from_reference(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def keep_freed_memory() -> None:
    """Make glibc keep large freed blocks: by default every block over 32 MiB is unmapped on free
    and page-faulted back in on its next use, for each of the network's large activations."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def song_like(batch: int, length: int, rate: int, seed: int = 0) -> torch.Tensor:
    """Stereo chords, bass and noise, normalised as the engine feeds the network."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / rate
    notes = torch.tensor([220.0, 277.2, 329.6, 110.0])
    tones = torch.sin(2 * math.pi * notes[:, None] * t).sum(0)
    mix = tones + 0.3 * torch.randn(batch, 2, length, generator=generator)
    return (mix - mix.mean()) / mix.std()


def timed(run) -> tuple[float, float]:
    """Wall and CPU seconds of `run()`. On a loaded machine CPU time is the steadier measure,
    most of all with one thread; with more, it counts OpenMP threads waiting for each other."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


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


def forward_flops(model: HTDemucs, mix: torch.Tensor) -> int:
    """Floating-point operations of one forward: convolutions, linear layers and attention."""
    # Counted under bfloat16 autocast, where attention on CPU runs as matmuls the counter sees
    # (it does not know the fused float32 CPU kernel). The count is the same in any dtype.
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cpu", dtype=torch.bfloat16):
        model(mix)
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of a large matrix product, the best this machine does in `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b)[0] for _ in range(repeat))
    return 2 * size**3 / best


def profile(model: HTDemucs, mix: torch.Tensor, run, dtype: torch.dtype) -> None:
    times = part_times(model, run)
    for name, seconds in times.items():
        print(f"  {name:36s} {seconds * 1000:8.1f} ms")
    flops, peak = forward_flops(model, mix), matmul_peak(dtype)
    print(f"{flops / 1e9:.0f} GFLOP per forward: {flops / times['total'] / 1e9:.0f} GFLOP/s, "
          f"{flops / times['total'] / peak:.0%} of a {dtype} matmul's {peak / 1e9:.0f} GFLOP/s")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_memory:
        keep_freed_memory()
    reference, ours = networks(args.model, args.layer_scales)
    mix = song_like(args.batch, ours.training_length, ours.samplerate)

    def run_ours() -> torch.Tensor:
        with precision.autocast(torch.device("cpu"), args.precision):
            return ours(mix).float()

    audio_seconds = args.batch * float(ours.segment) * (1 - OVERLAP)
    print(f"CPU: {precision.describe_cpu()}")
    print(f"{args.model}: batch {args.batch} x {float(ours.segment):g} s, {args.precision}, "
          f"{torch.get_num_threads()} threads, {audio_seconds:g} s of song per forward")
    with torch.inference_mode():
        expected = reference(mix)
        actual = run_ours()
        exact = ours(mix)
        print(f"relative error vs reference: {((actual - expected).norm() / expected.norm()).item():.2e}, "
              f"SDR vs float32 ours: {sdr(actual, exact):.1f} dB")
        runs = {"ours": run_ours}
        if args.precision != "float32":
            runs["ours float32"] = lambda: ours(mix)
        if not args.no_reference:
            runs["reference"] = lambda: reference(mix)
        times = defaultdict(list)
        for _ in range(args.repeat):
            for name, run in runs.items():
                times[name].append(timed(run))
        for name, values in times.items():
            wall, cpu = (statistics.median(column) for column in zip(*values))
            print(f"{name:12s} wall median {wall:6.3f} s (min {min(v[0] for v in values):6.3f}), "
                  f"CPU median {cpu:6.3f} s per forward; wall {wall / audio_seconds:.3f} s, "
                  f"CPU {cpu / audio_seconds:.3f} s per second of audio")
        for other in [name for name in runs if name != "ours"]:
            for index, clock in enumerate(("wall", "CPU")):
                ratios = [a[index] / b[index] for a, b in zip(times["ours"], times[other])]
                print(f"ours / {other}, {clock}: median {statistics.median(ratios):.3f}")
        if args.profile:
            profile(ours, mix, run_ours, precision.AUTOCAST_DTYPES.get(args.precision, torch.float32))


if __name__ == "__main__":
    main()
