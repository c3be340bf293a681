"""laion-clap 1.1.7 (CLAP: HTSAT audio tower, RoBERTa text tower) as a test oracle, with random weights.

Two things stand between laion-clap and this test environment, and are worked around here without
touching what it computes:
- the torchvision that audio-separator's dependencies install is PyPI's CUDA build, which cannot load
  beside the CPU torch. `transformers` is imported with torchvision hidden (it then skips its image
  code), and laion-clap's `clap_module.utils`, which imports torchvision's FrozenBatchNorm2d only to
  freeze batch norms for training, gets a placeholder class that refuses to be built.
- laion-clap's package `__init__` and `training/data.py` import training-only packages (webdataset,
  wandb, torchvision's datasets...). The test imports `clap_module` without the package `__init__`,
  and takes `get_audio_features` (its padding and cropping of a clip) out of the installed
  `training/data.py` and runs it as written.
It builds roberta-base with `RobertaModel.from_pretrained`, which needs the Hub: the oracle is handed
a small random RobertaConfig instead (hidden size 768, which CLAP's projection requires).
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import json
import sys
import types
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stemsplit.networks.clap_text import ClapTextConfig, RobertaConfig

# A small RoBERTa: CLAP's projection takes 768 wide states; fewer layers, a vocabulary of the test's own.
SMALL_ROBERTA = dict(hidden=768, layers=2, heads=12, intermediate=256, max_positions=514)
CORPUS = ["an acoustic guitar strumming chords", "a man speaking over crowd noise", "drums and bass",
          "pigeons are cooing in the background", "a violin plays a slow melody", "dogs barking, cars passing"]


@functools.cache
def laion_clap_folder() -> Path:
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("laion-clap (the CLAP oracle) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def hub_transformers() -> types.ModuleType:
    """`transformers`, first imported while torchvision is hidden (before laion-clap's placeholder)."""
    if "transformers.models.roberta.modeling_roberta" not in sys.modules:
        hidden = "torchvision" not in sys.modules
        if hidden:
            sys.modules["torchvision"] = None
        from transformers import RobertaModel, RobertaTokenizer  # noqa: F401  (their modules load now)
        if hidden:
            del sys.modules["torchvision"]
    import transformers

    return transformers


def _placeholder_torchvision() -> None:
    class FrozenBatchNorm2d:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("the oracle's torchvision placeholder is only imported, never used")

    for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d


def _bare_package(name: str, folder: Path) -> None:
    """A package whose `__init__` is not run: its submodules import as usual."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


def clap_module() -> types.ModuleType:
    """laion_clap.clap_module.model (CLAP, and through it htsat)."""
    folder = laion_clap_folder()
    if "laion_clap.clap_module.model" not in sys.modules:
        hub_transformers()
        _placeholder_torchvision()
        _bare_package("laion_clap", folder)
        _bare_package("laion_clap.clap_module", folder / "clap_module")
    import laion_clap.clap_module.model as model

    return model


def audio_features_function():
    """laion-clap's get_audio_features, run from its own source."""
    source = (laion_clap_folder() / "training" / "data.py").read_text()
    tree = ast.parse(source)
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "get_audio_features"]
    namespace = {"torch": torch, "np": np, "F": F, "suppress": suppress}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "laion_clap/training/data.py", "exec"), namespace)
    return namespace["get_audio_features"]


def htsat_base_config() -> dict:
    return json.loads((laion_clap_folder() / "clap_module" / "model_configs" / "HTSAT-base.json").read_text())


def oracle_clap(roberta: RobertaConfig, seed: int = 0) -> torch.nn.Module:
    """laion-clap's CLAP with HTSAT-base (non-fused) and a RoBERTa of `roberta`'s shape, random weights
    moved off their init (batch norm statistics included) so every path matters."""
    module = clap_module()
    HubRobertaConfig, RobertaModel = hub_transformers().RobertaConfig, hub_transformers().RobertaModel

    hub_config = HubRobertaConfig(vocab_size=roberta.vocab_size, hidden_size=roberta.hidden,
                                  num_hidden_layers=roberta.layers, num_attention_heads=roberta.heads,
                                  intermediate_size=roberta.intermediate, max_position_embeddings=roberta.max_positions,
                                  type_vocab_size=roberta.type_vocab_size, pad_token_id=roberta.pad_token_id,
                                  layer_norm_eps=roberta.layer_norm_eps, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)

    class SmallRoberta:
        @staticmethod
        def from_pretrained(name: str) -> torch.nn.Module:
            assert name == "roberta-base"
            return RobertaModel(hub_config)

    config = htsat_base_config()
    torch.manual_seed(seed)
    module.RobertaModel = SmallRoberta
    network = module.CLAP(embed_dim=config["embed_dim"], audio_cfg=config["audio_cfg"],
                          text_cfg={**config["text_cfg"], "model_type": "roberta"}, enable_fusion=False)
    _perturb(network)
    return network.eval()


def _perturb(network: torch.nn.Module, scale: float = 0.02) -> None:
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "spectrogram_extractor" in name or "logmel_extractor" in name:
                continue  # fixed DFT and mel matrices
            parameter.add_(torch.randn_like(parameter) * scale)
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 1.0)
                module.running_var.uniform_(0.5, 2.0)


def small_text_config(vocab_size: int) -> ClapTextConfig:
    return ClapTextConfig(roberta=RobertaConfig(vocab_size=vocab_size, **SMALL_ROBERTA))


def write_bpe_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of a small byte-level BPE trained on CORPUS, with RoBERTa's special tokens."""
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1,
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer.save_model(str(folder))
    return folder / "vocab.json", folder / "merges.txt"
