"""The `stemsplit` command end to end, as a user runs it (subprocess: exit codes and stderr matter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import environment, load_audio, read, separate_tensor, stemsplit, tone
from stemsplit.batch import safe_name, stem_paths
from stemsplit.cli import pick_stems
from stemsplit.registry import load_bag

SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "my song.wav"
    sf.write(path, tone(2.5, 48000), 48000, subtype="FLOAT")
    return path


def test_stems_match_the_engine_at_the_input_rate_and_length(tmp_path, song, tiny_repo):
    result = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path / "out", "--bit-depth", "32",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "tiny" / "my song"
    assert sorted(p.name for p in folder.iterdir()) == sorted([".drums.wav.stemsplit.json"]
                                                              + [f"{s}.wav" for s in SOURCES])

    bag = load_bag("tiny", tiny_repo)
    mix, info = load_audio(song)
    separated = separate_tensor(bag, torch.from_numpy(mix))
    from stemsplit.audio import resample
    for index, name in enumerate(bag.stems):
        written, rate = read(folder / f"{name}.wav")
        assert rate == 48000 and written.shape == (2, info.frames)
        expected = resample(separated[index], 44100, 48000)[:, :info.frames].numpy()
        peak = max(1.01 * np.abs(expected).max(), 1.0)  # the default clip mode: rescale
        np.testing.assert_allclose(written, expected / peak, atol=1e-5)


def test_real_clips_from_flac_and_mp3_give_stems_of_the_song_length(tmp_path, shared_audio, tiny_repo):
    track = sorted(shared_audio.iterdir())[0]
    frames = sf.info(track / "mixture.flac").frames
    for name in ("mixture.flac", "mixture.mp3"):
        out = tmp_path / name
        result = stemsplit(track / name, "-n", "tiny", "--repo", tiny_repo, "-o", out, "--format", "flac",
                           cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        for stem in SOURCES:
            info = sf.info(out / "tiny" / "mixture" / f"{stem}.flac")
            assert (info.samplerate, info.frames, info.channels) == (44100, frames, 2)


def test_two_stems_writes_the_stem_and_the_rest(tmp_path, song, tiny_repo):
    result = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path, "--two-stems", "vocals",
                       "--bit-depth", "32", "--clip-mode", "none", "--filename", "{track}-{stem}.{ext}",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".my song-vocals.wav.stemsplit.json",
                                                                     "my song-no_vocals.wav", "my song-vocals.wav"]
    full = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path / "all", "--bit-depth", "32",
                     "--clip-mode", "none", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    others = sum(sf.read(tmp_path / "all" / "tiny" / "my song" / f"{s}.wav")[0] for s in SOURCES if s != "vocals")
    no_vocals = sf.read(tmp_path / "tiny" / "my song-no_vocals.wav")[0]
    np.testing.assert_allclose(no_vocals, others, atol=1e-5)


def test_a_batch_goes_on_past_bad_files_and_fails_at_the_end(tmp_path, song, tiny_repo):
    (tmp_path / "notes.txt").write_text("not audio")
    result = stemsplit(tmp_path / "missing.mp3", tmp_path / "notes.txt", song, "-n", "tiny", "--repo", tiny_repo,
                       "-o", tmp_path / "out", "--stems", "bass", cwd=tmp_path)
    assert result.returncode == 1
    assert (tmp_path / "out" / "tiny" / "my song" / "bass.wav").is_file()
    assert not (tmp_path / "out" / "tiny" / "missing").exists()
    assert "1 done, 0 skipped, 2 failed" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "missing.mp3" in errors[0] and "notes.txt" in errors[1]


@pytest.mark.parametrize("args, code, message", [
    (["{missing}"], 1, "missing.wav"),
    (["{song}", "-n", "nope"], 3, "unknown model 'nope'"),
    (["{song}", "--stems", "kazoo"], 2, "unknown stem 'kazoo'"),
    (["{song}", "--overlap", "1.5"], 2, "--overlap"),
    (["{song}", "--segment", "99"], 2, "segment"),
    (["{song}", "--precision", "float16", "-d", "cpu"], 2, "float16 is for GPUs; use "),
    (["{song}", "--filename", "../../{stem}.{ext}"], 2, "outside the output folder"),
    (["{song}", "-o", "{file}/out"], 4, "cannot write"),
])
def test_errors_are_one_line_with_a_distinct_exit_code(tmp_path, song, tiny_repo, args, code, message):
    (tmp_path / "file").write_text("")
    fields = {"song": song, "missing": tmp_path / "missing.wav", "file": tmp_path / "file"}
    repo = [] if "-n" in args else ["-n", "tiny", "--repo", str(tiny_repo)]
    for key, value in fields.items():
        args = [a.replace(f"{{{key}}}", str(value)) for a in args]
    result = stemsplit(*args, *repo, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    if code != 2:  # usage errors print usage lines before the one-line error
        assert result.stderr.strip().count("\n") == 0
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert not list(tmp_path.rglob("*.wav"))


def stemsplit_on_avx2_cpu(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`stemsplit` on a CPU faked to have AVX2 but no native bfloat16 (most laptops, AMD before Zen 4)."""
    fake = ("import sys; import stemsplit.precision as p; p.cpu_flags = lambda: frozenset({'avx', 'avx2', 'fma'}); "
            "from stemsplit.cli import main; sys.argv[0] = 'stemsplit'; main()")
    return subprocess.run([sys.executable, "-c", fake, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=environment(), timeout=300)


def test_bfloat16_is_refused_in_one_line_on_a_cpu_without_it(tmp_path, song, tiny_repo):
    result = stemsplit_on_avx2_cpu(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path, "--precision", "bfloat16",
                                   cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == ("error: Invalid value for --precision: bfloat16 is slower than float32 "
                                              "on this CPU (no avx512_bf16 or amx_bf16); use float32")
    assert not (tmp_path / "tiny").exists()


def test_verbose_says_which_precision_auto_ran_and_why(tmp_path, song, tiny_repo):
    result = stemsplit_on_avx2_cpu(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path, "--precision", "auto",
                                   "-d", "cpu", "-v", "--bit-depth", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision: float32 (auto: nothing is faster than float32 on this cpu)" in result.stderr.splitlines()
    exact = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path / "exact", "--bit-depth", "32",
                      cwd=tmp_path)
    assert exact.returncode == 0, exact.stderr
    for stem in SOURCES:
        written, _ = sf.read(tmp_path / "tiny" / "my song" / f"{stem}.wav", dtype="float32")
        expected, _ = sf.read(tmp_path / "exact" / "tiny" / "my song" / f"{stem}.wav", dtype="float32")
        np.testing.assert_array_equal(written, expected)


def test_models_lists_the_catalogue_without_network(tmp_path):
    from stemsplit.catalogue import read_catalogue
    from stemsplit.listing import heading

    result = stemsplit("models", cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    catalogue = read_catalogue()
    headings = [line for line in lines if not line.startswith(" ")]
    assert sorted(headings) == sorted(heading(info, "htdemucs") for info in catalogue.values())
    for info in catalogue.values():
        at = lines.index(heading(info, "htdemucs"))
        assert lines[at + 1] == f"  {info.description}"
        assert lines[at + 3].endswith("; cached no")
        assert lines[at + 4] == f"  licence: {info.licence}"
    assert "mel_band_roformer_kim: vocals: vocals, no_vocals" in lines


def test_help_names_the_options():
    result = subprocess.run([sys.executable, "-m", "stemsplit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--model", "--two-stems", "--shifts", "--clip-mode", "--repo"):
        assert option in result.stdout


def test_track_names_are_made_safe_and_stay_inside_out(tmp_path):
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert safe_name("a\x00b\nc") == "a_b_c"
    paths = stem_paths(tmp_path, "{track}/{stem}.{ext}", "/x/../evil\t.mp3", "m", ["vocals"], "wav")
    assert paths["vocals"].parent.parent == tmp_path.resolve()


def test_pick_stems():
    assert pick_stems(SOURCES, (), None) == SOURCES
    assert pick_stems(SOURCES, ("bass",), None) == ["bass"]
    assert pick_stems(SOURCES, (), "drums") == ["drums", "no_drums"]


def test_lossy_stems_keep_the_tags_with_the_stem_name(tmp_path, tiny_repo):
    song = tmp_path / "tagged.flac"
    with sf.SoundFile(song, "w", 32000, 2, format="FLAC") as file:
        file.title, file.artist = "Night Drive", "The Band"
        file.write(tone(1.5, 32000))
    result = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path, "--format", "ogg",
                       "--stems", "vocals,bass", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    vocals, info = load_audio(tmp_path / "tiny" / "tagged" / "vocals.ogg")
    assert info.tags == {"title": "Night Drive (vocals)", "artist": "The Band"}
    assert info.sample_rate == 32000 and info.frames == 48000
