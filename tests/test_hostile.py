"""Hostile files, configs, caches and streams (issue 22): each a clear error or the right result,
never a wrong result, a hang or a traceback."""

# ruff: noqa: F811 - fixtures imported from the other test files are redefined as parameters

from __future__ import annotations

import json
import re
import os
import shlex
import struct
import subprocess
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import huggingface_hub.utils._http
import numpy as np
import pytest
import soundfile as sf
import torch

from stemsplit.hub import VERIFICATIONS, hub_cache
from stemsplit.errors import InputError, ModelError, SettingsError
from stemsplit.registry import download_bag, is_cached, load_bag
from stemsplit import unpickling
from stemsplit.unpickling import load_restricted
from test_registry import (COMMIT, REPO_ID, SIGNATURE, assert_same_weights, hub, reference,  # noqa: F401
                           tiny_info, weights)


# 2. A model pinned to a branch: the Hub cache keeps refs/BRANCH -> commit, snapshots/commit/FILE

def branch_pinned(weights: bytes):
    return replace(tiny_info(weights), revision="main")


def test_branch_pinned_model_is_cached_and_loads_with_the_hub_unreachable(hub, reference, weights, monkeypatch):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = branch_pinned(weights)
    assert not is_cached(info)
    heard = []
    download_bag(info, heard.append)
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    assert (folder / "refs" / "main").read_text() == COMMIT
    assert is_cached(info)
    hub.stop()
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", lambda seconds: None)
    assert_same_weights(download_bag(info, heard.append), reference)
    assert heard == [f"downloading model 'tiny' (licence: MIT): {SIGNATURE}.safetensors, {len(weights) / 1e6:.1f} MB"]


def test_a_ref_that_is_not_a_commit_is_not_cached(hub, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = branch_pinned(weights)
    download_bag(info)
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    (folder / "refs" / "main").write_text("../../../elsewhere")
    assert not is_cached(info)


# 13. A corrupt verification record is never trusted, nor a traceback

@pytest.mark.parametrize("record", ['{"main/FILE": "oops"}', '{"main/FILE": {"commit": 5}}', '[1, 2]',
                                    '{"main/FILE": {"commit": "../x", "sha256": "00"}}', '\xff\xfe'])
def test_corrupt_verification_record_is_not_trusted(hub, reference, weights, record):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = replace(tiny_info(weights), revision="main",
                   files=tuple(replace(file, sha256=None) for file in tiny_info(weights).files))
    record = record.replace("FILE", f"{SIGNATURE}.safetensors")
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    folder.mkdir(parents=True)
    (folder / VERIFICATIONS).write_text(record, encoding="latin-1")
    assert not is_cached(info)
    assert_same_weights(download_bag(info), reference)
    assert json.loads((folder / VERIFICATIONS).read_text())[f"main/{SIGNATURE}.safetensors"]["commit"] == COMMIT
    assert is_cached(info)


# 4. The unpickler builds no Fraction whose construction computes without bound

class PickledAs:
    """Pickles as `Fraction(*args)`, the way any Python writes one (3.8: its text; 3.11: its terms)."""

    def __init__(self, *args: object):
        self.args = args

    def __reduce__(self):
        return Fraction, self.args


def load_in_a_subprocess(path: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from stemsplit.unpickling import load_restricted; from stemsplit.errors import ModelError\n"
            "try:\n    print(repr(load_restricted(sys.argv[1])))\n"
            "except ModelError as error:\n    print('error:', error)")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)


def test_pickled_fractions_of_real_packages_load(tmp_path):
    path = tmp_path / "segment.th"
    torch.save({"old": PickledAs("39/5"), "new": PickledAs(39, 5), "plain": Fraction(39, 5)}, path)
    assert load_restricted(path) == {"old": Fraction(39, 5), "new": Fraction(39, 5), "plain": Fraction(39, 5)}
    assert unpickling.bounded_fraction("7.8") == Fraction(39, 5)
    assert unpickling.bounded_fraction("1e-05") == Fraction(1, 100000)


def test_a_pickled_fraction_of_a_huge_exponent_is_refused_at_once(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"segment": PickledAs("1e2000000000")}, path)
    started = time.monotonic()
    try:
        result = load_in_a_subprocess(path)
    except subprocess.TimeoutExpired:
        pytest.fail("loading the pickle did not finish")
    assert result.stdout.startswith(f"error: cannot load {path}: ") and "fraction" in result.stdout
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("args", [("1" * 5000,), (10**40, 3), ("1/0",), (float("inf"),)])
def test_other_unbounded_pickled_fractions_are_refused(tmp_path, args):
    path = tmp_path / "evil.ckpt"
    torch.save({"segment": PickledAs(*args)}, path)
    with pytest.raises(ModelError, match=f"cannot load {path}: .*fraction"):
        load_restricted(path)


def test_an_unbounded_segment_in_a_bag_file_is_a_model_error(tmp_path):
    (tmp_path / "mine.yaml").write_text("models: [abc]\nsegment: 1e400\n")  # 1e2000000000 would hang the old code
    with pytest.raises(ModelError, match="not a valid bag file.*not a plain fraction"):
        load_bag("mine", repo=tmp_path)


# 3 and 5. Configs: aliases expanded past a budget, undecodable text, deep nesting are model errors naming the file

def small_config(tmp_path: Path) -> str:
    from roformer_oracle import roformer_files

    return roformer_files(tmp_path, 1, 4)[2].read_text()


def laughs(levels: int) -> str:
    """Each level ten aliases of the one before: 10**levels values once expanded, a few hundred bytes written."""
    lines = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]" for level in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


HOSTILE_CONFIGS = {
    "aliases": (lambda config: laughs(7) + config.replace("dim: 16", "dim: *l7"),
                "more than 100000 values once its aliases are expanded"),
    "latin-1": (lambda config: "# réglages\n" + config, "not UTF-8 text"),
    "binary": (lambda config: "\udcff\udcd8\x00\x01" + config, "not UTF-8 text"),
    "nesting": (lambda config: config + "extra: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 32 levels"),
}


@pytest.mark.parametrize("kind", HOSTILE_CONFIGS)
def test_hostile_configs_are_model_errors_naming_the_file(tmp_path, kind):
    from stemsplit.families.roformer import read_config

    make, message = HOSTILE_CONFIGS[kind]
    path = tmp_path / "hostile.yaml"
    encoding = "utf-8" if kind == "aliases" else "latin-1"
    path.write_bytes(make(small_config(tmp_path)).encode(encoding, "surrogateescape"))
    with pytest.raises(ModelError, match=f"{path} is not a valid model config: .*{message}") as caught:
        read_config(path)
    assert len(str(caught.value)) < 300


def test_a_config_with_a_few_aliases_still_loads(tmp_path):
    from stemsplit.families.roformer import read_config

    path = tmp_path / "aliased.yaml"
    config = small_config(tmp_path).replace("audio: {sample_rate: 44100}", "audio: {sample_rate: &rate 44100}")
    path.write_text(config.replace("model: {dim: 16,", "model: {dim: 16, sample_rate: *rate,"))
    assert read_config(path).sample_rate == 44100


def test_an_alias_bomb_in_a_config_is_one_error_line_from_the_cli(tmp_path):
    from helpers import stemsplit

    checkpoint = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, checkpoint)
    config = tmp_path / "bomb.yaml"
    config.write_text(laughs(7) + small_config(tmp_path).replace("num_bands: 8", "num_bands: *l7"))
    song = tmp_path / "song.wav"
    song.write_bytes(b"")  # never read: the model loads first
    result = stemsplit("--checkpoint", checkpoint, "--config", config, song, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1 and lines[0].startswith(f"error: {config} is not a valid")


def test_a_deeply_nested_bag_file_is_a_model_error(tmp_path):
    (tmp_path / "deep.yaml").write_text("models: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ModelError, match="deep.yaml is not a valid bag file: it nests deeper than 32 levels"):
        load_bag("deep", repo=tmp_path)


# 6. Sizes a config gives are bounded before anything is built from them

@pytest.mark.parametrize("old, new, key", [
    ("dim: 16", "dim: 1000000", "model.dim"),
    ("dim: 16", "dim: 16, mlp_expansion_factor: 100000", "model.mlp_expansion_factor"),
    ("stft_hop_length: 441", "stft_hop_length: 441, stft_n_fft: 10000000", "model.stft_n_fft"),
    ("num_bands: 8", "num_bands: 1000000", "model.num_bands"),
    ("depth: 1,", "depth: 1000000,", "model.depth"),
    ("num_overlap: 4", "num_overlap: 44100", "inference.num_overlap"),
    ("dim_t: 101", "dim_t: 10000000", "inference.dim_t"),
    ("sample_rate: 44100", "sample_rate: 1000000000", "audio.sample_rate"),
])
def test_oversized_configs_are_refused_before_building(tmp_path, old, new, key):
    from stemsplit.families.roformer import read_config

    config = small_config(tmp_path)
    assert old in config
    path = tmp_path / "big.yaml"
    path.write_text(config.replace(old, new, 1))
    started = time.monotonic()
    with pytest.raises(ModelError, match=f"big.yaml: {key} is .*, more than the .* stemsplit allows"):
        read_config(path)
    assert time.monotonic() - started < 5


def test_the_published_configs_are_within_the_bounds():
    from stemsplit.catalogue import CONFIGS, read_catalogue
    from stemsplit.families import mdxc, roformer

    entries = [info for info in read_catalogue().values() if info.config]
    networks = [roformer.read_config(CONFIGS / info.config).network for info in entries if "roformer" in info.family]
    assert len(networks) == 8 and max(network.dim for network in networks) == 512  # viperx's: the bounds' measure
    assert max(network.depth for network in networks) == 12 and max(network.num_stems for network in networks) == 6
    [mdx23c] = [mdxc.read_config(CONFIGS / info.config) for info in entries if info.family == "mdx23c"]
    assert mdx23c.network.n_fft == 8192 and mdx23c.sources == ("vocals", "instrumental")


# 1. An input's rate is bounded before the resampler is sized from it

def wav_claiming(path: Path, rate: int, frames: int = 4000) -> Path:
    """A float32 stereo WAV whose header claims `rate`, the data of a short song."""
    data = (0.1 * np.sin(np.arange(2 * frames) / 7)).astype("<f4").tobytes()
    header = b"fmt " + struct.pack("<IHHIIHH", 16, 3, 2, rate % 2**32, rate * 8 % 2**32, 8, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(header) + 8 + len(data)) + b"WAVE" + header
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


@pytest.mark.parametrize("rate", [10**9, 800000, 10])
def test_an_absurd_input_rate_is_an_input_error(tmp_path, rate):
    from helpers import load_audio

    path = wav_claiming(tmp_path / "odd.wav", rate)
    with pytest.raises(InputError, match=f"odd.wav claims a sample rate of {rate} Hz; stemsplit reads 1000 to 768000"):
        load_audio(path)


def test_a_high_but_real_input_rate_is_read(tmp_path):
    from helpers import load_audio

    audio, info = load_audio(wav_claiming(tmp_path / "dxd.wav", 352800, frames=35280))
    assert info.sample_rate == 352800 and audio.shape == (2, 4410)


# 15. A closed or full stdout: exit 4 and one line on stderr, before any work

def stemsplit_with_stdout(redirect: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = " ".join(shlex.quote(str(arg)) for arg in (sys.executable, "-m", "stemsplit", *args))
    return subprocess.run(["bash", "-c", f"exec {command} {redirect}"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


@pytest.mark.parametrize("args", [("models",), ("--stdout", "vocals", "song.wav"), ("--json", "song.wav")])
def test_a_closed_stdout_is_exit_4_in_one_line_before_any_work(tmp_path, args):
    wav_claiming(tmp_path / "song.wav", 44100)
    result = stemsplit_with_stdout(">&-", *args, cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().splitlines() == ["error: cannot write to stdout: it is closed"]
    assert not (tmp_path / "separated").exists()


def test_a_full_stdout_is_exit_4_in_one_line(tmp_path):
    result = stemsplit_with_stdout(">/dev/full", "models", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().splitlines() == ["error: cannot write to stdout: No space left on device"]


# 14. The API refuses what the CLI refuses: config without checkpoint, a name or repo beside a checkpoint

@pytest.mark.parametrize("arguments, message", [
    ({"config": "x.yaml"}, "checkpoint and config go together"),
    ({"checkpoint": "x.ckpt"}, "checkpoint and config go together"),
    ({"name": "htdemucs", "checkpoint": "x.ckpt", "config": "x.yaml"}, "either checkpoint with config, or"),
    ({"repo": ".", "checkpoint": "x.ckpt", "config": "x.yaml"}, "either checkpoint with config, or"),
])
def test_load_model_refuses_what_it_would_drop(tmp_path, monkeypatch, arguments, message):
    import stemsplit

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # nothing cached: no model may load in its place
    with pytest.raises(SettingsError, match=message):
        stemsplit.load_model(**arguments, device="cpu")


@pytest.mark.parametrize("checkpoint", ["x.th", "folder"])
def test_load_model_takes_what_stands_alone_without_config_as_the_cli_does(tmp_path, in_process, checkpoint):
    """A folder (Spleeter's) or a demucs package needs no config at either front door: both go on to look for
    the files (here: a folder no family recognises, a package that is not there), a model error."""
    import stemsplit

    (tmp_path / "folder").mkdir()
    path = tmp_path / checkpoint
    with pytest.raises(ModelError, match="no model family recognises|does not exist"):
        stemsplit.load_model(checkpoint=path, device="cpu")
    sf.write(tmp_path / "song.wav", np.zeros((441, 2)), 44100)
    result = in_process("--checkpoint", path, tmp_path / "song.wav", "-o", tmp_path / "out", tmp=tmp_path / "tmp")
    assert result.returncode == ModelError.exit_code and "go together" not in result.stderr, result.stderr


# 11. Non-finite network output fails that input, naming the model, never silent stems

def poisoned_checkpoint(tmp_path: Path, value: float) -> tuple[Path, Path]:
    from roformer_oracle import roformer_files

    _, checkpoint, config, _ = roformer_files(tmp_path, 1, 4)
    state = torch.load(checkpoint)["state_dict"]
    torch.save({"state_dict": {key: torch.full_like(weight, value) for key, weight in state.items()}}, checkpoint)
    return checkpoint, config


def test_nan_weights_fail_the_input_in_one_line_and_write_nothing(tmp_path):
    from helpers import stemsplit, tone

    checkpoint, config = poisoned_checkpoint(tmp_path, float("nan"))
    sf.write(tmp_path / "song.wav", tone(1.5, 44100), 44100)
    result = stemsplit("--checkpoint", checkpoint, "--config", config, "song.wav", "-o", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.fullmatch(r"error: model 'small1' gave \d+ NaN and 0 infinite values for "
                                             r"this input, so no stems were written; .*", errors[0]), errors
    assert not list((tmp_path / "out").rglob("*.wav"))


def test_infinite_weights_raise_an_input_error_from_the_engine(tmp_path):
    from helpers import separate_tensor

    checkpoint, config = poisoned_checkpoint(tmp_path, float("inf"))
    bag = load_bag(checkpoint=checkpoint, config=config)
    with pytest.raises(InputError, match=r"model 'small1' gave \d+ NaN and \d+ infinite values"):
        separate_tensor(bag, 0.1 * torch.ones(2, 20000))


# 12. A local checkpoint is known by its SHA-256, hashed once

def test_a_checkpoint_copied_over_with_the_same_size_and_time_is_another_identity(tmp_path, monkeypatch):
    from stemsplit import family

    checkpoint, config = tmp_path / "model.ckpt", tmp_path / "model.yaml"
    checkpoint.write_bytes(b"weights one")
    config.write_text("model: {}\n")
    before = family.LocalFiles(checkpoint, config).identity
    stat = checkpoint.stat()
    checkpoint.write_bytes(b"weights two")  # what `cp -p other.ckpt model.ckpt` leaves: same size and time
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hashed = []
    monkeypatch.setattr(family, "sha256_of", lambda path: hashed.append(path) or f"digest of {path.read_bytes()}")
    after = family.LocalFiles(checkpoint, config).identity
    assert after != before and "weights two" in after
    assert family.LocalFiles(checkpoint, config).identity == after
    assert hashed == [checkpoint]  # the config's digest and the checkpoint's second were remembered


# 7. A stem file's tags go through an ffmetadata file: one too long for a command line is written

def test_a_stem_file_keeps_a_tag_too_long_for_a_command_line_and_the_batch_goes_on(tmp_path, fake_repo, in_process):
    from helpers import tone
    from stemsplit.audio import open_song

    title = "=;#\\\n" + "t" * 300_000  # beyond Linux's 128 KiB limit on one argument
    with sf.SoundFile(tmp_path / "a.flac", "w", 44100, 2) as file:
        file.title, file.artist = title, "me"
        file.write(tone(0.2, 44100))
    sf.write(tmp_path / "b.wav", tone(0.2, 44100), 44100)
    result = in_process(tmp_path / "a.flac", tmp_path / "b.wav", "-n", "tiny", "--repo", fake_repo,
                        "-o", tmp_path / "out", "--format", "stem", tmp=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "tiny" / "b.stem.mp4").is_file()
    with open_song(tmp_path / "out" / "tiny" / "a.stem.mp4") as song:
        assert (song.info.tags["title"], song.info.tags["artist"]) == (title, "me")
