"""AudioSep: its `use_chunk` procedure (chunking.ContextChunks) through the engine."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import separate_tensor
from stemsplit.bag import single_network_bag
from stemsplit.chunking import ContextChunks
from stemsplit.separation import Settings

RATE = 100  # samples per "second" of this test: AudioSep's 1 s + 3 s + 1 s windows are 100 + 300 + 100 samples
LEFT, CENTRE, RIGHT = RATE, 3 * RATE, RATE


class ChunkSensitive(nn.Module):
    """Each sample plus the mean and length of the chunk it was read in: what a chunk's extent changes shows."""

    family, samplerate, audio_channels, sources = "test", RATE, 1, ["target"]
    chunking = ContextChunks(LEFT, CENTRE, RIGHT)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return (mix + mix.mean(dim=-1, keepdim=True) + mix.shape[-1] / 1000)[:, None]


def as_audiosep_states_it(network: nn.Module, mix: torch.Tensor) -> torch.Tensor:
    """ResUNet30.chunk_inference as AudioSep's code states it, written out here: a window of NL + NC + NR
    at a stride of NC; while the window ends before the mix, its centre is kept (the first window's left
    part too), and after each step the window at the new position, cut at the mix's end, is kept from NL
    on (a later window overwrites all of that but its tail). A mix no longer than one window stays zero."""
    length, window, out = mix.shape[-1], LEFT + CENTRE + RIGHT, torch.zeros_like(mix)
    index = 0
    while index + window < length:
        chunk = network(mix[..., index:index + window])[:, 0]
        if index == 0:
            out[..., :window - RIGHT] = chunk[..., :-RIGHT]
        else:
            out[..., index + LEFT:index + window - RIGHT] = chunk[..., LEFT:-RIGHT]
        index += CENTRE
        if index < length:
            chunk = network(mix[..., index:index + window])[:, 0]
            out[..., index + LEFT:index + chunk.shape[-1]] = chunk[..., LEFT:]
    return out


@pytest.mark.parametrize("length", [501, 799, 800, 801, 1234, 2000])
def test_context_chunks_follow_audiosep_use_chunk(length):
    network = ChunkSensitive()
    mix = torch.randn(1, length, generator=torch.Generator().manual_seed(length))
    ours = separate_tensor(single_network_bag("audiosep", network, "x"), mix)[0]
    assert torch.allclose(ours, as_audiosep_states_it(network, mix[None])[0], atol=1e-6)


def test_a_song_no_longer_than_one_window_goes_through_in_one_run():
    network = ChunkSensitive()
    mix = torch.randn(1, 500, generator=torch.Generator().manual_seed(1))
    ours = separate_tensor(single_network_bag("audiosep", network, "x"), mix)[0]
    assert torch.allclose(ours, network(mix[None])[0, 0], atol=1e-6)
    assert not as_audiosep_states_it(network, mix[None]).any()  # AudioSep's use_chunk: silence


def test_audiosep_chunks_take_no_segment_or_overlap():
    network = ChunkSensitive()
    with pytest.raises(Exception, match="segment is for HT Demucs"):
        separate_tensor(single_network_bag("audiosep", network, "x"), torch.zeros(1, 900), Settings(segment=2.0))
