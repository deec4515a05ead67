"""BertConfig: the paper's hyper-parameters, the named sizes, and Hugging Face config.json round trips.

One config serves the whole BERT family (`families.py`): `model_type` names the family, and a family's own
config.json keys (DistilBERT's `dim`, `n_layers` ...) are read into BERT's fields and written back under their
own names.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .families import FAMILIES, Family, UnsupportedArchitecture, family_for
from .files import read_json

# GELU flavours as transformers names them, mapped to torch's `approximate` argument.
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}

# (layers, hidden, heads) of the sizes released with BERT (base/large) and its compact models (Turc et al.).
PRESETS = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Task heads (fine-tuning); transformers keeps these in the same config.json.
    num_labels: int = 2
    classifier_dropout: float | None = None
    problem_type: str | None = None
    id2label: dict[int, str] | None = None
    # The family (families.py): "bert", "roberta", "xlm-roberta", "camembert", "electra" or "distilbert".
    model_type: str = "bert"
    # ELECTRA's embeddings are this wide, widened to hidden_size by embeddings_project; None: hidden_size.
    embedding_size: int | None = None
    # Keys of a config.json we do not interpret, written back unchanged on save.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_approximate(self) -> str:
        return ACTIVATIONS[self.hidden_act]

    @property
    def family(self) -> Family:
        return FAMILIES[self.model_type]

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size

    def validate(self) -> None:
        try:
            family = family_for(self.model_type)
        except UnsupportedArchitecture as e:
            raise ConfigError(str(e)) from None
        if self.embedding_size is not None:
            if not family.embedding_projection and self.embedding_size != self.hidden_size:
                raise ConfigError(f"embedding_size={self.embedding_size} differs from hidden_size={self.hidden_size}: "
                                  f"only ELECTRA projects its embeddings, this is model_type={self.model_type!r}")
            if not isinstance(self.embedding_size, int) or self.embedding_size <= 0:
                raise ConfigError(f"embedding_size must be a positive integer, got {self.embedding_size!r}")
        if self.model_type == "distilbert" and self.layer_norm_eps != 1e-12:
            raise ConfigError(f"DistilBERT's LayerNorm epsilon is fixed at 1e-12 in transformers, got "
                              f"{self.layer_norm_eps}")
        if family.positions == "after_padding" and family.max_sequence_length(self) < 1:
            raise ConfigError(f"max_position_embeddings={self.max_position_embeddings} leaves no position after "
                              f"pad_token_id={self.pad_token_id}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {p}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @classmethod
    def preset(cls, name: str, **overrides) -> BertConfig:
        """A named size: tiny, mini, small, medium, base, large. intermediate_size is 4H."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model size {name!r}; choose one of {list(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        values = {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
                  "intermediate_size": 4 * hidden}
        return cls(**{**values, **overrides})

    # --- Hugging Face config.json ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        data = dict(data)
        model_type = data.pop("model_type", "bert")
        try:
            family = family_for(model_type)
        except UnsupportedArchitecture as e:
            raise ConfigError(f"config.json: {e}") from None
        for theirs, ours in family.config_keys.items():
            if theirs in data:
                data[ours] = data.pop(theirs)
        for key, value in family.config_defaults.items():
            data.setdefault(key, value)
        if not family.token_types:
            data["type_vocab_size"] = 1  # no token type embeddings: token_type_ids are not read
        position_type = data.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(f"position_embedding_type={position_type!r} is not supported (only 'absolute')")
        if data.get("is_decoder") or data.get("add_cross_attention"):
            raise ConfigError("decoder / cross-attention BERT configs are not supported: this is an encoder library")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        if known.get("id2label") is not None:
            known["id2label"] = {int(k): v for k, v in known["id2label"].items()}
            data.pop("label2id", None)
            known.setdefault("num_labels", len(known["id2label"]))
        return cls(**known, model_type=model_type, extra=data)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        for key in ("classifier_dropout", "problem_type", "id2label", "embedding_size"):
            if data[key] is None:
                del data[key]
        if self.id2label is not None:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
            data["label2id"] = {v: k for k, v in self.id2label.items()}
        # transformers derives num_labels from id2label, so a non-default count is written as label names.
        data.pop("num_labels")
        if self.id2label is None and self.num_labels != 2:
            data["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            data["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        family = self.family
        del data["model_type"]
        if not family.token_types:  # DistilBERT's config has neither, and fixes the LayerNorm epsilon
            del data["type_vocab_size"], data["layer_norm_eps"]
        for theirs, ours in family.config_keys.items():
            data[theirs] = data.pop(ours)
        if family.model_type == "distilbert":
            return {**self.extra, **data, "model_type": family.model_type}
        return {**self.extra, **data, "model_type": family.model_type, "position_embedding_type": "absolute"}

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        return cls.from_dict(read_json(path, ConfigError))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
