"""Whole songs through Demucs and Hybrid Demucs networks, alone and in an mdx-shaped bag,
against the reference's `apply_model` with shared random weights."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.demucs import Demucs as ReferenceDemucs
from demucs.hdemucs import HDemucs as ReferenceHDemucs

from oracle import perturbed_network
from stemsplit.networks.demucs import Demucs, DemucsConfig
from stemsplit.networks.hdemucs import HDemucs, HDemucsConfig
from stemsplit.bag import mixed_bag
from stemsplit.packages import apply_bag_segment
from helpers import separate_tensor
from stemsplit.separation import Settings
from v3_configs import SMALL_DEMUCS, SMALL_HDEMUCS

MIN_SDR = 100.0  # dB, float32
# The mdx bag: two time-domain Demucs, two Hybrid Demucs; rows are drums, bass, other, vocals.
MDX_WEIGHTS = [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0]]
# Small networks keep the tests quick; their own segment is longer than the bag's, which is pushed into them.
SMALL = {"segment": 5}


def pair(kind: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference_class, network, config, kwargs = {
        "demucs": (ReferenceDemucs, Demucs, DemucsConfig, SMALL_DEMUCS),
        "hdemucs": (ReferenceHDemucs, HDemucs, HDemucsConfig, SMALL_HDEMUCS),
    }[kind]
    reference = perturbed_network(reference_class, {**kwargs, **SMALL}, seed)
    ours = network(config.from_reference(**{**kwargs, **SMALL}))
    ours.load_state_dict(reference.state_dict())
    return reference, ours.eval()


def reference_separate(models: list, weights: list | None, segment: float | None, mix: torch.Tensor,
                       **options) -> torch.Tensor:
    """The reference tool's whole-song path: normalise by the mono mix, apply the bag, undo."""
    mono = mix.mean(0)
    mean, std = mono.mean(), mono.std() + 1e-8
    bag = BagOfModels(models, weights, segment)
    with torch.no_grad():
        out = apply_model(bag, ((mix - mean) / std)[None], **options)[0]
    return out * std + mean


def ours_separate(networks: list, weights: list | None, segment: float | None, mix: torch.Tensor,
                  settings: Settings | None = None) -> torch.Tensor:
    if segment is not None:
        apply_bag_segment(networks, Fraction(segment))
    bag = mixed_bag("test", networks, weights or [None] * len(networks), identity="")
    return separate_tensor(bag, mix, settings or Settings())


def sdr(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return (10 * torch.log10(reference.pow(2).sum() / (estimate - reference).pow(2).sum())).item()


def random_mix(seconds: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * 44100), generator=generator) + 0.05


@pytest.fixture(scope="module")
def mdx_pairs():
    return [pair("demucs", 1), pair("demucs", 2), pair("hdemucs", 3), pair("hdemucs", 4)]


# 7.3 s in 2 s segments at the default overlap: chunks of both lengths, and a short last one.
@pytest.mark.parametrize("kind", ["demucs", "hdemucs"])
def test_single_network_matches_reference(kind):
    reference, ours = pair(kind, 0)
    mix = random_mix(7.3)
    expected = reference_separate([reference], None, 2, mix, shifts=0, overlap=0.25)
    assert sdr(ours_separate([ours], None, 2, mix), expected) > MIN_SDR


def test_mdx_shaped_bag_matches_reference(mdx_pairs):
    mix = random_mix(6.1, seed=1)
    references, networks = zip(*mdx_pairs)
    expected = reference_separate(list(references), MDX_WEIGHTS, 2.5, mix, shifts=0, overlap=0.25)
    result = ours_separate(list(networks), MDX_WEIGHTS, 2.5, mix, Settings(batch_size=2))
    assert all(network.segment == Fraction(5, 2) for network in networks)
    assert result.shape == expected.shape
    assert sdr(result, expected) > MIN_SDR


def test_mdx_shaped_bag_with_shifts_and_overlap_matches_reference(mdx_pairs):
    mix = random_mix(2.6, seed=2)
    references, networks = zip(*mdx_pairs)
    random.seed(7)
    expected = reference_separate(list(references), MDX_WEIGHTS, 2.0, mix, shifts=1, overlap=0.5)
    random.seed(7)
    result = ours_separate(list(networks), MDX_WEIGHTS, 2.0, mix, Settings(shifts=1, overlap=0.5))
    assert sdr(result, expected) > MIN_SDR


def test_one_stem_runs_only_its_networks_and_matches_reference(mdx_pairs):
    mix = random_mix(3.0, seed=3)
    references, networks = zip(*mdx_pairs)
    expected = reference_separate(list(references), MDX_WEIGHTS, 2.0, mix, shifts=0)
    apply_bag_segment(list(networks), Fraction(2))
    bag = mixed_bag("mdx", list(networks), MDX_WEIGHTS, identity="").needing(["bass"])
    assert [member.network for member in bag.members] == list(networks[:2])
    assert sdr(separate_tensor(bag, mix)[0], expected[1]) > MIN_SDR


def test_a_longer_bag_segment_is_pushed_into_v3_networks_only():
    _, hybrid = pair("hdemucs", 5)
    apply_bag_segment([hybrid], Fraction(44))
    assert hybrid.segment == 44 and hybrid.chunking.segment == 44
