"""The pretraining objective as a module: masked LM + next sentence prediction on a BertForPreTraining, or masked
LM alone on a BertForMaskedLM of any family ("mlm", as RoBERTa pretrains: no nsp_loss, no NSP logits).

The model's own forward runs the MLM head only at the labelled (masked) positions, about 15% of the tokens,
and can take the loss through the chunked linear + cross-entropy (`fused_mlm_loss`), which never holds the
(masked, vocab) logits while training. This wrapper returns the losses as a dict and, for evaluation, the
logits at the masked positions with their labels.

A module (rather than a function) so that DDP/FSDP wrap it and see its forward.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_logits(prediction_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The (masked, vocab) rows of an MLM output at positions with a label, in row-major order: from full
    (batch, seq, vocab) logits, or from logits a model already computed only there."""
    chosen = labels != -100
    if prediction_logits.dim() == 3:
        return prediction_logits[chosen]
    if prediction_logits.dim() == 2 and prediction_logits.shape[0] == int(chosen.sum()):
        return prediction_logits
    raise ValueError(f"prediction logits of shape {tuple(prediction_logits.shape)} fit neither the batch "
                     f"{tuple(labels.shape)} nor its {int(chosen.sum())} masked positions")


OBJECTIVES = ("mlm_nsp", "mlm")


class PretrainingObjective(nn.Module):
    def __init__(self, model: nn.Module, objective: str = "mlm_nsp"):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")
        self.model = model
        self.objective = objective
        # A model with one token type (RoBERTa's family) reads every token as segment A.
        self.segments = model.config.family.token_types and model.config.type_vocab_size > 1

    @property
    def has_nsp(self) -> bool:
        return self.objective == "mlm_nsp"

    def forward(self, input_ids, attention_mask, token_type_ids, labels, next_sentence_label,
                return_logits: bool = False) -> dict[str, torch.Tensor]:
        """Losses (float32 scalars: loss, mlm_loss, nsp_loss (None for "mlm")); with return_logits also mlm_logits
        (masked, vocab), mlm_labels (masked,) and nsp_logits (batch, 2) (None for "mlm")."""
        token_type_ids = token_type_ids if self.segments else None
        if not self.has_nsp:
            out = self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels)
            result = {"loss": out.loss, "mlm_loss": out.loss, "nsp_loss": None}
            if return_logits:
                result.update(mlm_logits=masked_logits(out.logits, labels), mlm_labels=labels[labels != -100],
                              nsp_logits=None)
            return result
        out = self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels,
                         next_sentence_label=next_sentence_label)
        result = {"loss": out.loss, "mlm_loss": out.mlm_loss, "nsp_loss": out.nsp_loss}
        if return_logits:
            result.update(mlm_logits=masked_logits(out.prediction_logits, labels),
                          mlm_labels=labels[labels != -100], nsp_logits=out.seq_relationship_logits)
        return result
