"""Deezer's TensorFlow checkpoints of Spleeter: `--checkpoint DIR` and the spleeter_2stems catalogue entry.

The checkpoints are written here without TensorFlow (tf_bundle_writer.py) under the names spleeter's
graph gives its variables, from a network with random weights; tests/test_spleeter_oracle.py loads a
checkpoint spleeter's own graph wrote. Small U-Nets come with a params.json beside the checkpoint."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from helpers import relative_error, separate_tensor
from hub_server import FileServer
from stemsplit.bag import Bag, Member
from stemsplit.catalogue import read_catalogue
from stemsplit.families import family
from stemsplit.family import LocalFiles
from stemsplit.networks.spleeter import PRESETS, Spleeter, SpleeterConfig
from test_spleeter import randomised
from tf_bundle_writer import write_bundle

SMALL = {"instrument_list": ["vocals", "accompaniment"], "frame_length": 256, "frame_step": 64, "T": 64, "F": 64,
         "model": {"type": "unet.unet", "params": {"conv_n_filters": [2, 4, 4, 8, 8, 8]}}}
PARTS = {"weight": "kernel", "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_variance"}


def layer_name(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}_{index}"


def spleeter_names(network: Spleeter) -> dict[str, str]:
    """Our tensor -> spleeter's variable: Keras's per-kind counters, instrument after instrument."""
    names = {}
    for unet in range(len(network.unets)):
        layers = {f"down.{i}.conv": ("conv2d", 7 * unet + i) for i in range(6)}
        layers.update({f"down.{i}.norm": ("batch_normalization", 12 * unet + i) for i in range(6)})
        layers.update({f"up.{i}.conv": ("conv2d_transpose", 6 * unet + i) for i in range(6)})
        layers.update({f"up.{i}.norm": ("batch_normalization", 12 * unet + 6 + i) for i in range(6)})
        layers["logits"] = ("conv2d", 7 * unet + 6)
        for ours, (kind, index) in layers.items():
            for part, theirs in PARTS.items():
                norm = kind == "batch_normalization"
                theirs = {"weight": "gamma", "bias": "beta"}.get(part, theirs) if norm else theirs
                names[f"unets.{unet}.{ours}.{part}"] = f"{layer_name(kind, index)}/{theirs}"
    return names


def write_checkpoint(folder: Path, network: Spleeter) -> None:
    """spleeter's layout: model.index, model.data-00000-of-00001, model.meta, checkpoint; with TensorFlow's
    kernel layouts, a global step and an optimiser slot, which a reader must leave out."""
    folder.mkdir(parents=True, exist_ok=True)
    state = network.state_dict()
    tensors = {theirs: state[ours].numpy() for ours, theirs in spleeter_names(network).items() if ours in state}
    for name in tensors:
        if name.endswith("kernel"):
            tensors[name] = tensors[name].transpose(2, 3, 1, 0)
    tensors["global_step"] = np.int64(1000)
    tensors["conv2d/kernel/Adam"] = np.zeros_like(tensors["conv2d/kernel"])
    write_bundle(folder / "model", tensors)
    (folder / "model.meta").write_bytes(b"a graph that is not read")
    (folder / "checkpoint").write_text('model_checkpoint_path: "model"\n')


def mix(seconds: float = 0.4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).standard_normal((2, int(seconds * 44100))).astype(np.float32))


def stems_of(network: Spleeter, song: torch.Tensor) -> torch.Tensor:
    bag = Bag("spleeter", network.sources, [Member(network, dict.fromkeys(network.sources, 1.0))])
    with torch.inference_mode():
        return separate_tensor(bag, song)


def test_a_full_size_checkpoint_loads_as_spleeters_preset_with_every_tensor(tmp_path):
    network = randomised(PRESETS[2], 2)
    write_checkpoint(tmp_path / "2stems", network)
    loaded = family("spleeter").local_bag(LocalFiles(tmp_path / "2stems")).members[0].network
    assert loaded.config == PRESETS[2]
    expected = network.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())


def run(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from stemsplit.cli import main

    result = CliRunner().invoke(main, [str(arg) for arg in args], env={"COLUMNS": "200"})
    return result.exit_code, result.stderr


def read_stem(path: Path) -> torch.Tensor:
    return torch.from_numpy(sf.read(path, dtype="float32", always_2d=True)[0].T.copy())


def test_the_command_runs_a_checkpoint_folder_with_its_params_json(tmp_path):
    network = randomised(SpleeterConfig.from_params(SMALL), 3)
    folder = tmp_path / "small"
    write_checkpoint(folder, network)
    (folder / "params.json").write_text(json.dumps(SMALL))
    song = mix()
    sf.write(tmp_path / "song.wav", song.T.numpy(), 44100, subtype="FLOAT")
    code, stderr = run(["--checkpoint", folder, tmp_path / "song.wav", "-o", tmp_path / "out", "--bit-depth", "32",
                        "--clip-mode", "none"])
    assert code == 0, stderr
    expected = stems_of(network, song)
    for index, stem in enumerate(network.sources):
        assert relative_error(read_stem(tmp_path / "out" / "small" / "song" / f"{stem}.wav"), expected[index]) < 1e-5


def test_a_truncated_checkpoint_is_one_error_line_naming_its_file(tmp_path):
    folder = tmp_path / "cut"
    write_checkpoint(folder, randomised(SpleeterConfig.from_params(SMALL), 4))
    (folder / "params.json").write_text(json.dumps(SMALL))
    data = folder / "model.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    sf.write(tmp_path / "song.wav", np.zeros((4410, 2), dtype=np.float32), 44100)
    code, stderr = run(["--checkpoint", folder, tmp_path / "song.wav", "-o", tmp_path / "out"])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "model.index" in lines[0] and "past the end of its shard" in lines[0]


def archive_of(folder: Path) -> bytes:
    """A tar.gz laid out as Deezer's: the checkpoint's files at its top."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def catalogue_with(path: Path, url: str, content: bytes) -> Path:
    """The real spleeter_2stems entry, its file served from `url`: the same name, family, stems and licence."""
    return served_entry(path, "spleeter_2stems", url, hashlib.sha256(content).hexdigest(), len(content))


def served_entry(path: Path, name: str, url: str, sha256: str, size: int | None = None) -> Path:
    """A catalogue at `path` of the real entry `name`, its one file served from `url` and pinned by `sha256`
    (and `size`, where given), as models.toml pins it."""
    info = read_catalogue()[name]
    [file] = info.files
    sized = "" if size is None else f"size = {size}\n"
    path.write_text(f"""default = "{info.name}"
[{info.name}]
family = "{info.family}"
description = {json.dumps(info.description)}
licence = {json.dumps(info.licence)}
stems = {json.dumps(list(info.stems))}
[[{info.name}.files]]
name = "{file.name}"
urls = ["{url}"]
sha256 = "{sha256}"
{sized}""")
    return path


def test_the_spleeter_2stems_entry_downloads_unpacks_and_separates(tmp_path, monkeypatch):
    network = randomised(SpleeterConfig.from_params(SMALL), 5)
    folder = tmp_path / "2stems"
    write_checkpoint(folder, network)
    (folder / "params.json").write_text(json.dumps(SMALL))
    content = archive_of(folder)
    song = mix()
    sf.write(tmp_path / "song.wav", song.T.numpy(), 44100, subtype="FLOAT")
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FileServer() as server:
        server.files["/v1.4.0/2stems.tar.gz"] = content
        monkeypatch.setattr("stemsplit.catalogue.CATALOGUE",
                            catalogue_with(tmp_path / "models.toml", server.url("/v1.4.0/2stems.tar.gz"), content))
        code, stderr = run(["-n", "spleeter_2stems", tmp_path / "song.wav", "-o", tmp_path / "out", "--bit-depth", "32",
                            "--clip-mode", "none"])
    assert code == 0, stderr
    assert "downloading model 'spleeter_2stems' (licence: MIT per Spleeter's JOSS paper" in stderr
    expected = stems_of(network, song)
    for index, stem in enumerate(("vocals", "accompaniment")):
        written = read_stem(tmp_path / "out" / "spleeter_2stems" / "song" / f"{stem}.wav")
        assert relative_error(written, expected[index]) < 1e-5, stem
