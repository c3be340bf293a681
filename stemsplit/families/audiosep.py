"""AudioSep (Audio-AGI, MIT code): separate what a text describes, or what an example recording sounds like.

A query becomes a 512-d CLAP embedding (networks/clap_text.py for a text, networks/htsat.py for an example),
computed once per run; the separator is ResUNet30 (networks/resunet.py) conditioned on it, at 32 kHz mono,
going over the song as AudioSep's `use_chunk` does (chunking.ContextChunks). The entry's files: AudioSep's
Lightning checkpoint (the separator under `ss_model.`), CLAP's checkpoint (both towers: a text query reads
only the text tower, an example only the audio tower) and roberta-base's BPE files for texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..bag import Bag, query_bag
from ..checkpoint import load_state_fitting
from ..chunking import ContextChunks
from ..errors import ModelError
from ..family import CatalogueFiles, Family
from ..networks.clap import clap_global, load_audio_tower, load_text_tower
from ..networks.clap_text import TextTokenizer
from ..networks.htsat import HtsatConfig, clip_for_tower
from ..networks.query import Conditioned, FixedCondition
from ..networks.resunet import ResUNet30, ResUNetConfig, from_reference
from ..queries import Queries, read_example
from ..unpickling import load_restricted

SEPARATOR = "audiosep_base_4M_steps.ckpt"
CLAP = "music_speech_audioset_epoch_15_esc_89.98.pt"
VOCAB, MERGES = "vocab.json", "merges.txt"
SEPARATOR_PREFIX = "ss_model."  # the LightningModule's separator; its query_encoder. copy of CLAP is not read
SAMPLERATE = 32000
CONDITION_SIZE = 512
# AudioSep's chunk_inference: 1 s of left context, 3 s kept, 1 s of right context, at 32 kHz.
USE_CHUNK = ContextChunks(left=SAMPLERATE, centre=3 * SAMPLERATE, right=SAMPLERATE)


def separator_of(path: Path) -> ResUNet30:
    """AudioSep's ResUNet30 from its Lightning checkpoint, strict (mapped: the rest is never read)."""
    loaded = load_restricted(path, clap_global, mmap=True)
    state = loaded.get("state_dict") if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not any(str(key).startswith(SEPARATOR_PREFIX) for key in state):
        raise ModelError(f"{path} is not an AudioSep checkpoint: no {SEPARATOR_PREFIX}* weights in its state_dict")
    reference = {key[len(SEPARATOR_PREFIX):]: value for key, value in state.items()
                 if key.startswith(SEPARATOR_PREFIX)}
    separator = ResUNet30(ResUNetConfig(condition_size=CONDITION_SIZE), family="audiosep")
    load_state_fitting(separator, from_reference(reference), path, "AudioSep ResUNet30")
    separator.chunking = USE_CHUNK  # ResUNet30 defaults to USS's abutting segments
    return separator.float().eval()


def text_conditions(paths: dict[str, Path], texts: tuple[str, ...]) -> list[torch.Tensor]:
    tokenizer, tower = TextTokenizer(paths[VOCAB], paths[MERGES]), load_text_tower(paths[CLAP])
    with torch.no_grad():
        return [tower(tokenizer(text))[0] for text in texts]


def example_conditions(paths: dict[str, Path], examples: tuple[Path, ...]) -> list[torch.Tensor]:
    """Each example decoded at 48 kHz mono, made 10 s long as CLAP takes it, through the audio tower."""
    config = HtsatConfig()  # every example is decoded (a bad one refused) before the tower loads
    clips = [clip_for_tower(torch.from_numpy(read_example(path, config.sample_rate)), config.clip_samples)
             for path in examples]
    tower = load_audio_tower(paths[CLAP])
    with torch.no_grad():
        return [tower(clip[None])[0] for clip in clips]


def build(files: CatalogueFiles, queries: Queries, notify: Callable[[str], None]) -> Bag:
    paths = {Path(fetched.entry.name).name: fetched.path for fetched in files.files}
    separator = separator_of(paths[SEPARATOR])
    conditions = text_conditions(paths, queries.texts) if queries.texts else []
    conditions += example_conditions(paths, queries.examples) if queries.examples else []
    networks = [Conditioned(separator, FixedCondition(condition), stem)
                for stem, condition in zip(queries.stems, conditions)]
    return query_bag(files.info.name, networks, files.identity)


def queries_only(files: CatalogueFiles) -> Bag:
    raise ModelError(f"model '{files.info.name}' separates what a query names: give --query TEXT or --query-audio FILE")


FAMILIES = (Family(name="audiosep", architecture="AudioSep: ResUNet30 conditioned on a CLAP text or audio embedding "
                   "(Audio-AGI/AudioSep's pipeline, laion-clap's towers)", catalogue_bag=queries_only,
                   query_bag=build),)
