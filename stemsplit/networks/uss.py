"""USS's query conditions (uss 0.0.4, querynet=at_soft): a query is a vector of Cnn14's 527 AudioSet label
probabilities (`clipwise`), as uss/inference.py computes it.

- An example recording (`example_condition`): its silent 0.1-second frames (peak at most 0.02) dropped, the
  rest cut into 2-second segments, a short last one filled by repeating it, and the label probabilities of
  the segments averaged; computed once per query.
- AudioSet labels (`LabelQueried`): each segment of the song is its own condition: the segment's label
  probabilities with every label but the asked ones set to 0; a segment where none of the asked labels
  reaches 0.2 is silence in the queried stem (the rest of the mix goes to its residual).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .cnn14 import Cnn14

SILENT_PEAK = 0.02
SILENCE_FRAME_SECONDS = 0.1
ACTIVE_PROBABILITY = 0.2  # the least probability of an asked label for a segment to be separated
TAGGING_BATCH = 8


def without_silence(audio: np.ndarray, samplerate: int) -> np.ndarray:
    """The whole frames of `audio` whose peak exceeds SILENT_PEAK, joined (a last partial frame goes)."""
    size = int(samplerate * SILENCE_FRAME_SECONDS)
    frames = audio[:len(audio) // size * size].reshape(-1, size)
    return frames[np.abs(frames).max(axis=1) > SILENT_PEAK].reshape(-1)


def repeated_segments(audio: np.ndarray, segment: int) -> np.ndarray:
    """(segments, segment): `audio` cut into segments, a short last one filled by repeating itself."""
    pieces = [audio[start:start + segment] for start in range(0, len(audio), segment)]
    return np.stack([np.tile(piece, segment // len(piece) + 1)[:segment] for piece in pieces])


def example_condition(tagger: Cnn14, audio: np.ndarray, segment: int) -> torch.Tensor | None:
    """The mean label probabilities of an example's sounding segments; None where it is all silence."""
    sounding = without_silence(audio, tagger.config.samplerate)
    if not len(sounding):
        return None
    segments = torch.from_numpy(repeated_segments(sounding, segment))
    with torch.inference_mode():
        tagged = [tagger(segments[start:start + TAGGING_BATCH]).clipwise
                  for start in range(0, len(segments), TAGGING_BATCH)]
    return torch.cat(tagged).mean(dim=0)


class LabelQueried(nn.Module):
    """One query by AudioSet labels: the separator conditioned on each segment's own probabilities of them."""

    def __init__(self, separator: nn.Module, tagger: Cnn14, labels: list[int], stem: str):
        super().__init__()
        self.separator, self.tagger = separator, tagger
        self.register_buffer("asked", torch.zeros(tagger.config.classes, dtype=torch.bool), persistent=False)
        self.asked[labels] = True
        self.sources = [stem]
        self.family, self.samplerate = separator.family, separator.samplerate
        self.audio_channels, self.chunking = separator.audio_channels, separator.chunking

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        probabilities = self.tagger(mix[:, 0]).clipwise
        active = probabilities[:, self.asked].amax(dim=1) >= ACTIVE_PROBABILITY
        if not active.any():
            return torch.zeros_like(mix)[:, None]
        separated = self.separator(mix, probabilities * self.asked)
        return (separated * active[:, None, None])[:, None]
