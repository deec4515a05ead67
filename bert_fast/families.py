"""The BERT family: the post-LN encoders with learned absolute positions that one implementation serves.

BERT, RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA and DistilBERT compute the same layer; they differ in a handful of
settings, which a `Family` spells out for one `model_type`:

- where position ids start: 0 (BERT), or after `pad_token_id`, counting real (non-pad) tokens only (RoBERTa and
  its descendants: transformers' `create_position_ids_from_input_ids`);
- whether token types exist (DistilBERT has none), whether the bare encoder has a pooler;
- ELECTRA's narrower embeddings and the `embeddings_project` linear that widens them;
- DistilBERT's own config keys (`dim`, `n_layers`, `activation` ...) and parameter names (`q_lin`,
  `sa_layer_norm` ...), which load and save hooks rename to and from BERT's;
- the task heads' layouts and names (RoBERTa's dense + tanh + out_proj on `<s>`, DistilBERT's pre_classifier ...).

Everything else (attention, the fused steps, the kernels) is shared. Architectures outside this family (DeBERTa's
relative attention, MPNet, ModernBERT's rotary positions and GLU) are refused with one error naming them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .errors import ConfigError

# The families served, in the order the error message lists them.
SUPPORTED = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert")

# What sets the better-known encoders we do not serve apart, for the refusal message.
_UNSERVED_REASONS = {
    "deberta": "relative (disentangled) attention",
    "deberta-v2": "relative (disentangled) attention",
    "mpnet": "relative position buckets",
    "modernbert": "rotary positions (RoPE), GLU feed-forward and local attention",
    "albert": "factorized embeddings shared across layers",
    "mobilebert": "bottleneck layers and no LayerNorm",
    "longformer": "sliding-window attention",
    "funnel": "pooling between blocks",
    "xlnet": "two-stream relative attention",
    "nomic_bert": "rotary positions and SwiGLU",
}


class UnsupportedArchitecture(ConfigError):
    """A config.json whose model_type this library does not implement."""


@dataclass(frozen=True)
class Family:
    model_type: str
    prefix: str  # transformers' base_model_prefix: the encoder's attribute (and key prefix) in task models
    class_prefix: str  # transformers' class names: f"{class_prefix}Model", f"{class_prefix}ForMaskedLM" ...
    positions: str = "absolute"  # "absolute": 0..n-1; "after_padding": pad_token_id + 1 + index among real tokens
    token_types: bool = True
    pooler: bool = True  # the bare encoder carries a pooler (ELECTRA and DistilBERT have none)
    embedding_projection: bool = False  # ELECTRA: embeddings of embedding_size, widened by embeddings_project
    attention_output_dropout: bool = True  # DistilBERT adds the attention output to its input without dropout
    # config.json keys of this family -> BertConfig fields (DistilBERT's own names); transformers' defaults for
    # BertConfig fields a config.json may leave out; and for the family's own settings the heads read (kept in
    # BertConfig.extra as the config.json has them).
    config_keys: dict[str, str] = field(default_factory=dict)
    config_defaults: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    # Key renames between our module tree (BERT's names) and the family's, as (ours, theirs) templates where
    # "{i}" stands for a layer index: inside the encoder, and inside a masked-LM model.
    encoder_names: tuple[tuple[str, str], ...] = ()
    encoder_parts: tuple[str, ...] = ("embeddings.", "encoder.", "pooler.")
    mlm_names: tuple[tuple[str, str], ...] = ()
    mlm_tied_keys: tuple[str, ...] = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
    mlm_activation: str = "hidden_act"  # or "gelu": the MLM transform's activation whatever hidden_act says
    # Task heads: sequence classification and multiple choice read the first token through one of
    # "pooler" (BERT's pooler, dropout, classifier), "dense_tanh" / "dense_gelu" (classifier.dense, activation,
    # classifier.out_proj), "summary" (ELECTRA's sequence_summary), "pre_classifier" (DistilBERT: pre_classifier,
    # ReLU, dropout, classifier).
    sequence_head: str = "pooler"
    choice_head: str = "pooler"
    choice_dropout: str = "classifier_dropout"  # the config setting the choice head's dropout reads
    qa_dropout: str | None = None  # DistilBERT drops out before qa_outputs, with this setting

    def max_sequence_length(self, config) -> int:
        """The longest sequence the position table covers."""
        if self.positions == "absolute":
            return config.max_position_embeddings
        return config.max_position_embeddings - config.pad_token_id - 1

    def hf_class_name(self, our_class_name: str) -> str:
        """transformers' name of one of our classes for this family: BertForMaskedLM -> RobertaForMaskedLM."""
        return self.class_prefix + our_class_name.removeprefix("Bert")


_ROBERTA_MLM = (
    ("cls.predictions.transform.dense.", "lm_head.dense."),
    ("cls.predictions.transform.LayerNorm.", "lm_head.layer_norm."),
    ("cls.predictions.decoder.", "lm_head.decoder."),
    ("cls.predictions.bias", "lm_head.bias"),
)


def _roberta_like(model_type: str, prefix: str, class_prefix: str, vocab_size: int) -> Family:
    return Family(
        model_type=model_type, prefix=prefix, class_prefix=class_prefix, positions="after_padding",
        config_defaults={"pad_token_id": 1, "vocab_size": vocab_size},
        mlm_names=_ROBERTA_MLM, mlm_tied_keys=("lm_head.decoder.weight", "lm_head.decoder.bias"),
        mlm_activation="gelu", sequence_head="dense_tanh", choice_dropout="hidden_dropout_prob",
    )


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "bert", "Bert"),
    "roberta": _roberta_like("roberta", "roberta", "Roberta", 50265),
    "xlm-roberta": _roberta_like("xlm-roberta", "roberta", "XLMRoberta", 30522),
    "camembert": _roberta_like("camembert", "roberta", "Camembert", 30522),
    "electra": Family(
        "electra", "electra", "Electra", pooler=False, embedding_projection=True,
        config_defaults={"embedding_size": 128, "hidden_size": 256, "num_attention_heads": 4,
                         "intermediate_size": 1024},
        settings={"summary_type": "first", "summary_use_proj": True, "summary_activation": "gelu",
                  "summary_last_dropout": 0.1},
        encoder_parts=("embeddings.", "embeddings_project.", "encoder."),
        mlm_names=(("cls.predictions.transform.dense.", "generator_predictions.dense."),
                   ("cls.predictions.transform.LayerNorm.", "generator_predictions.LayerNorm."),
                   ("cls.predictions.decoder.", "generator_lm_head."),
                   ("cls.predictions.bias", "generator_lm_head.bias")),
        mlm_tied_keys=("generator_lm_head.weight",), mlm_activation="gelu",
        sequence_head="dense_gelu", choice_head="summary",
    ),
    "distilbert": Family(
        "distilbert", "distilbert", "DistilBert", token_types=False, pooler=False, attention_output_dropout=False,
        config_keys={"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                     "hidden_dim": "intermediate_size", "dropout": "hidden_dropout_prob",
                     "attention_dropout": "attention_probs_dropout_prob", "activation": "hidden_act"},
        config_defaults={"hidden_size": 768, "num_hidden_layers": 6, "num_attention_heads": 12,
                         "intermediate_size": 3072},
        settings={"qa_dropout": 0.1, "seq_classif_dropout": 0.2},
        encoder_names=(
            ("encoder.layer.{i}.attention.self.query.", "transformer.layer.{i}.attention.q_lin."),
            ("encoder.layer.{i}.attention.self.key.", "transformer.layer.{i}.attention.k_lin."),
            ("encoder.layer.{i}.attention.self.value.", "transformer.layer.{i}.attention.v_lin."),
            ("encoder.layer.{i}.attention.output.dense.", "transformer.layer.{i}.attention.out_lin."),
            ("encoder.layer.{i}.attention.output.LayerNorm.", "transformer.layer.{i}.sa_layer_norm."),
            ("encoder.layer.{i}.intermediate.dense.", "transformer.layer.{i}.ffn.lin1."),
            ("encoder.layer.{i}.output.dense.", "transformer.layer.{i}.ffn.lin2."),
            ("encoder.layer.{i}.output.LayerNorm.", "transformer.layer.{i}.output_layer_norm."),
        ),
        encoder_parts=("embeddings.", "transformer."),
        mlm_names=(("cls.predictions.transform.dense.", "vocab_transform."),
                   ("cls.predictions.transform.LayerNorm.", "vocab_layer_norm."),
                   ("cls.predictions.decoder.", "vocab_projector."),
                   ("cls.predictions.bias", "vocab_projector.bias")),
        mlm_tied_keys=("vocab_projector.weight",),
        sequence_head="pre_classifier", choice_head="pre_classifier", choice_dropout="seq_classif_dropout",
        qa_dropout="qa_dropout",
    ),
}


def family_for(model_type: str) -> Family:
    """The Family of a config.json's model_type, or one clear error naming it and what is served."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    reason = _UNSERVED_REASONS.get(str(model_type).replace("_", "-"), _UNSERVED_REASONS.get(model_type))
    why = f" ({reason})" if reason else ""
    raise UnsupportedArchitecture(
        f"model_type={model_type!r}{why} is not served: bert_fast implements the post-LN encoders with learned "
        f"absolute positions, model_type one of {', '.join(SUPPORTED)}"
    )


# --- position ids -----------------------------------------------------------------------------------------


def position_ids(family: Family, input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Default positions of a padded (batch, seq) batch: 0..seq-1, or RoBERTa's count of real tokens after the pad
    id (padding itself sits at the pad id)."""
    batch_size, seq_len = input_ids.shape
    if family.positions == "absolute":
        return torch.arange(seq_len, device=input_ids.device).expand(batch_size, seq_len)
    real = input_ids.ne(pad_token_id).long()
    return torch.cumsum(real, dim=1) * real + pad_token_id


def packed_position_ids(family: Family, input_ids: torch.Tensor, cu_seqlens: torch.Tensor,
                        pad_token_id: int) -> torch.Tensor:
    """The same positions for packed (tokens,) sequences with (batch + 1,) offsets, free of host syncs."""
    tokens = torch.arange(input_ids.shape[0], device=input_ids.device)
    sequence = torch.searchsorted(cu_seqlens[1:], tokens.to(cu_seqlens.dtype), right=True)
    if family.positions == "absolute":
        return tokens - cu_seqlens.long()[sequence]
    real = input_ids.ne(pad_token_id).long()
    counted = torch.nn.functional.pad(torch.cumsum(real, dim=0), (1, 0))  # (tokens + 1,): real tokens before each
    within = counted[1:] - counted[cu_seqlens.long()[sequence]]
    return within * real + pad_token_id


# --- key renames ------------------------------------------------------------------------------------------


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(\d+)"))


def _substitute(template: str, match: re.Match) -> str:
    return template.replace("{i}", match.group(1)) if match.groups() else template


class KeyRenames:
    """Renames between our keys (BERT's) and a family's, both ways, from (ours, theirs) prefix templates.

    Several of our keys may name one tensor under one of theirs (a bias tied to the decoder's): to theirs, the
    first wins (they hold the same values); from theirs, the one key fills every key of ours it stands for.
    """

    def __init__(self, names: tuple[tuple[str, str], ...]):
        self.names = [(_pattern(ours), ours, _pattern(theirs), theirs) for ours, theirs in names]

    def __bool__(self) -> bool:
        return bool(self.names)

    def to_theirs(self, key: str) -> str:
        for ours_re, _, _, theirs in self.names:
            if m := ours_re.match(key):
                return _substitute(theirs, m) + key[m.end():]
        return key

    def to_ours(self, key: str) -> list[str]:
        found = []
        for _, ours, theirs_re, _ in self.names:
            if m := theirs_re.match(key):
                found.append(_substitute(ours, m) + key[m.end():])
        return found or [key]

    def rename_to_theirs(self, state_dict: dict, prefix: str) -> None:
        """In place, keeping the order: our keys under `prefix` take their names."""
        items = list(state_dict.items())
        state_dict.clear()
        for key, value in items:
            if key.startswith(prefix):
                key = prefix + self.to_theirs(key[len(prefix):])
            state_dict.setdefault(key, value)

    def rename_to_ours(self, state_dict: dict, prefix: str) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            targets = self.to_ours(key[len(prefix):])
            if targets == [key[len(prefix):]]:
                continue
            value = state_dict.pop(key)
            for target in targets:
                state_dict[prefix + target] = value


def register_renames(module: torch.nn.Module, names: tuple[tuple[str, str], ...]) -> None:
    """State dicts of `module` use the family's names; loading takes them (and ours) back. A round trip is exact."""
    renames = KeyRenames(names)
    if not renames:
        return

    def save_hook(module, state_dict, prefix, local_metadata):
        renames.rename_to_theirs(state_dict, prefix)

    def load_hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        renames.rename_to_ours(state_dict, prefix)

    module.register_state_dict_post_hook(save_hook)
    module.register_load_state_dict_pre_hook(load_hook)
