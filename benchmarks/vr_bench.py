"""UVR's VR architecture: stemsplit against audio-separator's VRSeparator, same weights and input.

    python benchmarks/vr_bench.py --seconds 30                       # UVR-DeEcho-DeReverb's shape (v5.1, nout 48)
    python benchmarks/vr_bench.py --seconds 30 --size 123821         # 5_HP-Karaoke-UVR's shape (v5, 32 channels)

Random weights of the shape (tests/vr_oracle.py) are saved as a .pth with 4band_v3.json (both models' parameters).
Each tool runs in its own process on the same synthesised song, float32 on the CPU, alternated: stemsplit through
`--checkpoint/--config`, the oracle as VRSeparator's `loading_mix`, `inference_vr` and `spec_to_wav` (without its
writing and peak normalisation). Prints wall time, peak RSS and CPU time of each, their ratio, and the SDR of our
primary stem against the oracle's (over the oracle's hop * (frames - 1) samples).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import soundfile as sf
import torch

from against_oracle import fastest_alternated, print_table, stemsplit_command
from bench import machine, sdr, synthesise

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PARAMS = "4band_v3"


def vr_files(tmp: Path, size: int, nout: int | None) -> tuple[Path, Path]:
    from vr_oracle import oracle_network, params_path

    data = json.loads(params_path(PARAMS).read_text())
    config, checkpoint = tmp / f"{PARAMS}.json", tmp / "bench.pth"
    config.write_text(json.dumps(data))
    torch.save(oracle_network(size, data["bins"], nout=nout).state_dict(), checkpoint)
    return checkpoint, config


def run_oracle(size: int, nout: int, model: Path, song: Path, out: Path) -> None:
    """The oracle's side, in its own process: its network and VRSeparator's steps."""
    from vr_oracle import oracle_network, oracle_separate

    network = oracle_network(size, json.loads((model.parent / f"{PARAMS}.json").read_text())["bins"],
                             nout=nout or None)
    network.load_state_dict(torch.load(model, map_location="cpu"), strict=True)
    primary, _ = oracle_separate(network, song, PARAMS, lstm=bool(nout))
    sf.write(out, primary.T, 44100, subtype="FLOAT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--size", type=int, default=0, help="a v5 net of UVR's size name (e.g. 123821)")
    parser.add_argument("--nout", type=int, default=48, help="a v5.1 net's nout (ignored with --size)")
    parser.add_argument("--stemsplit-args", default="", help="more options for stemsplit")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternated; the fastest counts")
    parser.add_argument("--oracle", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oracle:
        return run_oracle(int(args.oracle[0]), int(args.oracle[1]), *map(Path, args.oracle[2:]))
    nout = 0 if args.size else args.nout
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model, config = vr_files(tmp, args.size, nout or None)
        song = tmp / "song.wav"
        synthesise(song, args.seconds)
        commands = {
            "stemsplit": stemsplit_command(model, config, tmp / "out", args.stemsplit_args, song),
            "oracle": [sys.executable, __file__, "--oracle", str(args.size), str(nout), str(model), str(song),
                       str(tmp / "oracle.wav")]}
        ours, oracle = fastest_alternated(commands, args.repeat, tmp)
        reference = sf.read(tmp / "oracle.wav", dtype="float32")[0]
        stem = sf.read(tmp / "out" / model.stem / "song" / "vocals.wav", dtype="float32")[0][: len(reference)]
        sf.write(tmp / "ours.wav", stem, 44100, subtype="FLOAT")
        score = sdr(tmp / "ours.wav", tmp / "oracle.wav")
    print(f"machine: {machine()}")
    shape = f"v5 size {args.size}" if args.size else f"v5.1 nout {nout}"
    print(f"vr ({shape}, {PARAMS}), {args.seconds} s input, stemsplit {args.stemsplit_args or 'float32'}")
    print_table(ours, oracle, args.seconds, "vocals", score)


if __name__ == "__main__":
    sys.exit(main())
