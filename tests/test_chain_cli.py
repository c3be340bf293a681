"""Chains on the command line: `--then STEM:MODEL` after -n (models of a --repo folder, of the test-only `fake`
family), the stems decoded back and summing to the song, each step equal to its model run alone on the stem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fake_family import package, registered, write_repo
from helpers import error_lines, json_lines, read, tone

RATE = 48000  # the fake networks run at 44.1 kHz
EXACT = ("--bit-depth", "32", "--clip-mode", "none", "--json")
FOUR = {"drums": 0.1, "bass": 0.2, "other": 0.3, "vocals": 0.4}
TWO = {"lead": 0.25, "backing": 0.75}


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "repo").mkdir()
    with registered():
        yield write_repo(tmp_path / "repo", {"four": {"0four000": FOUR}, "two": {"0two0000": TWO}})


@pytest.fixture
def song(tmp_path) -> Path:
    path = tmp_path / "song.wav"
    sf.write(path, tone(1.5, RATE), RATE, subtype="FLOAT")
    return path


def stems_of(folder: Path) -> dict[str, np.ndarray]:
    return {path.name.removesuffix(".wav"): read(path)[0] for path in sorted(folder.glob("*.wav"))}


def test_then_splits_a_stem_and_every_split_sums_to_what_it_split(tmp_path, repo, song, in_process):
    out = tmp_path / "out"
    result = in_process(song, "--repo", repo, "-n", "four", "--then", "vocals:two", "-o", out, *EXACT,
                        tmp=tmp_path / "t")
    assert result.returncode == 0, result.stderr
    [line] = json_lines(result.stdout)
    assert line["steps"] == [{"model": "four", "stem": None}, {"model": "two", "stem": "vocals"}]
    stems = stems_of(out / "four+vocals-two" / "song")
    assert list(stems) == ["bass", "drums", "other", "vocals.backing", "vocals.lead"]
    mix, rate = read(song)
    assert rate == RATE and all(stem.shape == mix.shape for stem in stems.values())
    assert np.abs(sum(stems.values()) - mix).max() < 1e-5

    alone = in_process(song, "--repo", repo, "-n", "four", "-o", tmp_path / "alone", *EXACT, tmp=tmp_path / "t")
    vocals = tmp_path / "alone" / "four" / "song" / "vocals.wav"
    assert alone.returncode == 0
    assert np.abs(stems["vocals.lead"] + stems["vocals.backing"] - read(vocals)[0]).max() < 1e-5
    for name in ("drums", "bass"):
        assert np.abs(stems[name] - read(vocals.with_name(f"{name}.wav"))[0]).max() < 1e-5
    second = in_process(vocals, "--repo", repo, "-n", "two", "-o", tmp_path / "second", *EXACT, tmp=tmp_path / "t")
    assert second.returncode == 0
    assert np.abs(stems["vocals.lead"] - read(tmp_path / "second" / "two" / "vocals" / "lead.wav")[0]).max() < 1e-5


def test_skip_existing_records_every_step_and_stems_picks_among_the_final_ones(tmp_path, repo, song, in_process):
    chain = (song, "--repo", repo, "-n", "four", "--then", "vocals:two", "-o", tmp_path / "out", *EXACT,
             "--skip-existing", "--stems", "vocals.lead,drums")
    first = in_process(*chain, tmp=tmp_path / "t")
    assert first.returncode == 0 and [line["status"] for line in json_lines(first.stdout)] == ["done"]
    assert sorted(stems_of(tmp_path / "out" / "four+vocals-two" / "song")) == ["drums", "vocals.lead"]
    again = in_process(*chain, tmp=tmp_path / "t")
    assert [(line["status"], len(line["steps"])) for line in json_lines(again.stdout)] == [("skipped", 2)]
    write_repo(repo, {"two": {"0two0000": {"lead": 0.5, "backing": 0.5}}})  # the second step changed
    changed = in_process(*chain, tmp=tmp_path / "t")
    assert [line["status"] for line in json_lines(changed.stdout)] == ["done"]


@pytest.mark.parametrize("options, message", [
    (("--then", "piano:two"), "Invalid value for --then: chain 'four+piano-two': step 2 takes a stem 'piano' that "
                              "the chain does not have before it; it has drums, bass, other, vocals"),
    (("--then", "vocals"), "Invalid value for --then: 'vocals' is not STEM:MODEL"),
    (("--then", "vocals:two", "--format", "stem"), "--format stem writes one model's four stems"),
])
def test_a_bad_then_is_one_error_line_and_the_usage_exit_code(tmp_path, repo, song, in_process, options, message):
    result = in_process(song, "--repo", repo, "-n", "four", *options, "-o", tmp_path / "out", tmp=tmp_path / "t")
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: {message}"), line
    assert not (tmp_path / "out").exists()


def test_the_api_runs_a_chain_too(repo):
    from stemsplit import load_model
    from stemsplit.errors import SettingsError

    mix = tone(0.7, 44100).T
    separator = load_model("four", repo=repo, then=["vocals:two"], device="cpu", stems=["vocals.lead", "drums"])
    separated = separator.separate((mix, 44100))
    assert list(separated.stems) == ["vocals.lead", "drums"] and separated.sample_rate == 44100
    whole = load_model("four", repo=repo, then=["vocals:two"], device="cpu").separate((mix, 44100)).stems
    assert np.abs(sum(whole.values()) - mix).max() < 1e-5
    assert np.array_equal(whole["vocals.lead"], separated.stems["vocals.lead"])
    with pytest.raises(SettingsError, match="is not STEM:MODEL"):
        load_model("four", repo=repo, then=["vocals"], device="cpu")


def catalogue_with_a_chain(path: Path, server) -> Path:
    """Two fake models from the loopback server's URLs, and a chain of them with names of its own."""
    lines = ['default = "four"']
    for name, gains in (("four", FOUR), ("two", TWO)):
        weights = package(f"0{name}000", gains)
        server.files[f"/{name}.safetensors"] = weights
        lines += [f"[{name}]", 'family = "fake"', 'description = "d"', 'licence = "MIT"',
                  f"stems = {json.dumps(list(gains))}", f"[[{name}.files]]", f'name = "0{name}000.safetensors"',
                  f'urls = ["{server.url(f"/{name}.safetensors")}"]',
                  f'sha256 = "{hashlib.sha256(weights).hexdigest()}"',
                  f"size = {len(weights)}", f"shares = {json.dumps([1.0] * len(gains))}"]
    lines += ["[duet]", 'family = "chain"', 'description = "d"', 'licence = "those of its steps"',
              'stems = ["drums", "bass", "rest", "lead", "backing"]',
              'steps = [{ model = "four", names = { other = "rest" } }, { model = "two", stem = "vocals", '
              'names = { lead = "lead", backing = "backing" } }]']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_catalogue_chain_runs_by_name_with_chain_or_n(tmp_path, song, monkeypatch):
    from click.testing import CliRunner

    from hub_server import FileServer
    from stemsplit.cli import main

    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with FileServer() as server, registered():
        monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue_with_a_chain(tmp_path / "models.toml", server))
        for option in ("--chain", "-n"):
            result = CliRunner().invoke(main, [str(song), option, "duet", "-o", str(tmp_path / option), *EXACT])
            assert result.exit_code == 0, result.stderr
            stems = stems_of(tmp_path / option / "duet" / "song")
            assert sorted(stems) == ["backing", "bass", "drums", "lead", "rest"]
            assert np.abs(sum(stems.values()) - read(song)[0]).max() < 1e-5
        assert [path for path, _ in server.requests] == ["/four.safetensors", "/two.safetensors"]  # cached after
        listed = CliRunner().invoke(main, ["models", "duet"]).stdout.splitlines()
        assert "    step 2: two on the vocals (lead as lead, backing as backing)" in listed


def test_a_chain_gets_one_progress_bar_per_step_named_and_all_removed(tmp_path, repo, song):
    from stemsplit.audio import Encoding, open_song
    from stemsplit.chain import then_chain
    from stemsplit.registry import load_bag
    from stemsplit.runner import Options, separate_song
    from stemsplit.separation import Settings, decide

    class Recorded:
        """A progress display that keeps each bar's description and last (done, total)."""

        def __init__(self):
            self.tasks, self.removed = {}, []

        def add_task(self, description, total):
            self.tasks[len(self.tasks)] = [description, total]
            return len(self.tasks) - 1

        def update(self, task, completed, total):
            self.tasks[task][1] = (completed, total)

        def remove_task(self, task):
            self.removed.append(task)

    progress = Recorded()
    chain = then_chain(load_bag("four", repo), ["vocals:two"], repo, print)
    options = Options(decide(Settings(), "cpu"), Encoding(bit_depth=32, clip_mode="none"), 1, "add")
    paths = {name: tmp_path / f"{name}.wav" for name in chain.stems}
    with open_song(song, chain.samplerate) as opened:
        separate_song("song.wav", opened, chain, paths, options, None, progress)
    assert [description for description, _ in progress.tasks.values()] == ["song.wav: step 1/2 four",
                                                                           "song.wav: step 2/2 two on vocals"]
    assert all(done == total > 0 for _, (done, total) in progress.tasks.values()) and progress.removed == [0, 1]
    assert np.abs(sum(read(path)[0] for path in paths.values()) - read(song)[0]).max() < 1e-5


@pytest.mark.parametrize("options, message", [
    (("-n", "mel_band_roformer_kim", "--then", "drums:mel_band_roformer_karaoke_aufr33_viperx"),
     "Invalid value for --then: step 2 takes a stem 'drums' that the chain does not have before it; it has vocals, "
     "no_vocals"),
    (("-n", "vocals_lead_backing_dereverb", "--then", "backing:nowhere"), "Invalid value for --then: unknown model"),
    (("-n", "htdemucs", "--then", "vocals:vocals_lead_backing_dereverb"), "Invalid value for --then: "
     "'vocals_lead_backing_dereverb' is a chain"),
    (("--chain", "htdemucs"), "Invalid value for --chain: 'htdemucs' is a model, not a chain"),
])
def test_catalogue_chains_are_checked_before_any_model_loads(tmp_path, song, in_process, options, message):
    """From the catalogue alone, offline: the usage exit code and one error line, before any model loads."""
    result = in_process(song, *options, "-o", tmp_path / "out", tmp=tmp_path / "t")
    assert result.returncode == 2 and error_lines(result.stderr)[0].startswith(f"error: {message}"), result.stderr
