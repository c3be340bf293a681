"""The Demucs v3 catalogue entries (hdemucs_mmi, mdx, mdx_extra): what they say against demucs 4.1's own
bag files and file list, and `mdx` downloaded from a loopback Hub serving random-weight networks of its
kinds under its real names, separated, and matched against the reference's bag on the same weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from demucs.demucs import Demucs as ReferenceDemucs
from demucs.hdemucs import HDemucs as ReferenceHDemucs

from helpers import relative_error
from hub_server import HubServer
from oracle import perturbed_network, safetensors_file
from stemsplit.catalogue import find_model, read_catalogue
from stemsplit.errors import ModelError
from stemsplit.registry import download_bag
from v3_configs import SMALL_DEMUCS, SMALL_HDEMUCS

V3_MODELS = ["hdemucs_mmi", "mdx", "mdx_extra"]
SHARED_SHA256 = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "weights-sha256.txt"
HUB_COMMIT = "5e1f0000000000000000000000000000000000aa"
KLASSES = {ReferenceDemucs: "demucs.demucs.Demucs", ReferenceHDemucs: "demucs.hdemucs.HDemucs"}


def remote() -> Path:
    import demucs

    return Path(demucs.__file__).parent / "remote"


@pytest.mark.parametrize("name", V3_MODELS)
def test_entries_match_the_reference_bag_files_and_hub_repos(name):
    from demucs.hf import hf_repo_name

    info = find_model(name)
    spec = yaml.safe_load((remote() / f"{name}.yaml").read_text())
    assert info.repo == f"adefossez/{hf_repo_name(name)}" and info.revision == "main" and info.pinning == "no"
    assert [file.name for file in info.files] == [f"{signature}.safetensors" for signature in spec["models"]]
    default = [[1.0] * len(info.stems) for _ in info.files]
    assert [list(file.shares) for file in info.files] == spec.get("weights", default)
    assert info.segment == spec["segment"] == 44
    legacy = [line.strip() for line in (remote() / "files.txt").read_text().splitlines()]
    assert all(file.legacy in legacy for file in info.files)
    assert "not covered by the MIT license" in info.licence and "MIT" in info.licence.replace("not covered", "")


def test_the_hdemucs_mmi_legacy_file_is_pinned_as_published():
    if not SHARED_SHA256.is_file():
        pytest.skip(f"{SHARED_SHA256} is absent")
    [file] = find_model("hdemucs_mmi").files
    published = [line.split() for line in SHARED_SHA256.read_text().splitlines() if file.legacy in line]
    assert [row[0] for row in published] == [file.legacy_sha256]


@pytest.mark.parametrize("name", ["mdx_q", "mdx_extra_q"])
def test_the_diffq_bags_are_refused_saying_why(name):
    assert name not in read_catalogue()
    with pytest.raises(ModelError, match=f"^model '{name}' is not supported: its weights are diffq bit-packed "
                                         r"\(quantized\), and diffq is CC BY-NC 4.0 compiled code; mdx"):
        find_model(name)


@pytest.fixture(scope="module")
def mdx_networks() -> list[torch.nn.Module]:
    """Reference networks of mdx's kinds in its order: two time-domain Demucs, two Hybrid Demucs."""
    kinds = [(ReferenceDemucs, SMALL_DEMUCS)] * 2 + [(ReferenceHDemucs, SMALL_HDEMUCS)] * 2
    return [perturbed_network(klass, kwargs, seed) for seed, (klass, kwargs) in enumerate(kinds)]


@pytest.fixture
def mdx_hub(tmp_path, monkeypatch, mdx_networks):
    """A loopback Hub serving random weights under mdx's real repo and file names, the cache pointed at it."""
    info = find_model("mdx")
    kinds = [SMALL_DEMUCS] * 2 + [SMALL_HDEMUCS] * 2
    with HubServer() as hub:
        for file, network, kwargs in zip(info.files, mdx_networks, kinds):
            hub.add(info.repo, HUB_COMMIT, file.name, safetensors_file(network, kwargs, KLASSES[type(network)]))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield hub


def test_mdx_from_the_hub_is_the_reference_bag(mdx_hub, mdx_networks):
    """Its members are the served networks, in order, with mdx's shares and segment; each runs as the
    reference network does (whole bags over songs are matched against apply_model in test_v3_separation)."""
    info = find_model("mdx")
    heard = []
    bag = download_bag(info, heard.append)
    assert len(heard) == 4 and "not covered by the MIT license" in heard[0]
    assert sorted(bag.families) == ["demucs", "hdemucs"]
    assert [[member.shares[stem] for stem in bag.stems] for member in bag.members] == \
        [list(file.shares) for file in info.files]
    for member, reference in zip(bag.members, mdx_networks):
        assert member.network.segment == 44 and member.network.family == {
            ReferenceDemucs: "demucs", ReferenceHDemucs: "hdemucs"}[type(reference)]
        expected = reference.state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in member.network.state_dict().items())
    mix = 0.3 * torch.randn(1, 2, 11025, generator=torch.Generator().manual_seed(2))
    for member, reference in [(bag.members[0], mdx_networks[0]), (bag.members[2], mdx_networks[2])]:
        length = reference.valid_length(mix.shape[-1]) if isinstance(reference, ReferenceDemucs) else 11025
        padded = torch.nn.functional.pad(mix, (0, length - mix.shape[-1]))
        with torch.no_grad():
            assert relative_error(member.network(padded), reference(padded)) < 1e-4


def test_a_family_the_networks_are_not_is_refused(mdx_hub):
    info = find_model("mdx")
    with pytest.raises(ModelError, match="^model 'mdx' is catalogued as hdemucs \\+ htdemucs, but its files hold "
                                         "a demucs network$"):
        download_bag(replace(info, families=("hdemucs", "htdemucs")))
    with pytest.raises(ModelError, match="^model 'mdx' is catalogued as hdemucs, but its files hold a demucs "
                                         "network$"):
        download_bag(replace(info, families=()))


def test_the_command_separates_with_mdx(mdx_hub, tmp_path):
    from click.testing import CliRunner

    from stemsplit.cli import main

    sf.write(tmp_path / "song.wav", (0.1 * np.random.default_rng(0).standard_normal((22050, 2))).astype(np.float32),
             44100)
    result = CliRunner().invoke(main, ["-n", "mdx", "--segment", "6", str(tmp_path / "song.wav"),
                                       "-o", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "downloading model 'mdx' (licence: the Hub card says MIT; the author wrote" in result.stderr
    for stem in ["drums", "bass", "other", "vocals"]:
        audio, rate = sf.read(tmp_path / "out" / "mdx" / "song" / f"{stem}.wav")
        assert rate == 44100 and audio.shape == (22050, 2) and np.abs(audio).max() > 0


def test_every_demucs_entry_states_both_sides_of_its_licence():
    from click.testing import CliRunner

    from stemsplit.cli import main

    demucs_entries = [name for name, info in read_catalogue().items()
                      if not info.is_ensemble and {"htdemucs", "hdemucs", "demucs"} & set(info.network_families)]
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s", *V3_MODELS} <= set(demucs_entries)
    lines = CliRunner().invoke(main, ["models"], env={"HF_HUB_OFFLINE": "1"}).stdout.splitlines()
    for name in demucs_entries:
        at = [line.split(":")[0] for line in lines].index(name if name != "htdemucs" else "htdemucs (default)")
        assert "licence: the Hub card says MIT; the author wrote the weights are not covered by the MIT license " \
               "and are provided only for scientific purposes (facebookresearch/demucs#327)" in lines[at + 4]
