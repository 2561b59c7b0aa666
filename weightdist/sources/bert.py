"""BERT's parameter tree (Devlin et al. 2019), for analysing transformer checkpoints as named models.

The weights half of weightdist needs names, shapes and module kinds, not a forward
pass, so this mirrors the parameter names of Hugging Face's ``BertModel`` exactly
(``embeddings.*``, ``encoder.layer.{i}.attention.self.{query,key,value}``, ...) with
plain ``nn.Linear``/``nn.Embedding``/``nn.LayerNorm`` modules. ``--init`` follows
``BertPreTrainedModel._init_weights``: linear and embedding weights N(0, initializer_range²),
the padding row of the word embeddings zero, biases zero, LayerNorm weights one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    pad_token_id: int = 0


# sentence-transformers/all-MiniLM-L6-v2 (config.json of nreimers/MiniLM-L6-H384-uncased).
MINILM_L6 = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, intermediate_size=1536)


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings).unsqueeze(0))


class _Dense(nn.Module):
    """``dense`` (+ ``LayerNorm`` when the block has one): the naming of BERT's output blocks."""

    def __init__(self, n_in: int, n_out: int, norm: bool) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        if norm:
            self.LayerNorm = nn.LayerNorm(n_out, eps=1e-12)


class _SelfAttention(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)


class _Attention(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.self = _SelfAttention(h)
        self.output = _Dense(h, h, norm=True)


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c.hidden_size)
        self.intermediate = _Dense(c.hidden_size, c.intermediate_size, norm=False)
        self.output = _Dense(c.intermediate_size, c.hidden_size, norm=True)


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class BertWeights(nn.Module):
    """BertModel's parameters under BertModel's names, initialised as BertPreTrainedModel does."""

    def __init__(self, config: BertConfig = MINILM_L6) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooler = _Dense(config.hidden_size, config.hidden_size, norm=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
