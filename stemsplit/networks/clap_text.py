"""CLAP's text tower as AudioSep conditions on it: RoBERTa, its pooled first token, CLAP's
projection to the joint space, normalised (laion-clap's `get_text_embedding`).

RoBERTa is written here rather than taken from `transformers`: it is twelve plain post-norm
encoder layers, and `transformers` is a large dependency that cannot even be imported beside a
torchvision built for another torch (as audio-separator's dependencies install one). The BPE
tokenizer is Hugging Face's `tokenizers` (a small compiled package), reading roberta-base's
`vocab.json` and `merges.txt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Linear

# AudioSep's tokenizer call: at most 512 tokens, <s> and </s> included.
MAX_TOKENS = 512
BEGIN, PAD, END, UNKNOWN = "<s>", "<pad>", "</s>", "<unk>"


@dataclass(frozen=True)
class RobertaConfig:
    """Shape of a RoBERTa encoder; the defaults are roberta-base's."""

    vocab_size: int = 50265
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class ClapTextConfig:
    """CLAP's text tower: a RoBERTa and the projection of its pooled output to `joint_dim`."""

    roberta: RobertaConfig = field(default_factory=RobertaConfig)
    joint_dim: int = 512


class Embeddings(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.pad_token_id = config.pad_token_id
        self.words = nn.Embedding(config.vocab_size, config.hidden, padding_idx=config.pad_token_id)
        self.positions = nn.Embedding(config.max_positions, config.hidden, padding_idx=config.pad_token_id)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)

    def forward(self, tokens: Tensor) -> Tensor:
        # RoBERTa counts positions from pad_token_id + 1 and gives padding the position pad_token_id.
        real = (tokens != self.pad_token_id).long()
        positions = torch.cumsum(real, dim=1) * real + self.pad_token_id
        summed = self.words(tokens) + self.positions(positions) + self.token_type.weight[0]
        return self.norm(summed)


class EncoderLayer(nn.Module):
    """Self-attention and a GELU feed-forward, each added back and then normalised (post-norm)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.heads = config.heads
        self.query, self.key, self.value = (Linear(config.hidden, config.hidden) for _ in range(3))
        self.attention_out = Linear(config.hidden, config.hidden)
        self.attention_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.expand = Linear(config.hidden, config.intermediate)
        self.contract = Linear(config.intermediate, config.hidden)
        self.output_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.attention_norm(x + self.attention_out(self.attend(x, mask)))
        return self.output_norm(x + self.contract(self.expand(x, "gelu")))

    def attend(self, x: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, width = x.shape
        q, k, v = (project(x).view(batch, length, self.heads, -1).transpose(1, 2)
                   for project in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attended.transpose(1, 2).reshape(batch, length, width)


class Roberta(nn.Module):
    """RoBERTa's encoder and pooler: tanh of a linear map of the last state of the first token."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.layers))
        self.pooler = Linear(config.hidden, config.hidden)

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        x = self.embeddings(tokens)
        for layer in self.layers:
            x = layer(x, mask)
        return self.pooler(x[:, 0], "tanh")


class ClapTextTower(nn.Module):
    """Token ids (batch, length) -> CLAP text embeddings (batch, joint_dim), of unit length."""

    def __init__(self, config: ClapTextConfig):
        super().__init__()
        self.config = config
        self.roberta = Roberta(config.roberta)
        self.projection = nn.Sequential(Linear(config.roberta.hidden, config.joint_dim), nn.ReLU(),
                                        Linear(config.joint_dim, config.joint_dim))

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return F.normalize(self.projection(self.roberta(tokens, attention_mask)), dim=-1)


# Hugging Face's RoBERTa parameter names (as CLAP's checkpoint holds them under text_branch.) -> ours.
ROBERTA_NAMES = (
    (r"^embeddings\.word_embeddings\.", "embeddings.words."),
    (r"^embeddings\.position_embeddings\.", "embeddings.positions."),
    (r"^embeddings\.token_type_embeddings\.", "embeddings.token_type."),
    (r"^embeddings\.LayerNorm\.", "embeddings.norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention_out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attention_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.expand."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.contract."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.output_norm."),
    (r"^pooler\.dense\.", "pooler."),
)


def roberta_name(name: str) -> str:
    """Our name for one of Hugging Face's RoBERTa parameters (unknown names come back unchanged)."""
    for pattern, replacement in ROBERTA_NAMES:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


class TextTokenizer:
    """roberta-base's byte-level BPE, as transformers' RobertaTokenizer applies it: <s> text </s>,
    truncated to MAX_TOKENS. Queries are not padded: the tower's output for a padded query with its
    attention mask is the same."""

    def __init__(self, vocab: Path, merges: Path):
        from tokenizers import Tokenizer, models, pre_tokenizers, processors

        bpe = models.BPE.from_file(str(vocab), str(merges))
        self.tokenizer = Tokenizer(bpe)
        self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tokenizer.add_special_tokens([BEGIN, PAD, END, UNKNOWN])  # written in a query, they stay whole
        ids = {token: self.tokenizer.token_to_id(token) for token in (BEGIN, PAD, END)}
        self.tokenizer.post_processor = processors.RobertaProcessing((END, ids[END]), (BEGIN, ids[BEGIN]),
                                                                     add_prefix_space=False)
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def __call__(self, text: str) -> Tensor:
        """(1, tokens) int64 ids of one query."""
        return torch.tensor([self.tokenizer.encode(text).ids], dtype=torch.long)
