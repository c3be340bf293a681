"""UVR's VR architecture: our networks against audio-separator's nets / nets_new with random weights of the real
shapes, the shape read from the state dict alone."""

from __future__ import annotations

import pytest
import torch

from helpers import relative_error
from stemsplit.networks.vr import VrNetConfig, build, config_from_state
from vr_oracle import oracle_network

# (UVR's size name, model data's nout, the config our state-dict reading must find). The v5 nets' weights do not
# depend on the bins, so they run on 256 to stay quick; the v5.1 nets' LSTMs do: 4band_v2/v3's 672. The 64-channel
# sizes (537238, 537227: 7 branches; 218409: nout 64) are the same code at 16 and 48 channels, left out for time.
SHAPES = [
    (31191, None, VrNetConfig("aspp", 256, 16)),
    (33966, None, VrNetConfig("aspp", 256, 16, aspp_branches=7)),
    (129605, None, VrNetConfig("aspp", 256, 16, aspp_branches=6, deep=True)),
    (123821, None, VrNetConfig("aspp", 256, 32)),
    (56817, None, VrNetConfig("lstm", 672, 32, lstm_units=128)),
    (0, 48, VrNetConfig("lstm", 672, 48, lstm_units=128)),  # UVR-DeEcho-DeReverb's model data: nout 48
]


@pytest.mark.parametrize("size, nout, expected", SHAPES, ids=[f"{s}-{n}" for s, n, _ in SHAPES])
def test_network_matches_the_oracle(size, nout, expected):
    oracle = oracle_network(size, expected.bins, seed=size, nout=nout)
    state = oracle.state_dict()
    config = config_from_state(state, expected.bins)
    assert config == expected
    ours = build(config).eval()
    ours.load_state_dict(state, strict=True)
    magnitude = torch.rand(1, 2, expected.bins + 1, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, result = oracle(magnitude), ours(magnitude)
    assert result.shape == reference.shape == (1, 2, expected.bins + 1, 32)
    assert relative_error(result, reference) < 1e-4


def test_a_state_dict_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match="not a VR-architecture state dict"):
        config_from_state({"first_conv.weight": torch.zeros(1)}, 672)
