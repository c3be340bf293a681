"""CLAP checkpoints (laion-clap's training layout, e.g. music_speech_audioset_epoch_15_esc_89.98.pt) ->
the text tower or the audio tower, each alone.

The file is a torch pickle of {"state_dict": {...}, ...} (other entries: the epoch, the optimiser's
state), its names prefixed `module.` when saved from a data-parallel run, as laion-clap's loader
allows. It is unpickled with the allow-list (tensors, plain data, numpy's arrays and scalars) and,
when in torch's zip format, mapped rather than read: a tower reads only its own weights, so a text
query never reads the audio tower's (and the optimiser's state is never read at all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_state_fitting
from ..errors import ModelError
from ..unpickling import NUMPY_ARRAY_GLOBALS, load_restricted, safe_global
from .clap_text import ClapTextConfig, ClapTextTower, RobertaConfig, roberta_name
from .htsat import ClapAudioTower, HtsatConfig

DATA_PARALLEL_PREFIX = "module."
ROBERTA_HEAD_WIDTH = 64
# What CLAP's state dict holds besides the towers: the contrastive heads and temperatures of its training.
TRAINING_ONLY = ("text_transform.", "audio_transform.", "logit_scale_a", "logit_scale_t")
# In the audio branch, what the embedding does not use or what our code derives from the config: the
# classifier head, torchlibrosa's fixed DFT and mel matrices, the windows' index and mask buffers.
AUDIO_NOT_READ = ("tscam_conv.", "head.", "spectrogram_extractor.", "logmel_extractor.")
AUDIO_DERIVED_BUFFERS = (".attn_mask", ".relative_position_index")
TOWER_PREFIXES = {"text": ("text_branch.", "text_projection."), "audio": ("audio_branch.", "audio_projection.")}
_NUMPY_SCALAR = ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")


def clap_global(module: str, name: str) -> Any:
    """safe_global, and numpy's arrays and scalars (training metadata), nothing else."""
    if (module, name) in NUMPY_ARRAY_GLOBALS:
        return NUMPY_ARRAY_GLOBALS[module, name]
    if (module, name) in _NUMPY_SCALAR:
        return np.ndarray((0,)).sum().__reduce__()[0]  # numpy's scalar reconstructor, wherever it lives
    return safe_global(module, name)


def clap_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's named tensors, `module.` taken off, every name known (mapped, not yet read)."""
    loaded = load_restricted(path, clap_global, mmap=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise ModelError(f"{path} does not hold a CLAP state dict of named tensors")
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in state):
        state = {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in state.items()}
    known = TRAINING_ONLY + TOWER_PREFIXES["text"] + TOWER_PREFIXES["audio"]
    unknown = sorted(key for key in state if not key.startswith(known))
    if unknown:
        raise ModelError(f"{path} is not a CLAP checkpoint: {len(unknown)} weights of no CLAP part (e.g. {unknown[0]})")
    return state


def text_tower_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLAP's text branch and projection under our names (RoBERTa's `position_ids` buffer left out)."""
    ours = {"roberta." + roberta_name(key[len("text_branch."):]): value for key, value in state.items()
            if key.startswith("text_branch.") and not key.endswith("embeddings.position_ids")}
    return ours | _projection(state, "text_projection.")


def audio_tower_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLAP's audio branch (what its embedding uses) and projection under our names."""
    branch = {key[len("audio_branch."):]: value for key, value in state.items() if key.startswith("audio_branch.")}
    ours = {"htsat." + key: value for key, value in branch.items()
            if not key.startswith(AUDIO_NOT_READ) and not key.endswith(AUDIO_DERIVED_BUFFERS)}
    return ours | _projection(state, "audio_projection.")


def _projection(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {"projection." + key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def text_config_of(state: dict[str, torch.Tensor]) -> ClapTextConfig:
    """The text tower's shape as its weights give it (RoBERTa's heads are 64 wide, as in roberta-base)."""
    words, positions = state.get("roberta.embeddings.words.weight"), state.get("roberta.embeddings.positions.weight")
    expand = state.get("roberta.layers.0.expand.weight")
    if words is None or positions is None or expand is None:
        return ClapTextConfig()  # the strict check then names what is missing
    layers = len({key.split(".")[2] for key in state if key.startswith("roberta.layers.")})
    roberta = RobertaConfig(vocab_size=words.shape[0], hidden=words.shape[1], layers=layers,
                            heads=words.shape[1] // ROBERTA_HEAD_WIDTH, intermediate=expand.shape[0],
                            max_positions=positions.shape[0])
    return ClapTextConfig(roberta=roberta)


def load_text_tower(path: Path, config: ClapTextConfig | None = None) -> ClapTextTower:
    """The text tower of a CLAP checkpoint, of the shape its weights give unless `config` says otherwise."""
    state = text_tower_state(clap_state(path))
    tower = ClapTextTower(config or text_config_of(state))
    load_state_fitting(tower, state, path, "CLAP text tower")
    return tower.float().eval()


def load_audio_tower(path: Path, config: HtsatConfig | None = None) -> ClapAudioTower:
    """The audio tower of a CLAP checkpoint (HTSAT-base unless `config` says otherwise)."""
    tower = ClapAudioTower(config or HtsatConfig())
    load_state_fitting(tower, audio_tower_state(clap_state(path)), path, "CLAP audio tower (HTSAT)")
    return tower.float().eval()

