"""The catalogue, downloads through a loopback Hub, and local weight folders."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import types
import typing
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import huggingface_hub.constants
import huggingface_hub.utils._http
import pytest
import torch
import yaml

from helpers import separate_tensor
from hub_server import HubServer
from oracle import perturbed_reference, safetensors_file
from reference_configs import SMALL_KWARGS
from stemsplit.errors import ModelError
from stemsplit.catalogue import ModelInfo, WeightFile, default_model, find_model, read_catalogue
from stemsplit.files import sha256_of
from stemsplit.hub import VERIFICATIONS, hub_cache
from stemsplit.registry import download_bag, is_cached, load_bag

ROOT = Path(__file__).resolve().parents[1]
SHARED_SHA256 = ROOT.parent / "shared" / "reference" / "weights-sha256.txt"

SOURCES = ["drums", "bass", "other", "vocals"]
KWARGS = {**SMALL_KWARGS, "segment": Fraction(1, 4)}  # a shorter segment runs faster
SIGNATURE = "0badcafe"
REPO_ID = "tester/Tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# Building weight files the way the reference tool publishes them

def legacy_file(package: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(package, buffer)
    return buffer.getvalue()


def legacy_package(model: torch.nn.Module, **changes: object) -> dict:
    package = {
        "klass": type(model),
        "args": (),
        "kwargs": dict(KWARGS),
        "state": {key: value.half() for key, value in model.state_dict().items()},
        "training_args": {"epochs": 360, "dset": {"segment": 7.8}},
    }
    return {**package, **changes}


def legacy_name(content: bytes, signature: str = SIGNATURE) -> str:
    return f"{signature}-{hashlib.sha256(content).hexdigest()[:8]}.th"


def tiny_info(content: bytes) -> ModelInfo:
    file = WeightFile(
        name=f"{SIGNATURE}.safetensors",
        sha256=hashlib.sha256(content).hexdigest(),
        legacy=f"{SIGNATURE}-00000000.th",
        legacy_sha256="0" * 64,
        shares=(1.0, 1.0, 1.0, 1.0),
    )
    return ModelInfo(name="tiny", family="htdemucs", description="a tiny test model", licence="MIT",
                     stems=tuple(SOURCES), repo=REPO_ID, revision=COMMIT, files=(file,))


def weight_rows(bag) -> list[list[float]]:
    return [[member.shares[stem] for stem in bag.stems] for member in bag.members]


def assert_same_weights(bag, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    actual = bag.members[0].network.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)


def assert_same_output(bag, reference: torch.nn.Module) -> None:
    mix = torch.randn(1, 2, 4000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(mix)
        actual = bag.members[0].network(mix)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reference():
    return perturbed_reference(KWARGS, seed=5)


@pytest.fixture(scope="module")
def weights(reference) -> bytes:
    return safetensors_file(reference, KWARGS)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running loopback Hub, with the Hub client and its cache pointed at it."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once at import; the tests must not depend on it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


def cached_files(info: ModelInfo) -> list[Path]:
    """The model's files in the cache, but for temporary `.incomplete` files, which are never loaded."""
    folder = hub_cache() / f"models--{info.repo.replace('/', '--')}"
    return [path for path in folder.rglob("*") if path.is_file() and ".incomplete" not in path.name]


# The catalogue

def test_catalogue_lists_the_official_models():
    catalogue = read_catalogue()
    assert default_model() == "htdemucs"
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s"} <= set(catalogue)
    assert catalogue["htdemucs_6s"].stems == ("drums", "bass", "other", "vocals", "guitar", "piano")
    for info in catalogue.values():
        if info.family != "htdemucs":
            continue
        assert len(info.revision) == 40 and info.pinning == "yes"
        for file in info.files:
            assert file.name == f"{file.signature}.safetensors"
            assert file.legacy == f"{file.signature}-{file.legacy_sha256[:8]}.th"
            assert len(file.shares) == len(info.stems)


def test_catalogue_bags_match_the_reference_bag_files():
    import demucs

    remote = Path(demucs.__file__).parent / "remote"
    for name, info in read_catalogue().items():
        if info.family != "htdemucs":
            continue
        spec = yaml.safe_load((remote / f"{name}.yaml").read_text())
        assert [file.signature for file in info.files] == spec["models"]
        default = [[1.0] * len(info.stems) for _ in info.files]
        assert [list(file.shares) for file in info.files] == spec.get("weights", default)


def published_files() -> dict[str, tuple[str, str, str]]:
    """File name -> (SHA-256, size, "repo@revision" or ""), from the shared reference list."""
    files = {}
    for line in SHARED_SHA256.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            sha256, size, *rest = line.split()
            name = next(token for token in rest if token.endswith((".th", ".safetensors")))
            files[name] = (sha256, size, rest[0] if "@" in rest[0] else "")
    return files


def test_catalogue_hashes_match_the_published_ones():
    if not SHARED_SHA256.is_file():
        pytest.skip(f"{SHARED_SHA256} is absent")
    published = published_files()
    for info in read_catalogue().values():
        for file in info.files if info.family == "htdemucs" else ():
            assert published[file.legacy][0] == file.legacy_sha256
            sha256, _, where = published[file.name]
            assert sha256 == file.sha256
            repo, revision = where.split("@")
            assert repo == info.repo and info.revision.startswith(revision.rstrip("."))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match="unknown model 'nope'.*htdemucs, htdemucs_6s, htdemucs_ft"):
        load_bag("nope")


def test_malformed_catalogue_is_a_model_error(tmp_path):
    text = (ROOT / "models.toml").read_text().replace(
        "d9fa14133cfcc034a6758923bb3a8ca9f8dfd0b582134643bbf83f72c17576dd", "D9FA")
    (tmp_path / "models.toml").write_text(text)
    with pytest.raises(ModelError, match="'htdemucs'.*64 lowercase hex"):
        read_catalogue(tmp_path / "models.toml")
    (tmp_path / "broken.toml").write_text("default = [")
    with pytest.raises(ModelError, match="cannot read the model catalogue"):
        read_catalogue(tmp_path / "broken.toml")


# Downloads through the loopback Hub

def test_download_verifies_loads_and_matches_the_reference(hub, reference, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = tiny_info(weights)
    assert not is_cached(info)
    bag = download_bag(info)
    assert is_cached(info)
    assert bag.stems == SOURCES and bag.samplerate == 44100 and bag.audio_channels == 2
    assert weight_rows(bag) == [[1.0] * 4]
    assert not bag.members[0].network.training
    assert all(parameter.dtype == torch.float32 for parameter in bag.members[0].network.parameters())
    assert_same_output(bag, reference)
    assert ("GET", f"/{REPO_ID}/resolve/{COMMIT}/{SIGNATURE}.safetensors") in hub.requests
    assert str(hub_cache()).startswith(os.environ["HF_HOME"])


def test_corrupt_download_is_removed_and_a_later_download_works(hub, reference, weights):
    corrupt = bytearray(weights)
    corrupt[-1] ^= 0xFF
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", bytes(corrupt))
    info = tiny_info(weights)
    with pytest.raises(ModelError, match=r"corrupt \(sha256 mismatch\); the bad file was removed"):
        download_bag(info)
    assert cached_files(info) == []
    assert not is_cached(info)

    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    assert_same_weights(download_bag(info), reference)


def test_corrupted_cache_file_is_caught_before_loading(hub, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = tiny_info(weights)
    download_bag(info)
    hub.stop()
    [blob] = [path for path in cached_files(info) if path.parent.name == "blobs"]
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        download_bag(info)
    assert cached_files(info) == []


def test_cached_model_loads_offline_without_a_server(hub, reference, weights, monkeypatch):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = tiny_info(weights)
    download_bag(info)
    hub.stop()
    assert_same_weights(download_bag(info), reference)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_same_weights(download_bag(info), reference)


def test_offline_without_cache_is_a_model_error(hub, weights, monkeypatch):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not downloaded yet and HF_HUB_OFFLINE is set.*--repo DIR"):
        download_bag(tiny_info(weights))
    assert hub.requests == []


def test_unreachable_hub_without_cache_is_a_model_error(hub, weights, monkeypatch):
    hub.stop()
    # huggingface_hub backs off for ~20 s before it gives up; the waiting itself is not under test.
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", lambda seconds: None)
    with pytest.raises(ModelError, match="Hugging Face Hub cannot be reached.*--repo DIR"):
        download_bag(tiny_info(weights))


def test_missing_file_on_the_hub_is_a_model_error(hub, weights):
    hub.add(REPO_ID, COMMIT, "other.safetensors", weights)
    with pytest.raises(ModelError, match=f"downloading {SIGNATURE}.safetensors of model 'tiny'"):
        download_bag(tiny_info(weights))


def test_killed_download_leaves_nothing_that_loads(hub, reference, weights, tmp_path):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    hub.stall_after = len(weights) // 2
    catalogue = tmp_path / "tiny.toml"
    catalogue.write_text(catalogue_toml(tiny_info(weights)))
    script = ("from pathlib import Path; from stemsplit.registry import download_bag; "
              f"from stemsplit.catalogue import find_model, read_catalogue; download_bag(find_model('tiny', read_catalogue(Path({str(catalogue)!r}))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", script], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while not hub.stalled.wait(0.1):  # until half the file has been sent
            assert process.poll() is None, f"the download process died: {process.stderr.read()}"
            assert time.monotonic() < deadline, "the download never started"
    finally:
        process.kill()
        process.communicate()
    info = tiny_info(weights)
    assert not is_cached(info)
    assert cached_files(info) == []

    hub.stall_after = None
    assert_same_weights(download_bag(info), reference)


def catalogue_toml(info: ModelInfo) -> str:
    [file] = info.files
    return f"""default = "{info.name}"

[{info.name}]
family = "{info.family}"
description = "{info.description}"
licence = "{info.licence}"
stems = {json.dumps(list(info.stems))}
repo = "{info.repo}"
revision = "{info.revision}"

[[{info.name}.files]]
name = "{file.name}"
sha256 = "{file.sha256}"
legacy = "{file.legacy}"
legacy_sha256 = "{file.legacy_sha256}"
shares = {json.dumps(list(file.shares))}
"""


def test_catalogue_file_round_trips(tmp_path, weights):
    info = tiny_info(weights)
    (tmp_path / "tiny.toml").write_text(catalogue_toml(info))
    assert find_model("tiny", read_catalogue(tmp_path / "tiny.toml")) == info
    assert default_model(tmp_path / "tiny.toml") == "tiny"


# A local folder standing in for the Hub (--repo DIR)

def test_local_safetensors_bag(tmp_path, reference, weights):
    (tmp_path / f"{SIGNATURE}.safetensors").write_bytes(weights)
    (tmp_path / "pair.yaml").write_text(yaml.safe_dump({
        "models": [SIGNATURE, SIGNATURE],
        "weights": [[1, 0, 0, 1], [0, 1, 1, 0]],
    }))
    bag = load_bag("pair", repo=tmp_path)
    assert bag.name == "pair" and len(bag.members) == 2
    assert weight_rows(bag) == [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]
    assert_same_output(bag, reference)

    single = load_bag(SIGNATURE, repo=tmp_path)
    assert weight_rows(single) == [[1.0] * 4]
    assert_same_weights(single, reference)


def test_local_bag_segment_only_shortens(tmp_path, weights):
    (tmp_path / f"{SIGNATURE}.safetensors").write_bytes(weights)
    (tmp_path / "short.yaml").write_text(f"models: ['{SIGNATURE}']\nsegment: 0.2\n")
    (tmp_path / "long.yaml").write_text(f"models: ['{SIGNATURE}']\nsegment: 44\n")
    assert load_bag("short", repo=tmp_path).members[0].network.segment == Fraction(1, 5)
    assert load_bag("long", repo=tmp_path).members[0].network.segment == Fraction(1, 4)


def test_local_legacy_th(tmp_path, reference):
    content = legacy_file(legacy_package(reference))
    (tmp_path / legacy_name(content)).write_bytes(content)
    (tmp_path / "tiny.yaml").write_text(f"models: ['{SIGNATURE}']\n")
    bag = load_bag("tiny", repo=tmp_path)
    assert all(parameter.dtype == torch.float32 for parameter in bag.members[0].network.parameters())
    rounded = perturbed_reference(KWARGS, seed=5)
    rounded.load_state_dict({key: value.half().float() for key, value in reference.state_dict().items()})
    assert_same_output(bag, rounded)


def test_local_legacy_th_with_a_wrong_hash_prefix(tmp_path, reference):
    content = legacy_file(legacy_package(reference))
    (tmp_path / f"{SIGNATURE}-00000000.th").write_bytes(content)
    with pytest.raises(ModelError, match="sha256 does not start with 00000000"):
        load_bag(SIGNATURE, repo=tmp_path)


def test_local_file_of_a_catalogue_model_is_checked_against_the_pin(tmp_path, weights):
    (tmp_path / "955717e8.safetensors").write_bytes(weights)
    with pytest.raises(ModelError, match="sha256 mismatch with the catalogue"):
        load_bag("955717e8", repo=tmp_path)


def test_local_folder_errors(tmp_path, weights):
    with pytest.raises(ModelError, match="is not a folder"):
        load_bag("tiny", repo=tmp_path / "missing")
    with pytest.raises(ModelError, match="has no model 'tiny'"):
        load_bag("tiny", repo=tmp_path)
    with pytest.raises(ModelError, match="is not a model name"):
        load_bag("../tiny", repo=tmp_path)
    (tmp_path / "tiny.yaml").write_text("models: ['cafecafe']\n")
    with pytest.raises(ModelError, match="no weights for network 'cafecafe'"):
        load_bag("tiny", repo=tmp_path)
    (tmp_path / "tiny.yaml").write_text("weights: [[1, 1, 1, 1]]\n")
    with pytest.raises(ModelError, match="not a valid bag file"):
        load_bag("tiny", repo=tmp_path)
    (tmp_path / f"{SIGNATURE}.safetensors").write_bytes(weights)
    (tmp_path / "tiny.yaml").write_text(f"models: ['{SIGNATURE}']\nweights: [[1, 1]]\n")
    with pytest.raises(ModelError, match="needs 4 weights"):
        load_bag("tiny", repo=tmp_path)
    (tmp_path / f"{SIGNATURE}.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_bag(SIGNATURE, repo=tmp_path)


def test_networks_that_disagree_cannot_form_a_bag(tmp_path, reference, weights):
    six = perturbed_reference({**KWARGS, "sources": SOURCES + ["guitar", "piano"]})
    (tmp_path / f"{SIGNATURE}.safetensors").write_bytes(weights)
    (tmp_path / "cafecafe.safetensors").write_bytes(
        safetensors_file(six, {**KWARGS, "sources": SOURCES + ["guitar", "piano"]}))
    (tmp_path / "mixed.yaml").write_text(f"models: ['{SIGNATURE}', 'cafecafe']\n")
    with pytest.raises(ModelError, match="disagree on sources"):
        load_bag("mixed", repo=tmp_path)


def test_other_model_classes_are_refused(tmp_path, reference):
    from demucs.demucs import LocalState

    runs = ("stemsplit runs demucs.htdemucs.HTDemucs, demucs.hdemucs.HDemucs, demucs.demucs.Demucs, "
            "demucs.model.Demucs, demucs.tasnet.ConvTasNet models only")
    (tmp_path / f"{SIGNATURE}.safetensors").write_bytes(
        safetensors_file(reference, KWARGS, klass="demucs.demucs.LocalState"))
    with pytest.raises(ModelError, match=f"demucs.demucs.LocalState model; {runs}"):
        load_bag(SIGNATURE, repo=tmp_path)

    content = legacy_file(legacy_package(reference, klass=LocalState))
    (tmp_path / f"{SIGNATURE}.safetensors").unlink()
    (tmp_path / legacy_name(content)).write_bytes(content)
    with pytest.raises(ModelError, match=f"demucs.demucs.LocalState model; {runs}"):
        load_bag(SIGNATURE, repo=tmp_path)


# Legacy pickles must never run code

class SystemCall:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


class Eval(SystemCall):
    def __reduce__(self):
        return eval, (f"open({str(self.sentinel)!r}, 'w')",)


class Subprocess(SystemCall):
    def __reduce__(self):
        return subprocess.call, (["touch", str(self.sentinel)],)


class Gadget(SystemCall):
    """An arbitrary class: refused even though unpickling it would run nothing."""


@pytest.mark.parametrize("payload", [SystemCall, Eval, Subprocess, Gadget])
@pytest.mark.parametrize("where", ["klass", "state", "training_args"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, reference, payload, where):
    sentinel = tmp_path / "sentinel"
    content = legacy_file(legacy_package(reference, **{where: payload(sentinel)}))
    (tmp_path / legacy_name(content)).write_bytes(content)
    with pytest.raises(ModelError, match="which a weight file must not contain"):
        load_bag(SIGNATURE, repo=tmp_path)
    assert not sentinel.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    content = buffer.getvalue()
    (tmp_path / legacy_name(content)).write_bytes(content)
    with pytest.raises(ModelError, match="TorchScript archive"):
        load_bag(SIGNATURE, repo=tmp_path)


@pytest.fixture
def fake_omegaconf(monkeypatch):
    """A class named like omegaconf's DictConfig, so that it pickles under that name."""
    package = types.ModuleType("omegaconf")
    module = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:
        def __init__(self, content: dict):
            self._content = content
            self._metadata = {"ref_type": typing.Any, "object_type": dict}

    DictConfig.__module__, DictConfig.__qualname__ = module.__name__, "DictConfig"
    module.DictConfig = package.dictconfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", package)
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", module)
    return DictConfig


def test_omegaconf_training_args_are_ignored(tmp_path, reference, fake_omegaconf):
    config = fake_omegaconf({"epochs": 360, "dset": fake_omegaconf({"segment": 7.8})})
    content = legacy_file(legacy_package(reference, training_args=config))
    (tmp_path / legacy_name(content)).write_bytes(content)
    assert load_bag(SIGNATURE, repo=tmp_path).stems == SOURCES


def test_omegaconf_objects_outside_training_args_are_refused(tmp_path, reference, fake_omegaconf):
    kwargs = {**KWARGS, "sources": fake_omegaconf({"names": SOURCES})}
    content = legacy_file(legacy_package(reference, kwargs=kwargs))
    (tmp_path / legacy_name(content)).write_bytes(content)
    with pytest.raises(ModelError, match="configuration objects where model settings belong"):
        load_bag(SIGNATURE, repo=tmp_path)


def test_sha256_of(tmp_path):
    (tmp_path / "file").write_bytes(b"abc")
    assert sha256_of(tmp_path / "file") == hashlib.sha256(b"abc").hexdigest()


# Unpinned files, licences, other families and ensembles from the Hub

def test_first_download_names_the_licence(hub, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    heard = []
    download_bag(tiny_info(weights), heard.append)
    download_bag(tiny_info(weights), heard.append)
    size = f"{len(weights) / 1e6:.1f} MB"
    assert heard == [f"downloading model 'tiny' (licence: MIT): {SIGNATURE}.safetensors, {size}"]


def unpinned(info: ModelInfo) -> ModelInfo:
    return replace(info, revision="main", files=tuple(replace(file, sha256=None) for file in info.files))


def test_unpinned_file_is_checked_against_the_hubs_sha256_then_against_the_record(hub, reference, weights,
                                                                                 monkeypatch):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = unpinned(tiny_info(weights))
    assert info.pinning == "no" and not is_cached(info)
    assert_same_weights(download_bag(info), reference)
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    record = json.loads((folder / VERIFICATIONS).read_text())
    assert record == {f"main/{SIGNATURE}.safetensors": {"commit": COMMIT, "sha256": hashlib.sha256(weights).hexdigest()}}
    assert is_cached(info)
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_same_weights(download_bag(info), reference)
    cached = (folder / "snapshots" / COMMIT / f"{SIGNATURE}.safetensors").resolve()
    cached.write_bytes(weights[:-1] + b"\0")
    with pytest.raises(ModelError, match="was corrupt"):
        download_bag(info)
    assert not cached.exists()


def test_unpinned_file_the_hub_gives_no_sha256_for_is_refused(hub, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    hub.etags[REPO_ID, f"{SIGNATURE}.safetensors"] = "0123abcd" * 5  # a git blob id: not an LFS file
    with pytest.raises(ModelError, match=f"publishes no SHA-256 for {SIGNATURE}.safetensors"):
        download_bag(unpinned(tiny_info(weights)))
    assert not cached_files(tiny_info(weights))


def test_unpinned_file_whose_bytes_differ_from_the_hubs_sha256_is_refused(hub, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    hub.etags[REPO_ID, f"{SIGNATURE}.safetensors"] = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(ModelError, match="was corrupt"):
        download_bag(unpinned(tiny_info(weights)))
    assert not cached_files(tiny_info(weights))


def test_roformer_from_a_hub_dataset_and_an_ensemble_with_htdemucs(hub, weights, tmp_path, monkeypatch):
    from roformer_oracle import roformer_files

    _, checkpoint, config_path, _ = roformer_files(tmp_path, 1, 4)
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    hub.add("someone/mirror", COMMIT, "voc/small.ckpt", checkpoint.read_bytes())
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    catalogue = tmp_path / "models.toml"
    catalogue.write_text(catalogue_toml(tiny_info(weights)) + f"""
[voc]
family = "mel_band_roformer"
description = "a small vocals RoFormer"
licence = "not stated"
stems = ["vocals", "no_vocals"]
repo = "someone/mirror"
repo_type = "dataset"
revision = "{COMMIT}"
config = "{config_path}"

[[voc.files]]
name = "voc/small.ckpt"
sha256 = "{sha256}"

[mix]
description = "vocals from voc, drums and bass from tiny"
licence = "those of its parts"
stems = ["drums", "bass", "other", "vocals"]
residual = "other"
parts = [{{model = "voc", stems = ["vocals"]}}, {{model = "tiny", stems = ["drums", "bass"]}}]
""")
    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue)
    voc = load_bag("voc")
    assert voc.stems == ["vocals", "no_vocals"] and voc.residual == "no_vocals"
    assert ("GET", f"/datasets/someone/mirror/resolve/{COMMIT}/voc/small.ckpt") in hub.requests
    ensemble = load_bag("mix")
    assert ensemble.stems == SOURCES and ensemble.residual == "other"
    assert [sorted(member.shares) for member in ensemble.members] == [["vocals"], ["bass", "drums"]]
    assert find_model("mix").pinning == "yes"
    mix = 0.2 * torch.randn(2, 20000, generator=torch.Generator().manual_seed(1))
    stems = separate_tensor(ensemble, mix)
    torch.testing.assert_close(stems.sum(0), mix, atol=1e-5, rtol=0)
    torch.testing.assert_close(stems[3], separate_tensor(voc, mix)[0], atol=1e-6, rtol=0)


def test_a_catalogue_family_that_is_not_the_networks_is_a_model_error(hub, tmp_path, monkeypatch):
    from test_separation import roformer_files

    _, checkpoint, config_path, _ = roformer_files(tmp_path, 1, 4)  # a Mel-Band RoFormer
    hub.add("someone/voc", COMMIT, "small.ckpt", checkpoint.read_bytes())
    catalogue = tmp_path / "models.toml"
    catalogue.write_text(f"""default = "voc"

[voc]
family = "bs_roformer"
description = "a Mel-Band RoFormer catalogued as a BS-RoFormer"
licence = "not stated"
stems = ["vocals", "no_vocals"]
repo = "someone/voc"
revision = "{COMMIT}"
config = "{config_path}"

[[voc.files]]
name = "small.ckpt"
sha256 = "{hashlib.sha256(checkpoint.read_bytes()).hexdigest()}"
""")
    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue)
    with pytest.raises(ModelError, match="^model 'voc' is catalogued as bs_roformer, but its files hold a "
                                         "mel_band_roformer network$"):
        load_bag("voc")


def test_catalogue_families_are_rows_of_the_family_table(tmp_path):
    from stemsplit.families import family, family_names

    text = (ROOT / "models.toml").read_text().replace('family = "htdemucs"', 'family = "htdemucs_v9"', 1)
    (tmp_path / "models.toml").write_text(text)
    families = "htdemucs, hdemucs, demucs, bs_roformer, mel_band_roformer"
    with pytest.raises(ModelError, match=f"'htdemucs'.*family must be one of {families}"):
        read_catalogue(tmp_path / "models.toml")
    for info in read_catalogue().values():
        assert info.is_ensemble or info.is_chain or family(info.family).name == info.family
    assert all(family(name).architecture for name in family_names())
