"""CLAP's towers against laion-clap 1.1.7 with random weights: the same tokens or clip in, the same
embedding out."""

from __future__ import annotations

import pytest
import torch

from clap_oracle import (CORPUS, audio_features_function, htsat_base_config, hub_transformers, oracle_clap,
                         small_text_config, write_bpe_files)
from stemsplit.networks.clap import audio_tower_state, text_tower_state
from stemsplit.networks.clap_text import ClapTextTower, TextTokenizer
from stemsplit.networks.htsat import ClapAudioTower, HtsatConfig, clip_for_tower

QUERIES = ["acoustic guitar", "a man speaking over crowd noise", "Drums, BASS & <s> ünïcode 🎸", "x"]


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    return write_bpe_files(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def text_config(bpe_files):
    from tokenizers import Tokenizer, models

    return small_text_config(Tokenizer(models.BPE.from_file(*map(str, bpe_files))).get_vocab_size())


@pytest.fixture(scope="module")
def oracle(text_config):
    return oracle_clap(text_config.roberta, seed=3)


def prefixed(state: dict, prefix: str = "module.") -> dict:
    return {prefix + key: value for key, value in state.items()}


def text_tower_from(oracle, config) -> ClapTextTower:
    tower = ClapTextTower(config).eval()
    tower.load_state_dict(text_tower_state(oracle.state_dict()))
    return tower


def audio_tower_from(oracle) -> ClapAudioTower:
    tower = ClapAudioTower(HtsatConfig()).eval()
    tower.load_state_dict(audio_tower_state(oracle.state_dict()))
    return tower


def hub_tokens(bpe_files, texts):
    """AudioSep's tokenizer call: transformers' RobertaTokenizer, padded to 512."""
    tokenizer = hub_transformers().RobertaTokenizer.from_pretrained(str(bpe_files[0].parent))
    return tokenizer(texts, padding="max_length", truncation=True, max_length=512, return_tensors="pt")


def test_tokens_match_robertas_tokenizer(bpe_files):
    ours = TextTokenizer(*bpe_files)
    theirs = hub_tokens(bpe_files, QUERIES + CORPUS + ["long " * 700])
    for index, text in enumerate(QUERIES + CORPUS + ["long " * 700]):
        length = int(theirs["attention_mask"][index].sum())
        assert ours(text).tolist() == [theirs["input_ids"][index, :length].tolist()]


def test_text_embedding_matches_laion_clap(bpe_files, text_config, oracle):
    tower = text_tower_from(oracle, text_config)
    tokenizer = TextTokenizer(*bpe_files)
    with torch.no_grad():
        expected = oracle.get_text_embedding(dict(hub_tokens(bpe_files, QUERIES)))
        ours = torch.cat([tower(tokenizer(text)) for text in QUERIES])
    assert ours.shape == (len(QUERIES), 512)
    assert (ours - expected).abs().max() < 1e-4
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(QUERIES)))
    assert (ours[0] - ours[1]).abs().max() > 1e-2  # different queries, different embeddings


def oracle_audio_embedding(oracle, waves: list[torch.Tensor]) -> torch.Tensor:
    """laion-clap's get_audio_embedding_from_data(use_tensor=True) (unquantised, as AudioSep calls it) of each wave."""
    prepare = audio_features_function()
    config = htsat_base_config()["audio_cfg"]
    features = [prepare({}, wave, 480000, "rand_trunc", "repeatpad", config) for wave in waves]
    return oracle.get_audio_embedding(features)


def test_clips_are_prepared_as_laion_clap_prepares_them():
    prepare, config = audio_features_function(), htsat_base_config()["audio_cfg"]
    generator = torch.Generator().manual_seed(4)
    for samples in (1, 33_333, 158_400, 480_000):
        wave = torch.randn(samples, generator=generator)
        assert torch.equal(clip_for_tower(wave, 480000), prepare({}, wave, 480000, "rand_trunc", "repeatpad",
                                                                 config)["waveform"])
    longer = torch.randn(576_000, generator=generator)
    assert torch.equal(clip_for_tower(longer, 480000), longer[:480000])  # laion-clap: a random 10 s


def test_audio_embedding_matches_laion_clap(oracle):
    tower = audio_tower_from(oracle)
    time = torch.arange(int(48000 * 3.3)) / 48000
    waves = [torch.randn(480000, generator=torch.Generator().manual_seed(5)) * 0.1,
             0.3 * torch.sin(2 * torch.pi * 440 * time) * (time % 0.5 < 0.25)]
    with torch.no_grad():
        expected = oracle_audio_embedding(oracle, waves)
        ours = tower(torch.stack([clip_for_tower(wave, 480000) for wave in waves]))
    assert ours.shape == (2, 512)
    error = (ours - expected).abs().max()
    assert error < 1e-4
    assert (ours[0] - ours[1]).abs().max() > 100 * error  # different clips, different embeddings
