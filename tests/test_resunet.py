"""ResUNet30 (issue 19 item 2): ours against uss 0.0.4's with random weights of the released configuration,
per forward and over a stereo song through USS's abutting 2-second segments (each channel as a mono song)."""

from __future__ import annotations

import pytest
import torch

from helpers import relative_error, sdr, separate_tensor
from stemsplit.bag import query_bag
from stemsplit.networks.query import Conditioned, FixedCondition
from uss_oracle import reference_separation, resunet_pair

pytest.importorskip("uss")
RATE = 32000


@pytest.fixture(scope="module")
def pair():
    return resunet_pair(seed=3)


def test_one_forward_matches_the_reference(pair):
    reference, ours = pair
    torch.manual_seed(0)
    mix, condition = 0.1 * torch.randn(1, 1, 2 * RATE), torch.rand(1, 527)
    with torch.no_grad():
        expected = reference({"mixture": mix, "condition": condition})["waveform"]
        got = ours(mix, condition)
    assert got.shape == expected.shape
    assert relative_error(got, expected) < 1e-4


def test_a_song_through_the_engine_matches_uss_procedure_on_each_channel(pair):
    reference, ours = pair
    torch.manual_seed(1)
    song, condition = 0.1 * torch.randn(2, int(2.6 * RATE)), torch.rand(527)
    bag = query_bag("uss", [Conditioned(ours, FixedCondition(condition), "dog")], "test")
    stems = separate_tensor(bag, song)
    assert bag.stems == ["dog", "no_dog"] and stems.shape == (2, 2, song.shape[-1])
    for channel in range(2):
        expected = reference_separation(reference, song[channel], condition, ours.chunking.segment)
        assert sdr(stems[0, channel], expected) >= 90
    assert torch.allclose(stems.sum(0), song, atol=1e-6)
