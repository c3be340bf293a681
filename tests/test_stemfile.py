"""Native Instruments stem files: read back with ffmpeg, the manifest read the way DJ software finds it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from mutagen.mp4 import Atoms

from helpers import load_audio, sdr, separate_tensor, stemsplit, tone
from oracle import perturbed_reference, safetensors_file
from stemsplit.audio import find_ffmpeg
from stemsplit.errors import OutputError
from stemsplit.registry import load_bag
from stemsplit.stemfile import add_stem_box, slot_sources

NI_STEMS = [("Drums", "#009E73"), ("Bass", "#D55E00"), ("Other", "#CC79A7"), ("Vocals", "#56B4E9")]
SIX = ["drums", "bass", "other", "vocals", "guitar", "piano"]


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory) -> Path:
    """`tiny` plus `six` (6 stems) and `pair` (vocals, no_vocals): small random-weight networks."""
    from conftest import TINY_KWARGS

    folder = tmp_path_factory.mktemp("stem-repo")
    for file in tiny_repo.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    for name, sources in (("six", SIX), ("pair", ["vocals", "no_vocals"])):
        kwargs = {**TINY_KWARGS, "sources": sources}
        (folder / f"0{name}.safetensors").write_bytes(safetensors_file(perturbed_reference(kwargs, seed=3), kwargs))
        (folder / f"{name}.yaml").write_text(f"models: ['0{name}']\n")
    return folder


def streams(path: Path) -> list[str]:
    """ffmpeg's description of each stream of a file."""
    info = subprocess.run([find_ffmpeg()[0], "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return re.findall(r"Stream #0:\d+.*", info.stderr)


def decode(path: Path, index: int, folder: Path) -> tuple[np.ndarray, int]:
    """Audio stream `index` of a file, decoded by ffmpeg, as float32 (channels, n) and its rate."""
    wav = folder / f"stream{index}.wav"
    subprocess.run([find_ffmpeg()[0], "-v", "error", "-y", "-i", str(path), "-map", f"0:a:{index}",
                    "-c:a", "pcm_f32le", str(wav)], check=True)
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    return audio.T, rate


def manifest(path: Path) -> dict:
    """The JSON in the file's moov/udta/stem box, found with mutagen's MP4 box reader."""
    with open(path, "rb") as file:
        found, data = Atoms(file).path(b"moov", b"udta", b"stem")[-1].read(file)
    assert found
    return json.loads(data)


def rescaled(audio: np.ndarray) -> np.ndarray:
    """The default clip mode: a stream whose peak exceeds 1 / 1.01 is scaled down."""
    return audio / max(1.01 * np.abs(audio).max(), 1.0)


def test_aac_stem_file_has_ni_layout_lengths_and_manifest(tmp_path, repo):
    song = tmp_path / "my song.wav"
    sf.write(song, tone(2.5, 48000), 48000, subtype="FLOAT")
    result = stemsplit(song, "-n", "tiny", "--repo", repo, "-o", tmp_path / "out", "--format", "stem", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "tiny").iterdir()) == [".my song.stem.mp4.stemsplit.json",
                                                                             "my song.stem.mp4"]
    path = tmp_path / "out" / "tiny" / "my song.stem.mp4"

    described = streams(path)
    assert len(described) == 5
    assert all("Audio: aac (LC)" in line and "44100 Hz, stereo" in line for line in described)
    assert ["(default)" in line for line in described] == [True, False, False, False, False]
    assert [(stem["name"], stem["color"]) for stem in manifest(path)["stems"]] == NI_STEMS

    mix, _ = load_audio(song, 44100)  # the song as the model hears it, 48 kHz brought to 44.1 kHz
    separated = separate_tensor(load_bag("tiny", repo), torch.from_numpy(mix)).numpy()
    expected = [mix, *separated]  # the tiny model's stems are drums, bass, other, vocals: NI's order
    decoded = [decode(path, index, tmp_path)[0] for index in range(5)]
    assert {decode(path, index, tmp_path)[1] for index in range(5)} == {44100}
    for index, audio in enumerate(decoded):
        assert abs(audio.shape[1] - 110_250) <= 1 and audio.shape[0] == 2  # 2.5 s at 44.1 kHz
        n = min(audio.shape[1], 110_250)
        scores = [sdr(audio[:, :n], rescaled(reference)[:, :n]) for reference in expected]
        assert scores[index] > 10, scores  # AAC at 256 kb/s keeps these noisy random-network stems to 14-22 dB
        assert int(np.argmax(scores)) == index, scores  # each stream is the stem NI expects there


def test_alac_stem_file_is_lossless_and_folds_six_stems(tmp_path, repo):
    song = tmp_path / "six.flac"
    sf.write(song, tone(1.5, 44100), 44100, subtype="PCM_24")
    result = stemsplit(song, "-n", "six", "--repo", repo, "-o", tmp_path / "out", "--format", "stem",
                       "--stem-codec", "alac", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "six" / "six.stem.mp4"
    assert all("Audio: alac" in line and "(24 bit)" in line for line in streams(path))
    assert [(stem["name"], stem["color"]) for stem in manifest(path)["stems"]] == NI_STEMS

    mix, _ = load_audio(song)
    separated = separate_tensor(load_bag("six", repo), torch.from_numpy(mix)).numpy()
    drums, bass, other, vocals, guitar, piano = separated
    expected = [mix, drums, bass, other + guitar + piano, vocals]
    for index, reference in enumerate(expected):
        audio, rate = decode(path, index, tmp_path)
        assert rate == 44100 and audio.shape == mix.shape
        np.testing.assert_allclose(audio, rescaled(reference), atol=2**-23 + 1e-5)  # 24-bit steps


def encode_tone(path: Path, *options: str) -> None:
    """A short AAC file made by ffmpeg with no metadata (so no user-data box) and `options`."""
    wav = path.with_suffix(".wav")
    sf.write(wav, tone(0.3, 44100), 44100, subtype="FLOAT")
    subprocess.run([find_ffmpeg()[0], "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-map_metadata", "-1",
                    "-fflags", "+bitexact", "-flags:a", "+bitexact", *options, str(path)], check=True)


def test_stem_box_is_added_where_there_was_no_user_data_and_the_audio_is_untouched(tmp_path):
    path = tmp_path / "plain.mov"
    encode_tone(path)
    with open(path, "rb") as file:
        assert [atom.name for atom in Atoms(file)[b"moov"].children] == [b"mvhd", b"trak"]
    before = decode(path, 0, tmp_path)[0]
    add_stem_box(path, b'{"stems": []}')
    assert manifest(path) == {"stems": []}
    np.testing.assert_array_equal(decode(path, 0, tmp_path)[0], before)


def test_stem_box_refused_when_the_movie_box_is_not_last(tmp_path):
    path = tmp_path / "fast.mp4"
    encode_tone(path, "-movflags", "+faststart")
    original = path.read_bytes()
    with pytest.raises(OutputError, match="^cannot write .*fast.mp4: ffmpeg did not put the movie box last$"):
        add_stem_box(path, b"{}")
    assert path.read_bytes() == original


def test_stem_slots_for_each_kind_of_model():
    assert slot_sources(["drums", "bass", "other", "vocals"]) == [[0], [1], [2], [3]]
    assert slot_sources(["vocals", "other", "bass", "drums"]) == [[3], [2], [1], [0]]
    assert slot_sources(SIX) == [[0], [1], [2, 4, 5], [3]]
    with pytest.raises(ValueError) as refused:
        slot_sources(["vocals", "no_vocals"])
    assert str(refused.value) == "stem files need drums, bass, other and vocals stems; this model has vocals, no_vocals"


@pytest.mark.parametrize(("model", "options", "message"), [
    ("pair", (), "Invalid value for --format: stem files need drums, bass, other and vocals stems; "
                 "this model has vocals, no_vocals"),
    ("tiny", ("--stems", "vocals"), "--format stem writes the mix and all four stems; drop --stems/--two-stems"),
    ("tiny", ("--stem-codec", "alac", "--bit-depth", "32"),
     "Invalid value for --bit-depth: alac stem files support 16 or 24 bits"),
])
def test_stem_files_refused_with_a_usage_error(tmp_path, repo, model, options, message):
    song = tmp_path / "song.wav"
    sf.write(song, tone(0.5, 44100), 44100)
    result = stemsplit(song, "-n", model, "--repo", repo, "-o", tmp_path / "out", "--format", "stem", *options,
                       cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_an_output_error_and_leaves_nothing(tmp_path, repo):
    song = tmp_path / "song.wav"
    sf.write(song, tone(0.5, 44100), 44100)
    (tmp_path / "out").mkdir()
    blocker = tmp_path / "out" / "tiny"  # a file where the model's folder should go
    blocker.write_text("not a folder")
    result = stemsplit(song, "-n", "tiny", "--repo", repo, "-o", tmp_path / "out", "--format", "stem", cwd=tmp_path)
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [f"error: cannot write to {blocker.resolve()}: File exists"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny"] and blocker.read_text() == "not a folder"
