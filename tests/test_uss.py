"""USS (issue 19 items 3 and 4): our Cnn14 against panns-inference 0.1.1, the example condition against uss's
procedure, the label queries' per-segment conditions and gating against uss's, the AudioSet label list and
how words find a label. Random weights of the released configurations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import relative_error, sdr, separate_tensor
from stemsplit.bag import query_bag
from stemsplit.errors import SettingsError
from stemsplit.labels import labels, match
from stemsplit.networks.cnn14 import Cnn14, from_reference
from stemsplit.networks.uss import ACTIVE_PROBABILITY, LabelQueried, example_condition
from uss_oracle import reference_cnn14, resunet_pair

pytest.importorskip("uss")
RATE, SEGMENT = 32000, 64000


@pytest.fixture(scope="module")
def taggers(tmp_path_factory):
    reference = reference_cnn14(seed=5, home=tmp_path_factory.mktemp("home"))
    ours = Cnn14().eval()
    ours.load_state_dict(from_reference(reference.state_dict()))
    return reference, ours


def test_cnn14_matches_panns_inference(taggers):
    reference, ours = taggers
    torch.manual_seed(0)
    clip = 0.1 * torch.randn(2, RATE)
    with torch.no_grad():
        expected, got = reference(clip), ours(clip)
    assert relative_error(got.clipwise, expected["clipwise_output"]) < 1e-4
    assert relative_error(got.embedding, expected["embedding"]) < 1e-4


def test_an_examples_condition_is_uss_mean_over_its_sounding_segments(taggers):
    from uss.utils import remove_silence, repeat_to_length

    reference, ours = taggers
    rng = np.random.default_rng(2)
    example = (0.2 * rng.standard_normal(int(2.7 * RATE))).astype(np.float32)
    example[RATE // 2:RATE] = 0.001  # half a second of near silence, which uss drops
    sounding = remove_silence(audio=example, sample_rate=RATE)
    segments = [repeat_to_length(sounding[start:start + SEGMENT], SEGMENT) for start in range(0, len(sounding),
                                                                                                SEGMENT)]
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.stack(segments)))["clipwise_output"].mean(0)
    got = example_condition(ours, example, SEGMENT)
    assert len(segments) == 2 and relative_error(got, expected) < 1e-4
    assert example_condition(ours, np.zeros(RATE, np.float32), SEGMENT) is None


@pytest.fixture(scope="module")
def separators():
    return resunet_pair(seed=4)


def reference_label_separation(tagger, separator, mono: torch.Tensor, label: int) -> torch.Tensor:
    """uss/inference.py's separate_by_query_conditions for one label: per zero-padded segment, its label
    probabilities kept at the label only as the condition, silence where the label's is under 0.2."""
    count = -(-mono.shape[-1] // SEGMENT)
    segments = torch.nn.functional.pad(mono, (0, count * SEGMENT - mono.shape[-1])).reshape(count, SEGMENT)
    outputs = []
    with torch.no_grad():
        for segment in segments:
            probabilities = tagger(segment[None])["clipwise_output"]
            masked = torch.zeros_like(probabilities)
            masked[:, label] = probabilities[:, label]
            active = probabilities[0, label] >= ACTIVE_PROBABILITY
            outputs.append(separator({"mixture": segment[None, None], "condition": masked})["waveform"].reshape(-1)
                           if active else torch.zeros(SEGMENT))
    return torch.cat(outputs)[:mono.shape[-1]]


def test_a_label_query_conditions_and_gates_each_segment_as_uss(taggers, separators):
    reference_tagger, tagger = taggers
    reference, ours = separators
    torch.manual_seed(6)
    song = (0.1 * torch.randn(1, int(1.5 * RATE))).expand(2, -1)  # one short segment; channels are shown apart
    # in test_resunet.py
    with torch.no_grad():
        probabilities = tagger(song[0, :SEGMENT][None]).clipwise[0]
    loud, quiet = int(probabilities.argmax()), int(probabilities.argmin())
    with torch.no_grad():  # random weights find every label likely: one made unlikely in both taggers
        for network in (reference_tagger, tagger):
            network.fc_audioset.bias[quiet] -= 20
    try:
        networks = [LabelQueried(ours, tagger, [label], name) for label, name in ((loud, "on"), (quiet, "off"))]
        stems = separate_tensor(query_bag("uss", networks, "test"), song)
        on = reference_label_separation(reference_tagger, reference, song[0], loud)
        off = reference_label_separation(reference_tagger, reference, song[0], quiet)
        assert on.abs().max() > 0 and off.abs().max() == 0
        assert all(sdr(stems[0, channel], on) >= 90 for channel in range(2)) and stems[2].abs().max() == 0
    finally:
        with torch.no_grad():
            for network in (reference_tagger, tagger):
                network.fc_audioset.bias[quiet] += 20
    assert torch.allclose(stems[0] + stems[1], song, atol=1e-6) and torch.equal(stems[3], song)


def test_the_label_list_is_audiosets_527_in_cnn14s_order():
    names = labels()
    assert len(names) == 527 and names[0] == "Speech" and names[137] == "Music" and names[-1] == "Field recording"


@pytest.mark.parametrize("query, label, how", [
    ("Acoustic Guitar", "Acoustic guitar", "name"),
    ("man speaking", "Male speech, man speaking", "name"),
    ("drums", "Drum", "words"),
    ("gitar", "Guitar", "spelling"),
])
def test_words_find_the_closest_label(query, label, how):
    found = match(query)
    assert (labels()[found.index], found.label, found.how) == (label, label, how)


def test_words_near_no_label_are_refused():
    with pytest.raises(SettingsError, match="no AudioSet label is close to 'xyzzy'"):
        match("xyzzy")
