"""AudioSep: its `use_chunk` procedure (chunking.ContextChunks) through the engine, and the whole family
(CLAP text or audio embedding -> ResUNet30) against a reference composed of laion-clap 1.1.7's CLAP and
uss 0.0.4's ResUNet30 with AudioSep's procedure, random weights in the real files' layouts."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from clap_oracle import hub_transformers, oracle_clap, small_text_config, write_bpe_files
from helpers import sdr, separate_tensor
from stemsplit.bag import single_network_bag
from stemsplit.catalogue import ModelInfo, WeightFile
from stemsplit.chunking import ContextChunks
from stemsplit.errors import InputError, ModelError
from stemsplit.families import audiosep
from stemsplit.family import CatalogueFiles, Fetched
from stemsplit.networks import htsat
from stemsplit.queries import Queries
from stemsplit.separation import Settings

RATE = 100  # samples per "second" of this test: AudioSep's 1 s + 3 s + 1 s windows are 100 + 300 + 100 samples
LEFT, CENTRE, RIGHT = RATE, 3 * RATE, RATE


class ChunkSensitive(nn.Module):
    """Each sample plus the mean and length of the chunk it was read in: what a chunk's extent changes shows."""

    family, samplerate, audio_channels, sources = "test", RATE, 1, ["target"]
    chunking = ContextChunks(LEFT, CENTRE, RIGHT)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return (mix + mix.mean(dim=-1, keepdim=True) + mix.shape[-1] / 1000)[:, None]


def as_audiosep_states_it(run, mix: torch.Tensor, chunks: ContextChunks = ChunkSensitive.chunking) -> torch.Tensor:
    """ResUNet30.chunk_inference as AudioSep's code states it, written out here: a window of NL + NC + NR
    at a stride of NC; while the window ends before the mix, its centre is kept (the first window's left
    part too), and after each step the window at the new position, cut at the mix's end, is kept from NL
    on (a later window overwrites all of that but its tail). A mix no longer than one window stays zero.
    `run` maps a (1, 1, n) window to its (1, 1, n) separated source."""
    left, centre, right = chunks.left, chunks.centre, chunks.right
    length, window, out = mix.shape[-1], left + centre + right, torch.zeros_like(mix)
    index = 0
    while index + window < length:
        chunk = run(mix[..., index:index + window])
        if index == 0:
            out[..., :window - right] = chunk[..., :-right]
        else:
            out[..., index + left:index + window - right] = chunk[..., left:-right]
        index += centre
        if index < length:
            chunk = run(mix[..., index:index + window])
            out[..., index + left:index + chunk.shape[-1]] = chunk[..., left:]
    return out


@pytest.mark.parametrize("length", [501, 799, 800, 801, 1234, 2000])
def test_context_chunks_follow_audiosep_use_chunk(length):
    network = ChunkSensitive()
    mix = torch.randn(1, length, generator=torch.Generator().manual_seed(length))
    ours = separate_tensor(single_network_bag("audiosep", network, "x"), mix)[0]
    assert torch.allclose(ours, as_audiosep_states_it(lambda chunk: network(chunk)[:, 0], mix[None])[0], atol=1e-6)


def test_a_song_no_longer_than_one_window_goes_through_in_one_run():
    network = ChunkSensitive()
    mix = torch.randn(1, 500, generator=torch.Generator().manual_seed(1))
    ours = separate_tensor(single_network_bag("audiosep", network, "x"), mix)[0]
    assert torch.allclose(ours, network(mix[None])[0, 0], atol=1e-6)
    silent = as_audiosep_states_it(lambda chunk: network(chunk)[:, 0], mix[None])
    assert not silent.any()  # AudioSep's use_chunk leaves it silent


def test_audiosep_chunks_take_no_segment_or_overlap():
    network = ChunkSensitive()
    with pytest.raises(Exception, match="segment is for HT Demucs"):
        separate_tensor(single_network_bag("audiosep", network, "x"), torch.zeros(1, 900), Settings(segment=2.0))


# --- the family against laion-clap + uss, composed as AudioSep's pipeline.py composes them ---------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """laion-clap's CLAP (small RoBERTa, HTSAT-base), uss's ResUNet30 (AudioSep's condition size) and the
    files they would come in: AudioSep's Lightning checkpoint, CLAP's training checkpoint, the BPE files."""
    pytest.importorskip("uss")
    from uss_oracle import reference_resunet

    folder = tmp_path_factory.mktemp("audiosep")
    vocab, merges = write_bpe_files(folder)
    from tokenizers import Tokenizer, models

    config = small_text_config(Tokenizer(models.BPE.from_file(str(vocab), str(merges))).get_vocab_size())
    clap, separator = oracle_clap(config.roberta, seed=11), reference_resunet(seed=12, condition_size=512)
    torch.save({"epoch": 15, "state_dict": {"module." + key: value for key, value in clap.state_dict().items()},
                "optimizer": {"state": {}}}, folder / audiosep.CLAP)
    torch.save({"epoch": 399, "global_step": 4_000_000, "pytorch-lightning_version": "2.0.9",
                "state_dict": {"ss_model." + key: value for key, value in separator.state_dict().items()}
                | {"query_encoder.model.logit_scale_a": torch.zeros(())}}, folder / audiosep.SEPARATOR)
    names = (audiosep.SEPARATOR, audiosep.CLAP, audiosep.VOCAB, audiosep.MERGES)
    files = CatalogueFiles(ModelInfo("audiosep", "audiosep", "", ("<query>", "no_<query>")),
                           tuple(Fetched(folder / name, "", WeightFile(f"checkpoint/{name}")) for name in names),
                           None, "audiosep-test")
    return clap, separator, files, folder


def song(seconds: float) -> torch.Tensor:
    """A real mix where the shared clips are, else a synthetic one: mono at 32 kHz."""
    from conftest import SHARED

    path = SHARED / "audio" / "Music_Delta_-_80s_Rock" / "mixture.flac"
    if path.is_file():
        import scipy.signal

        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = scipy.signal.resample_poly(samples.mean(axis=1)[: int(seconds * rate)], 32000, rate)
        return torch.from_numpy(mono.astype(np.float32))[None]
    t = torch.arange(int(seconds * 32000)) / 32000
    return (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(len(t)))[None]


def reference_separation(separator, condition: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    def run(chunk: torch.Tensor) -> torch.Tensor:
        return separator({"mixture": chunk, "condition": condition[None]})["waveform"]

    with torch.no_grad():
        return as_audiosep_states_it(run, mix[None], audiosep.USE_CHUNK)[0]


def test_a_text_query_separates_as_audiosep_does(reference, monkeypatch):
    clap, separator, files, folder = reference
    text = "acoustic guitar"
    tokens = hub_transformers().RobertaTokenizer.from_pretrained(str(folder))(
        [text], padding="max_length", truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        condition = clap.get_text_embedding(dict(tokens))[0]

    def refused(*args, **kwargs):
        raise AssertionError("a text query built the audio tower")

    monkeypatch.setattr(htsat.Htsat, "__init__", refused)
    bag = audiosep.build(files, Queries.of(texts=(text,)), print)
    assert bag.stems == ["acoustic guitar", "no_acoustic guitar"]
    mix = song(5.5)  # one whole window and the last, shorter one
    ours = separate_tensor(bag, mix)
    expected = reference_separation(separator, condition, mix)
    assert sdr(ours[0], expected) >= 90, sdr(ours[0], expected)
    print(f"AudioSep text query vs the reference: {sdr(ours[0], expected):.1f} dB")
    assert sdr(ours[0] + ours[1], mix) >= 90  # the pair sums to the mix


def test_an_example_query_is_embedded_as_laion_clap_embeds_it(reference, tmp_path, monkeypatch):
    from clap_oracle import audio_features_function, htsat_base_config

    clap, separator, files, folder = reference
    example = (0.2 * np.sin(2 * np.pi * 330 * np.arange(48000 * 3) / 48000)).astype(np.float32)
    sf.write(tmp_path / "guitar.wav", example, 48000, subtype="FLOAT")
    features = audio_features_function()({}, torch.from_numpy(example), 480000, "rand_trunc", "repeatpad",
                                         htsat_base_config()["audio_cfg"])
    with torch.no_grad():
        expected = clap.get_audio_embedding([features])[0]
    monkeypatch.setattr(audiosep, "TextTokenizer", None)  # an example never needs the text side
    (condition,) = audiosep.example_conditions({audiosep.CLAP: folder / audiosep.CLAP}, (tmp_path / "guitar.wav",))
    assert (condition - expected).abs().max() < 1e-4


def test_a_file_without_audiosep_weights_is_refused(tmp_path):
    torch.save({"state_dict": {"query_encoder.model.logit_scale_a": torch.zeros(())}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelError, match=r"is not an AudioSep checkpoint: no ss_model\.\* weights"):
        audiosep.separator_of(tmp_path / "other.ckpt")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_an_audiosep_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"ss_model.base.bn0.weight": torch.ones(1025)}, "hyper_parameters": RunsCode(marker)},
               tmp_path / "hostile.ckpt")
    with pytest.raises(ModelError, match=r"refers to builtins\.exec, which a weight file must not contain"):
        audiosep.separator_of(tmp_path / "hostile.ckpt")
    assert not marker.exists()


def test_the_catalogue_entry_downloads_from_the_space_and_roberta_base(tmp_path, monkeypatch):
    """`stemsplit download audiosep` through a loopback Hub: the Space's two checkpoints (LFS: SHA-256 ETags)
    and roberta-base's BPE files (kept in git: git blob id ETags), each verified and its SHA-256 recorded."""
    import hashlib
    import json

    import huggingface_hub.constants

    from hub_server import HubServer
    from stemsplit.catalogue import find_model
    from stemsplit.hub import VERIFICATIONS, hub_cache
    from stemsplit.registry import download

    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    info = find_model("audiosep")
    contents = {file.name: f"bytes of {file.name}".encode() for file in info.files}
    for file in info.files:
        server.add(file.repo or info.repo, ("ab" if file.repo else "cd") * 20, file.name, contents[file.name])
        if file.repo:
            content = contents[file.name]
            server.etags[file.repo, file.name] = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    try:
        download(info)
    finally:
        server.stop()
    for folder, names in (("spaces--Audio-AGI--AudioSep", [audiosep.SEPARATOR, audiosep.CLAP]),
                          ("models--FacebookAI--roberta-base", [audiosep.VOCAB, audiosep.MERGES])):
        record = json.loads((hub_cache() / folder / VERIFICATIONS).read_text())
        for name in names:
            key = next(key for key in record if key.endswith(name))
            assert record[key]["sha256"] == hashlib.sha256(contents[key.split("/", 1)[1]]).hexdigest()


def test_an_empty_example_is_one_clear_error_before_any_tower_loads(tmp_path, monkeypatch):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 48000)
    monkeypatch.setattr(audiosep, "load_audio_tower", None)  # never reached
    with pytest.raises(InputError, match=r"empty\.wav contains no audio samples$"):
        audiosep.example_conditions({}, (tmp_path / "empty.wav",))
