"""Stems the catalogue names (a checkpoint's "No Reverb" is the model's no_reverb), and the RoFormer entries for
the jobs people chain by hand (issue 20, item 2): each entry's config gives the stems the catalogue says."""

from __future__ import annotations

import pytest
import torch

from fake_family import Gains
from helpers import separate_tensor, tone
from stemsplit.bag import Bag, Member, pick_outputs, single_network_bag
from stemsplit.catalogue import read_catalogue
from stemsplit.errors import ModelError
from stemsplit.families.roformer import read_config
from stemsplit.registry import CONFIGS

CATALOGUE = read_catalogue()
ROFORMERS = sorted(name for name, info in CATALOGUE.items() if info.family in ("bs_roformer", "mel_band_roformer"))
KIM = read_config(CONFIGS / CATALOGUE["mel_band_roformer_kim"].config)


def dereverb_bag() -> Bag:
    network = Gains("dereverb", ["no reverb"])
    network.gains.copy_(torch.tensor([0.25]))
    return single_network_bag("dereverb", network, "x")


def test_a_renamed_bag_gives_the_same_audio_under_the_names_it_is_given():
    bag = dereverb_bag()
    renamed = bag.renamed({"no reverb": "no_reverb", "no_no reverb": "reverb"})
    assert (renamed.stems, renamed.residual) == (["no_reverb", "reverb"], "reverb")
    song = torch.from_numpy(tone(0.5, 44100).T.copy())
    separated = separate_tensor(renamed, song)
    assert torch.equal(separated, separate_tensor(bag, song))
    assert separated[0].abs().max() > 0.01 and torch.allclose(separated.sum(0), song, atol=1e-6)


def test_a_renamed_bag_gives_part_of_its_stems_and_their_complements():
    renamed = dereverb_bag().renamed({"no reverb": "no_reverb", "no_no reverb": "reverb"})
    song = torch.from_numpy(tone(0.5, 44100).T.copy())
    names = ["no_reverb", "no_no_reverb"]
    minus = renamed.for_outputs(names, other_method="minus")
    dry, no_dry = pick_outputs(separate_tensor(minus, song), minus.stems, names)
    assert torch.equal(dry, separate_tensor(dereverb_bag(), song)[0])
    assert torch.allclose(dry + no_dry, song, atol=1e-6)
    assert renamed.needing(["no_reverb"]).members[0].output("no_reverb") == "no reverb"


def test_names_that_would_call_two_stems_alike_are_refused():
    with pytest.raises(ModelError, match="would call two of its stems"):
        dereverb_bag().renamed({"no reverb": "reverb", "no_no reverb": "reverb"})


def test_a_member_whose_network_lacks_the_named_output_is_refused():
    network = Gains("n", ["dry"])
    with pytest.raises(ModelError, match="has no output 'wet'"):
        Bag("n", ["clean"], [Member(network, {"clean": 1.0}, {"clean": "wet"})])


@pytest.mark.parametrize("name", ROFORMERS)
def test_each_roformer_entrys_config_gives_its_stems_under_the_catalogues_names(name):
    info = CATALOGUE[name]
    config = read_config(CONFIGS / info.config)
    assert config.family == info.family
    network = Gains(name, list(config.sources))
    assert tuple(single_network_bag(name, network, "").renamed(dict(info.names)).stems) == info.stems


@pytest.mark.parametrize("name", ["mel_band_roformer_dereverb_anvuew", "mel_band_roformer_denoise_aufr33",
                                  "mel_band_roformer_inst_fullness_gabox", "mel_band_roformer_karaoke_aufr33_viperx"])
def test_the_job_models_build_kims_network_so_its_real_size_oracle_test_covers_them(name):
    assert read_config(CONFIGS / CATALOGUE[name].config).network == KIM.network


def test_bs_roformer_sw_is_six_stems_of_jarredous_layout():
    config = read_config(CONFIGS / CATALOGUE["bs_roformer_sw"].config)
    assert config.sources == ("bass", "drums", "other", "vocals", "guitar", "piano")
    network = config.network
    assert (network.dim, network.depth, network.num_stems, network.mlp_expansion_factor) == (256, 12, 6, 4)
    assert sum(network.freqs_per_bands) == 1025 and network.stft_hop_length == 512


@pytest.mark.parametrize("name", ["mel_band_roformer_dereverb_anvuew", "mel_band_roformer_denoise_aufr33",
                                  "mel_band_roformer_inst_fullness_gabox", "bs_roformer_sw"])
def test_the_job_entries_name_their_sources_and_say_what_is_not_known(name):
    info = CATALOGUE[name]
    [file] = info.files
    assert file.urls[0].endswith("/all_public_uvr_models/" + file.name) and "python-audio-separator" in file.urls[1]
    assert info.pinning == "no" and ("not stated" in info.licence or "unknown" in info.licence)
    assert info.card.job in ("de-reverb", "de-noise", "instrumental", "six-stems")
