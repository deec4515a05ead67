"""Model outputs: small dataclasses that also unpack like tuples, as Hugging Face's do.

Fields that are None are left out of the tuple view, so `hidden, pooled = model(ids)` works and indices match
transformers' `outputs[0]`, `outputs[1]`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


class _TupleLike:
    def to_tuple(self) -> tuple:
        return tuple(v for v in (getattr(self, f.name) for f in fields(self)) if v is not None)

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]


@dataclass
class BertModelOutput(_TupleLike):
    last_hidden_state: torch.Tensor  # (batch, seq, hidden); zeros at padded positions on the packed path
    pooler_output: torch.Tensor | None = None  # (batch, hidden)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings output + one per layer
    # Packed outputs only (return_packed=True / forward_packed): sequence offsets and the flat positions of
    # the real tokens in (batch * seq).
    cu_seqlens: torch.Tensor | None = None
    indices: torch.Tensor | None = None


@dataclass
class PreTrainingOutput(_TupleLike):
    loss: torch.Tensor | None = None  # mlm_loss + nsp_loss
    prediction_logits: torch.Tensor | None = None  # (batch, seq, vocab); (labelled positions, vocab) with labels
    seq_relationship_logits: torch.Tensor | None = None  # (batch, 2)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None


@dataclass
class MaskedLMOutput(_TupleLike):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (batch, seq, vocab); (labelled positions, vocab) with labels
    hidden_states: tuple[torch.Tensor, ...] | None = None
