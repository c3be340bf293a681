"""UVR's models in the catalogue (MDX-Net, MDX23C): each entry loads through a loopback web server, in the real
download code, from small random files of its format and parameters (never the real weights), and separates
exactly as `--checkpoint/--config` does with the same files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml

from hub_server import FileServer
from mdxc_oracle import INSTVOC_HQ, small_config
from mdxnet_oracle import onnx_model
from stemsplit import registry
from stemsplit.catalogue import CONFIGS, ModelInfo, find_model
from stemsplit.families.mdxc import build_network, read_config
from stemsplit.registry import download_bag, load_bag
from helpers import separate_tensor

RELEASE = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
MDX_NET = ["uvr_mdx_inst_hq_3", "uvr_mdx_kim_vocal_2", "uvr_mdx_karaoke_2"]
UVR_LICENCE = "none stated: UVR's model repository (TRvlvr/model_repo) has no LICENSE file and asks for credit"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "cache"


def served(info: ModelInfo, server: FileServer, content: bytes) -> ModelInfo:
    """The entry with its file's primary URL served by `server` (same path as on GitHub), pinned to `content`
    where the catalogue pins the real file, else verified at first download as the real one is."""
    [file] = info.files
    path = "/" + file.urls[0].removeprefix("https://github.com/")
    server.files[path] = content
    pins = {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)} if file.sha256 else {}
    return replace(info, files=(replace(file, urls=(server.url(path),), **pins),))


def mdx23c_files(folder: Path, config: dict) -> tuple[Path, Path]:
    """A random network of `config` saved as a community checkpoint (a state dict) beside its YAML."""
    config_path, checkpoint = folder / "small.yaml", folder / "small.ckpt"
    config_path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    network = build_network(read_config(config_path))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0, 0.3)
    torch.save(network.state_dict(), checkpoint)
    return checkpoint, config_path


def mix(seconds: float, rate: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return 0.3 * torch.randn(2, int(seconds * rate), generator=generator)


@pytest.mark.parametrize("name", MDX_NET)
def test_an_mdx_net_entry_loads_from_its_url_and_runs_as_its_local_files_do(cache, tmp_path, name):
    pytest.importorskip("onnxruntime", reason="onnxruntime (the mdx extra) is not installed")
    info = find_model(name)
    params = dict(info.params)
    model = onnx_model(tmp_path, params["dim_f"])
    with FileServer() as server:
        bag = download_bag(served(info, server, model.read_bytes()))
    assert bag.stems == list(info.stems) == [params["primary"], params["secondary"]]
    (tmp_path / "params.json").write_text(json.dumps(params))
    local = load_bag(checkpoint=model, config=tmp_path / "params.json")
    song = mix(1.0, 44100)
    assert torch.equal(separate_tensor(bag, song), separate_tensor(local, song))


def test_the_mdx23c_entry_loads_from_its_url_and_runs_as_its_local_files_do(cache, tmp_path, monkeypatch):
    info = find_model("uvr_mdx23c_instvoc_hq")
    assert not info.files[0].sha256 and info.pinning == "no"
    config = small_config(num_overlap=2)  # the real layout at a toy size: the real file is 448 MB
    configs = tmp_path / "configs"
    configs.mkdir()
    checkpoint, config_path = mdx23c_files(tmp_path, config)
    (configs / info.config).write_text(config_path.read_text())
    monkeypatch.setattr(registry, "CONFIGS", configs)
    with FileServer() as server:
        bag = download_bag(served(info, server, checkpoint.read_bytes()))
    assert bag.stems == list(info.stems) == ["vocals", "instrumental"]
    local = load_bag(checkpoint=checkpoint, config=config_path)
    song = mix(0.5, config["audio"]["sample_rate"])
    assert torch.equal(separate_tensor(bag, song), separate_tensor(local, song))


def test_the_shipped_mdx23c_config_is_the_one_the_oracle_tests_run():
    shipped = yaml.safe_load((CONFIGS / find_model("uvr_mdx23c_instvoc_hq").config).read_text())
    for section in ("audio", "model", "inference"):
        assert shipped[section] == INSTVOC_HQ[section]
    assert shipped["training"]["instruments"] == ["Vocals", "Instrumental"]
    assert shipped["training"]["target_instrument"] is None


@pytest.mark.parametrize("name", [*MDX_NET, "uvr_mdx23c_instvoc_hq"])
def test_uvr_entries_name_their_release_file_licence_and_job(name):
    info = find_model(name)
    [file] = info.files
    assert file.urls[0] == RELEASE + file.name and info.licence == UVR_LICENCE
    assert all(url.startswith("https://") for url in file.urls) and len(set(file.urls)) == len(file.urls)
    assert (file.sha256 is None) == (file.size is None) == (info.pinning == "no")


def test_the_karaoke_entry_names_its_stems_lead_and_backing():
    info = find_model("uvr_mdx_karaoke_2")
    assert info.stems == ("backing", "lead") and dict(info.params)["primary"] == "backing"
    assert "lead vocals" in info.description and "backing vocals" in info.description


def test_the_roformer_karaoke_entry_loads_from_its_url_and_runs_as_its_local_files_do(cache, tmp_path, monkeypatch):
    from stemsplit.families.roformer import read_config as read_roformer_config
    from stemsplit.networks.roformer import roformer

    info = find_model("mel_band_roformer_karaoke_aufr33_viperx")
    assert info.files[0].urls[0] == RELEASE + info.files[0].name and info.pinning == "no"
    configs = tmp_path / "configs"
    configs.mkdir()
    small = configs / info.config  # the real one's stems and layout at a toy size: the real file is 913 MB
    small.write_text("""audio: {sample_rate: 44100}
model: {dim: 16, depth: 1, stereo: true, num_stems: 1, num_bands: 8, dim_head: 8, heads: 2,
        time_transformer_depth: 1, freq_transformer_depth: 1, stft_hop_length: 441, flash_attn: true}
training: {instruments: [Vocals, Instrumental], target_instrument: Vocals}
inference: {dim_t: 101, num_overlap: 2}
""")
    torch.manual_seed(0)
    checkpoint = tmp_path / "small.ckpt"
    torch.save({"state_dict": roformer(read_roformer_config(small).network).state_dict()}, checkpoint)
    monkeypatch.setattr(registry, "CONFIGS", configs)
    with FileServer() as server:
        bag = download_bag(served(info, server, checkpoint.read_bytes()))
    assert bag.stems == list(info.stems)
    local = load_bag(checkpoint=checkpoint, config=small)
    song = mix(1.5, 44100)
    assert torch.equal(separate_tensor(bag, song), separate_tensor(local, song))


def test_the_shipped_karaoke_config_builds_the_network_the_kim_config_does():
    from stemsplit.families.roformer import read_config as read_roformer_config

    karaoke = read_roformer_config(CONFIGS / find_model("mel_band_roformer_karaoke_aufr33_viperx").config)
    kim = read_roformer_config(CONFIGS / find_model("mel_band_roformer_kim").config)
    assert karaoke.network == kim.network and karaoke.sources == ("vocals",)
