"""UVR's MDX23C and MDX-Net: stemsplit against audio-separator's network and `demix`, same weights and input.

    python benchmarks/mdx_bench.py --family mdx23c --seconds 30              # InstVoc HQ's real config
    python benchmarks/mdx_bench.py --family mdx23c --channels 32 --num-overlap 2   # a lighter one
    python benchmarks/mdx_bench.py --family mdx_net --seconds 180            # an ONNX model of Inst_HQ_3's shape

MDX23C: random weights of MDX23C-8KFFT-InstVoc_HQ's configuration (tests/mdxc_oracle.py; `--channels` and
`--num-overlap` shrink it where the real one is too slow for the machine) are saved as a checkpoint and YAML.
MDX-Net: a small random ONNX model of Inst_HQ_3's input shape (tests/mdxnet_oracle.py), so the time is mostly
the procedure's (both tools run the same file with onnxruntime). Each tool runs in its own process on the same
synthesised song, float32 on the CPU, alternated: stemsplit through `--checkpoint/--config`, the oracle as
audio-separator's separator runs the model (its `demix`, without its peak normalisation). Prints wall time,
peak RSS and CPU time of each, their ratio, and the SDR of our first stem against the oracle's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import soundfile as sf
import torch
import yaml

from against_oracle import fastest_alternated, print_table, stemsplit_command
from bench import machine, sdr, synthesise

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def mdx23c_files(tmp: Path, channels: int, num_overlap: int | None) -> tuple[Path, Path, str]:
    from mdxc_oracle import INSTVOC_HQ, oracle_network

    config = {**INSTVOC_HQ, "model": {**INSTVOC_HQ["model"], "num_channels": channels, "growth": channels},
              "inference": {**INSTVOC_HQ["inference"], "num_overlap": num_overlap or 8}}
    config_path, checkpoint = tmp / "bench.yaml", tmp / "bench.ckpt"
    config_path.write_text(yaml.safe_dump(config))
    torch.save(oracle_network(config, scale=0.02).state_dict(), checkpoint)
    return checkpoint, config_path, "vocals"


def mdx_net_files(tmp: Path) -> tuple[Path, Path, str]:
    from mdxnet_oracle import INST_HQ_3, onnx_model

    params = tmp / "bench.json"
    params.write_text(json.dumps(INST_HQ_3))
    return onnx_model(tmp, INST_HQ_3["dim_f"]), params, INST_HQ_3["primary"]


def run_oracle(family: str, model: Path, config_path: Path, song: Path, out: Path) -> None:
    """The oracle's side, in its own process: its network (or ONNX session) and its demix."""
    mix = torch.from_numpy(sf.read(song, dtype="float32", always_2d=True)[0].T.copy())
    if family == "mdx23c":
        from mdxc_oracle import oracle_demix, oracle_network

        config = yaml.safe_load(config_path.read_text())
        network = oracle_network(config)
        network.load_state_dict(torch.load(model, map_location="cpu"), strict=True)
        stem = oracle_demix(network, mix, config)["Vocals"]
    else:
        from mdxnet_oracle import oracle_demix

        params = json.loads(config_path.read_text())
        stem = oracle_demix(model, mix, params)[params["primary"]]
    sf.write(out, stem.T, 44100, subtype="FLOAT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("mdx23c", "mdx_net"), default="mdx23c")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--channels", type=int, default=128, help="MDX23C num_channels and growth (real: 128)")
    parser.add_argument("--num-overlap", type=int, help="MDX23C inference.num_overlap (real: 8)")
    parser.add_argument("--stemsplit-args", default="", help="more options for stemsplit")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternated; the fastest counts")
    parser.add_argument("--oracle", nargs=5, metavar=("FAMILY", "MODEL", "CONFIG", "SONG", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oracle:
        return run_oracle(args.oracle[0], *map(Path, args.oracle[1:]))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model, config_path, stem = (mdx23c_files(tmp, args.channels, args.num_overlap) if args.family == "mdx23c"
                                    else mdx_net_files(tmp))
        song = tmp / "song.wav"
        synthesise(song, args.seconds)
        commands = {
            "stemsplit": stemsplit_command(model, config_path, tmp / "out", args.stemsplit_args, song),
            "oracle": [sys.executable, __file__, "--oracle", args.family, str(model), str(config_path), str(song),
                       str(tmp / "oracle.wav")]}
        ours, oracle = fastest_alternated(commands, args.repeat, tmp)
        score = sdr(tmp / "out" / model.stem / "song" / f"{stem}.wav", tmp / "oracle.wav")
    print(f"machine: {machine()}")
    shape = f"channels {args.channels}, num_overlap {args.num_overlap or 8}" if args.family == "mdx23c" else "Inst_HQ_3"
    print(f"{args.family} ({shape}), {args.seconds} s input, stemsplit {args.stemsplit_args or 'float32'}")
    print_table(ours, oracle, args.seconds, stem, score)


if __name__ == "__main__":
    sys.exit(main())
