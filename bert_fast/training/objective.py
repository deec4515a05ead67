"""The pretraining objective as a module: masked LM + next sentence prediction on a BertForPreTraining.

With sparse_mlm_head the MLM head (transform + vocabulary projection) runs only at the masked positions, about
15% of the tokens, instead of producing (batch, seq, vocab) logits: on the CPU and for small models that
projection is most of the step. It takes the encoder output in the implementation's own layout
(`BertModel.encode`) and picks the masked positions through the layout, so it works on the padded reference
path and the packed fast path alike. Otherwise the model's own forward computes the losses.

A module (rather than a function) so that DDP/FSDP wrap it and see its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class PretrainingObjective(nn.Module):
    def __init__(self, model: nn.Module, sparse_mlm_head: bool = True):
        super().__init__()
        self.model = model
        self.sparse_mlm_head = sparse_mlm_head

    def forward(self, input_ids, attention_mask, token_type_ids, labels, next_sentence_label,
                return_logits: bool = False) -> dict[str, torch.Tensor]:
        """Losses (float32 scalars: loss, mlm_loss, nsp_loss); with return_logits also mlm_logits (masked,
        vocab), mlm_labels (masked,) and nsp_logits (batch, 2)."""
        if not self.sparse_mlm_head:
            out = self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels,
                             next_sentence_label=next_sentence_label)
            result = {"loss": out.loss, "mlm_loss": out.mlm_loss, "nsp_loss": out.nsp_loss}
            if return_logits:
                result.update(mlm_logits=masked_logits(out.prediction_logits, labels), mlm_labels=labels[labels != -100],
                              nsp_logits=out.seq_relationship_logits)
            return result
        bert, heads = self.model.bert, self.model.cls
        hidden, layout, _ = bert.encode(input_ids, attention_mask, token_type_ids)
        ops = bert._ops(hidden.device)
        flat_labels = layout.pack(labels).reshape(-1)  # labels in the layout of the hidden states
        where = (flat_labels != -100).nonzero().squeeze(1)
        chosen = hidden.reshape(-1, hidden.shape[-1]).index_select(0, where)  # (masked, hidden)
        mlm_labels = flat_labels.index_select(0, where)
        mlm_logits = heads.predictions(chosen, ops)  # (masked, vocab)
        mlm_loss = F.cross_entropy(mlm_logits.float(), mlm_labels)
        nsp_logits = heads.seq_relationship(bert.pooler(layout.first_tokens(hidden)))  # (batch, 2)
        nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1))
        result = {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "nsp_loss": nsp_loss}
        if return_logits:
            result.update(mlm_logits=mlm_logits, mlm_labels=mlm_labels, nsp_logits=nsp_logits)
        return result
