"""stemsplit.networks.hdemucs.HDemucs against demucs.hdemucs.HDemucs, with shared random weights."""

from __future__ import annotations

import re

import pytest
import torch
from demucs.hdemucs import HDemucs as ReferenceHDemucs

from helpers import relative_error
from oracle import perturbed_network
from stemsplit.errors import ModelError
from stemsplit.networks.hdemucs import HDemucs, HDemucsConfig
from v3_configs import RELEASED_HDEMUCS, SMALL_HDEMUCS

TOLERANCE = 1e-4


def model_pair(kwargs: dict, seed: int = 0) -> tuple[torch.nn.Module, HDemucs]:
    reference = perturbed_network(ReferenceHDemucs, kwargs, seed)
    ours = HDemucs(HDemucsConfig.from_reference(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def compare(reference: torch.nn.Module, ours: HDemucs, batch: int, length: int, seed: int = 0) -> float:
    mix = torch.randn(batch, 2, length, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = reference(mix)
        actual = ours(mix)
    assert actual.shape == expected.shape == (batch, len(ours.sources), 2, length)
    return relative_error(actual, expected)


@pytest.mark.parametrize("name", sorted(RELEASED_HDEMUCS))
def test_released_configuration_state_dict_names_and_shapes(name):
    kwargs = RELEASED_HDEMUCS[name]
    expected = {key: value.shape for key, value in ReferenceHDemucs(**kwargs).state_dict().items()}
    actual = {key: value.shape for key, value in HDemucs(HDemucsConfig.from_reference(**kwargs)).state_dict().items()}
    assert actual == expected


# Full size is slow on a CPU (83.6 M parameters): a second of audio goes through every layer.
@pytest.mark.parametrize("name", sorted(RELEASED_HDEMUCS))
def test_released_configuration_matches_reference(name):
    reference, ours = model_pair(RELEASED_HDEMUCS[name])
    assert compare(reference, ours, batch=1, length=44100 + 77) < TOLERANCE


# Options released files do not all use, each on the small six-layer shape. Eight seconds are
# 345 frames: more than one 300-frame Wiener stretch and more than the BLSTM's 200-step window.
VARIANTS = {
    "cac": ({}, 2 * 44100),
    "hybrid_old": ({"hybrid_old": True}, 2 * 44100),
    "magnitude_no_wiener": ({"cac": False}, 2 * 44100),
    "magnitude_mix_phase": ({"cac": False, "wiener_iters": -1, "end_iters": -1}, 2 * 44100),
    "wiener_two_iterations_long": ({"cac": False, "wiener_iters": 2, "end_iters": 2}, 8 * 44100),
    "wiener_residual": ({"cac": False, "wiener_iters": 1, "end_iters": 1, "wiener_residual": True}, 2 * 44100),
    "multi_freqs": ({"multi_freqs": [0.25, 0.5], "multi_freqs_depth": 2}, 2 * 44100),
    "channels_time": ({"channels_time": 6}, 2 * 44100),
    "both_dconvs_context_no_freq_emb": ({"dconv_mode": 3, "context_enc": 1, "freq_emb": 0}, 2 * 44100),
    "mono_growth_3_norms": ({"audio_channels": 1, "growth": 3, "channels": 4, "norm_starts": 2,
                             "norm_groups": 2, "dconv_lstm": 5, "dconv_attn": 6, "sources": ["a", "b"]}, 44100),
}


@pytest.mark.parametrize("overrides, length", VARIANTS.values(), ids=VARIANTS.keys())
def test_variant_matches_reference(overrides, length):
    reference, ours = model_pair({**SMALL_HDEMUCS, **overrides}, seed=3)
    mix = torch.randn(2, ours.audio_channels, length + 123, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert relative_error(ours(mix), reference(mix)) < TOLERANCE


@pytest.mark.parametrize("length", [1, 1000, 1536, 1537, 5000])
def test_short_chunks_match_reference(length):
    # The last chunk of a song can be shorter than the spectrogram's padding (1536 samples).
    reference, ours = model_pair(SMALL_HDEMUCS, seed=5)
    assert compare(reference, ours, batch=1, length=length, seed=2) < TOLERANCE


def test_attributes_and_chunking():
    model = HDemucs(HDemucsConfig.from_reference(**RELEASED_HDEMUCS["hdemucs_mmi"]))
    assert model.sources == ["drums", "bass", "other", "vocals"]
    assert (model.samplerate, model.audio_channels, model.segment) == (44100, 2, 44)
    chunk = model.chunking.passes(100_000, 44100, type("S", (), {"shifts": 0, "overlap": None, "segment": 1})())
    # No context: each chunk is read as it is, the last one shorter.
    assert [(c.start, c.length, c.read_start, c.read_length) for c in chunk[0]] == [
        (0, 44100, 0, 44100), (33075, 44100, 33075, 44100), (66150, 33850, 66150, 33850), (99225, 775, 99225, 775)]


UNSUPPORTED = {
    "spectrogram_only": ({"hybrid": False}, "hybrid=False"),
    "unknown": ({"t_layers": 5}, "unknown model options: t_layers"),
    "bands_with_norm": ({"multi_freqs": [0.5], "norm_starts": 1}, "multi_freqs with group norm"),
}


@pytest.mark.parametrize("overrides, message", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_options_raise_model_error(overrides, message):
    with pytest.raises(ModelError, match=re.escape(message)):
        HDemucsConfig.from_reference(**{**SMALL_HDEMUCS, **overrides})
