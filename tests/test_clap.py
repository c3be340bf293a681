"""CLAP's towers against laion-clap 1.1.7 with random weights: the same tokens or clip in, the same
embedding out."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clap_oracle import (CORPUS, audio_features_function, htsat_base_config, hub_transformers, oracle_clap,
                         small_text_config, write_bpe_files)
from stemsplit.errors import ModelError
from stemsplit.networks import htsat
from stemsplit.networks.clap import audio_tower_state, load_audio_tower, load_text_tower, text_tower_state
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


# --- loading laion-clap's checkpoint layout --------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(oracle, tmp_path_factory):
    """A file in the layout of music_speech_audioset_epoch_15_esc_89.98.pt: a torch pickle of the training
    state, the weights under "state_dict" with data-parallel `module.` names (position_ids as older
    transformers saved it), numpy values beside them."""
    state = prefixed(oracle.state_dict()) | {"module.text_branch.embeddings.position_ids": torch.arange(514)[None]}
    path = tmp_path_factory.mktemp("clap") / "music_speech_audioset_epoch_15_esc_89.98.pt"
    torch.save({"epoch": 15, "name": "music_speech_audioset", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "esc50": np.float64(89.98),
                "curve": np.array([88.1, 89.98])}, path)
    return path


def same_state(one: torch.nn.Module, other: torch.nn.Module) -> bool:
    theirs = other.state_dict()
    return all(torch.equal(value, theirs[name]) for name, value in one.state_dict().items())


def test_towers_load_from_the_clap_checkpoint_layout(checkpoint, oracle, text_config):
    assert same_state(load_text_tower(checkpoint, text_config), text_tower_from(oracle, text_config))
    assert same_state(load_audio_tower(checkpoint), audio_tower_from(oracle))


def test_a_weight_missing_or_foreign_is_refused(checkpoint, tmp_path, text_config):
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    del state["module.text_branch.encoder.layer.1.output.dense.bias"]
    torch.save({"state_dict": state}, tmp_path / "missing.pt")
    with pytest.raises(ModelError, match=r"does not fit its config \(CLAP text tower\): 1 weights missing"):
        load_text_tower(tmp_path / "missing.pt", text_config)
    state["module.decoder.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "foreign.pt")
    with pytest.raises(ModelError, match=r"is not a CLAP checkpoint: 1 weights of no CLAP part \(e.g. decoder"):
        load_audio_tower(tmp_path / "foreign.pt")


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, text_config):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"module.logit_scale_a": torch.zeros(())}, "hook": RunsCode(marker)},
               tmp_path / "hostile.pt")
    with pytest.raises(ModelError, match=r"refers to builtins\.exec, which a weight file must not contain"):
        load_text_tower(tmp_path / "hostile.pt", text_config)
    assert not marker.exists()


def spoil_tensors(path: Path, tensors: list[torch.Tensor]) -> None:
    """Overwrite, in the zip-format file, the records holding `tensors`' bytes with NaN (0xff bytes)."""
    wanted = {tensor.numpy().tobytes() for tensor in tensors}
    with zipfile.ZipFile(path) as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename]
    found = set()
    with path.open("r+b") as file:
        for info in records:
            file.seek(info.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", file.read(4))
            file.seek(info.header_offset + 30 + name_length + extra_length)
            data = file.read(info.file_size)
            if data in wanted:
                file.seek(-info.file_size, 1)
                file.write(b"\xff" * info.file_size)
                found.add(data)
    assert found == wanted


def test_a_text_query_never_builds_or_reads_the_audio_tower(checkpoint, oracle, text_config, tmp_path,
                                                            monkeypatch):
    spoilt = tmp_path / "spoilt.pt"
    shutil.copy(checkpoint, spoilt)
    audio = [value for name, value in oracle.state_dict().items()
             if name.startswith("audio_branch.layers.2.blocks.") and name.endswith("mlp.fc1.weight")]
    spoil_tensors(spoilt, audio)
    assert load_audio_tower(spoilt).htsat.layers[2].blocks[0].mlp.fc1.weight.isnan().all()
    text = [value for name, value in oracle.state_dict().items() if name == "text_projection.0.weight"]
    spoil_tensors(spoilt, text)
    assert not load_audio_tower(spoilt).projection[0].weight.isnan().any()  # nor an example the text tower's

    def refused(*args, **kwargs):
        raise AssertionError("the audio tower was built")

    monkeypatch.setattr(htsat.Htsat, "__init__", refused)
    shutil.copy(checkpoint, spoilt)
    spoil_tensors(spoilt, [value.detach() for name, value in oracle.named_parameters()
                           if name.startswith(("audio_branch.", "audio_projection.")) and "_extractor." not in name])
    assert same_state(load_text_tower(spoilt, text_config), text_tower_from(oracle, text_config))
