"""The whole-song procedure against the reference's `apply_model`, with shared random weights."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from helpers import excerpt, relative_error, sdr, separate_tensor
from oracle import model_pair
from reference_configs import PRETRAINED_KWARGS, SMALL_KWARGS
from roformer_oracle import roformer_files
from stemsplit.bag import Bag, mixed_bag
from stemsplit.chunking import CentredSegments
from stemsplit.registry import load_bag
from stemsplit.separation import Settings


def reference_separate(models, weights, mix, **options):
    """The reference tool's whole-song path: normalise by the mono mix, apply the bag, undo."""
    from demucs.apply import BagOfModels, apply_model

    mono = mix.mean(0)
    mean, std = mono.mean(), mono.std() + 1e-8
    bag = BagOfModels(models, weights)
    with torch.no_grad():
        out = apply_model(bag, ((mix - mean) / std)[None], **options)[0]
    return out * std + mean


def random_mix(seconds: float, rate: int = 44100, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * rate), generator=generator) + 0.05


@pytest.fixture(scope="module")
def small_pair():
    return model_pair(SMALL_KWARGS, seed=1)


def small_bag(ours) -> Bag:
    return mixed_bag("small", [ours], [None], identity="")


def test_window_pads_with_zeros_outside_the_source():
    source = torch.arange(1, 6, dtype=torch.float32)[None]
    assert excerpt(source, -2, 4).tolist() == [[0, 0, 1, 2]]
    assert excerpt(source, 3, 4).tolist() == [[4, 5, 0, 0]]
    assert excerpt(source, 1, 3).tolist() == [[2, 3, 4]]


def test_transition_weight_is_a_symmetric_triangle():
    weight = CentredSegments(Fraction(10)).window(1, Settings())
    assert weight.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2])
    assert len(CentredSegments(Fraction(11)).window(1, Settings())) == 11


@pytest.mark.parametrize("seconds", [0.01, 2.3, 9.0])
def test_single_model_matches_reference(small_pair, seconds):
    reference, ours = small_pair
    mix = random_mix(seconds)
    expected = reference_separate([reference], None, mix, shifts=0, overlap=0.25)
    calls = []
    result = separate_tensor(small_bag(ours), mix, Settings(), progress=lambda *counts: calls.append(counts))
    assert result.shape == (len(ours.sources), 2, mix.shape[-1])
    assert relative_error(result, expected) < 1e-4
    segments = math.ceil(mix.shape[-1] / int(0.75 * ours.training_length))
    assert [done for done, _ in calls] == list(range(segments + 1))
    assert {total for _, total in calls} == {segments}


def test_overlap_segment_and_batching_match_reference(small_pair):
    reference, ours = small_pair
    mix = random_mix(3.1, seed=2)  # 11 segments of 0.6 s, 0.3 s apart: batches of 3, 3, 3 and 2
    segment = float(ours.segment) * 0.6
    expected = reference_separate([reference], None, mix, shifts=0, overlap=0.5, segment=segment)
    result = separate_tensor(small_bag(ours), mix, Settings(overlap=0.5, segment=segment, batch_size=3))
    assert relative_error(result, expected) < 1e-4


def test_random_shifts_match_reference(small_pair, monkeypatch):
    reference, ours = small_pair
    mix = random_mix(2.0, seed=3)
    # The reference's transformer also draws from `random` on every call, so replay
    # the shifts it drew instead of relying on a shared seed.
    drawn = []
    draw = random.randint
    monkeypatch.setattr(random, "randint", lambda a, b: drawn.append(draw(a, b)) or drawn[-1])
    expected = reference_separate([reference], None, mix, shifts=3)
    replay = iter(drawn)
    monkeypatch.setattr(random, "randint", lambda a, b: next(replay))
    result = separate_tensor(small_bag(ours), mix, Settings(shifts=3))
    assert len(set(drawn)) == 3
    assert relative_error(result, expected) < 1e-4


def test_bag_with_per_source_weights_matches_reference():
    pairs = [model_pair(SMALL_KWARGS, seed=seed) for seed in (11, 12, 13)]
    sources = len(SMALL_KWARGS["sources"])
    weights = [[float((i + k) % 3) for k in range(sources)] for i in range(3)]
    mix = random_mix(2.5, seed=4)
    expected = reference_separate([r for r, _ in pairs], weights, mix, shifts=0)
    bag = mixed_bag("bag", [o for _, o in pairs], weights, identity="")
    assert relative_error(separate_tensor(bag, mix), expected) < 1e-4


def test_silence_gives_silent_stems(small_pair):
    _, ours = small_pair
    result = separate_tensor(small_bag(ours), torch.zeros(2, 44100))
    assert torch.isfinite(result).all()
    assert result.abs().max() < 1e-5


def test_bad_settings_are_refused(small_pair):
    _, ours = small_pair
    mix = random_mix(1.0)
    with pytest.raises(ValueError, match="segment"):
        separate_tensor(small_bag(ours), mix, Settings(segment=float(ours.segment) + 1))
    with pytest.raises(ValueError, match="overlap"):
        separate_tensor(small_bag(ours), mix, Settings(overlap=1.0))


@pytest.mark.parametrize("name", ["htdemucs"])
def test_pretrained_configuration_matches_reference_on_12_seconds(name):
    reference, ours = model_pair(PRETRAINED_KWARGS[name], seed=5)
    mix = random_mix(12.0, seed=6)  # 3 segments of 7.8 s: the first, one with neighbours both sides, the last
    expected = reference_separate([reference], None, mix, shifts=0)
    result = separate_tensor(small_bag(ours), mix, Settings(batch_size=2))
    assert relative_error(result, expected) < 1e-4


# Band-split RoFormers: our network in the engine against audio-separator's network in its `demix`

@pytest.mark.parametrize("seconds, num_overlap", [(3.7, 4), (0.4, 4), (2.0, 2), (1.0, 3)])
def test_single_target_roformer_matches_the_oracle(tmp_path, seconds, num_overlap):
    from roformer_oracle import oracle_demix

    oracle, checkpoint, config_path, config = roformer_files(tmp_path, 1, num_overlap)
    bag = load_bag(checkpoint=checkpoint, config=config_path)
    assert bag.name == "small1" and bag.stems == ["vocals", "no_vocals"] and bag.residual == "no_vocals"
    mix = random_mix(seconds, seed=7)
    with torch.no_grad():
        expected = oracle_demix(oracle, mix, config)
    result = separate_tensor(bag, mix, Settings(batch_size=2))
    assert sdr(result[0], torch.from_numpy(expected["vocals"])) > 90
    assert sdr(result[1], torch.from_numpy(expected["other"])) > 90
    assert (result.sum(0) - mix).abs().max() < 1e-6  # the pair nulls against the mix


def test_multi_instrument_roformer_matches_the_oracle(tmp_path):
    from roformer_oracle import oracle_demix

    oracle, checkpoint, config_path, config = roformer_files(tmp_path, 2, 4, seed=3)
    bag = load_bag(checkpoint=checkpoint, config=config_path)
    assert bag.stems == ["vocals", "other"] and bag.residual is None
    mix = random_mix(2.6, seed=8)
    with torch.no_grad():
        expected = oracle_demix(oracle, mix, config)
    result = separate_tensor(bag, mix)
    for index, name in enumerate(["vocals", "other"]):
        assert sdr(result[index], torch.from_numpy(expected[name])) > 90


def test_roformer_settings_that_do_not_apply_are_refused(tmp_path):
    _, checkpoint, config_path, _ = roformer_files(tmp_path, 1, 4)
    bag = load_bag(checkpoint=checkpoint, config=config_path)
    mix = random_mix(0.5)
    with pytest.raises(ValueError, match="shifts are for HT Demucs models"):
        separate_tensor(bag, mix, Settings(shifts=1))
    with pytest.raises(ValueError, match="overlap is for HT Demucs models; this model overlaps 4 chunks"):
        separate_tensor(bag, mix, Settings(overlap=0.5))
    with pytest.raises(ValueError, match=r"segment must be in \[0.12, 1\] seconds"):  # 1/8 of the chunk at least
        separate_tensor(bag, mix, Settings(segment=2.0))
    with pytest.raises(ValueError, match=r"segment must be in \[0.12, 1\] seconds"):
        separate_tensor(bag, mix, Settings(segment=0.01))
