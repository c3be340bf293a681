"""The RoFormer networks against audio-separator's classes with shared random weights, and
the loading of community checkpoints and configs."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import relative_error
from roformer_oracle import oracle_network
from stemsplit.checkpoint import read_state_dict
from stemsplit.families.roformer import load_network, read_config
from stemsplit.chunking import AlignedChunks
from stemsplit.errors import ModelError
from stemsplit.networks import layers
from stemsplit.networks import roformer as roformer_module
from stemsplit.networks.roformer import (BSRoformer, MelBandRoformer, RoformerConfig, mel_band_bins,
                                         roformer)

TOLERANCE = 1e-4
CONFIGS = Path(__file__).resolve().parents[1] / "stemsplit" / "configs"
KIM_VOCALS = CONFIGS / "vocals_mel_band_roformer_kj.yaml"
VIPERX_VOCALS = CONFIGS / "model_bs_roformer_ep_317_sdr_12.9755.yaml"
UNWA_INSTRUMENTAL = CONFIGS / "melband_roformer_inst_unwa.yaml"
SIX_STEMS = CONFIGS / "BS-Roformer-SW.yaml"
HOP = 128
SMALL = dict(dim=16, depth=2, time_transformer_depth=1, freq_transformer_depth=1, dim_head=8, heads=2,
             stft_n_fft=512, stft_hop_length=HOP, stft_win_length=512)
BANDS = (32, 32, 64, 129)


def small(**changes) -> RoformerConfig:
    if "num_bands" not in changes:
        changes.setdefault("freqs_per_bands", BANDS)
    return RoformerConfig(**{**SMALL, "stereo": True, "num_stems": 1, **changes})


SMALL_CONFIGS = {
    "bs-stereo-1-stem": small(),
    "bs-mono-3-stems": small(stereo=False, num_stems=3),
    "bs-mask-depth-1": small(mask_estimator_depth=1),
    "bs-mask-depth-3-expansion-2": small(mask_estimator_depth=3, mlp_expansion_factor=2),
    "bs-deeper-transformers": small(depth=1, time_transformer_depth=2, freq_transformer_depth=3),
    "bs-normalized-short-window": small(stft_normalized=True, stft_win_length=400),
    "mel-stereo-1-stem": small(num_bands=8, mask_estimator_depth=1),
    "mel-mono-2-stems": small(num_bands=6, stereo=False, num_stems=2),
    "mel-mask-depth-2-expansion-2": small(num_bands=8, mask_estimator_depth=2, mlp_expansion_factor=2),
    "mel-22050-hz": small(num_bands=12, sample_rate=22050),
    "mel-normalized-short-window": small(num_bands=8, stft_normalized=True, stft_win_length=400),
}


def network_pair(config: RoformerConfig, seed: int = 0, only_vectors: bool = False):
    """The oracle and our network sharing its weights (the same tensors, not copies)."""
    oracle = oracle_network(config, seed, only_vectors=only_vectors)
    ours = roformer(config).eval()
    ours.load_state_dict(oracle.state_dict(), strict=True, assign=True)
    return oracle, ours


def mixture(config: RoformerConfig, samples: int, batch: int = 2) -> torch.Tensor:
    channels = 2 if config.stereo else 1
    return torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(1))


def oracle_output(oracle: torch.nn.Module, config: RoformerConfig, audio: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        output = oracle(audio)
    return output.unsqueeze(1) if config.num_stems == 1 else output  # ours always has a stems axis


def assert_matches(ours: torch.nn.Module, expected: torch.Tensor, audio: torch.Tensor) -> None:
    with torch.inference_mode():
        output = ours(audio)
    assert output.shape == expected.shape
    assert expected.abs().mean() > 1e-3
    assert relative_error(output, expected) < TOLERANCE


@pytest.mark.parametrize("name", SMALL_CONFIGS)
def test_small_networks_match_the_oracle(name):
    config = SMALL_CONFIGS[name]
    oracle, ours = network_pair(config)
    audio = mixture(config, HOP * 40)
    assert_matches(ours, oracle_output(oracle, config, audio), audio)


@pytest.mark.parametrize("way", ["blocks-of-5-positions", "without-onednn"])
@pytest.mark.parametrize("name", ["bs-deeper-transformers", "mel-stereo-1-stem"])
def test_networks_match_the_oracle_however_the_cpu_runs_them(name, way, monkeypatch):
    """Many small blocks of sequences through each transformer, or plain products where oneDNN
    is missing, give the same output as the oracle."""
    if way == "without-onednn":
        monkeypatch.setattr(layers, "ONEDNN_LINEAR", None)
    else:
        monkeypatch.setattr(roformer_module, "CPU_POSITIONS_PER_BLOCK", 5)
    config = SMALL_CONFIGS[name]
    oracle, ours = network_pair(config)
    audio = mixture(config, HOP * 40)
    assert_matches(ours, oracle_output(oracle, config, audio), audio)


@pytest.mark.parametrize("activation", ["none", "relu", "tanh", "gelu"])
@pytest.mark.parametrize("way", ["onednn", "plain", "with-autograd", "bfloat16", "autocast-bfloat16"])
def test_a_linear_layer_is_its_product_and_activation(activation, way, monkeypatch):
    if way == "onednn" and layers.ONEDNN_LINEAR is None:
        pytest.skip("this torch has no oneDNN")
    if way == "plain":
        monkeypatch.setattr(layers, "ONEDNN_LINEAR", None)
    torch.manual_seed(0)
    layer = layers.Linear(48, 96)
    x = torch.randn(3, 7, 64)[..., 8:56]  # not contiguous
    product = x.double() @ layer.weight.double().T + layer.bias.double()
    expected = {"none": product, "relu": product.relu(), "tanh": product.tanh(), "gelu": F.gelu(product)}[activation]
    if way == "bfloat16":
        layer, x = layer.to(torch.bfloat16), x.to(torch.bfloat16)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=way == "autocast-bfloat16")
    with torch.set_grad_enabled(way == "with-autograd"), autocast:
        output = layer(x, activation)
    assert output.shape == (3, 7, 96) and output.requires_grad == (way == "with-autograd")
    assert output.dtype == (torch.bfloat16 if "bfloat16" in way else torch.float32)
    assert relative_error(output.double(), expected) < (1e-2 if "bfloat16" in way else 1e-6)


def test_output_has_the_input_length_when_it_is_not_a_multiple_of_the_hop():
    """The BS oracle drops the samples after the last full hop; ours keeps them."""
    config = small()
    oracle, ours = network_pair(config)
    audio = mixture(config, HOP * 40 + 57)
    expected = oracle_output(oracle, config, audio)
    with torch.inference_mode():
        output = ours(audio)
    assert output.shape == (2, 1, 2, HOP * 40 + 57) and expected.shape[-1] == HOP * 40
    assert relative_error(output[..., :HOP * 40], expected) < TOLERANCE


@pytest.mark.parametrize("bands", [{}, {"num_bands": 8}], ids=["bs", "mel"])
def test_zero_dc_matches_the_oracle_with_the_dc_bin_removed_before_the_inverse_stft(bands, monkeypatch):
    """audio-separator accepts zero_dc but ignores it; the community trainer zeroes the
    DC bin of each stem's spectrogram before the inverse STFT. That step is grafted onto
    the oracle by wrapping torch.istft while it runs."""
    config = small(zero_dc=True, **bands)
    oracle, ours = network_pair(config)
    audio = mixture(config, HOP * 40)
    istft = torch.istft

    def istft_without_dc(spectrogram, *args, **kwargs):
        return istft(spectrogram.index_fill(1, torch.tensor([0]), 0), *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "istft", istft_without_dc)
        expected = oracle_output(oracle, config, audio)
    assert relative_error(expected, oracle_output(oracle, config, audio)) > TOLERANCE
    assert_matches(ours, expected, audio)


def graft_skip_connections(oracle: torch.nn.Module, batch: int) -> None:
    """The community trainer's skip connections, which audio-separator accepts but ignores,
    grafted onto the oracle with hooks: before each layer's time transformer, the outputs
    of all earlier layers (their frequency transformers) are added to its input."""
    outputs: list[torch.Tensor] = []
    oracle.register_forward_pre_hook(lambda module, args: outputs.clear())
    for index, (time_transformer, freq_transformer) in enumerate(oracle.layers):
        def add_earlier(module, args, index=index):
            x = args[0]
            frames, dim = x.shape[1:]
            x = x.view(batch, -1, frames, dim)  # (batch, bands, frames, dim)
            for earlier in outputs[:index]:
                x = x + earlier.transpose(1, 2)
            return (x.reshape(-1, frames, dim),)

        def keep(module, args, output):
            outputs.append(output.view(batch, -1, *output.shape[1:]))  # (batch, frames, bands, dim)

        time_transformer.register_forward_pre_hook(add_earlier)
        freq_transformer.register_forward_hook(keep)


@pytest.mark.parametrize("bands", [{}, {"num_bands": 8}], ids=["bs", "mel"])
def test_skip_connection_matches_the_oracle_with_skip_connections_grafted(bands):
    config = small(skip_connection=True, depth=3, **bands)
    oracle, ours = network_pair(config)
    audio = mixture(config, HOP * 40)
    plain = oracle_output(oracle, config, audio)
    graft_skip_connections(oracle, batch=2)
    expected = oracle_output(oracle, config, audio)
    assert relative_error(expected, plain) > TOLERANCE
    assert_matches(ours, expected, audio)


@pytest.mark.parametrize(("path", "klass"), [(KIM_VOCALS, MelBandRoformer), (VIPERX_VOCALS, BSRoformer),
                                             (SIX_STEMS, BSRoformer)],
                         ids=["mel-kim-vocals", "bs-viperx-vocals", "bs-sw-six-stems"])
def test_real_size_networks_match_the_oracle(path, klass):
    config = read_config(path).network
    oracle, ours = network_pair(config, only_vectors=True)
    assert isinstance(ours, klass)
    # Ten hops (a tenth of a second at 441) keep each forward to seconds on 2 cores.
    audio = mixture(config, 10 * config.stft_hop_length, batch=1)
    expected = oracle_output(oracle, config, audio)
    del oracle
    assert_matches(ours, expected, audio)


@pytest.mark.parametrize(("num_bands", "sample_rate", "n_fft"),
                         [(60, 44100, 2048), (8, 44100, 512), (12, 22050, 512), (64, 48000, 4096)])
def test_mel_bands_are_the_support_of_librosas_filter_bank(num_bands, sample_rate, n_fft):
    filters = pytest.importorskip("librosa").filters
    expected = torch.from_numpy(filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands) > 0)
    expected[0, 0] = expected[-1, -1] = True
    assert torch.equal(mel_band_bins(num_bands, sample_rate, n_fft), expected)


def test_networks_expose_their_rate_channels_and_config():
    config = small(num_bands=8, stereo=False, sample_rate=22050)
    network = roformer(config)
    assert (network.samplerate, network.audio_channels, network.config) == (22050, 1, config)
    assert roformer(small()).audio_channels == 2


def test_band_widths_must_cover_the_spectrum():
    with pytest.raises(ModelError, match=r"^freqs_per_bands must split the 257 STFT bins of "
                                         r"stft_n_fft=512 into at least 2 bands$"):
        small(freqs_per_bands=(128, 128))


# Configs


def test_real_configs_are_read_with_their_tuples_and_inference_settings():
    viperx = read_config(VIPERX_VOCALS)
    assert viperx.family == "bs_roformer"
    assert viperx.network.freqs_per_bands == (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
    assert (viperx.network.dim, viperx.network.depth, viperx.network.mask_estimator_depth) == (512, 12, 2)
    assert (viperx.dim_t, viperx.num_overlap, viperx.chunk_size) == (801, 4, 352800)
    # lower case, as stems are named
    assert (viperx.instruments, viperx.sources) == (("vocals", "instrumental"), ("vocals",))
    kim = read_config(KIM_VOCALS)
    assert (kim.family, kim.network.num_bands, kim.network.stft_hop_length) == ("mel_band_roformer", 60, 441)
    assert (kim.dim_t, kim.num_overlap, kim.chunk_size, kim.sources) == (256, 2, 441 * 255, ("vocals",))
    unwa = read_config(UNWA_INSTRUMENTAL)
    assert (unwa.family, unwa.sample_rate, unwa.sources) == ("mel_band_roformer", 44100, ("instrumental",))


def write_config(folder: Path, model_lines: str = "", training: str = "", inference: str = "",
                 num_stems: int = 1, num_bands: int = 8) -> Path:
    """A small Mel-Band RoFormer config with extra `model` lines."""
    path = folder / "config.yaml"
    path.write_text(
        "audio:\n  sample_rate: 44100\n"
        f"model:\n  dim: 16\n  depth: 1\n  num_bands: {num_bands}\n  stereo: true\n  num_stems: {num_stems}\n"
        "  stft_n_fft: 512\n  stft_hop_length: 128\n  stft_win_length: 512\n" + model_lines +
        (training or "training:\n  instruments: [vocals, other]\n  target_instrument: vocals\n") +
        (inference or "inference:\n  dim_t: 101\n  num_overlap: 2\n"))
    return path


def test_training_only_keys_are_ignored(tmp_path):
    plain = read_config(write_config(tmp_path))
    training_keys = ("  attn_dropout: 0.1\n  ff_dropout: 0.1\n  flash_attn: false\n  sage_attention: true\n"
                     "  use_torch_checkpoint: true\n  multi_stft_resolution_loss_weight: 1.0\n"
                     "  multi_stft_resolutions_window_sizes: !!python/tuple [4096, 2048]\n"
                     "  multi_stft_hop_size: 147\n  multi_stft_normalized: false\n"
                     "  linear_transformer_depth: 0\n  dim_freqs_in: 257\n")
    assert read_config(write_config(tmp_path, training_keys)) == plain
    assert plain.network == RoformerConfig(**{**SMALL, "num_bands": 8, "stereo": True, "num_stems": 1,
                                              "depth": 1, "mask_estimator_depth": 1,
                                              "dim_head": 64, "heads": 8,
                                              "time_transformer_depth": 2, "freq_transformer_depth": 2})


@pytest.mark.parametrize(("line", "message"), [
    ("  linear_transformer_depth: 1\n", "model.linear_transformer_depth=1 is not supported"),
    ("  use_pope: true\n", "model.use_pope=True is not supported"),
    ("  conformer_depth: 2\n", "model.conformer_depth is not supported"),
    ("  dim_freqs_in: 1025\n", "model.dim_freqs_in is 1025 but stft_n_fft 512 gives 257 frequencies"),
    ("  stereo: 2\n", "model.stereo must be true or false, not 2"),
    ("  stft_win_length: 1024\n", "stft_win_length 1024 is longer than stft_n_fft 512"),
    ("  freqs_per_bands: [257]\n", "the model section needs exactly one of freqs_per_bands "
                                   "(BS-RoFormer) and num_bands (Mel-Band RoFormer)"),
])
def test_config_problems_are_model_errors_naming_the_file_and_key(tmp_path, line, message):
    path = write_config(tmp_path, line)
    with pytest.raises(ModelError) as error:
        read_config(path)
    assert str(error.value) == f"{path}: {message}"


def test_more_mel_bands_than_the_spectrum_can_fill_are_refused(tmp_path):
    path = write_config(tmp_path, num_bands=200)
    with pytest.raises(ModelError) as error:
        read_config(path)
    assert str(error.value) == f"{path}: num_bands=200 does not fit stft_n_fft=512: some band would hold no STFT bin"


def test_inference_and_training_sections_are_checked(tmp_path):
    path = write_config(tmp_path, inference="inference:\n  num_overlap: 2\n")
    with pytest.raises(ModelError, match=r": inference\.dim_t must be an integer of at least 2, not None$"):
        read_config(path)
    path = write_config(tmp_path, training="training:\n  target_instrument: vocals\n")
    with pytest.raises(ModelError, match=r": training\.instruments must be a list of stem names$"):
        read_config(path)
    path = write_config(tmp_path, num_stems=2)
    with pytest.raises(ModelError, match=r": model\.num_stems is 2 but the config names 1 output stems \(vocals\)$"):
        read_config(path)
    default_overlap = read_config(write_config(tmp_path, inference="inference:\n  dim_t: 101\n"))
    assert default_overlap.num_overlap == 8


def test_multi_stem_config_outputs_every_instrument(tmp_path):
    config = read_config(write_config(tmp_path, training="training:\n  instruments: [vocals, other]\n",
                                      num_stems=2))
    assert (config.sources, config.target_instrument, config.network.num_stems) == (("vocals", "other"), None, 2)


def test_python_object_tags_are_refused_and_run_nothing(tmp_path):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {sentinel}']\n")
    with pytest.raises(ModelError, match=r"is not a valid model config: could not determine a constructor "
                                         r"for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"):
        read_config(path)
    assert not sentinel.exists()


# Checkpoints


@pytest.fixture(scope="module")
def small_network():
    config = small(num_bands=8)
    return config, oracle_network(config, seed=3)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "state", "model_state_dict"])
def test_checkpoints_load_plain_or_wrapped(tmp_path, small_network, wrapper):
    config, oracle = small_network
    state = oracle.state_dict()
    path = tmp_path / "model.ckpt"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 7}, path)
    checkpoint_config = read_config(write_config(tmp_path))
    checkpoint_config = dataclasses.replace(checkpoint_config, network=config)
    network = load_network(path, checkpoint_config)
    assert not network.training and all(p.dtype == torch.float32 for p in network.parameters())
    assert network.sources == ["vocals"] and network.chunking == AlignedChunks(128 * 100, 2, shortest=config.stft_n_fft // 2 + 1)
    audio = mixture(config, HOP * 20)
    assert_matches(network, oracle_output(oracle, config, audio), audio)


def test_a_checkpoint_loads_with_the_path_of_its_config(tmp_path):
    config_path = write_config(tmp_path, training="training:\n  instruments: [vocals, other]\n", num_stems=2)
    config = read_config(config_path)
    oracle = oracle_network(config.network, seed=5)
    torch.save(oracle.state_dict(), tmp_path / "model.ckpt")
    network = load_network(tmp_path / "model.ckpt", config_path)
    assert (network.sources, network.samplerate, network.audio_channels) == (["vocals", "other"], 44100, 2)
    audio = mixture(config.network, HOP * 20)
    assert_matches(network, oracle_output(oracle, config.network, audio), audio)


def test_half_precision_checkpoints_load_as_float32(tmp_path, small_network):
    config, oracle = small_network
    path = tmp_path / "model.pth"
    torch.save({key: value.half() for key, value in oracle.state_dict().items()}, path)
    network = load_network(path, dataclasses.replace(read_config(write_config(tmp_path)), network=config))
    assert all(p.dtype == torch.float32 for p in network.parameters())


def test_a_checkpoint_that_does_not_fit_the_config_is_a_model_error(tmp_path, small_network):
    config, oracle = small_network
    path = tmp_path / "model.ckpt"
    torch.save(oracle.state_dict(), path)
    other = dataclasses.replace(config, dim=32)
    with pytest.raises(ModelError, match=rf"^{path} does not fit its config \(mel_band_roformer\): 0 weights "
                                         rf"missing, 0 unexpected, \d+ of another shape \(e\.g\. "):
        load_network(path, dataclasses.replace(read_config(write_config(tmp_path)), network=other))
    deeper = dataclasses.replace(config, depth=3)
    with pytest.raises(ModelError, match=r"\d+ weights missing, 0 unexpected, 0 of another shape \(e\.g\. layers\.2\."):
        load_network(path, dataclasses.replace(read_config(write_config(tmp_path)), network=deeper))


class Sentinel:
    """Unpickling this runs `touch path`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(1)}, "hook": Sentinel(sentinel)}, path)
    with pytest.raises(ModelError, match=r"^cannot load .*evil\.ckpt: it refers to posix\.system, "
                                         r"which a weight file must not contain$"):
        read_state_dict(path)
    assert not sentinel.exists()
    pickle.loads(pickle.dumps(Sentinel(sentinel)))  # the same payload, unpickled without the allow-list
    assert sentinel.exists()


def test_a_file_without_named_tensors_is_a_model_error(tmp_path):
    path = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ModelError, match=r"^.*list\.ckpt does not hold a state dict of named tensors$"):
        read_state_dict(path)
