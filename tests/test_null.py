"""Residuals formed at the input's rate (issue 22, case 8): a target and its no_target, and the stems of an
ensemble with a residual, sum to the decoded input to float32 rounding whatever the model's rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fake_family import Gains
from helpers import tone
from stemsplit.api import Separator
from stemsplit.bag import Bag, Member, single_network_bag
from stemsplit.separation import Settings, decide

# (model rate, input rate): a 22.05 kHz config on CD audio, a 44.1 kHz model on 96 and on 48 kHz songs
RATES = [(22050, 44100), (44100, 96000), (44100, 48000)]


def gains(sources: list[str], samplerate: int, values: list[float]) -> Gains:
    network = Gains("n", sources, samplerate, segment=1)
    network.gains.copy_(torch.tensor(values))
    return network


def noisy_song(rate: int) -> np.ndarray:
    """1.3 s of tones and white noise up to the input's Nyquist frequency: what a resampling round trip loses."""
    song = tone(1.3, rate)
    return song + 0.05 * np.random.default_rng(1).standard_normal(song.shape).astype(np.float32)


def null_db(total: np.ndarray, mix: np.ndarray) -> float:
    error = np.square(total.astype(np.float64) - mix).sum()
    return float(10 * np.log10(np.square(mix.astype(np.float64)).sum() / error))


def separated_sum(bag: Bag, song: np.ndarray, rate: int) -> np.ndarray:
    separated = Separator(bag, decide(Settings(), "cpu")).separate((song, rate))
    assert separated.sample_rate == rate
    assert all(stem.shape == song.T.shape for stem in separated.stems.values())
    return sum(separated.stems.values())


@pytest.mark.parametrize("model_rate, input_rate", RATES)
def test_target_and_no_target_null_against_the_input(model_rate, input_rate):
    song = noisy_song(input_rate)
    bag = single_network_bag("one", gains(["vocals"], model_rate, [0.3]), "")
    total = separated_sum(bag, song, input_rate)
    assert np.abs(total - song.T).max() < 1e-5, f"null {null_db(total, song.T):.1f} dB"


@pytest.mark.parametrize("model_rate, input_rate", RATES[:2])
def test_an_ensembles_stems_sum_to_the_input(model_rate, input_rate):
    song = noisy_song(input_rate)
    members = [Member(gains(["vocals", "drums"], model_rate, [0.4, 0.1]), {"vocals": 1.0}),
               Member(gains(["drums", "vocals"], model_rate, [0.2, 0.5]), {"drums": 1.0})]
    bag = Bag("ensemble", ["vocals", "drums", "other"], members, residual="other")
    total = separated_sum(bag, song, input_rate)
    assert np.abs(total - song.T).max() < 1e-5, f"null {null_db(total, song.T):.1f} dB"
