"""MDX23C (TFC-TDF v3): our network against audio-separator's TFC_TDF_net, our engine against its MDXC `demix`,
the family's configs, and `stemsplit --checkpoint F.ckpt --config F.yaml` on a song."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from helpers import read, relative_error, sdr, separate_tensor, stemsplit, tone
from mdxc_oracle import INSTVOC_HQ, mdxc_files, oracle_demix, oracle_network, small_config
from roformer_oracle import roformer_files
from stemsplit.errors import ModelError
from stemsplit.families import for_local
from stemsplit.families.mdxc import build_network, read_config
from stemsplit.family import LocalFiles
from stemsplit.registry import load_bag
from stemsplit.separation import Settings

EXACT = ("--bit-depth", "32", "--clip-mode", "none")


def write_yaml(folder: Path, config: dict, name: str = "config") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ours_for(oracle: torch.nn.Module, config: dict, folder: Path) -> torch.nn.Module:
    network = build_network(read_config(write_yaml(folder, config)))
    network.load_state_dict(oracle.state_dict(), strict=True)
    return network.eval()


def random_mix(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * rate), generator=generator) + 0.05


@pytest.mark.parametrize("norm, act, target", [
    ("InstanceNorm", "gelu", None), ("BatchNorm", "relu", "vocals"), ("GroupNorm4", "elu1.0", None),
    (None, "gelu", None),
])
def test_network_matches_the_oracle_for_each_norm_and_activation(tmp_path, norm, act, target):
    config = small_config(norm, act, target, instruments=("Vocals", "Drums", "Other"))
    oracle = oracle_network(config, seed=1)
    ours = ours_for(oracle, config, tmp_path)
    audio = torch.randn(2, 2, 64 * 63)
    with torch.no_grad():
        expected, result = oracle(audio), ours(audio)
    expected = expected.unsqueeze(1) if target else expected
    assert result.shape == expected.shape == (2, 1 if target else 3, 2, 64 * 63)
    assert relative_error(result, expected) < 1e-4


def test_the_real_instvoc_hq_config_matches_the_oracle(tmp_path):
    oracle = oracle_network(INSTVOC_HQ, scale=0.02)
    ours = ours_for(oracle, INSTVOC_HQ, tmp_path)
    audio = 0.3 * torch.randn(1, 2, 1024 * 31)  # 32 frames, the fewest that five halvings of time allow
    with torch.no_grad():
        expected, result = oracle(audio), ours(audio)
    assert result.shape == expected.shape == (1, 2, 2, 1024 * 31)
    assert relative_error(result, expected) < 1e-4


@pytest.mark.parametrize("seconds, rate, num_overlap, target", [
    (10.3, 2000, 4, None),  # chunks of dim_t frames: 10 s and more
    (6.0, 8000, 3, "Vocals"),  # chunks of 256 frames, 16320 samples: no multiple of 3 steps
    (0.5, 8000, 2, None),  # shorter than one chunk
])
def test_engine_matches_the_oracle_demix(tmp_path, seconds, rate, num_overlap, target):
    config = small_config(target=target, num_overlap=num_overlap, sample_rate=rate)
    oracle, checkpoint, config_path = mdxc_files(tmp_path, config, seed=2)
    bag = load_bag(checkpoint=checkpoint, config=config_path)
    mix = random_mix(seconds, rate, seed=3)
    expected = oracle_demix(oracle, mix, config)
    result = separate_tensor(bag, mix, Settings(batch_size=3))
    assert bag.stems == (["vocals", "no_vocals"] if target else ["vocals", "instrumental"])
    assert sdr(result[0], expected["Vocals"]) > 90 and sdr(result[1], expected["Instrumental"]) > 90
    if target:
        assert bag.residual == "no_vocals" and (result.sum(0) - mix).abs().max() < 1e-6


def test_settings_the_procedure_does_not_have_are_refused(tmp_path):
    _, checkpoint, config_path = mdxc_files(tmp_path, small_config())
    bag = load_bag(checkpoint=checkpoint, config=config_path)
    for settings in (Settings(shifts=1), Settings(overlap=0.5), Settings(segment=1.0)):
        with pytest.raises(ValueError, match="this model overlaps 8 chunks as its configuration says"):
            separate_tensor(bag, random_mix(0.2, 8000), settings)


def test_mdx23c_and_roformer_yamls_are_each_their_own_familys(tmp_path):
    _, checkpoint, config_path = mdxc_files(tmp_path, small_config())
    _, roformer_checkpoint, roformer_config, _ = roformer_files(tmp_path, 1, 4)
    assert for_local(LocalFiles(checkpoint, config_path)).name == "mdx23c"
    assert for_local(LocalFiles(roformer_checkpoint, roformer_config)).name == "mel_band_roformer"
    with pytest.raises(ModelError, match="does not fit its config"):
        load_bag(checkpoint=roformer_checkpoint, config=config_path)


@pytest.mark.parametrize("section, key, value, message", [
    ("model", "norm", "LayerNorm", "unknown norm 'LayerNorm'"),
    ("model", "act", "swish", "unknown activation 'swish'"),
    ("model", "norm", "GroupNorm3", r"num_channels \(8\) must be divisible by num_groups \(3\)"),
    ("model", "num_channels", 4096, "more than the 512 stemsplit allows"),
    ("model", "depth", 3, "model.depth is not supported"),
    ("model", "scale", [2], "model.scale must be two integers"),
    ("audio", "num_channels", 1, "audio.num_channels must be 2"),
    ("audio", "dim_f", 126, "must divide into num_subbands"),
    ("inference", "dim_t", 66, "chunks of 66 frames do not divide into 4"),
    ("inference", "num_overlap", 0, "inference.num_overlap must be an integer of at least 1"),
    ("training", "instruments", "vocals", "training.instruments must be a list"),
])
def test_config_problems_are_model_errors_naming_the_file_and_key(tmp_path, section, key, value, message):
    config = copy.deepcopy(small_config())
    config[section][key] = value
    path = write_yaml(tmp_path, config)
    with pytest.raises(ModelError, match=message) as error:
        build_network(read_config(path))
    assert str(path) in str(error.value)


# The command

@pytest.fixture(scope="module")
def instvoc(tmp_path_factory):
    config = small_config(num_overlap=2, sample_rate=44100)
    return (*mdxc_files(tmp_path_factory.mktemp("mdxc"), config, seed=4, name="instvoc"), config)


def test_checkpoint_and_yaml_run_from_the_command_like_the_oracle_and_refuse_overlap(tmp_path, instvoc):
    oracle, checkpoint, config_path, config = instvoc
    song = tmp_path / "song.wav"
    sf.write(song, tone(1.3, 44100), 44100, subtype="FLOAT")
    result = stemsplit("--checkpoint", checkpoint, "--config", config_path, song, "-o", tmp_path, *EXACT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "instvoc" / "song"
    assert sorted(p.name for p in folder.glob("*.wav")) == ["instrumental.wav", "vocals.wav"]
    mix, _ = read(song)
    expected = oracle_demix(oracle, torch.from_numpy(mix.copy()), config)
    for name in ("vocals", "instrumental"):
        stem, rate = read(folder / f"{name}.wav")
        assert rate == 44100 and stem.shape == mix.shape
        assert sdr(stem, expected[name.capitalize()]) > 90
    refused = stemsplit("--checkpoint", checkpoint, "--config", config_path, "--overlap", "0.5", song, cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / "separated").exists()
    assert "overlap is for HT Demucs and RoFormer models; this model overlaps 2 chunks" in refused.stderr
