"""stemsplit.networks.demucs.Demucs against demucs.demucs.Demucs, with shared random weights."""

from __future__ import annotations

import re

import julius
import pytest
import torch
from demucs.demucs import Demucs as ReferenceDemucs

from helpers import relative_error
from oracle import perturbed_network
from stemsplit.errors import ModelError
from stemsplit.networks.demucs import Demucs, DemucsConfig
from stemsplit.networks.resample import resample
from v3_configs import DEMUCS, SMALL_DEMUCS

TOLERANCE = 1e-4


def model_pair(kwargs: dict, seed: int = 0) -> tuple[torch.nn.Module, Demucs]:
    reference = perturbed_network(ReferenceDemucs, kwargs, seed)
    ours = Demucs(DemucsConfig.from_reference(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def compare(reference: torch.nn.Module, ours: Demucs, mix: torch.Tensor) -> float:
    with torch.inference_mode():
        expected = reference(mix)
        actual = ours(mix)
    assert actual.shape == expected.shape == (mix.shape[0], len(ours.sources), mix.shape[1], mix.shape[-1])
    return relative_error(actual, expected)


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_released_configuration_state_dict_names_and_shapes():
    expected = {key: value.shape for key, value in ReferenceDemucs(**DEMUCS).state_dict().items()}
    actual = {key: value.shape for key, value in Demucs(DemucsConfig.from_reference(**DEMUCS)).state_dict().items()}
    assert actual == expected


def test_released_configuration_matches_reference():
    reference, ours = model_pair(DEMUCS)
    assert compare(reference, ours, noise(1, 2, 44100 + 77)) < TOLERANCE


# Two seconds reach the BLSTM's 200-step windows in the DConv branches of the deepest layers.
VARIANTS = {
    "small": {},
    "no_normalize_bottom_lstm_both_dconvs": {"normalize": False, "lstm_layers": 2, "dconv_mode": 3},
    "no_resample_relu_no_glu_no_context": {"resample": False, "gelu": False, "glu": False, "context": 0},
    "no_rewrite": {"rewrite": False},
    "mono_three_sources": {"audio_channels": 1, "sources": ["a", "b", "c"]},
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_variant_matches_reference(overrides):
    reference, ours = model_pair({**SMALL_DEMUCS, **overrides}, seed=3)
    assert compare(reference, ours, noise(1, ours.audio_channels, 2 * 44100 + 3)) < TOLERANCE


@pytest.mark.parametrize("length", [5, 1000, 44100 + 1])
def test_other_lengths_match_reference(length):
    reference, ours = model_pair(SMALL_DEMUCS, seed=4)
    assert compare(reference, ours, noise(2, 2, length, seed=length)) < TOLERANCE


def test_valid_length_matches_reference():
    for overrides in ({}, {"resample": False}, {"depth": 3, "kernel_size": 6, "stride": 3}):
        reference = ReferenceDemucs(**{**SMALL_DEMUCS, **overrides})
        ours = Demucs(DemucsConfig.from_reference(**{**SMALL_DEMUCS, **overrides}))
        assert all(ours.valid_length(n) == reference.valid_length(n) for n in range(1, 5000, 13))


@pytest.mark.parametrize("old, new", [(1, 2), (2, 1)])
def test_resampling_matches_julius(old, new):
    x = noise(3, 2, 4001)
    expected = julius.resample_frac(x, old, new)
    assert resample(x, old, new).shape == expected.shape
    assert relative_error(resample(x, old, new), expected) < 1e-6


def test_older_files_with_the_rewrite_numbered_earlier_load():
    # Files of the v2 generation (no DConv, ReLU, a bottom LSTM, as grids/repro.py trains it) had no
    # norm layer, so the encoders' rewrite was module 2, not 3.
    reference, ours = model_pair({**SMALL_DEMUCS, "norm_starts": 10, "dconv_mode": 0, "gelu": False,
                                  "lstm_layers": 2}, seed=1)
    state = {re.sub(r"^(encoder\.\d+)\.3\.(weight|bias)$", r"\1.2.\2", key): value
             for key, value in reference.state_dict().items()}
    assert state.keys() != reference.state_dict().keys()
    fresh = Demucs(ours.config).eval()
    fresh.load_state_dict(state)
    mix = noise(1, 2, 3000)
    with torch.inference_mode():
        assert torch.equal(fresh(mix), ours(mix))


def test_chunks_are_read_at_the_valid_length_around_them():
    model = Demucs(DemucsConfig.from_reference(**SMALL_DEMUCS))
    settings = type("Settings", (), {"shifts": 0, "overlap": None, "segment": 1})()
    chunks = model.chunking.passes(60_000, 44100, settings)[0]
    for chunk in chunks:
        assert chunk.read_length == model.valid_length(chunk.length)
        assert chunk.trim == (chunk.read_length - chunk.length) // 2
    assert [c.length for c in chunks] == [44100, 26925]


def test_unknown_option_is_refused_by_name():
    with pytest.raises(ModelError, match="unknown model options: nfft"):
        DemucsConfig.from_reference(**{**SMALL_DEMUCS, "nfft": 4096})
