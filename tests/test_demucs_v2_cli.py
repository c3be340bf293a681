"""`stemsplit --checkpoint F.th song` with demucs 2.0.3 packages (Demucs v2, Conv-TasNet): recognised by the
class their pickle names, read through the restricted unpickler, their arguments bounded before building."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
import torch
from audio_separator.separator.uvr_lib_v5.demucs.model_v2 import Demucs as ReferenceDemucs
from audio_separator.separator.uvr_lib_v5.demucs.tasnet_v2 import ConvTasNet as ReferenceConvTasNet
from demucs.demucs import Demucs as V3Demucs

from helpers import error_lines, sdr, separate_tensor, stemsplit
from hub_server import FileServer
from oracle import perturbed_network
from stemsplit.errors import ModelError
from stemsplit.families import for_local
from stemsplit.family import LocalFiles
from stemsplit.catalogue import read_catalogue
from stemsplit.registry import download_bag, load_bag
from test_demucs_v2 import SMALL_DEMUCS, SMALL_TASNET, reference_separate
from v3_configs import SMALL_DEMUCS as SMALL_V3_DEMUCS

STEMS = ["drums", "bass", "other", "vocals"]
KINDS = {"demucs": (ReferenceDemucs, "demucs.model", "Demucs", SMALL_DEMUCS),
         "tasnet": (ReferenceConvTasNet, "demucs.tasnet", "ConvTasNet", SMALL_TASNET)}


def stand_in(module: str, name: str) -> type:
    """A class that pickles as demucs 2.0.3's `module.name`, as its saved packages name their class."""
    klass = type(name, (), {"__module__": module})
    sys.modules.setdefault(module, types.ModuleType(module))
    setattr(sys.modules[module], name, klass)
    return klass


def package_bytes(klass: object, arguments: dict, state: dict, /, **changes: object) -> bytes:
    """A package as demucs 2.0.3's `save_model` writes it."""
    buffer = io.BytesIO()
    package = {"klass": klass, "args": [], "kwargs": arguments, "state": state, "training_args": {"epochs": 1}}
    torch.save({**package, **changes}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path]]:
    folder = tmp_path_factory.mktemp("packages")
    made = {}
    for seed, (kind, (reference_class, module, name, kwargs)) in enumerate(KINDS.items()):
        reference = perturbed_network(reference_class, kwargs, seed)
        path = folder / f"{kind}.th"
        path.write_bytes(package_bytes(stand_in(module, name), kwargs, reference.state_dict()))
        made[kind] = (reference, path)
    return made


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """2.2 s at 48 kHz: the networks run at 44.1 kHz, the stems come back at 48 kHz."""
    rate = 48000
    t = np.arange(int(2.2 * rate) + 3) / rate
    audio = np.stack([0.4 * np.sin(2 * np.pi * 110 * t), 0.3 * np.sin(2 * np.pi * 440 * t + 1)], axis=1)
    audio += 0.05 * np.random.default_rng(0).standard_normal(audio.shape)
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, audio.astype(np.float32), rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_package_writes_four_stems_at_the_input_rate_and_length(tmp_path, packages, song, kind):
    result = stemsplit("--checkpoint", packages[kind][1], song, "-o", tmp_path, "--bit-depth", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / kind / "song").glob("*.wav"))
    assert [path.stem for path in written] == sorted(STEMS)
    for path in written:
        info = sf.info(path)
        assert (info.samplerate, info.frames, info.channels) == (48000, sf.info(song).frames, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_package_separates_as_the_reference(packages, kind):
    reference, path = packages[kind]
    bag = load_bag(None, checkpoint=path)
    assert bag.stems == STEMS and bag.families == {"demucs_v2" if kind == "demucs" else "tasnet"}
    mix = 0.3 * torch.randn(2, int(1.5 * 44100), generator=torch.Generator().manual_seed(1))
    assert sdr(separate_tensor(bag, mix), reference_separate(reference, mix)) > 100


def test_v3_and_v4_packages_are_not_taken_for_demucs_2(tmp_path):
    v3 = perturbed_network(V3Demucs, SMALL_V3_DEMUCS, 0)
    path = tmp_path / "v3.th"
    path.write_bytes(package_bytes(V3Demucs, SMALL_V3_DEMUCS, v3.state_dict()))
    with pytest.raises(ModelError, match="no model family recognises"):
        for_local(LocalFiles(path))


def test_the_class_a_package_names_decides_its_family(tmp_path, packages):
    reference, _ = packages["demucs"]
    path = tmp_path / "swapped.th"
    path.write_bytes(package_bytes(stand_in("demucs.tasnet", "ConvTasNet"), SMALL_DEMUCS, reference.state_dict()))
    assert for_local(LocalFiles(path)).name == "tasnet"
    with pytest.raises(ModelError, match="unknown model options"):
        load_bag(None, checkpoint=path)


class SystemCall:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("where", ["kwargs", "state", "training_args"])
def test_a_package_that_would_run_code_is_refused_and_runs_nothing(tmp_path, packages, where):
    reference, _ = packages["demucs"]
    sentinel = tmp_path / "sentinel"
    content = package_bytes(stand_in("demucs.model", "Demucs"), SMALL_DEMUCS, reference.state_dict(),
                            **{where: SystemCall(sentinel)})
    (tmp_path / "evil.th").write_bytes(content)
    with pytest.raises(ModelError, match="which a weight file must not contain"):
        load_bag(None, checkpoint=tmp_path / "evil.th")
    assert not sentinel.exists()


@pytest.mark.parametrize("kind, kwargs, words", [
    ("demucs", {"channels": 10**9}, "channels is 1000000000, more than the 256 stemsplit allows"),
    ("demucs", {"depth": 10**9}, "depth is 1000000000, more than the 8 stemsplit allows"),
    ("demucs", {"depth": 8}, r"stride \*\* depth is 65536, more than the 16384"),
    ("demucs", {"channels": 256, "growth": 4.0}, "weights, more than the 532,000,000 stemsplit allows"),
    ("demucs", {"lstm_layers": 2.5}, "lstm_layers must be an integer of at least 0"),
    ("demucs", {"sources": []}, "sources must be 1 to 32 distinct names"),
    ("tasnet", {"H": 10**7}, "H is 10000000, more than the 2048 stemsplit allows"),
    ("tasnet", {"X": 40}, "X is 40, more than the 16 stemsplit allows"),
    ("tasnet", {"P": 4}, "P must be odd"),
])
def test_package_arguments_are_bounded_before_building(tmp_path, packages, kind, kwargs, words):
    reference_class, module, name, small = KINDS[kind]
    content = package_bytes(stand_in(module, name), {**small, **kwargs}, packages[kind][0].state_dict())
    (tmp_path / "big.th").write_bytes(content)
    with pytest.raises(ModelError, match=words):
        load_bag(None, checkpoint=tmp_path / "big.th")


def test_a_bad_package_is_one_error_line_from_the_command(tmp_path, packages, song):
    content = package_bytes(stand_in("demucs.model", "Demucs"), {**SMALL_DEMUCS, "channels": 10**9},
                            packages["demucs"][0].state_dict())
    (tmp_path / "big.th").write_bytes(content)
    result = stemsplit("--checkpoint", tmp_path / "big.th", song, "-o", tmp_path, cwd=tmp_path)
    assert result.returncode == ModelError.exit_code, result.stderr
    assert len(error_lines(result.stderr)) == 1
    assert "channels is 1000000000, more than the 256 stemsplit allows" in error_lines(result.stderr)[0]


# The catalogue's demucs 2.0.3 files: bare state dicts at URLs, verified by the SHA-256 prefix their names carry

RELEASED_FILES = {"demucs": "e07c671f", "demucs48_hq": "28a1282c", "demucs_extra": "3646af93",
                  "tasnet": "beb46fac", "tasnet_extra": "df3777b2"}


def test_catalogue_entries_name_the_released_files():
    catalogue = read_catalogue()
    scientific = "the author wrote the Demucs weights are not covered by the MIT license and are provided only " \
                 "for scientific purposes (facebookresearch/demucs#327)"
    for name, prefix in RELEASED_FILES.items():
        info = catalogue[name]
        (file,) = info.files
        assert (file.name, file.sha256_prefix, file.sha256) == (f"{name}-{prefix}.th", prefix, None)
        assert file.urls == (f"https://dl.fbaipublicfiles.com/demucs/v3.0/{name}-{prefix}.th",)
        assert info.family == ("tasnet" if name.startswith("tasnet") else "demucs_v2") and info.licence.startswith(scientific)
        assert "CC BY-NC 4.0" in info.licence and "Hub" not in info.licence  # these files are not on the Hub
    assert dict(catalogue["demucs48_hq"].params)["channels"] == 48 and dict(catalogue["tasnet"].params)["X"] == 10


@pytest.mark.parametrize("kind", KINDS)
def test_a_released_state_dict_from_a_url_separates_as_the_reference(tmp_path, monkeypatch, packages, kind):
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    reference, _ = packages[kind]
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    content = buffer.getvalue()
    prefix = hashlib.sha256(content).hexdigest()[:8]
    entry = read_catalogue()["demucs" if kind == "demucs" else "tasnet"]
    with FileServer() as server:
        server.files["/v3.0/w.th"] = content
        file = replace(entry.files[0], name=f"{kind}-{prefix}.th", urls=(server.url("/v3.0/w.th"),),
                       sha256_prefix=prefix)
        info = replace(entry, files=(file,), params=tuple({**KINDS[kind][3], "sources": STEMS}.items()))
        bag = download_bag(info)
        wrong = replace(info, files=(replace(file, sha256_prefix="0" * 8),))
        monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "other-cache"))
        with pytest.raises(ModelError, match="does not begin with 00000000 as its name says"):
            download_bag(wrong)
    mix = 0.3 * torch.randn(2, int(1.2 * 44100), generator=torch.Generator().manual_seed(2))
    assert sdr(separate_tensor(bag, mix), reference_separate(reference, mix)) > 100
