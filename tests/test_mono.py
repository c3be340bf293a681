"""A mono network on a stereo song (issue 22, case 9): it runs on each channel, so the stems keep the song's
two channels (and their stereo image), stem files get stereo tracks, and residuals null on both channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import read, separate_tensor, stemsplit, tone
from test_stemfile import streams
from stemsplit.families.roformer import load_network, read_config
from stemsplit.bag import single_network_bag
from stemsplit.networks.roformer import roformer

STEMS = ["drums", "bass", "other", "vocals"]
EXACT = ("--bit-depth", "32", "--clip-mode", "none")


def mono_roformer_files(folder: Path) -> tuple[Path, Path]:
    """A small random four-stem Mel-Band RoFormer with `stereo: false`, as a checkpoint and its YAML."""
    config_path = folder / "mono.yaml"
    config_path.write_text(f"""audio: {{sample_rate: 44100}}
model: {{dim: 16, depth: 1, stereo: false, num_stems: 4, num_bands: 8, dim_head: 8, heads: 2,
        time_transformer_depth: 1, freq_transformer_depth: 1, stft_hop_length: 441, flash_attn: false}}
training: {{instruments: [{", ".join(STEMS)}], target_instrument: null}}
inference: {{dim_t: 41, num_overlap: 2}}
""")
    torch.manual_seed(0)
    checkpoint = folder / "mono.ckpt"
    torch.save(roformer(read_config(config_path).network).state_dict(), checkpoint)
    return checkpoint, config_path


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> tuple[Path, Path]:
    return mono_roformer_files(tmp_path_factory.mktemp("mono"))


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "song.wav"
    sf.write(path, tone(0.9, 44100), 44100, subtype="FLOAT")  # 220 Hz on the left, 330 Hz on the right
    return path


def test_each_channel_is_separated_as_the_mono_song_it_is(mono):
    network = load_network(*mono)
    assert network.audio_channels == 1
    bag = single_network_bag("mono", network, "")
    left, right = torch.from_numpy(tone(0.3, 44100).T.copy())
    stereo = separate_tensor(bag, torch.stack([left, right]))
    assert stereo.shape == (4, 2, left.shape[0])
    torch.testing.assert_close(stereo[:, 0], separate_tensor(bag, torch.stack([left, left]))[:, 0])
    torch.testing.assert_close(stereo[:, 1], separate_tensor(bag, torch.stack([right, right]))[:, 1])
    assert (stereo[:, 0] - stereo[:, 1]).abs().max() > 1e-3  # not one mono stem copied to both sides


def test_the_command_writes_stereo_stems_and_stereo_stem_files(tmp_path, mono, song):
    checkpoint, config = mono
    model = ("--checkpoint", checkpoint, "--config", config)
    result = stemsplit(*model, song, "-o", tmp_path, *EXACT, cwd=tmp_path)
    packed = stemsplit(*model, song, "-o", tmp_path / "stem", "--format", "stem", cwd=tmp_path)
    assert (result.returncode, packed.returncode) == (0, 0), result.stderr + packed.stderr
    mix, _ = read(song)
    stems = {stem: read(tmp_path / "mono" / "song" / f"{stem}.wav")[0] for stem in STEMS}
    assert all(stem.shape == mix.shape for stem in stems.values())
    assert np.abs(stems["vocals"][0] - stems["vocals"][1]).max() > 1e-3
    described = streams(tmp_path / "stem" / "mono" / "song.stem.mp4")
    assert len(described) == 5 and all("44100 Hz, stereo" in line for line in described), described
