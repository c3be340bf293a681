"""Chains (chain.py): each step equal to its model run alone on the float32 stem before it, the final stems
summing to the song at its own rate, all in one streamed pass; with a tiny HT Demucs and a tiny RoFormer."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from helpers import tone
from roformer_oracle import roformer_files
from stemsplit.audio import open_song
from stemsplit.chain import extended, summing
from stemsplit.chain_steps import ChainStep
from stemsplit.registry import load_bag
from stemsplit.separation import Settings, at_input_rate, decide, separate_stream

INPUT_RATE = 48000  # the networks run at 44.1 kHz: each step's stem is resampled to it and back
DECIDED = decide(Settings(), "cpu")


@pytest.fixture(scope="module")
def bags(tmp_path_factory, tiny_repo) -> dict:
    _, checkpoint, config, _ = roformer_files(tmp_path_factory.mktemp("roformer"), 1, 1)
    return {"roformer": load_bag(checkpoint=checkpoint, config=config), "htdemucs": load_bag("tiny", tiny_repo)}


@pytest.fixture(scope="module")
def song_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, tone(1.3, INPUT_RATE), INPUT_RATE, subtype="FLOAT")
    return path


def alone(bag, path: Path) -> torch.Tensor:
    """`bag` run alone on the song at `path`, as the command runs it: stems at the input's rate."""
    with open_song(path, bag.samplerate) as song:
        return torch.cat(list(at_input_rate(separate_stream(bag, song, DECIDED), bag, song)), dim=-1)


def chained(chain, path: Path, labels: list) -> torch.Tensor:
    """The chain's stems; `labels` gets each progress bar's label and its last (done, total)."""
    def bar(label):
        entry = [label, None]
        labels.append(entry)
        return lambda done, total: entry.__setitem__(1, (done, total))

    with open_song(path, chain.samplerate) as song:
        return torch.cat(list(chain.stream(song, DECIDED, bar)), dim=-1)


def written(path: Path, stem: torch.Tensor) -> Path:
    """A float32 stem as a file of its own, the input of the next model run alone."""
    sf.write(path, stem.numpy().T, INPUT_RATE, subtype="FLOAT")
    return path


def with_residual(stems: torch.Tensor, bag, of: torch.Tensor) -> torch.Tensor:
    """A model's stems alone with the one a chain makes its residual replaced by `of` minus the others."""
    index = bag.stems.index(summing(bag).residual)
    others = torch.cat([stems[:index], stems[index + 1:]]).sum(0)
    return torch.cat([stems[:index], (of - others)[None], stems[index + 1:]])


def test_each_step_is_its_model_alone_on_the_stem_before_and_the_stems_sum_to_the_song(tmp_path, bags, song_path):
    """A RoFormer (its no_vocals a residual), then HT Demucs on that stem: HT Demucs reads the whole stem first
    to normalise it, and has its `other` made the residual."""
    first, second, stem = "roformer", "htdemucs", "no_vocals"
    labels: list = []
    chain = extended(bags[first], [ChainStep(second, stem)], bags.__getitem__)
    result = chained(chain, song_path, labels)
    mix = torch.from_numpy(sf.read(song_path, dtype="float32", always_2d=True)[0].T.copy())
    assert result.shape == (len(chain.stems), 2, mix.shape[-1])
    assert (result.sum(0) - mix).abs().max() < 1e-5

    step1 = with_residual(alone(bags[first], song_path), bags[first], mix)
    taken = step1[bags[first].stems.index(stem)]
    step2 = with_residual(alone(bags[second], written(tmp_path / "stem.wav", taken)), bags[second], taken)
    for placed, stems in zip(chain.layout.final, result):
        expected = (step1, step2)[placed.step][chain.steps[placed.step].bag.stems.index(placed.stem)]
        assert (stems - expected).abs().max() < 1e-5, placed
    assert [label for label, _ in labels] == [f"step 1/2 {bags[first].name}",
                                              f"step 2/2 {bags[second].name} on {stem}"]
    assert all(done == total > 0 for _, (done, total) in labels)


def test_a_chain_streams_its_first_step_over_the_song(bags, tmp_path, monkeypatch):
    """The first final block comes before the song has been read to its middle (a RoFormer first, 1 s chunks)."""
    monkeypatch.setattr("stemsplit.chain.BLOCK_FRAMES", 4800)
    path = tmp_path / "long.wav"
    sf.write(path, tone(8, INPUT_RATE), INPUT_RATE, subtype="FLOAT")
    chain = extended(bags["roformer"], [ChainStep("roformer", "vocals")], bags.__getitem__)
    with open_song(path, chain.samplerate) as song:
        furthest = []
        read = song.read

        class Watched:
            info, length, channels, read_native = song.info, song.length, song.channels, song.read_native

            @staticmethod
            def read(start, length):
                furthest.append(start + length)
                return read(start, length)

        blocks = chain.stream(Watched(), DECIDED, lambda label: lambda done, total: None)
        assert next(blocks).shape == (3, 2, 4800)
        assert max(furthest) < song.length / 2
        blocks.close()
