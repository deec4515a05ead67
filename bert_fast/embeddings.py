"""Sentence embeddings: the pooled hidden states of many texts, batched by length.

Texts are tokenized once, then batched longest first, so each batch holds texts of similar length (as
sentence-transformers batches them). The reference path then pads each batch only to lengths close to its own;
the fused path removes padding anyway, but a batch's longest text still sets the attention's work per sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .inference import GraphedEncoder
from .modeling import BertModel
from .tokenizer import Tokenizer

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden), in float32: the [CLS] state, or the mean over real tokens."""
    if how not in POOLINGS:
        raise ValueError(f"pooling {how!r} is not one of {POOLINGS}")
    hidden = hidden.float()
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.inference_mode()
def embed(model: BertModel, tokenizer: Tokenizer, texts: Sequence[str], pooling: str = "mean",
          batch_size: int = 64, max_length: int | None = None, normalize: bool = False,
          graphs: bool | GraphedEncoder = False) -> np.ndarray:
    """(len(texts), hidden) float32 embeddings, in the order of `texts`.

    graphs=True (CUDA) replays each batch's bucket through captured CUDA graphs (bert_fast.inference.GraphedEncoder,
    or pass one to keep its graphs across calls): for small batches, whose time is the host's."""
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    graphed = graphs if isinstance(graphs, GraphedEncoder) else GraphedEncoder(model) if graphs else None
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not texts:
        return out
    encodings = tokenizer.encode_batch(list(texts), max_length=max_length)
    tokenizer.warn_truncated(texts, encodings, max_length)
    order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        host = tokenizer.pad([encodings[i] for i in chosen])
        if graphed is not None:  # packed on the host, replayed
            hidden = graphed(**host).last_hidden_state
        else:
            hidden = model(**{k: v.to(device) for k, v in host.items()}).last_hidden_state
        vectors = pool(hidden, host["attention_mask"].to(device), pooling)
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        out[chosen] = vectors.cpu().numpy()
    return out
