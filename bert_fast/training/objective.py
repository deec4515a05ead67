"""The pretraining objective as a module: masked LM + next sentence prediction on a BertForPreTraining, or masked
LM alone on a BertForMaskedLM of any family ("mlm", as RoBERTa pretrains: no nsp_loss, no NSP logits).

The model's own forward runs the MLM head only at the labelled (masked) positions, about 15% of the tokens,
and can take the loss through the chunked linear + cross-entropy (`fused_mlm_loss`), which never holds the
(masked, vocab) logits while training. This wrapper returns the losses as a dict and, for evaluation, the
logits at the masked positions with their labels.

Packed micro-batches (data/packing.py: several examples per row, fixed shapes) take `packed_pretraining_losses`:
the encoder on the packed rows, the NSP head at each example's [CLS], and the MLM head at a fixed number of
positions. Both losses are means, over the masked tokens and over the examples of the micro-batch, exactly as
for the same examples unpacked, so packing changes no gradient's meaning.

A module (rather than a function) so that DDP/FSDP wrap it and see its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..packed import encode_packed_rows


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

    def forward(self, input_ids, attention_mask, token_type_ids, labels=None, next_sentence_label=None,
                return_logits: bool = False, **packed) -> dict[str, torch.Tensor]:
        """Losses (float32 scalars: loss, mlm_loss, nsp_loss (None for "mlm")); with return_logits also mlm_logits
        (masked, vocab), mlm_labels (masked,) and nsp_logits (batch, 2) (None for "mlm"). `packed`: the further
        tensors of a packed micro-batch (position_ids, cu_seqlens, cls_positions, mlm_positions, mlm_labels)."""
        if packed:
            return packed_pretraining_losses(self.model, input_ids, token_type_ids, next_sentence_label,
                                             return_logits=return_logits, **packed)
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


def packed_pretraining_losses(model: nn.Module, input_ids, token_type_ids, next_sentence_label, position_ids,
                              cu_seqlens, cls_positions, mlm_positions, mlm_labels,
                              return_logits: bool = False) -> dict[str, torch.Tensor]:
    """MLM + NSP on a packed micro-batch (data/packing.py) for a bert_fast BertForPreTraining.

    The heads run on fixed-size gathers: cls_positions (examples budget) and mlm_positions (masked budget), whose
    unused entries carry the label -100 and add nothing to the means. Returns what PretrainingObjective returns;
    with return_logits the logits are those of the real examples and masked tokens only.
    """
    bert = model.base_model
    hidden = encode_packed_rows(bert, input_ids, token_type_ids, position_ids, cu_seqlens)  # (rows * row_len, H)
    ops = bert.implementation(hidden.device)
    nsp_logits = model.cls.seq_relationship(bert.pooler(hidden.index_select(0, cls_positions)))
    nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label, ignore_index=-100)
    head = model.cls.predictions
    transformed = head.transform(hidden.index_select(0, mlm_positions), ops)
    mlm_logits = None
    if model.masked_lm.fused and torch.is_grad_enabled():
        from bert_fast_kernels import linear_cross_entropy

        mlm_loss = linear_cross_entropy(transformed, head.decoder.weight, head.bias, mlm_labels)
    else:
        mlm_logits = head.decoder(transformed)
        mlm_loss = F.cross_entropy(mlm_logits.float(), mlm_labels, ignore_index=-100)
    result = {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "nsp_loss": nsp_loss}
    if return_logits:
        masked, examples = mlm_labels != -100, next_sentence_label != -100
        result.update(mlm_logits=None if mlm_logits is None else mlm_logits[masked], mlm_labels=mlm_labels[masked],
                      nsp_logits=nsp_logits[examples])
    return result
