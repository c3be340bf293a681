"""Issue 9: never a wrong result, never a lost batch. Each test names the item of the issue it covers."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import (command, environment, error_lines, files_under, interrupt_promptly, json_lines, leftovers, read,
                     tone, wait_for)
from stemsplit.audio import open_song

SOURCES = ["drums", "bass", "other", "vocals"]

TINY = ("-n", "tiny")


def read_stems(folder: Path, stems=SOURCES) -> dict[str, np.ndarray]:
    return {stem: read(folder / f"{stem}.wav")[0] for stem in stems}


# 1. --skip-existing skips only stems that came from this input with these settings

def test_same_named_inputs_on_different_shards_get_distinct_stems(tmp_path, fake_repo, in_process):
    for disc, seed in (("a", 1), ("b", 2)):
        (tmp_path / disc).mkdir()
        sf.write(tmp_path / disc / "song.wav", tone(0.3, 44100, seed=seed), 44100)
    out = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        result = in_process(tmp_path / "a", tmp_path / "b", *TINY, "--repo", fake_repo, "-o", out, "--json",
                            "--skip-existing", "--shard", shard, tmp=tmp_path / "tmp")
        assert result.returncode == 0, result.stderr
        assert [line["status"] for line in json_lines(result.stdout)] == ["done"]
    alone = {}
    for disc in ("a", "b"):
        result = in_process(tmp_path / disc / "song.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / disc,
                            tmp=tmp_path / "tmp")
        assert result.returncode == 0, result.stderr
        alone[disc] = read_stems(tmp_path / disc / "tiny" / "song")
    for disc in ("a", "b"):
        written = read_stems(out / "tiny" / f"song ({disc})")
        for stem in SOURCES:
            np.testing.assert_array_equal(written[stem], alone[disc][stem])


def run_song(in_process, tmp_path, tiny_repo, *options):
    result = in_process(tmp_path / "song.wav", *TINY, "--repo", tiny_repo, "-o", tmp_path / "out", "--json",
                        "--skip-existing", *options, tmp=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    return [line["status"] for line in json_lines(result.stdout)]


def test_skip_existing_redoes_stems_of_other_settings_or_another_song(tmp_path, fake_repo, in_process):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100, seed=1), 44100)
    assert run_song(in_process, tmp_path, fake_repo, "--bit-depth", "16") == ["done"]
    assert run_song(in_process, tmp_path, fake_repo, "--bit-depth", "16") == ["skipped"]
    assert run_song(in_process, tmp_path, fake_repo, "--bit-depth", "24") == ["done"]
    assert sf.info(tmp_path / "out" / "tiny" / "song" / "vocals.wav").subtype == "PCM_24"
    assert run_song(in_process, tmp_path, fake_repo, "--clip-mode", "clamp") == ["done"]
    sf.write(tmp_path / "song.wav", tone(0.3, 44100, seed=2), 44100)  # another song under the same name
    assert run_song(in_process, tmp_path, fake_repo, "--clip-mode", "clamp") == ["done"]
    assert run_song(in_process, tmp_path, fake_repo, "--clip-mode", "clamp") == ["skipped"]


def test_stems_without_their_record_are_not_skipped(tmp_path, fake_repo, in_process):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    assert run_song(in_process, tmp_path, fake_repo) == ["done"]
    folder = tmp_path / "out" / "tiny" / "song"
    assert sorted(p.name for p in folder.iterdir()) == sorted([".drums.wav.stemsplit.json"]
                                                              + [f"{s}.wav" for s in SOURCES])
    (folder / ".drums.wav.stemsplit.json").unlink()
    assert run_song(in_process, tmp_path, fake_repo) == ["done"]


# 2. Inputs are never taken from inside the output folder

def test_a_rerun_in_the_album_folder_does_not_separate_the_stems(tmp_path, fake_repo, in_process, monkeypatch):
    album = tmp_path / "album"
    album.mkdir()
    sf.write(album / "song.wav", tone(0.3, 44100), 44100)
    monkeypatch.chdir(album)
    first = in_process(".", *TINY, "--repo", fake_repo, "--json", tmp=tmp_path / "tmp")
    assert first.returncode == 0, first.stderr
    rerun = in_process(".", *TINY, "--repo", fake_repo, "--json", "--skip-existing", tmp=tmp_path / "tmp")
    assert rerun.returncode == 0, rerun.stderr
    assert [(line["input"], line["status"]) for line in json_lines(rerun.stdout)] == [("song.wav", "skipped")]


def test_an_input_where_this_models_stems_go_is_refused_and_the_batch_goes_on(tmp_path, fake_repo, in_process):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    first = in_process(tmp_path / "song.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out", tmp=tmp_path / "tmp")
    assert first.returncode == 0, first.stderr
    vocals = tmp_path / "out" / "tiny" / "song" / "vocals.wav"
    before = vocals.read_bytes()
    sf.write(tmp_path / "other.wav", tone(0.3, 44100, seed=1), 44100)
    again = in_process(vocals, tmp_path / "other.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out", "--json",
                       tmp=tmp_path / "tmp")
    assert again.returncode == 1, again.stderr
    assert [(line["input"], line["status"]) for line in json_lines(again.stdout)] == [
        (str(vocals), "failed"), (str(tmp_path / "other.wav"), "done")]
    assert error_lines(again.stderr) == [f"error: {vocals}: is inside the output folder {tmp_path / 'out' / 'tiny'}; "
                                         "stems are never taken as inputs"]
    assert not (tmp_path / "out" / "tiny" / "vocals").exists() and vocals.read_bytes() == before


@pytest.mark.parametrize("kind", ["folder", "glob"])
def test_a_folder_or_glob_with_audio_only_in_the_output_folder_says_so(tmp_path, fake_repo, in_process, kind):
    album = tmp_path / "album"
    (album / "out" / "tiny" / "old").mkdir(parents=True)
    sf.write(album / "out" / "tiny" / "old" / "vocals.wav", tone(0.3, 44100), 44100)
    given = album if kind == "folder" else str(album / "**" / "*.wav")
    result = in_process(given, *TINY, "--repo", fake_repo, "-o", album / "out", tmp=tmp_path / "tmp")
    assert result.returncode == 1, result.stderr
    why = "holds no audio outside the output folder" if kind == "folder" else "matches no audio outside the output folder"
    assert error_lines(result.stderr) == [f"error: {given}: {why}"]
    assert files_under(album / "out") == [album / "out" / "tiny" / "old" / "vocals.wav"]


def test_a_folder_without_audio_is_one_line_saying_so(tmp_path, fake_repo, in_process):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no audio here")
    result = in_process(tmp_path / "notes", *TINY, "--repo", fake_repo, "-o", tmp_path / "out", tmp=tmp_path / "tmp")
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [f"error: {tmp_path / 'notes'}: holds no audio outside the output folder"]


# 3. A stem never overwrites an input

def test_a_stem_that_would_overwrite_its_input_is_refused(tmp_path, fake_repo, in_process):
    song = tmp_path / "out" / "tiny" / "song.wav"
    song.parent.mkdir(parents=True)
    sf.write(song, tone(0.3, 44100), 44100)
    before = song.read_bytes()
    result = in_process(song, *TINY, "--repo", fake_repo, "-o", tmp_path / "out", "--stems", "vocals",
                        "--filename", "{track}.{ext}", tmp=tmp_path / "tmp")
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr) == [f"error: {song}: a stem would overwrite the input {song}; "
                                          "choose another --out or --filename"]
    assert song.read_bytes() == before


# 5. Stems of one song are placed all or none

def test_when_one_stem_cannot_be_renamed_the_others_are_removed(tmp_path, fake_repo, in_process):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    folder = tmp_path / "out" / "tiny" / "song"
    (folder / "vocals.wav" / "in the way").mkdir(parents=True)  # a folder, not empty: renaming onto it fails
    result = in_process(tmp_path / "song.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out",
                        tmp=tmp_path / "tmp")
    assert result.returncode == 4, result.stderr
    assert error_lines(result.stderr)[0].startswith(f"error: cannot write {folder / 'vocals.wav'}: ")
    assert sorted(p.name for p in folder.iterdir()) == ["vocals.wav"]
    assert leftovers(tmp_path / "out") == []


# 4. One input's failure does not end the batch

def test_a_name_too_long_for_the_file_system_is_shortened(tmp_path, fake_repo, in_process):
    long_song = tmp_path / ("ü" * 125 + ".wav")  # 250 bytes + ".wav"
    sf.write(long_song, tone(0.2, 44100), 44100)
    sf.write(tmp_path / "next.wav", tone(0.2, 44100, seed=1), 44100)
    result = in_process(long_song, tmp_path / "next.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out",
                        "--json", "--filename", "{track}-{stem}.{ext}", tmp=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["status"] for line in lines] == ["done", "done"]
    names = {stem: Path(written).name for stem, written in lines[0]["outputs"].items()}
    track = names["vocals"][:-len("-vocals.wav")]
    assert names == {stem: f"{track}-{stem}.wav" for stem in SOURCES} and track == "ü" * 122  # 255 bytes for vocals
    assert all(sf.info(written).frames == 8820 for written in lines[0]["outputs"].values())
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("format", ["mp3", "ogg", "m4a"])
def test_a_rate_the_format_cannot_store_fails_that_input_only(tmp_path, fake_repo, in_process, format):
    sf.write(tmp_path / "low.wav", tone(0.5, 1000), 1000)
    sf.write(tmp_path / "next.wav", tone(0.2, 44100), 44100)
    result = in_process(tmp_path / "low.wav", tmp_path / "next.wav", *TINY, "--repo", fake_repo,
                        "-o", tmp_path / "out", "--json", "--format", format, tmp=tmp_path / "tmp")
    lines = json_lines(result.stdout)
    if format == "ogg":  # Vorbis stores any rate up to 192 kHz
        assert result.returncode == 0, result.stderr
        assert [line["status"] for line in lines] == ["done", "done"]
        assert sf.info(lines[0]["outputs"]["vocals"]).samplerate == 1000
        return
    assert result.returncode == 1, result.stderr
    assert [line["status"] for line in lines] == ["failed", "done"]
    assert error_lines(result.stderr)[0] == f"error: {format} cannot store 1000 Hz audio; use wav or flac"
    assert not (tmp_path / "out" / "tiny" / "low").exists()


def test_a_tag_too_long_for_a_command_line_is_written(tmp_path, fake_repo, in_process):
    title = "=;#\\\n" + "t" * 300_000  # beyond Linux's 128 KiB limit on one argument
    with sf.SoundFile(tmp_path / "tagged.flac", "w", 44100, 2) as file:
        file.title, file.artist = title, "me"
        file.write(tone(0.2, 44100))
    result = in_process(tmp_path / "tagged.flac", *TINY, "--repo", fake_repo, "-o", tmp_path / "out",
                        "--format", "m4a", "--stems", "vocals", tmp=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    with open_song(tmp_path / "out" / "tiny" / "tagged" / "vocals.m4a") as song:
        assert song.info.tags["title"] == f"{title} (vocals)"
        assert song.info.tags["artist"] == "me"


def test_a_runtime_error_in_the_network_fails_that_input_with_a_hint(tmp_path, fake_repo, in_process, monkeypatch):
    """A GPU running out of memory (torch.OutOfMemoryError, a RuntimeError) cannot be caused on the CPU
    machines that run the tests, so the network raises it for the first song."""
    import torch

    from fake_family import Gains

    forward, calls = Gains.forward, []

    def out_of_memory_once(self, mix):
        calls.append(mix.shape)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return forward(self, mix)

    monkeypatch.setattr(Gains, "forward", out_of_memory_once)
    for name in ("first", "second"):
        sf.write(tmp_path / f"{name}.wav", tone(0.2, 44100), 44100)
    result = in_process(tmp_path / "first.wav", tmp_path / "second.wav", *TINY, "--repo", fake_repo,
                        "-o", tmp_path / "out", "--json", tmp=tmp_path / "tmp")
    assert result.returncode == 1, result.stderr
    assert [line["status"] for line in json_lines(result.stdout)] == ["failed", "done"]
    assert error_lines(result.stderr) == [
        f"error: separating {tmp_path / 'first.wav'} failed: CUDA out of memory. Tried to allocate 2.00 GiB; "
        "try a shorter --segment, --batch-size 1 or -d cpu"]
    assert not (tmp_path / "out" / "tiny" / "first").exists()


# 9. Settings whose cost has no bound are bounded, with a clear error

@pytest.mark.parametrize("option, value, message", [
    ("--overlap", "0.99999", "Invalid value for '--overlap': 0.99999 is not in the range 0<=x<=0.9."),
    ("--segment", "0.001", "Invalid value: segment must be from 0.125 to 1 seconds for this model, got 0.001"),
    ("--shifts", "3000", "Invalid value for '--shifts': 3000 is not in the range 0<=x<=20."),
])
def test_settings_out_of_bounds_are_usage_errors(tmp_path, fake_repo, in_process, option, value, message):
    sf.write(tmp_path / "song.wav", tone(1.0, 44100), 44100)
    result = in_process(tmp_path / "song.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out", option, value,
                        tmp=tmp_path / "tmp")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_bag_file_with_segment_zero_is_a_model_error(tmp_path, fake_repo, in_process):
    repo = tmp_path / "repo"
    repo.mkdir()
    for file in fake_repo.iterdir():
        (repo / file.name).write_bytes(file.read_bytes())
    (repo / "tiny.yaml").write_text("models: ['0tiny000']\nsegment: 0\n")
    sf.write(tmp_path / "song.wav", tone(0.2, 44100), 44100)
    result = in_process(tmp_path / "song.wav", *TINY, "--repo", repo, "-o", tmp_path / "out", tmp=tmp_path / "tmp")
    assert result.returncode == 3, result.stderr
    assert result.stderr == f"error: {repo / 'tiny.yaml'}: `segment:` must be a positive number of seconds, not 0\n"


# 10. Offline: one line at once, and a corrupt file in a read-only cache is a model error

def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_is_one_line_without_retries(tmp_path, monkeypatch):
    import huggingface_hub.utils._http

    from stemsplit.errors import ModelError
    from stemsplit.registry import load_bag

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                 "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    waits = []
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", waits.append)  # its back-off between retries
    with pytest.raises(ModelError) as caught:
        load_bag("htdemucs")
    assert str(caught.value) == ("model 'htdemucs' is not downloaded yet and the Hugging Face Hub cannot be "
                                 "reached; connect once to download it, or use --repo DIR with local weight files")
    assert waits == []


def test_a_corrupt_file_in_a_read_only_cache_is_a_model_error(tmp_path):
    from stemsplit.catalogue import find_model

    info = find_model("htdemucs")
    snapshot = tmp_path / "hf" / "hub" / f"models--{info.repo.replace('/', '--')}" / "snapshots" / info.revision
    snapshot.mkdir(parents=True)
    (snapshot / info.files[0].name).write_bytes(b"not the weights")
    sf.write(tmp_path / "song.wav", tone(0.2, 44100), 44100)
    script = (f"mount --bind '{tmp_path / 'hf'}' '{tmp_path / 'hf'}' && mount -o remount,bind,ro '{tmp_path / 'hf'}' "
              f"&& exec '{sys.executable}' -m stemsplit '{tmp_path / 'song.wav'}' -o '{tmp_path / 'out'}'")
    if not shutil.which("unshare"):
        pytest.skip("needs unshare to mount the cache read-only")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    if "mount" in result.stderr and result.returncode != 3:
        pytest.skip(f"cannot mount read-only here: {result.stderr.strip()}")
    assert result.returncode == 3, result.stderr
    path = snapshot / info.files[0].name
    assert result.stderr == (f"error: {info.files[0].name} of model 'htdemucs' in the cache is unreadable or "
                             f"corrupt and cannot be removed (Read-only file system): delete {path} and run again\n")


# 11. Output edges: stdout full or closed, an empty --stdout, a glob matching nothing

def stemsplit_process(*args: object, cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(command(*args), cwd=cwd, env=environment(), stderr=subprocess.PIPE, text=True, **popen)


def test_stdout_on_a_full_device_is_an_output_error(tmp_path, tiny_repo):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    with open("/dev/full", "wb") as full:
        process = stemsplit_process(tmp_path / "song.wav", *TINY, "--repo", tiny_repo, "--stdout", "vocals",
                                    cwd=tmp_path, stdout=full)
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 4, stderr
    assert stderr == "error: cannot write to stdout: No space left on device\n"


def test_stdout_into_a_closed_pipe_ends_quietly(tmp_path, tiny_repo):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read
    process = stemsplit_process(tmp_path / "song.wav", *TINY, "--repo", tiny_repo, "--stdout", "vocals",
                                cwd=tmp_path, stdout=writer)
    os.close(writer)
    _, stderr = process.communicate(timeout=300)
    assert (process.returncode, stderr) == (141, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def test_an_empty_stdout_stem_is_a_usage_error(tmp_path, fake_repo, in_process, monkeypatch):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    monkeypatch.chdir(tmp_path)
    result = in_process("song.wav", *TINY, "--repo", fake_repo, "--stdout", "", tmp=tmp_path / "tmp")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "error: Invalid value for --stdout: needs a stem name, e.g. vocals or no_vocals"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav", "tmp"]


def test_an_unknown_stdout_stem_names_stdout(tmp_path, fake_repo, in_process):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    result = in_process(tmp_path / "song.wav", *TINY, "--repo", fake_repo, "--stdout", "no_kazoo", tmp=tmp_path / "tmp")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("error: Invalid value for --stdout: unknown stem 'kazoo'; "
                                              "this model has drums, bass, other, vocals")


def test_a_glob_matching_nothing_is_reported_beside_other_inputs(tmp_path, fake_repo, in_process):
    sf.write(tmp_path / "song.wav", tone(0.3, 44100), 44100)
    pattern = str(tmp_path / "nothing" / "*.flac")
    result = in_process(tmp_path / "song.wav", pattern, *TINY, "--repo", fake_repo, "-o", tmp_path / "out", "--json",
                        tmp=tmp_path / "tmp")
    assert result.returncode == 1, result.stderr
    assert [(line["input"], line["status"]) for line in json_lines(result.stdout)] == [
        (str(tmp_path / "song.wav"), "done"), (pattern, "failed")]
    assert error_lines(result.stderr) == [f"error: {pattern}: no such file"]


# 12. The API: integer PCM, either array layout, documented error classes

def test_integer_pcm_arrays_are_scaled_like_the_floats_they_stand_for(fake_repo):
    import stemsplit

    model = stemsplit.load_model("tiny", repo=fake_repo, device="cpu")
    ints = (tone(0.3, 44100).T * 20000).astype(np.int16)  # (channels, n)
    from_floats = model.separate((ints.astype(np.float32) / 32768, 44100)).stems
    for samples in (ints, ints.T.copy(), (ints.astype(np.int32) << 16), (ints.astype(np.int32) + 32768).astype(np.uint16)):
        stems = model.separate((samples, 44100)).stems
        for name in model.stems:
            assert stems[name].shape == (2, ints.shape[1])
            np.testing.assert_allclose(stems[name], from_floats[name], atol=1e-6)


@pytest.mark.parametrize("source, message", [
    ((np.zeros((100, 100), np.float32), 44100), r"^samples of shape \(100, 100\): expected \(channels, n\), "
                                                r"\(n, channels\) or \(n,\), with at most 8 channels$"),
    ((np.zeros(100, np.float32), 0), "^the rate must be a positive whole number of Hz, got 0$"),
    ((np.zeros(100, np.float32), 44100.5), "^the rate must be a positive whole number of Hz, got 44100.5$"),
    ((np.zeros(100, complex), 44100), "^samples must be float or integer PCM, not complex128$"),
    (42, "^cannot separate a int: give a path, the bytes of an audio file, or a \\(samples, rate\\) pair$"),
])
def test_odd_api_sources_are_input_errors(fake_repo, source, message):
    import stemsplit
    from stemsplit.errors import InputError

    model = stemsplit.load_model("tiny", repo=fake_repo, device="cpu")
    with pytest.raises(InputError, match=message):
        model.separate(source)


@pytest.mark.parametrize("options, message", [
    ({"shift": 1}, "^unknown setting 'shift'; the settings are batch_size, overlap, precision, segment, shifts$"),
    ({"overlap": 2.0}, r"^overlap must be from 0 to 0.9, got 2$"),
    ({"device": "tpu"}, "^unknown device 'tpu'; use auto, cpu, cuda or mps$"),
    ({"overlap": "half"}, "not supported between instances"),
])
def test_bad_api_settings_are_settings_errors(fake_repo, options, message):
    import stemsplit
    from stemsplit.errors import SettingsError

    with pytest.raises(SettingsError, match=message) as caught:
        stemsplit.load_model("tiny", repo=fake_repo, **options)
    assert isinstance(caught.value, ValueError)  # code catching ValueError keeps working


# 13. Smaller: --version, names with newlines, `models` on a full device, no ffmpeg

def test_version(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stemsplit", "--version"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "stemsplit, version 0.1.0\n", "")


def test_a_newline_in_a_name_cannot_forge_an_error_line(tmp_path, fake_repo, in_process):
    forged = tmp_path / "song\nerror: forged.wav"
    forged.write_text("not audio")
    sf.write(tmp_path / "real.wav", tone(0.2, 44100), 44100)
    result = in_process(forged, tmp_path / "real.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out",
                        tmp=tmp_path / "tmp")
    assert result.returncode == 1
    assert not any(line.startswith("error: forged") for line in result.stderr.splitlines())
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: cannot decode {tmp_path}/song\\nerror: forged.wav: ")


def test_models_into_a_full_device_is_an_output_error(tmp_path):
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "stemsplit", "models"], stdout=full, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path, env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert (result.returncode, result.stderr) == (4, "error: cannot write to stdout: No space left on device\n")


def test_no_usable_ffmpeg_is_its_own_exit_code(tmp_path, fake_repo, in_process, monkeypatch):
    from stemsplit.audio import find_ffmpeg

    sf.write(tmp_path / "song.wav", tone(0.2, 44100), 44100)
    monkeypatch.setenv("STEMSPLIT_FFMPEG", str(tmp_path / "no-ffmpeg"))
    find_ffmpeg.cache_clear()
    try:
        result = in_process(tmp_path / "song.wav", *TINY, "--repo", fake_repo, "-o", tmp_path / "out",
                            tmp=tmp_path / "tmp")
    finally:
        monkeypatch.delenv("STEMSPLIT_FFMPEG")
        find_ffmpeg.cache_clear()
    assert result.returncode == 5
    assert result.stderr == f"error: STEMSPLIT_FFMPEG={tmp_path / 'no-ffmpeg'} is not an executable file\n"


# 6. Names that are not UTF-8 (Latin-1 archives), as inputs and in -o

def test_latin1_names_are_handled_like_any_other(tmp_path, tiny_repo):
    folder = os.fsencode(tmp_path) + b"/disque \xe9t\xe9"
    os.mkdir(folder)
    song, broken, out = folder + b"/caf\xe9.wav", folder + b"/cass\xe9.wav", os.fsencode(tmp_path) + b"/sortie \xe9"
    sf.write(song, tone(0.2, 44100), 44100)  # bytes: soundfile passes them on as they are
    with open(broken, "w") as file:
        file.write("not audio")
    result = subprocess.run([sys.executable.encode(), b"-m", b"stemsplit", folder, b"-n", b"tiny",
                             b"--repo", os.fsencode(tiny_repo), b"-o", out, b"--json", b"--format", b"flac"],
                            capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    stderr = result.stderr.decode("utf-8")  # escaped: valid UTF-8 whatever the names
    assert result.returncode == 1, stderr
    lines = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    assert [(os.fsencode(line["input"]), line["status"]) for line in lines] == [(song, "done"), (broken, "failed")]
    for stem, path in lines[0]["outputs"].items():
        assert os.fsencode(path) == out + b"/tiny/caf\xe9/" + stem.encode() + b".flac"
        assert sf.info(os.fsencode(path)).frames == 8820
    assert error_lines(stderr)[0].startswith(f"error: cannot decode {tmp_path}/disque \\udce9t\\udce9/cass\\udce9.wav: ")
    assert "Traceback" not in stderr


# 7. Signals: ffmpeg is stopped at once; Ctrl-C in start-up is 130; stale partials of killed runs are removed

def ffmpeg_children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    try:
        return [child for child in children if b"ffmpeg" in Path(f"/proc/{child}/cmdline").read_bytes()]
    except FileNotFoundError:
        return []


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie has stopped
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("signum, code, message", [
    (signal.SIGTERM, 143, "error: terminated; no partial stems were left"),
    (signal.SIGINT, 130, "error: interrupted; no partial stems were left"),
])
def test_a_signal_while_ffmpeg_decodes_stops_it_at_once(tmp_path, tiny_repo, signum, code, message):
    """The input is a FIFO that we keep open after its first 60 KB: ffmpeg waits for the rest for ever."""
    tmp, fifo = tmp_path / "tmp", tmp_path / "song.wav"
    os.mkfifo(fifo)
    wav = io.BytesIO()
    sf.write(wav, tone(60, 44100), 44100, format="WAV", subtype="FLOAT")
    writer = os.open(fifo, os.O_RDWR)  # does not wait for a reader
    os.write(writer, wav.getvalue()[:60_000])  # less than a pipe holds
    process = subprocess.Popen(command(fifo, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path / "out"),
                               cwd=tmp_path, env=environment(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def reading(child: int) -> bool:
        try:
            return any(os.readlink(fd) == str(fifo) for fd in Path(f"/proc/{child}/fd").iterdir())
        except OSError:
            return False

    try:
        wait_for(lambda: any(reading(child) for child in ffmpeg_children(process.pid)), process, "ffmpeg's reading")
        children = ffmpeg_children(process.pid)
        stderr = interrupt_promptly(process, signum)
    finally:
        os.close(writer)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, error_lines(stderr)) == (code, [message])
    assert len(children) == 1 and gone(children[0]), "ffmpeg was left running"
    assert list(tmp.iterdir()) == []


def test_a_rerun_removes_what_a_killed_run_left(tmp_path, tiny_repo, in_process):
    sf.write(tmp_path / "song.flac", tone(4.0, 44100, seed=2), 44100)
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    args = [tmp_path / "song.flac", "-n", "tiny", "--repo", tiny_repo, "-o", out]
    process = subprocess.Popen(command(*args), cwd=tmp_path, env=environment(tmp), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    folder = out / "tiny" / "song"
    try:
        wait_for(lambda: folder.is_dir() and any(p.stat().st_size > 0 for p in folder.glob(".*.partial*.f32")),
                 process, "the first stretch of stems")
    finally:
        process.kill()
        process.wait()
    left, temporary = leftovers(out), list(tmp.iterdir())
    assert len(left) == 4 and len(temporary) == 1  # the raw stems, and the decoded song
    result = in_process(*args, "--json", tmp=tmp)
    assert result.returncode == 0, result.stderr
    assert leftovers(out) == [] and list(tmp.iterdir()) == []
    assert sorted(p.name for p in folder.iterdir()) == sorted([".drums.wav.stemsplit.json"]
                                                              + [f"{s}.wav" for s in SOURCES])


def test_partials_of_a_live_process_or_another_host_are_kept(tmp_path):
    from stemsplit.files import HOST, partial_name, remove_stale

    alive = partial_name(tmp_path / "vocals.wav")  # this process's
    elsewhere = tmp_path / f".bass.wav.partial-{HOST}x-1-0123abcd"  # another host's
    for path in (alive, elsewhere):
        path.write_bytes(b"x")
    remove_stale({tmp_path})
    assert sorted(tmp_path.iterdir()) == sorted([alive, elsewhere])


def test_ctrl_c_while_starting_up_is_an_interruption(tmp_path):
    """Torch is imported as the command starts; a Ctrl-C then must exit 130 like any other."""
    sf.write(tmp_path / "song.wav", tone(0.2, 44100), 44100)
    process = subprocess.Popen(command(tmp_path / "song.wav", "-o", tmp_path / "out"), cwd=tmp_path,
                               env=environment(tmp_path / "tmp"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def importing_torch() -> bool:
        try:
            return "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
        except OSError:
            return False

    try:
        wait_for(importing_torch, process, "torch's import")
        stderr = interrupt_promptly(process, signal.SIGINT, limit=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, stderr) == (130, "error: interrupted; no partial stems were left\n")
