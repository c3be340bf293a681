"""UVR's VR architecture: our networks against audio-separator's nets / nets_new with random weights of the real
shapes, the shape read from the state dict alone."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import read, relative_error, sdr, stemsplit, tone
from roformer_oracle import roformer_files
from stemsplit.chunking import WholeSong
from stemsplit.errors import ModelError
from stemsplit.families import family, for_local
from stemsplit.families.vr import read_params
from stemsplit.family import LocalFiles
from stemsplit.networks.vr import VrNetConfig, build, config_from_state
from stemsplit.networks.vr_bands import VrSettings, analyse, separate, synthesise
from stemsplit.registry import load_bag
from stemsplit.separation import Settings
from vr_oracle import oracle_network, oracle_separate, params_path

EXACT = ("--bit-depth", "32", "--clip-mode", "none")

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


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("vr") / "song.wav"
    rng = np.random.default_rng(3)
    samples = (tone(1.2, 44100) + 0.05 * rng.standard_normal((52920, 2))).astype(np.float32)
    sf.write(path, samples, 44100, subtype="FLOAT")
    return path, samples.T


# A v5 net on a 4-band split; small v5.1 nets (nout 16: the procedure is the subject) on the 4-band split with the
# options, on a mid/side 4-band split, and on one band with a smaller window.
PROCEDURES = [
    ("4band_v3", 31191, None, "Vocals", VrSettings()),
    ("4band_v3", 0, 16, "Instrumental", VrSettings(aggression=10, tta=True, post_process=True)),
    ("4band_v4_ms_fullband", 0, 16, "Vocals", VrSettings()),
    ("1band_sr44100_hl512", 0, 16, "Vocals", VrSettings(window=320)),
]


@pytest.mark.parametrize("params_name, size, nout, primary, settings", PROCEDURES,
                         ids=[f"{p[0]}-{p[3]}-{p[4].tta}" for p in PROCEDURES])
def test_whole_procedure_matches_vr_separator(song, params_name, size, nout, primary, settings):
    path, samples = song
    params = read_params(params_path(params_name))
    oracle = oracle_network(size, params.bins, seed=2, nout=nout)
    expected = oracle_separate(oracle, path, params_name, lstm=nout is not None, primary=primary,
                               window=settings.window, aggression=settings.aggression, tta=settings.tta,
                               post_process=settings.post_process)
    ours = build(config_from_state(oracle.state_dict(), params.bins)).eval()
    ours.load_state_dict(oracle.state_dict())
    vocals = primary == "Vocals"
    result = separate(ours, samples, params, dataclasses.replace(settings, vocals_primary=vocals))
    for got, reference in zip(result, expected):
        assert got.shape == reference.shape
        assert sdr(got, reference) > 90


# The family and the command

def vr_files(folder, params_name: str = "4band_v3", primary: str | None = None, seed: int = 5):
    """A small random v5.1 net (nout 16) saved as UVR's .pth, with a copy of a model-parameters JSON."""
    data = json.loads(params_path(params_name).read_text())
    if primary is not None:
        data["primary_stem"] = primary
    config, checkpoint = folder / f"{params_name}.json", folder / "small.pth"
    config.write_text(json.dumps(data))
    oracle = oracle_network(0, read_params(config).bins, seed=seed, nout=16)
    torch.save(oracle.state_dict(), checkpoint)
    return oracle, checkpoint, config


def test_pth_and_json_run_from_the_command_as_the_procedure_says(tmp_path, song):
    path, samples = song
    oracle, checkpoint, config = vr_files(tmp_path, primary="No Reverb")
    result = stemsplit("--checkpoint", checkpoint, "--config", config, path, "-o", tmp_path, *EXACT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "small" / "song"
    assert sorted(p.name for p in folder.glob("*.wav")) == ["no_reverb.wav", "reverb.wav"]
    ours = build(config_from_state(oracle.state_dict(), 672)).eval()
    ours.load_state_dict(oracle.state_dict())
    params = read_params(config)
    expected = separate(ours, samples, params, VrSettings(vocals_primary=False))
    produced = params.bands[-1].hop * (samples.shape[1] // params.bands[-1].hop)  # hop * (frames - 1)
    for name, reference in zip(("no_reverb", "reverb"), expected):
        stem, rate = read(folder / f"{name}.wav")
        assert rate == 44100 and stem.shape == samples.shape and reference.shape[1] == produced
        assert sdr(stem[:, :produced], reference) > 90 and not stem[:, produced:].any()


def test_the_pair_sums_to_the_band_split_mix(song, tmp_path):
    _, samples = song
    oracle, _, config = vr_files(tmp_path, params_name="4band_v2")
    ours = build(config_from_state(oracle.state_dict(), 672)).eval()
    ours.load_state_dict(oracle.state_dict())
    params = read_params(config)
    vocals, instrumental = separate(ours, samples, params, VrSettings())
    rebuilt = synthesise(analyse(samples, params, lstm=True), params, lstm=True)
    assert sdr(vocals + instrumental, rebuilt) > 100
    assert sdr(rebuilt, samples[:, : rebuilt.shape[1]]) < 60  # the split's filters and crops change the mix


def test_vr_files_are_its_own_and_other_familys_are_not(tmp_path):
    _, checkpoint, config = vr_files(tmp_path)
    _, roformer_checkpoint, roformer_config, _ = roformer_files(tmp_path, 1, 4)
    assert for_local(LocalFiles(checkpoint, config)).name == "vr"
    assert for_local(LocalFiles(roformer_checkpoint, roformer_config)).name == "mel_band_roformer"
    vr = family("vr")
    assert not vr.recognises(LocalFiles(roformer_checkpoint, roformer_config))
    assert not vr.recognises(LocalFiles(checkpoint, roformer_config))
    assert not vr.recognises(LocalFiles(roformer_checkpoint.with_suffix(".pth"), config))  # no such file
    other = tmp_path / "other"
    other.mkdir()
    _, _, wider = vr_files(other, params_name="1band_sr44100_hl512")  # 1024 bins: the net has 672
    with pytest.raises(ModelError, match="does not fit"):
        load_bag(checkpoint=checkpoint, config=wider)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(bins=10**6), "`bins` must be an integer from 1 to 4096"),
    (lambda d: d["band"]["1"].update(n_fft=1 << 30), "`n_fft` must be an integer from 2 to 16384"),
    (lambda d: d["band"].update({"7": d["band"]["1"]}), "bands '1'..'n'"),
    (lambda d: d["band"]["1"].update(res_type="kaiser_best"), "res_type 'kaiser_best' is not one of"),
    (lambda d: d.pop("band"), "no `band` mapping"),
])
def test_params_problems_are_model_errors_naming_the_file(tmp_path, change, message):
    data = json.loads(params_path("4band_v3").read_text())
    change(data)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message) as error:
        read_params(path)
    assert str(path) in str(error.value)


def test_settings_the_procedure_does_not_have_are_refused():
    for settings in (Settings(shifts=1), Settings(overlap=0.5), Settings(segment=1.0)):
        with pytest.raises(ValueError, match="VR models go over the whole song in windows of their own"):
            WholeSong().check(44100, settings)
