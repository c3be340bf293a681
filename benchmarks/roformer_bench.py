"""RoFormers: stemsplit against audio-separator's own network and `demix`, same weights and input, one run.

    python benchmarks/roformer_bench.py --seconds 180                       # Kim's Mel-Band RoFormer config
    python benchmarks/roformer_bench.py --config model_bs_roformer_ep_317_sdr_12.9755.yaml
    python benchmarks/roformer_bench.py --stemsplit-args "--precision bfloat16"

Random weights of a real configuration (stemsplit/configs/) are saved as a checkpoint; each tool then
runs in its own process on the same synthesised song: stemsplit through `--checkpoint/--config`, the
oracle as audio-separator's MDXC separator runs a RoFormer (its `demix`, without its peak
normalisation). Prints wall time, peak RSS and CPU time of each, their ratio, and the SDR of our
target stem against the oracle's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench import machine, stemsplit_exe, synthesise, timed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def save_random_checkpoint(config_path: Path, path: Path) -> None:
    from stemsplit.families.roformer import read_config
    from stemsplit.networks.roformer import roformer

    torch.manual_seed(0)
    network = roformer(read_config(config_path).network)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    torch.save(network.state_dict(), path)


def run_oracle(checkpoint: Path, config_path: Path, song: Path, out: Path) -> None:
    """The oracle's side, in its own process: its network and its demix."""
    from roformer_oracle import oracle_demix, oracle_network
    from stemsplit.families.roformer import read_config

    config = read_config(config_path)
    network = oracle_network(config.network)
    network.load_state_dict(torch.load(checkpoint, map_location="cpu"), strict=True)
    mix = torch.from_numpy(sf.read(song, dtype="float32", always_2d=True)[0].T.copy())
    with torch.no_grad():
        stems = oracle_demix(network, mix, config)
    sf.write(out, stems[config.sources[0]].T, 44100, subtype="FLOAT")


def sdr(ours: np.ndarray, reference: np.ndarray) -> float:
    error = np.square(ours.astype(np.float64) - reference).sum()
    return float("inf") if error == 0 else float(10 * np.log10(np.square(reference.astype(np.float64)).sum() / error))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--config", default="vocals_mel_band_roformer_kj.yaml", help="a file in stemsplit/configs/")
    parser.add_argument("--stemsplit-args", default="", help="more options for stemsplit")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternated; the fastest counts")
    parser.add_argument("--oracle", nargs=4, metavar=("CKPT", "CONFIG", "SONG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oracle:
        return run_oracle(*map(Path, args.oracle))
    from stemsplit.families.roformer import read_config

    config_path = ROOT / "stemsplit" / "configs" / args.config
    target = read_config(config_path).sources[0]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        checkpoint, song = tmp / "bench.ckpt", tmp / "song.wav"
        save_random_checkpoint(config_path, checkpoint)
        synthesise(song, args.seconds)
        commands = {
            "stemsplit": [stemsplit_exe(), "--checkpoint", str(checkpoint), "--config", str(config_path), "-o",
                          str(tmp / "out"), "-d", "cpu", "--bit-depth", "32", "--clip-mode", "none", "-q",
                          *shlex.split(args.stemsplit_args), str(song)],
            "oracle": [sys.executable, __file__, "--oracle", str(checkpoint), str(config_path), str(song),
                       str(tmp / "oracle.wav")]}
        runs = {name: [] for name in commands}
        for _ in range(args.repeat):  # alternated, so that a busy spell of the machine hits both
            for name, command in commands.items():
                runs[name].append(timed(command, tmp / f"{name}.log"))
        ours, oracle = (min(runs[name], key=lambda run: run.wall_s) for name in commands)
        score = sdr(sf.read(tmp / "out" / "bench" / "song" / f"{target}.wav", dtype="float32")[0],
                    sf.read(tmp / "oracle.wav", dtype="float64")[0])
    print(f"machine: {machine()}")
    print(f"{args.config}, {args.seconds} s input, stemsplit {args.stemsplit_args or 'float32'}")
    print("| tool | wall s | s per s of audio | peak RSS MB | CPU s |\n| --- | --- | --- | --- | --- |")
    for name, run in (("stemsplit", ours), ("audio-separator", oracle)):
        print(f"| {name} | {run.wall_s:.1f} | {run.wall_s / args.seconds:.3f} | {run.peak_rss_mb:.0f} "
              f"| {run.cpu_s:.1f} |")
    print(f"ratio stemsplit/oracle: {ours.wall_s / oracle.wall_s:.2f} wall, {ours.cpu_s / oracle.cpu_s:.2f} CPU; "
          f"{target} SDR vs oracle {score:.1f} dB")


if __name__ == "__main__":
    sys.exit(main())
