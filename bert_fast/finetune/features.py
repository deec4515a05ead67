"""The paper's feature-based use of BERT (section 5.3, table 7): fixed hidden states of chosen layers, combined,
as input to another model.

Layer combinations (hidden_states[0] is the embeddings' output, [i] the i-th layer's):
  embeddings, last, second-to-last, sum-last-four, concat-last-four, weighted-sum-all (ELMo's scalar mix over
  the encoder layers: gamma * sum_j softmax(w)_j h_j; uniform unless weights are given or learned), or explicit
  layer indices combined by sum, mean or concat.
Token features are per word piece; `pooling` reduces them per text to [CLS] or the mean over real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SettingError

COMBINATIONS = ("embeddings", "last", "second-to-last", "sum-last-four", "concat-last-four", "weighted-sum-all")


class ScalarMix(nn.Module):
    """gamma * sum_j softmax(w)_j * h_j over n layers; trainable when used inside a downstream model."""

    def __init__(self, num_layers: int, weights: Sequence[float] | None = None, gamma: float = 1.0):
        super().__init__()
        init = torch.zeros(num_layers) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if init.shape != (num_layers,):
            raise SettingError(f"{num_layers} layers but {init.numel()} weights")
        self.weights = nn.Parameter(init.clone())
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        w = torch.softmax(self.weights, dim=0)
        return self.gamma * sum(wj * h.float() for wj, h in zip(w, layers))


def combine_layers(hidden_states: Sequence[torch.Tensor], how: str | Sequence[int] = "concat-last-four",
                   combine: str = "concat", weights: Sequence[float] | None = None) -> torch.Tensor:
    """(..., hidden) states of every layer (embeddings first) -> the chosen combination, float32."""
    n = len(hidden_states) - 1  # encoder layers
    if not isinstance(how, str):
        indices = [int(i) for i in how]
        bad = [i for i in indices if not -n - 1 <= i <= n]
        if bad or not indices:
            raise SettingError(f"layer indices {bad or indices} are not in -{n + 1}..{n} (0 = embeddings)")
        chosen = [hidden_states[i].float() for i in indices]
        if combine == "concat":
            return torch.cat(chosen, dim=-1)
        if combine in ("sum", "mean"):
            total = torch.stack(chosen).sum(0)
            return total / len(chosen) if combine == "mean" else total
        raise SettingError(f"combine={combine!r} is not one of concat, sum, mean")
    if how == "weighted-sum-all":
        return ScalarMix(n, weights)(hidden_states[1:]).detach()
    if how not in COMBINATIONS:
        raise SettingError(f"layers={how!r} is not one of {COMBINATIONS} or a list of indices")
    if how in ("sum-last-four", "concat-last-four") and n < 4:
        raise SettingError(f"{how} needs at least 4 layers; the model has {n}")
    spec = {"embeddings": [0], "last": [-1], "second-to-last": [-2], "sum-last-four": [-4, -3, -2, -1],
            "concat-last-four": [-4, -3, -2, -1]}[how]
    return combine_layers(hidden_states, spec, "sum" if how == "sum-last-four" else "concat")


@torch.inference_mode()
def extract_features(model, tokenizer, texts: Sequence[str], layers: str | Sequence[int] = "concat-last-four",
                     pooling: str = "none", combine: str = "concat", weights=None, batch_size: int = 64,
                     max_length: int | None = None) -> tuple[list[np.ndarray], list[list[int]]]:
    """Per text: (tokens, dim) features (pooling "none") or a (dim,) vector ("cls", "mean"), and its token ids."""
    if pooling not in ("none", "cls", "mean"):
        raise SettingError(f"pooling={pooling!r} is not one of none, cls, mean")
    model.eval()
    device = next(model.parameters()).device
    features, ids = [None] * len(texts), [None] * len(texts)
    encodings = tokenizer.encode_batch(list(texts), max_length=max_length) if len(texts) else []
    tokenizer.warn_truncated(texts, encodings, max_length)
    order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))  # batches of similar lengths
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in tokenizer.pad([encodings[i] for i in chosen]).items()}
        states = model(**batch, output_hidden_states=True).hidden_states
        combined = combine_layers(states, layers, combine, weights)  # (batch, seq, dim)
        for b, i in enumerate(chosen):
            length = len(encodings[i].ids)
            tokens = combined[b, :length]
            if pooling == "cls":
                tokens = tokens[0]
            elif pooling == "mean":
                tokens = tokens.mean(0)
            features[i] = tokens.cpu().numpy()
            ids[i] = encodings[i].ids
    return features, ids
