"""Community checkpoints, as UVR, MSST and audio-separator use them: a torch pickle of a state dict
(`.ckpt`/`.pth`) and a YAML config. What the config means is its family's business."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import ModelError
from .unpickling import load_restricted

# Wrappers some trainers save the weights under.
STATE_KEYS = ("state", "state_dict", "model_state_dict", "model")


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML plus `!!python/tuple`, which the community configs use for band widths."""


ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                             lambda loader, node: tuple(loader.construct_sequence(node)))


def read_yaml(path: Path) -> Any:
    """The data of a YAML config; an unreadable or invalid file is a ModelError naming it."""
    try:
        with open(path, encoding="utf-8") as file:
            return yaml.load(file, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ModelError(f"{path} is not a valid model config: {problem}") from error


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a torch pickle holding a state dict, possibly wrapped in a dict,
    unpickled with the allow-list, so it can run no code."""
    loaded = load_restricted(path)
    for key in STATE_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()):
        raise ModelError(f"{path} does not hold a state dict of named tensors")
    return dict(loaded)
