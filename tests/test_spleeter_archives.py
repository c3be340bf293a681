"""Issue 17: the spleeter_4stems and spleeter_5stems entries. Their archives hold a TensorFlow checkpoint at the
top (model.index, model.data-00000-of-00001, model.meta, checkpoint) and no params.json: the instrument count
comes from the checkpoint and the configuration is spleeter's for it. No page gives their sizes, so they are
pinned by SHA-256 alone: a download without a size is bounded and its SHA-256 decides."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hub_server import FileServer
from stemsplit.catalogue import read_catalogue
from stemsplit.families import family
from stemsplit.family import CatalogueFiles, Fetched
from stemsplit.networks.spleeter import PRESETS, SpleeterConfig
from test_spleeter import randomised
from test_spleeter_tf import SMALL, archive_of, run, served_entry, write_checkpoint

SPLEETER_PYTHON = Path(os.environ.get("STEMSPLIT_SPLEETER_PYTHON", "/work/venvs/spleeter/bin/python"))
RELEASES = "https://github.com/deezer/spleeter/releases/download/v1.4.0"
ENTRIES = {4: ("spleeter_4stems", "3adb4a50ad4eb18c7c4d65fcf4cf2367a07d48408a5eb7d03cd20067429dfaa8"),
           5: ("spleeter_5stems", "25a1e87eb5f75cc72a4d2d5467a0a50ac75f05611f877c278793742513cc7218")}


def spleeter_resource(instruments: int) -> dict | None:
    """spleeter 2.4.2's own `<n>stems.json`, from its environment, where there is one."""
    found = sorted(SPLEETER_PYTHON.parent.parent.glob(f"lib/python3*/site-packages/spleeter/resources/"
                                                      f"{instruments}stems.json"))
    return json.loads(found[0].read_text()) if found else None


@pytest.mark.parametrize("instruments", ENTRIES)
def test_the_entries_name_deezers_archives_by_their_sha256_alone(instruments):
    name, sha256 = ENTRIES[instruments]
    info = read_catalogue()[name]
    (file,) = info.files
    assert (info.family, file.name, file.urls, file.sha256, file.size) == (
        "spleeter", f"{instruments}stems.tar.gz", (f"{RELEASES}/{instruments}stems.tar.gz",), sha256, None)
    assert info.stems == PRESETS[instruments].instruments
    assert "MIT per Spleeter's JOSS paper" in info.licence


@pytest.mark.parametrize("instruments", ENTRIES)
def test_the_entries_follow_spleeters_own_configs(instruments):
    resource = spleeter_resource(instruments)
    if resource is None:
        pytest.skip(f"no spleeter 2.4.2 environment at {SPLEETER_PYTHON}")
    assert read_catalogue()[ENTRIES[instruments][0]].stems == tuple(resource["instrument_list"])
    assert SpleeterConfig.from_params(resource) == PRESETS[instruments]


@pytest.mark.parametrize("instruments", ENTRIES)
def test_an_unpacked_archive_of_that_layout_loads_as_spleeters_configuration(tmp_path, instruments):
    network = randomised(PRESETS[instruments], instruments)
    folder = tmp_path / f"{instruments}stems"
    write_checkpoint(folder, network)
    assert sorted(path.name for path in folder.iterdir()) == [
        "checkpoint", "model.data-00000-of-00001", "model.index", "model.meta"]
    info = read_catalogue()[ENTRIES[instruments][0]]
    files = CatalogueFiles(info, (Fetched(folder, ENTRIES[instruments][1], info.files[0]),), None, "test")
    (member,) = family("spleeter").catalogue_bag(files).members
    assert member.network.config == PRESETS[instruments]
    assert tuple(member.network.sources) == info.stems
    expected = network.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in member.network.state_dict().items())


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory) -> bytes:
    """A 4stems archive of a small configuration (its params.json beside the checkpoint)."""
    folder = tmp_path_factory.mktemp("archive") / "4stems"
    params = {**SMALL, "instrument_list": list(PRESETS[4].instruments),
              "model": {**SMALL["model"], "params": {**SMALL["model"]["params"], "conv_activation": "ELU",
                                                     "deconv_activation": "ELU"}}}
    write_checkpoint(folder, randomised(SpleeterConfig.from_params(params), 6))
    (folder / "params.json").write_text(json.dumps(params))
    return archive_of(folder)


def download(tmp_path: Path, monkeypatch, served: bytes, sha256: str) -> tuple[int, str]:
    sf.write(tmp_path / "song.wav", np.zeros((4410, 2), dtype=np.float32), 44100)
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FileServer() as server:
        server.files["/v1.4.0/4stems.tar.gz"] = served
        catalogue = served_entry(tmp_path / "models.toml", "spleeter_4stems", server.url("/v1.4.0/4stems.tar.gz"),
                                 sha256)
        monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue)
        return run(["-n", "spleeter_4stems", tmp_path / "song.wav", "-o", tmp_path / "out"])


def cached_files(tmp_path: Path) -> list[Path]:
    return [path for path in (tmp_path / "cache").rglob("*") if path.is_file() and path.suffix != ".json"]


def test_an_unsized_archive_downloads_and_separates(tmp_path, monkeypatch, small_archive):
    code, stderr = download(tmp_path, monkeypatch, small_archive, hashlib.sha256(small_archive).hexdigest())
    assert code == 0, stderr
    stems = tmp_path / "out" / "spleeter_4stems" / "song"
    assert sorted(path.name for path in stems.glob("*.wav")) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert all(sf.info(path).frames == 4410 for path in stems.glob("*.wav"))


def test_an_unsized_archive_with_other_bytes_is_removed_and_exit_3(tmp_path, monkeypatch, small_archive):
    corrupt = small_archive[:-1] + bytes([small_archive[-1] ^ 1])
    code, stderr = download(tmp_path, monkeypatch, corrupt, hashlib.sha256(small_archive).hexdigest())
    assert code == 3, stderr
    assert "corrupt (sha256 mismatch), removed" in stderr
    assert not cached_files(tmp_path), cached_files(tmp_path)


def test_an_unsized_archive_over_the_bound_is_refused(tmp_path, monkeypatch, small_archive):
    monkeypatch.setattr("stemsplit.sources.MAX_UNPINNED_BYTES", len(small_archive) - 1)
    code, stderr = download(tmp_path, monkeypatch, small_archive, hashlib.sha256(small_archive).hexdigest())
    assert code == 3, stderr
    assert f"it sends {len(small_archive)} bytes, more than a model file may have" in stderr
    assert not cached_files(tmp_path), cached_files(tmp_path)
