"""Demucs v2 and Conv-TasNet (stemsplit.networks.demucs_v2) against the demucs 2.0.3 classes audio-separator
0.47.1 vendors, with shared random weights: each forward, and whole songs against the vendored `apply_model_v2`."""

from __future__ import annotations

import math
import random

import pytest
import torch
from audio_separator.separator.uvr_lib_v5.demucs.model_v2 import Demucs as ReferenceDemucs
from audio_separator.separator.uvr_lib_v5.demucs.tasnet_v2 import ConvTasNet as ReferenceConvTasNet
from audio_separator.separator.uvr_lib_v5.demucs.utils import apply_model_v2

from helpers import relative_error, sdr, separate_tensor
from oracle import perturbed_network
from stemsplit.bag import mixed_bag
from stemsplit.errors import ModelError
from stemsplit.networks.demucs import centre_trim
from stemsplit.networks.demucs_v2 import ConvTasNet, ConvTasNetConfig, DemucsV2, DemucsV2Config
from stemsplit.separation import Settings

TOLERANCE = 1e-4
MIN_SDR = 100.0  # dB, float32
SOURCES = ["drums", "bass", "other", "vocals"]
# The released networks' arguments, as demucs 2.0.3's pretrained.py builds them.
RELEASED = {
    "demucs": (ReferenceDemucs, {"sources": SOURCES}),  # demucs_extra has the same shape
    "demucs48_hq": (ReferenceDemucs, {"sources": SOURCES, "channels": 48}),
    "tasnet": (ReferenceConvTasNet, {"sources": SOURCES, "X": 10}),  # tasnet_extra has the same shape
}
SMALL_DEMUCS = {"sources": SOURCES, "channels": 6, "segment_length": 2 * 44100}
SMALL_TASNET = {"sources": SOURCES, "N": 16, "B": 8, "H": 12, "X": 3, "R": 2, "segment_length": 2 * 44100}


def ours_of(reference: torch.nn.Module, kwargs: dict) -> torch.nn.Module:
    network, config = (DemucsV2, DemucsV2Config) if isinstance(reference, ReferenceDemucs) else \
        (ConvTasNet, ConvTasNetConfig)
    with torch.device("meta"):  # no initialisation: the reference's weights replace it
        ours = network(config.from_reference(**kwargs))
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return ours.eval()


def released_pair(reference_class: type, kwargs: dict, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A full-size reference with random weights at 1/sqrt(fan-in) (built without its slow initialisation;
    the small networks' perturbed weights would make 2048 channels chaotic), and ours with them."""
    with torch.device("meta"):
        reference = reference_class(**kwargs)
    reference = reference.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            draw = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() > 1:
                parameter.copy_(draw / math.sqrt(parameter[0].numel()))
            else:
                parameter.copy_(0.1 * draw + (1.0 if name.endswith("gamma") else 0.0))
    return reference, ours_of(reference, kwargs)


def pair(reference_class: type, kwargs: dict, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = perturbed_network(reference_class, kwargs, seed)
    return reference, ours_of(reference, kwargs)


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def forward_error(reference: torch.nn.Module, ours: torch.nn.Module, mix: torch.Tensor) -> float:
    """Our output, of the input's length, against the reference's (shorter for Demucs: its middle)."""
    with torch.inference_mode():
        expected, actual = reference(mix), ours(mix)
    assert actual.shape == (mix.shape[0], len(ours.sources), mix.shape[1], mix.shape[-1])
    return relative_error(centre_trim(actual, expected.shape[-1]), expected)


@pytest.mark.parametrize("name", RELEASED)
def test_released_configuration_matches_reference(name):
    reference_class, kwargs = RELEASED[name]
    reference, ours = released_pair(reference_class, kwargs)
    length = reference.valid_length(1000)  # tasnet: 1000; demucs: its shortest input, 8874
    assert forward_error(reference, ours, noise(1, 2, length)) < TOLERANCE


DEMUCS_VARIANTS = {
    "small": {},
    "normalize_no_lstm": {"normalize": True, "lstm_layers": 0},
    "relu_no_glu_context_1": {"glu": False, "context": 1},
    "no_resample_no_rewrite": {"resample": False, "rewrite": False},
    "mono_three_sources_depth_4": {"audio_channels": 1, "sources": ["a", "b", "c"], "depth": 4},
}


@pytest.mark.parametrize("overrides", DEMUCS_VARIANTS.values(), ids=DEMUCS_VARIANTS.keys())
def test_demucs_variant_matches_reference(overrides):
    reference, ours = pair(ReferenceDemucs, {**SMALL_DEMUCS, **overrides}, seed=1)
    mix = noise(2, ours.audio_channels, reference.valid_length(3000), seed=2)
    assert forward_error(reference, ours, mix) < TOLERANCE


TASNET_VARIANTS = {
    "small": {},
    "cLN_softmax": {"norm_type": "cLN", "mask_nonlinear": "softmax"},
    "mono_odd_filters_P5": {"audio_channels": 1, "L": 15, "P": 5},
}


@pytest.mark.parametrize("overrides", TASNET_VARIANTS.values(), ids=TASNET_VARIANTS.keys())
@pytest.mark.parametrize("length", [20, 4417])
def test_tasnet_variant_matches_reference(overrides, length):
    reference, ours = pair(ReferenceConvTasNet, {**SMALL_TASNET, **overrides}, seed=3)
    assert forward_error(reference, ours, noise(2, ours.audio_channels, length, seed=length)) < TOLERANCE


def test_valid_length_matches_reference():
    for overrides in ({}, {"resample": False}, {"context": 1}, {"depth": 3, "kernel_size": 6, "stride": 2}):
        reference = ReferenceDemucs(**{**SMALL_DEMUCS, **overrides})
        ours = DemucsV2(DemucsV2Config.from_reference(**{**SMALL_DEMUCS, **overrides}))
        assert all(ours.valid_length(n) == reference.valid_length(n) for n in range(1, 5000, 7))


@pytest.mark.parametrize("kwargs, words", [
    ({"causal": True}, "causal Conv-TasNet"),
    ({"norm_type": "BN"}, "norm_type 'BN'"),
    ({"mask_nonlinear": "tanh"}, "mask_nonlinear 'tanh'"),
    ({"frobnicate": 1}, "unknown model options: frobnicate"),
])
def test_tasnet_options_it_cannot_run_are_refused(kwargs, words):
    with pytest.raises(ModelError, match=words):
        ConvTasNetConfig.from_reference(SOURCES, **kwargs)


def test_demucs_whose_output_shrinks_by_an_odd_count_is_refused():
    """Its middle could not be placed on the input's samples the same way for every chunk length."""
    with pytest.raises(ModelError, match="shrinks by an odd number"):
        DemucsV2Config.from_reference(SOURCES, depth=3, kernel_size=6, stride=3)


# Whole songs: demucs 2.0.3's separate.py normalises by the mono mix and calls `apply_model(split=True)`.

def reference_separate(reference: torch.nn.Module, mix: torch.Tensor, **options: object) -> torch.Tensor:
    mono = mix.mean(0)
    mean, std = mono.mean(), mono.std() + 1e-8
    with torch.no_grad():
        out = apply_model_v2(reference, (mix - mean) / std, split=True, **options)
    return out * std + mean


def ours_separate(ours: torch.nn.Module, mix: torch.Tensor, settings: Settings) -> torch.Tensor:
    return separate_tensor(mixed_bag("test", [ours], [None], identity=""), mix, settings)


def random_mix(seconds: float, seed: int) -> torch.Tensor:
    return 0.3 * noise(2, int(seconds * 44100), seed=seed) + 0.05


@pytest.fixture(scope="module")
def small_pairs() -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    return {"demucs": pair(ReferenceDemucs, SMALL_DEMUCS, seed=4),
            "tasnet": pair(ReferenceConvTasNet, SMALL_TASNET, seed=5)}


# 4.3 s in 2 s segments: chunks read with their neighbours' samples, a short last one.
@pytest.mark.parametrize("kind, overlap", [("demucs", 0.25), ("tasnet", 0.6)])
def test_whole_song_matches_reference(small_pairs, kind, overlap):
    reference, ours = small_pairs[kind]
    mix = random_mix(4.3, seed=6)
    expected = reference_separate(reference, mix, overlap=overlap)
    result = ours_separate(ours, mix, Settings(overlap=overlap))
    assert result.shape == expected.shape == (4, 2, mix.shape[-1])
    assert sdr(result, expected) > MIN_SDR


# The reference shifts each segment on its own; within one segment that is the same as shifting the song.
@pytest.mark.parametrize("kind", ["demucs", "tasnet"])
def test_shifts_within_one_segment_match_reference(small_pairs, kind):
    reference, ours = small_pairs[kind]
    mix = random_mix(0.9, seed=7)
    random.seed(11)
    expected = reference_separate(reference, mix, shifts=2)
    random.seed(11)
    assert sdr(ours_separate(ours, mix, Settings(shifts=2)), expected) > MIN_SDR
