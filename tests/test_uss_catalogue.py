"""The `uss` family from the catalogue (issue 19 item 5): a tiny random-weight USS entry in the released files'
formats (a Lightning checkpoint holding `ss_model.*`, a PANNs checkpoint holding `model`) fetched from a
loopback Hub, read with the restricted unpickler, and run by label and by example; the shipped entry's files."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from unittest import mock

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import error_lines, read
from hub_server import HubServer
from stemsplit.catalogue import find_model
from stemsplit.networks.cnn14 import Cnn14, Cnn14Config
from stemsplit.networks.resunet import ResUNet30, ResUNetConfig, reference_name
from test_queries import invoke

pytest.importorskip("uss")
REPO_ID, COMMIT = "tester/USS", "1357913579135791357913579135791357913579"
SEPARATOR_FILE, TAGGER_FILE = "uss_material/tiny.ckpt", "Cnn14_tiny.pth"
SEPARATOR_CHANNELS, TAGGER_CHANNELS = [2, 3, 4, 5, 6, 6], [4, 4, 4, 8, 8, 8]  # shortcuts where the released have them


def saved(holder: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(holder, buffer)
    return buffer.getvalue()


def separator_checkpoint() -> bytes:
    """A tiny ResUNet30 under the names uss's full one has (and its STFT and unused entries), as Lightning saves
    a LitSeparation: `state_dict` with `ss_model.` before each, and the training state beside it."""
    import uss.models.resunet as reference

    torch.manual_seed(11)
    ours = ResUNet30(ResUNetConfig(encoder_channels=tuple(SEPARATOR_CHANNELS))).state_dict()
    with mock.patch.object(reference, "STFT", lambda **kwargs: torch.nn.Module()), \
            mock.patch.object(reference, "ISTFT", lambda **kwargs: torch.nn.Module()):  # their set-up takes seconds
        names = [*reference.ResUNet30(input_channels=1, output_channels=1, condition_size=1).state_dict(),
                 "base.stft.conv_real.weight", "base.istft.ola_window"]
    state = {f"ss_model.{key}": ours[reference_name(key)] if reference_name(key) else torch.zeros(1)
             for key in names}
    return saved({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.0.0", "state_dict": state,
                  "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001, "params": [0]}]}]})


def tagger_checkpoint() -> bytes:
    torch.manual_seed(12)
    ours = Cnn14(Cnn14Config(channels=tuple(TAGGER_CHANNELS))).state_dict()
    state = {_numbered(key): value for key, value in ours.items()}
    state["logmel_extractor.melW"] = torch.zeros(513, 64)
    sampler = {"indexes_per_class": [np.arange(5) for _ in range(3)], "pointers_of_classes": [np.int64(2)] * 3}
    return saved({"iteration": 600000, "model": state, "sampler": sampler})  # PANNs' training state beside it


def _numbered(key: str) -> str:
    """Our conv_blocks.N. as PANNs' conv_block{N+1}."""
    if not key.startswith("conv_blocks."):
        return key
    _, number, rest = key.split(".", 2)
    return f"conv_block{int(number) + 1}.{rest}"


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {SEPARATOR_FILE: separator_checkpoint(), TAGGER_FILE: tagger_checkpoint()}


@pytest.fixture
def uss_hub(tmp_path, monkeypatch, files):
    entries = "".join(f"""
[[tiny_uss.files]]
name = "{name}"
sha256 = "{hashlib.sha256(content).hexdigest()}"
""" for name, content in files.items())
    catalogue = tmp_path / "models.toml"
    catalogue.write_text(f"""default = "tiny_uss"
default_query = "tiny_uss"

[tiny_uss]
family = "uss"
job = "query"
queries = ["labels", "audio"]
description = "a tiny random USS"
licence = "MIT"
stems = ["{{query}}", "no_{{query}}"]
repo = "{REPO_ID}"
revision = "{COMMIT}"
params = {{ separator_channels = {json.dumps(SEPARATOR_CHANNELS)}, tagger_channels = {json.dumps(TAGGER_CHANNELS)} }}
""" + entries)
    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with HubServer() as hub:
        for name, content in files.items():
            hub.add(REPO_ID, COMMIT, name, content)
        yield {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": None,
               "HF_HUB_CACHE": None, "XDG_CACHE_HOME": None, "COLUMNS": "200"}


def test_a_tiny_uss_downloads_and_separates_by_label_and_by_example(uss_hub, tmp_path):
    rng = np.random.default_rng(4)
    song, example = tmp_path / "song.wav", tmp_path / "bark.wav"
    sf.write(song, (0.1 * rng.standard_normal((int(2.5 * 44100), 2))).astype(np.float32), 44100, subtype="FLOAT")
    sf.write(example, (0.3 * rng.standard_normal(16000)).astype(np.float32), 16000)
    code, _, stderr = invoke(uss_hub, song, "--query", "drums", "--query-audio", example, "--bit-depth", "32",
                             "-o", tmp_path / "out")
    assert code == 0, stderr
    assert "query 'drums': AudioSet label 'Drum' (closest by words)" in stderr
    mix, _ = read(song)
    for stem in ("drums", "bark"):
        target, rate = read(tmp_path / "out" / "tiny_uss" / "song" / f"{stem}.wav")
        rest, _ = read(tmp_path / "out" / "tiny_uss" / "song" / f"no_{stem}.wav")
        assert rate == 44100 and target.shape == mix.shape and np.abs(target + rest - mix).max() < 1e-5
    offline = {**uss_hub, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert invoke(offline, song, "--query", "dog", "-o", tmp_path / "again")[0] == 0  # cached and verified


def test_a_file_that_is_no_uss_checkpoint_is_one_error_line(uss_hub, tmp_path, files, monkeypatch):
    import stemsplit.families.uss as family

    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((44100, 2), np.float32), 44100)
    monkeypatch.setattr(family, "SEPARATOR_PREFIX", "nothing.")
    code, _, stderr = invoke(uss_hub, song, "--query", "dog", "-o", tmp_path / "out")
    assert code == 3 and len(error_lines(stderr)) == 1 and "does not fit USS's configuration" in stderr, stderr


def test_the_shipped_entry_names_the_files_uss_downloads():
    """uss_inference.py's download table (read as text: importing it needs lightning) and uss's Cnn14 path."""
    import uss
    from urllib.parse import unquote

    info = find_model("uss")
    assert info.card.job == "query" and info.queries == ("labels", "audio") and info.family == "uss"
    downloads = unquote((Path(uss.__file__).parent / "uss_inference.py").read_text())
    checkpoint, tagger = info.files
    hub = f"https://huggingface.co/{info.repo}/resolve/{info.revision}/{checkpoint.name}"
    assert hub in downloads and f'"size": {checkpoint.size},' in downloads
    config = unquote((Path(uss.__file__).parent / "config.py").read_text())
    assert unquote(tagger.urls[0]) in config and f'"size": {tagger.size},' in config
    assert tagger.name in config


class Runs:
    """Unpickling this would run a command."""

    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def test_a_checkpoint_naming_code_is_refused(tmp_path):
    from stemsplit.errors import ModelError
    from stemsplit.families.uss import checkpoint_state

    path = tmp_path / "evil.ckpt"
    path.write_bytes(saved({"state_dict": {}, "callbacks": Runs()}))
    with pytest.raises(ModelError, match="posix.system, which a weight file must not contain|os.system"):
        checkpoint_state(path, "state_dict")
