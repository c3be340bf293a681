"""stemsplit.networks.htdemucs.HTDemucs against the reference implementation, with shared random weights."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
import torch
from demucs.htdemucs import HTDemucs as ReferenceHTDemucs

from helpers import relative_error, sdr
from oracle import perturbed_reference
from reference_configs import PRETRAINED_KWARGS, SMALL_KWARGS
from stemsplit.errors import ModelError
from stemsplit.networks.htdemucs import HTDemucs, HTDemucsConfig, attention, positions

TOLERANCE = 1e-4


def model_pair(kwargs: dict, seed: int = 0) -> tuple[torch.nn.Module, HTDemucs]:
    """The perturbed reference and our model with its weights.

    LayerScale gains start near 1e-3 and stay small after the shared perturbation,
    which would mute the residual branches they scale (a missing norm inside the
    transformer changed the output by only 3e-5). Drawing them at 0.3 makes every
    branch count.
    """
    reference = perturbed_reference(kwargs, seed)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith(".scale"):
                parameter.normal_(0, 0.3)
    ours = HTDemucs(HTDemucsConfig.from_reference(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def compare(reference: torch.nn.Module, ours: HTDemucs, batch: int, length: int, seed: int = 0) -> float:
    mix = torch.randn(batch, ours.audio_channels, length, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = reference(mix)
        actual = ours(mix)
    assert actual.shape == expected.shape == (batch, len(ours.sources), ours.audio_channels, length)
    return relative_error(actual, expected)


# htdemucs_ft's four networks have htdemucs's architecture, so two configurations cover the three models.
@pytest.fixture(scope="module", params=["htdemucs", "htdemucs_6s"])
def pretrained_pair(request):
    return model_pair(PRETRAINED_KWARGS[request.param])


def test_pretrained_full_segment_matches_reference(pretrained_pair):
    reference, ours = pretrained_pair
    # Batch 1: the variants below check batches of 2 in the same code at a fraction of the cost.
    assert compare(reference, ours, batch=1, length=ours.training_length) < TOLERANCE


# One configuration is enough here: padding costs a full forward pass and is the same code for all.
@pytest.mark.parametrize("pretrained_pair", ["htdemucs"], indirect=True)
def test_pretrained_short_input_matches_reference(pretrained_pair):
    reference, ours = pretrained_pair
    # Not a multiple of the STFT hop, so the internal zero padding and final crop both matter.
    assert compare(reference, ours, batch=1, length=3 * ours.samplerate + 123, seed=1) < TOLERANCE


@pytest.mark.parametrize("name", sorted(PRETRAINED_KWARGS))
def test_pretrained_state_dict_names_and_shapes(name):
    kwargs = PRETRAINED_KWARGS[name]
    expected = {key: value.shape for key, value in ReferenceHTDemucs(**kwargs).state_dict().items()}
    actual = {key: value.shape for key, value in HTDemucs(HTDemucsConfig.from_reference(**kwargs)).state_dict().items()}
    assert actual == expected


def test_htdemucs_attributes():
    model = HTDemucs(HTDemucsConfig.from_reference(**PRETRAINED_KWARGS["htdemucs"]))
    assert model.sources == ["drums", "bass", "other", "vocals"]
    assert (model.samplerate, model.audio_channels) == (44100, 2)
    assert model.segment == Fraction(39, 5)
    assert model.training_length == 343980
    # The number of tensors in the official checkpoint.
    assert len(model.state_dict()) == 533


# Options the official models do not use, each switched on in the small configuration.
VARIANTS = {
    "small": {},
    "no_bottom_channels": {"bottom_channels": 0},
    "group_norms": {"norm_starts": 0, "norm_groups": 2},
    "no_rewrite_encoder_dconv_only_no_freq_emb": {"rewrite": False, "dconv_mode": 1, "freq_emb": 0},
    "decoder_dconv_only_other_contexts": {"dconv_mode": 2, "context": 0, "context_enc": 1, "dconv_depth": -2},
    "cross_first_plain_layers": {"t_cross_first": True, "t_layers": 3, "t_norm_out": False,
                                 "t_layer_scale": False, "t_gelu": False},
    "post_norm_group_norms": {"t_norm_first": False, "t_norm_in": False, "t_norm_in_group": True,
                              "t_group_norm": True},
    "no_input_norm": {"t_norm_in": False, "t_weight_pos_embed": 0.5, "t_max_period": 1000.0},
    "no_transformer": {"t_layers": 0},
    "mono_three_sources": {"audio_channels": 1, "sources": ["a", "b", "c"], "samplerate": 22050,
                           "segment": Fraction(3, 2), "growth": 3, "t_hidden_scale": 2.0, "emb_scale": 3},
    "stride_2": {"nfft": 256, "kernel_size": 4, "stride": 2, "depth": 4, "segment": Fraction(1, 4)},
    "wiener_ignored_with_cac": {"wiener_iters": 1, "end_iters": 1},
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_variant_matches_reference(overrides):
    reference, ours = model_pair({**SMALL_KWARGS, **overrides}, seed=3)
    assert compare(reference, ours, batch=2, length=ours.training_length) < TOLERANCE
    assert compare(reference, ours, batch=2, length=ours.training_length // 3 + 1, seed=1) < TOLERANCE


def test_short_input_equals_zero_padded_prefix():
    # Zero padding is part of the contract: running a prefix equals running it zero-padded.
    _, ours = model_pair(SMALL_KWARGS, seed=4)
    mix = torch.randn(1, 2, ours.training_length // 2)
    padded = torch.nn.functional.pad(mix, (0, ours.training_length - mix.shape[-1]))
    with torch.inference_mode():
        assert torch.equal(ours(mix), ours(padded)[..., : mix.shape[-1]])


def test_too_long_input_is_rejected():
    model = HTDemucs(HTDemucsConfig.from_reference(**SMALL_KWARGS)).eval()
    with pytest.raises(ValueError, match="more than"):
        model(torch.zeros(1, 2, model.training_length + 1))


def test_untrained_model_runs_and_is_finite():
    # Other tests build tiny models without weights; their outputs must still be usable numbers.
    torch.manual_seed(5)
    model = HTDemucs(HTDemucsConfig.from_reference(**SMALL_KWARGS)).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 2, 1000))
    assert out.shape == (1, 4, 2, 1000)
    assert torch.isfinite(out).all() and out.abs().max() > 0


# How the engine runs the fast modes. The bound is well under what these weights give (42-51 dB for
# bfloat16, about 60 for float16, over a few seeds) and above what a precision bug would leave.
@pytest.mark.parametrize("dtype, min_sdr", [(torch.bfloat16, 35), (torch.float16, 50)], ids=["bf16", "fp16"])
def test_autocast_output_is_float32_and_close_to_exact(dtype, min_sdr):
    _, ours = model_pair(SMALL_KWARGS, seed=3)
    t = torch.arange(ours.training_length) / ours.samplerate
    noise = torch.randn(2, 2, ours.training_length, generator=torch.Generator().manual_seed(0))
    mix = torch.sin(2 * torch.pi * 220 * t) + 0.3 * noise
    with torch.inference_mode():
        exact = ours(mix)
        with torch.autocast("cpu", dtype=dtype):
            fast = ours(mix)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert sdr(fast, exact) > min_sdr


def test_bfloat16_attention_on_cpu_matches_sdpa():
    # Several query blocks, and keys of another length, as in cross-attention.
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 16, generator=generator) for length in (40, 24, 24))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    actual = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), block=16)
    assert actual.dtype == torch.bfloat16
    assert relative_error(actual.float(), expected) < 2e-2
    assert torch.equal(attention(q, k, v), expected)


def test_cached_positions_are_usable_outside_inference_mode():
    for dtype in (torch.float32, torch.bfloat16):
        with torch.inference_mode():
            grid, sequence = positions(4, 6, 12, 8, 10000.0, 1.0, torch.device("cpu"), dtype)
        assert grid.shape == (24, 8) and sequence.shape == (12, 8) and grid.dtype == dtype
        assert not grid.is_inference() and not sequence.is_inference()


UNSUPPORTED = {
    "cac": ({"cac": False}, "cac=False"),
    "multi_freqs": ({"multi_freqs": [0.5]}, "multi_freqs"),
    "cape": ({"t_emb": "cape"}, "t_emb='cape'"),
    "scaled": ({"t_emb": "scaled"}, "t_emb='scaled'"),
    "sparse_self": ({"t_sparse_self_attn": True}, "sparse attention"),
    "sparse_cross": ({"t_sparse_cross_attn": True}, "sparse attention"),
    "random_shift": ({"t_sin_random_shift": 3}, "t_sin_random_shift"),
    "no_train_segment": ({"use_train_segment": False}, "use_train_segment"),
    "channels_time": ({"channels_time": 6}, "channels_time"),
    "branches_merge": ({"nfft": 128}, "merge"),
    "transformer_width": ({"bottom_channels": 30}, "divisible"),
    "unknown_option": ({"dconv_lstm": 4}, "unknown model options: dconv_lstm"),
}


@pytest.mark.parametrize("overrides, message", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_options_raise_model_error(overrides, message):
    with pytest.raises(ModelError, match=re.escape(message)):
        HTDemucs(HTDemucsConfig.from_reference(**{**SMALL_KWARGS, **overrides}))
