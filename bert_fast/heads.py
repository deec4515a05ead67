"""The paper's four fine-tuning shapes (Devlin et al., 2019, figure 4) as Hugging Face-named task heads.

Each head sits on the encoder (`self.bert`, or the family's `self.roberta`, `self.electra`, `self.distilbert`) and
takes what it needs through the implementation's own layout: the first token through `layout.first_tokens`
(sentence classification, multiple choice), every token through the packed hidden states (tagging, QA), so on the
fast path no head scatters the batch back to (batch, seq) before it must.

Every family's heads carry transformers' layouts and names (families.py): BERT's pooler + classifier; RoBERTa's
`classifier.dense` + tanh + `classifier.out_proj` on `<s>` (ELECTRA's the same with GELU); ELECTRA's
`sequence_summary` for multiple choice; DistilBERT's `pre_classifier` + ReLU + `classifier`, and its dropout
before `qa_outputs`.

Logits and losses are transformers' on the same weights, with one deliberate difference on padded batches:
token-level losses never see padding. Tagging ignores labels at padded positions, and QA's start/end logits hold
the dtype's lowest value there (a padded position is never a span boundary and does not dilute the softmax), so
a loss does not depend on how much its batch was padded, nor on the implementation. Token-level logits at padded
positions are otherwise unspecified (zeros on the packed path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig, ConfigError
from .inputs import InputError
from .modeling import BertModel, BertPreTrainedModel
from .outputs import _TupleLike

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


@dataclass
class SequenceClassifierOutput(_TupleLike):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (batch, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(_TupleLike):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (batch, seq, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput(_TupleLike):
    loss: torch.Tensor | None = None  # mean of the start and end cross-entropies
    start_logits: torch.Tensor | None = None  # (batch, seq)
    end_logits: torch.Tensor | None = None  # (batch, seq)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MultipleChoiceModelOutput(_TupleLike):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (batch, num_choices)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # each (batch * num_choices, seq, hidden)


def _classifier_dropout(config: BertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


def family_setting(config: BertConfig, name: str):
    """A family's own setting (DistilBERT's seq_classif_dropout, ELECTRA's summary_type ...): the config.json's
    value, else transformers' default."""
    return config.extra.get(name, config.family.settings.get(name))


_ACTIVATIONS = {"tanh": torch.tanh, "gelu": F.gelu, "relu": F.relu}


class ClassificationHead(nn.Module):
    """RoBERTa's (tanh) and ELECTRA's (GELU) sentence head on the first token: dropout, dense, activation,
    dropout, out_proj."""

    def __init__(self, config: BertConfig, activation: str):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = _classifier_dropout(config)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        self.activation = activation

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        x = self.dropout(_ACTIVATIONS[self.activation](self.dense(self.dropout(first))))
        return self.out_proj(x)


class SequenceSummary(nn.Module):
    """ELECTRA's multiple-choice summary of a sequence: its first token, projected (summary_use_proj), activated
    (summary_activation), dropped out (summary_last_dropout). Other summary types are refused."""

    def __init__(self, config: BertConfig):
        super().__init__()
        kind = family_setting(config, "summary_type")
        if kind != "first":
            raise ConfigError(f"summary_type={kind!r} is not served (only 'first', ELECTRA's default)")
        if family_setting(config, "summary_use_proj"):
            labels = family_setting(config, "summary_proj_to_labels") and config.num_labels > 0
            self.summary = nn.Linear(config.hidden_size, config.num_labels if labels else config.hidden_size)
        else:
            self.summary = nn.Identity()
        self.activation = family_setting(config, "summary_activation")
        if self.activation not in (None, *_ACTIVATIONS):
            raise ConfigError(f"summary_activation={self.activation!r} is not one of {sorted(_ACTIVATIONS)}")
        self.first_dropout = nn.Dropout(family_setting(config, "summary_first_dropout") or 0.0)
        self.last_dropout = nn.Dropout(family_setting(config, "summary_last_dropout") or 0.0)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        x = self.summary(self.first_dropout(first))
        if self.activation is not None:
            x = _ACTIVATIONS[self.activation](x)
        return self.last_dropout(x)


def _add_first_token_head(model: BertPreTrainedModel, config: BertConfig, layout: str, outputs: int,
                          dropout: nn.Dropout) -> None:
    """The modules of a head that reads the first token, under the family's names (see the module docstring)."""
    if layout == "pooler":
        model.dropout = dropout
        model.classifier = nn.Linear(config.hidden_size, outputs)
    elif layout in ("dense_tanh", "dense_gelu"):
        model.classifier = ClassificationHead(config, activation=layout.removeprefix("dense_"))
    elif layout == "summary":
        model.sequence_summary = SequenceSummary(config)
        model.classifier = nn.Linear(config.hidden_size, outputs)
    elif layout == "pre_classifier":
        model.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        model.classifier = nn.Linear(config.hidden_size, outputs)
        model.dropout = nn.Dropout(family_setting(config, "seq_classif_dropout"))
    else:
        raise ValueError(f"unknown head layout {layout!r}")


def _first_token_logits(model: BertPreTrainedModel, layout: str, hidden, batch_layout) -> torch.Tensor:
    first = batch_layout.first_tokens(hidden)  # (batch, hidden)
    if layout == "pooler":
        return model.classifier(model.dropout(model.base_model.pooler(first)))
    if layout in ("dense_tanh", "dense_gelu"):
        return model.classifier(first)
    if layout == "summary":
        return model.classifier(model.sequence_summary(first))
    return model.classifier(model.dropout(F.relu(model.pre_classifier(first))))


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None):
    """transformers' rule: one label -> MSE regression; integer labels -> cross-entropy; else multi-label BCE."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    logits = logits.float()
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.float().squeeze())
        return F.mse_loss(logits, labels.float())
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    raise ValueError(f"problem_type={problem_type!r} is not one of {PROBLEM_TYPES}")


class BertForSequenceClassification(BertPreTrainedModel):
    """Single sentences or pairs ([CLS] A [SEP] B [SEP]) -> one label (or a score with num_labels=1) from [CLS]."""

    def __init__(self, config: BertConfig, impl: str = "auto"):
        super().__init__(config, impl)
        self.num_labels = config.num_labels
        self.head_layout = config.family.sequence_head
        self._add_encoder(BertModel(config, add_pooling_layer=self.head_layout == "pooler", impl=impl))
        _add_first_token_head(self, config, self.head_layout, config.num_labels, _classifier_dropout(config))
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states: bool = False, layout=None) -> SequenceClassifierOutput:
        hidden, layout, all_hidden = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                            output_hidden_states, layout=layout)
        logits = _first_token_logits(self, self.head_layout, hidden, layout)  # (batch, num_labels)
        loss = sequence_classification_loss(logits, labels, self.config.problem_type) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=layout.unpack_all(all_hidden))


class BertForTokenClassification(BertPreTrainedModel):
    """A label per token (BIO tagging). Label -100 marks tokens without one (later word pieces, specials)."""

    def __init__(self, config: BertConfig, impl: str = "auto"):
        super().__init__(config, impl)
        self.num_labels = config.num_labels
        self._add_encoder(BertModel(config, add_pooling_layer=False, impl=impl))
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states: bool = False, layout=None) -> TokenClassifierOutput:
        hidden, layout, all_hidden = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                            output_hidden_states, layout=layout)
        logits = layout.unpack(self.classifier(self.dropout(hidden)))  # (batch, seq, num_labels)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise InputError(f"labels has shape {tuple(labels.shape)}; token labels need {tuple(logits.shape[:2])}")
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, -100)
            loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.reshape(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=layout.unpack_all(all_hidden))


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: start and end logits per token. SQuAD 2.0's "no answer" is the span at [CLS] (position 0)."""

    def __init__(self, config: BertConfig, impl: str = "auto"):
        super().__init__(config, impl)
        self.num_labels = config.num_labels
        if config.num_labels != 2:
            raise InputError(f"question answering needs num_labels=2 (start, end), the config has {config.num_labels}")
        self._add_encoder(BertModel(config, add_pooling_layer=False, impl=impl))
        qa_dropout = config.family.qa_dropout
        self.dropout = nn.Dropout(family_setting(config, qa_dropout) if qa_dropout else 0.0)  # DistilBERT's
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, start_positions=None,
                end_positions=None, output_hidden_states: bool = False, layout=None) -> QuestionAnsweringModelOutput:
        hidden, layout, all_hidden = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                            output_hidden_states, layout=layout)
        logits = layout.unpack(self.qa_outputs(self.dropout(hidden)))  # (batch, seq, 2)
        if attention_mask is not None:
            logits = logits.masked_fill((attention_mask == 0).unsqueeze(-1), torch.finfo(logits.dtype).min)
        start_logits, end_logits = (x.squeeze(-1).contiguous() for x in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored, as in transformers (a window that lost its answer).
            ignored = start_logits.shape[1]
            start_positions = start_positions.reshape(-1).clamp(0, ignored)
            end_positions = end_positions.reshape(-1).clamp(0, ignored)
            start_loss = F.cross_entropy(start_logits.float(), start_positions, ignore_index=ignored)
            end_loss = F.cross_entropy(end_logits.float(), end_positions, ignore_index=ignored)
            loss = (start_loss + end_loss) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                            hidden_states=layout.unpack_all(all_hidden))


class BertForMultipleChoice(BertPreTrainedModel):
    """SWAG-style: (batch, choices, seq) inputs, one score per choice from its [CLS], softmax over the choices."""

    def __init__(self, config: BertConfig, impl: str = "auto"):
        super().__init__(config, impl)
        family = config.family
        self.head_layout = family.choice_head
        self._add_encoder(BertModel(config, add_pooling_layer=self.head_layout == "pooler", impl=impl))
        dropout = _classifier_dropout(config) if family.choice_dropout == "classifier_dropout" \
            else nn.Dropout(config.hidden_dropout_prob)
        _add_first_token_head(self, config, self.head_layout, 1, dropout)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states: bool = False, layout=None) -> MultipleChoiceModelOutput:
        if layout is not None:  # a bucket's: the choices of each example packed one after another
            num_choices, flat = layout.choices, (lambda t: t)
        elif not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 3:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise InputError(f"multiple choice input_ids must have shape (batch, num_choices, seq), got {shape}")
        else:
            num_choices = input_ids.shape[1]

            def flat(t):  # (batch, choices, seq) -> (batch * choices, seq)
                return None if t is None else t.reshape(-1, t.shape[-1])

        hidden, layout, all_hidden = self.base_model.encode(flat(input_ids), flat(attention_mask),
                                                            flat(token_type_ids), flat(position_ids),
                                                            output_hidden_states, layout=layout)
        logits = _first_token_logits(self, self.head_layout, hidden, layout).view(-1, num_choices)  # (batch, choices)
        loss = F.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=layout.unpack_all(all_hidden))
