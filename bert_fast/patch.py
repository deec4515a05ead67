"""Run an existing transformers BERT through bert_fast, in place: `patch(model)` and `unpatch(model)`.

Every transformers `BertModel` inside `model` (the model itself, the `.bert` of a BertFor* head model, or the
encoder a sentence-transformers model wraps) gets an instance-level `forward` that runs our encoder. Our encoder
is a shadow built around the model's own modules — the same Embedding, Linear and LayerNorm objects, so the
same parameters: optimizers, `.to()`, state dicts and checkpoints of the patched model are untouched. The one
difference is the attention projection: transformers keeps query, key and value apart, and the shadow
concatenates them per call into the single fused QKV projection our layers use.

A call that asks for something the fused encoder does not serve (attention maps, head masks, inputs_embeds,
cross-attention or decoder use, a non-2-D mask, gradient checkpointing) runs transformers' own forward for that
call. The patch is per instance: other models of the same class are unaffected.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, BertConfig, ConfigError
from .modeling import BertModel

logger = logging.getLogger("bert_fast")

_SHADOW = "_bert_fast_shadow"
_GRAPHS = "_bert_fast_graphs"  # a GraphedEncoder around the shadow, for patch(..., graphs=True)
# Keyword arguments the fused forward understands; anything else sends the call to transformers' forward.
_SERVED = {"input_ids", "attention_mask", "token_type_ids", "position_ids", "output_hidden_states", "return_dict",
           "inputs_embeds", "head_mask", "encoder_hidden_states", "encoder_attention_mask", "past_key_values",
           "use_cache", "output_attentions", "cache_position"}


class ConcatQKV(nn.Module):
    """transformers' separate query/key/value projections, applied as one (3H, H) matrix product."""

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear):
        super().__init__()
        self.query, self.key, self.value = query, key, value

    def fused_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (3H, H) weight and (3H,) bias, concatenated per call (the fused encoder layer takes them)."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.fused_weight_and_bias())


def _transformers_bert_class():
    from transformers import BertModel as HFBertModel

    return HFBertModel


def _config_from(hf_config) -> BertConfig:
    data = hf_config.to_dict()
    data.pop("num_labels", None)  # derived from id2label in transformers
    return BertConfig.from_dict(data)


def _build_shadow(hf_bert, impl: str) -> BertModel:
    """Our BertModel whose every parameterised module is the transformers model's own."""
    config = _config_from(hf_bert.config)
    with torch.device("meta"):  # nothing of the shadow's own is kept: all its leaves are replaced below
        shadow = BertModel(config, add_pooling_layer=hf_bert.pooler is not None, impl=impl)
    theirs, ours = hf_bert.embeddings, shadow.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm", "dropout"):
        setattr(ours, name, getattr(theirs, name))
    for hf_layer, layer in zip(hf_bert.encoder.layer, shadow.encoder.layer):
        hf_self = hf_layer.attention.self
        layer.attention.self.qkv = ConcatQKV(hf_self.query, hf_self.key, hf_self.value)
        for ours_block, theirs_block in ((layer.attention.output, hf_layer.attention.output),
                                         (layer.output, hf_layer.output)):
            ours_block.dense, ours_block.LayerNorm, ours_block.dropout = (
                theirs_block.dense, theirs_block.LayerNorm, theirs_block.dropout)
        layer.intermediate.dense = hf_layer.intermediate.dense
    if shadow.pooler is not None:
        shadow.pooler.dense = hf_bert.pooler.dense
    theirs_params = {id(p) for p in hf_bert.parameters()}
    stray = [name for name, p in shadow.named_parameters() if id(p) not in theirs_params]
    if stray:  # a transformers version with a different module layout: refuse rather than run random weights
        raise RuntimeError(f"bert_fast.patch: could not map {stray[:3]} onto the transformers model")
    return shadow


def _why_not_patchable(hf_bert) -> str | None:
    config = hf_bert.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "it is configured as a decoder / with cross-attention"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type={config.position_embedding_type!r}"
    if config.hidden_act not in ACTIVATIONS:
        return f"hidden_act={config.hidden_act!r}"
    return None


def _fallback_reason(hf_bert, kwargs: dict) -> str | None:
    """Why this call must run transformers' own forward, or None when the fused encoder serves it."""
    unknown = set(kwargs) - _SERVED
    if unknown:
        return f"arguments {sorted(unknown)}"
    for name in ("inputs_embeds", "head_mask", "encoder_hidden_states", "past_key_values"):
        if kwargs.get(name) is not None:
            return name
    if kwargs.get("output_attentions") or getattr(hf_bert.config, "output_attentions", False):
        return "output_attentions"
    if kwargs.get("output_hidden_states") not in (None, True, False):
        return "output_hidden_states selecting layers"
    if kwargs.get("input_ids") is None:
        return "no input_ids"
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() != 2:
        return "a non-2-D attention mask"
    if hf_bert.training and getattr(hf_bert, "gradient_checkpointing", False):
        return "gradient checkpointing"
    return None


def _fused_forward(hf_bert, original_forward):
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    def forward(input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, *args, **kwargs):
        if args:  # positional use beyond the first four: leave it to transformers
            return original_forward(input_ids, attention_mask, token_type_ids, position_ids, *args, **kwargs)
        call = dict(kwargs, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                    position_ids=position_ids)
        reason = _fallback_reason(hf_bert, call)
        if reason is not None:
            logger.debug("bert_fast: transformers' forward serves this call (%s)", reason)
            return original_forward(**call)
        shadow = hf_bert.__dict__[_SHADOW]
        if shadow.training != hf_bert.training:
            shadow.train(hf_bert.training)
        want_hidden = kwargs.get("output_hidden_states")
        if want_hidden is None:
            want_hidden = getattr(hf_bert.config, "output_hidden_states", False)
        graphs = hf_bert.__dict__.get(_GRAPHS)
        if graphs is not None and not want_hidden and not hf_bert.training and not torch.is_grad_enabled():
            out = graphs(input_ids, attention_mask, token_type_ids, position_ids)
        else:
            out = shadow(input_ids, attention_mask, token_type_ids, position_ids,
                         output_hidden_states=bool(want_hidden))
        result = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=out.last_hidden_state, pooler_output=out.pooler_output, hidden_states=out.hidden_states)
        return_dict = kwargs.get("return_dict")
        if return_dict is None:
            return_dict = getattr(hf_bert.config, "return_dict", True)
        return result if return_dict else result.to_tuple()

    return forward


def patch(model: nn.Module, impl: str = "auto", graphs: bool = False) -> nn.Module:
    """Make every transformers BertModel inside `model` run bert_fast's encoder, in place. Returns `model`.

    graphs=True (CUDA) serves inference calls (eval mode, no gradient, no hidden states asked for) through captured
    CUDA graphs, one per shape bucket (bert_fast.inference.GraphedEncoder); pass the inputs on the host (a
    tokenizer's tensors) to spare a device sync."""
    hf_class = _transformers_bert_class()
    patched = 0
    for module in model.modules():
        if not isinstance(module, hf_class) or _SHADOW in module.__dict__:
            continue
        reason = _why_not_patchable(module)
        if reason is not None:
            logger.warning("bert_fast.patch: left a BertModel unpatched because %s", reason)
            continue
        try:
            shadow = _build_shadow(module, impl)
        except ConfigError as e:
            logger.warning("bert_fast.patch: left a BertModel unpatched: %s", e)
            continue
        module.__dict__[_SHADOW] = shadow  # not a registered submodule: its parameters are the model's own
        if graphs:
            from .inference import GraphedEncoder

            module.__dict__[_GRAPHS] = GraphedEncoder(shadow, eval_model=False)
        module.forward = _fused_forward(module, type(module).forward.__get__(module))
        patched += 1
    if patched == 0:
        raise ValueError(f"bert_fast.patch: found no patchable transformers BertModel in {type(model).__name__}")
    logger.info("bert_fast.patch: %d BertModel(s) now run bert_fast (impl=%r)", patched, impl)
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Restore transformers' own forward on every BertModel `patch` changed. Returns `model`."""
    for module in model.modules():
        if _SHADOW in module.__dict__:
            del module.__dict__[_SHADOW]
            module.__dict__.pop(_GRAPHS, None)
            del module.__dict__["forward"]
    return model


def is_patched(model: nn.Module) -> bool:
    return any(_SHADOW in m.__dict__ for m in model.modules())
