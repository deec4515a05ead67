"""Run an existing transformers BERT-family encoder through bert_fast, in place: `patch(model)` and `unpatch(model)`.

Every transformers `BertModel`, `RobertaModel`, `XLMRobertaModel`, `CamembertModel`, `ElectraModel` and
`DistilBertModel` inside `model` (the model itself, the encoder of a `*For*` head model, or the encoder a
sentence-transformers model wraps) gets an instance-level `forward` that runs our encoder. Our encoder
is a shadow built around the model's own modules — the same Embedding, Linear and LayerNorm objects, so the
same parameters: optimizers, `.to()`, state dicts and checkpoints of the patched model are untouched. The one
difference is the attention projection: transformers keeps query, key and value apart, and the shadow
concatenates them per call into the single fused QKV projection our layers use.

A call that asks for something the fused encoder does not serve (attention maps, head masks, inputs_embeds,
cross-attention or decoder use, a non-2-D mask, gradient checkpointing) runs transformers' own forward for that
call. The patch is per instance: other models of the same class are unaffected.

Flattened batches (transformers' DataCollatorWithFlattening, for padding-free training with a transformers
Trainer) are served: input_ids (1, tokens) with position_ids restarting per sequence, or the collator's
cu_seq_lens_q / cu_seq_lens_k / max_length_q / max_length_k, or seq_idx. Each sequence is encoded alone;
last_hidden_state is (1, tokens, hidden) and pooler_output has one row per sequence.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, BertConfig
from .errors import ConfigError, InputError
from .modeling import BertModel
from .packed import flattened_sequences

logger = logging.getLogger("bert_fast")

_SHADOW = "_bert_fast_shadow"
_GRAPHS = "_bert_fast_graphs"  # a GraphedEncoder around the shadow, for patch(..., graphs=True)
# Keyword arguments the fused forward understands; anything else sends the call to transformers' forward.
_SERVED = {"input_ids", "attention_mask", "token_type_ids", "position_ids", "output_hidden_states", "return_dict",
           "inputs_embeds", "head_mask", "encoder_hidden_states", "encoder_attention_mask", "past_key_values",
           "cache", "use_cache", "output_attentions", "cache_position",
           # a flattened batch's boundaries (DataCollatorWithFlattening): see _flattened_arguments
           "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx",
           # what a transformers Trainer passes for the loss's normalisation; the encoder has no use for it
           "num_items_in_batch"}


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


# transformers' encoder classes we serve, by family.
_ENCODER_CLASSES = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel",
                    "camembert": "CamembertModel", "electra": "ElectraModel", "distilbert": "DistilBertModel"}


def _transformers_encoder_classes() -> tuple[type, ...]:
    import transformers

    return tuple(getattr(transformers, name) for name in _ENCODER_CLASSES.values() if hasattr(transformers, name))


def _config_from(hf_config) -> BertConfig:
    data = hf_config.to_dict()
    data.pop("num_labels", None)  # derived from id2label in transformers
    return BertConfig.from_dict(data)


def _map_bert_layer(layer, hf_layer) -> None:
    hf_self = hf_layer.attention.self
    layer.attention.self.qkv = ConcatQKV(hf_self.query, hf_self.key, hf_self.value)
    for ours_block, theirs_block in ((layer.attention.output, hf_layer.attention.output),
                                     (layer.output, hf_layer.output)):
        ours_block.dense, ours_block.LayerNorm, ours_block.dropout = (
            theirs_block.dense, theirs_block.LayerNorm, theirs_block.dropout)
    layer.intermediate.dense = hf_layer.intermediate.dense


def _map_distilbert_layer(layer, hf_block) -> None:
    attention = hf_block.attention
    layer.attention.self.qkv = ConcatQKV(attention.q_lin, attention.k_lin, attention.v_lin)
    # The attention output has no dropout in DistilBERT: the shadow keeps its own (p = 0).
    layer.attention.output.dense, layer.attention.output.LayerNorm = attention.out_lin, hf_block.sa_layer_norm
    layer.intermediate.dense = hf_block.ffn.lin1
    layer.output.dense, layer.output.LayerNorm, layer.output.dropout = (
        hf_block.ffn.lin2, hf_block.output_layer_norm, hf_block.ffn.dropout)


def _build_shadow(hf_bert, impl: str) -> BertModel:
    """Our BertModel whose every parameterised module is the transformers model's own."""
    config = _config_from(hf_bert.config)
    family = config.family
    hf_pooler = getattr(hf_bert, "pooler", None)
    with torch.device("meta"):  # nothing of the shadow's own is kept: all its leaves are replaced below
        shadow = BertModel(config, add_pooling_layer=hf_pooler is not None, impl=impl)
    theirs, ours = hf_bert.embeddings, shadow.embeddings
    names = ["word_embeddings", "position_embeddings", "LayerNorm", "dropout"]
    names += ["token_type_embeddings"] if family.token_types else []
    for name in names:
        setattr(ours, name, getattr(theirs, name))
    if shadow.embeddings_project is not None:
        shadow.embeddings_project = hf_bert.embeddings_project
    if family.model_type == "distilbert":
        for hf_block, layer in zip(hf_bert.transformer.layer, shadow.encoder.layer):
            _map_distilbert_layer(layer, hf_block)
    else:
        for hf_layer, layer in zip(hf_bert.encoder.layer, shadow.encoder.layer):
            _map_bert_layer(layer, hf_layer)
    if shadow.pooler is not None:
        shadow.pooler.dense = hf_pooler.dense
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
    activation = getattr(config, "hidden_act", None) or getattr(config, "activation", None)  # DistilBERT's name
    if activation not in ACTIVATIONS:
        return f"activation {activation!r}"
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


def _call_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict | None:
    """The call as keyword arguments, by the original forward's own parameter order (DistilBERT's differs from
    BERT's); None when they do not bind."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    call = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            call.update(value)
        elif signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return None
        else:
            call[name] = value
    return call
def _flattened_arguments(call: dict) -> dict:
    """The flattened-batch keywords transformers passes (DataCollatorWithFlattening's flash-attention and seq_idx
    outputs) as our forward's cu_seqlens and max_seqlen. Restarting position_ids alone need nothing here: our
    forward recognises them itself (packed.flattened_sequences)."""
    cu_q, cu_k = call.get("cu_seq_lens_q"), call.get("cu_seq_lens_k")
    if cu_q is not None and cu_k is not None and not torch.equal(cu_q.to(cu_k.device), cu_k):
        raise InputError("cu_seq_lens_q and cu_seq_lens_k differ: an encoder attends within the same sequences")
    cu_seqlens = cu_q if cu_q is not None else cu_k
    if cu_seqlens is None and call.get("seq_idx") is not None:
        cu_seqlens = flattened_sequences(call["input_ids"], None, None, seq_idx=call["seq_idx"])
    if cu_seqlens is None:
        return {}
    max_seqlen = call.get("max_length_q") or call.get("max_length_k")
    return {"cu_seqlens": cu_seqlens, "max_seqlen": int(max_seqlen) if max_seqlen else None}


def _fused_forward(hf_bert, original_forward):
    from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPoolingAndCrossAttentions

    signature = inspect.signature(original_forward)

    def forward(*args, **kwargs):
        call = _call_arguments(signature, args, kwargs)
        if call is None:  # an unusual call: leave it to transformers
            return original_forward(*args, **kwargs)
        for name in ("cache", "past_key_values"):
            if call.get(name) is not None:
                return original_forward(**call)
        reason = _fallback_reason(hf_bert, call)
        if reason is not None:
            logger.debug("bert_fast: transformers' forward serves this call (%s)", reason)
            return original_forward(**call)
        input_ids, attention_mask = call.get("input_ids"), call.get("attention_mask")
        token_type_ids, position_ids = call.get("token_type_ids"), call.get("position_ids")
        shadow = hf_bert.__dict__[_SHADOW]
        if shadow.training != hf_bert.training:
            shadow.train(hf_bert.training)
        want_hidden = call.get("output_hidden_states")
        if want_hidden is None:
            want_hidden = getattr(hf_bert.config, "output_hidden_states", False)
        flattened = _flattened_arguments(call)
        graphs = hf_bert.__dict__.get(_GRAPHS)
        if (graphs is not None and not flattened and not want_hidden and not hf_bert.training
                and not torch.is_grad_enabled()):
            out = graphs(input_ids, attention_mask, token_type_ids, position_ids)
        else:
            out = shadow(input_ids, attention_mask, token_type_ids, position_ids,
                         output_hidden_states=bool(want_hidden), **flattened)
        if shadow.config.family.pooler:
            result = BaseModelOutputWithPoolingAndCrossAttentions(
                last_hidden_state=out.last_hidden_state, pooler_output=out.pooler_output,
                hidden_states=out.hidden_states)
        else:
            result = BaseModelOutput(last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states)
        return_dict = call.get("return_dict")
        if return_dict is None:
            return_dict = getattr(hf_bert.config, "return_dict", True)
        return result if return_dict else result.to_tuple()

    return forward


def patch(model: nn.Module, impl: str = "auto", graphs: bool = False) -> nn.Module:
    """Make every transformers BERT-family encoder inside `model` run bert_fast's encoder, in place. Returns
    `model`.

    graphs=True (CUDA) serves inference calls (eval mode, no gradient, no hidden states asked for) through captured
    CUDA graphs, one per shape bucket (bert_fast.inference.GraphedEncoder); pass the inputs on the host (a
    tokenizer's tensors) to spare a device sync."""
    hf_classes = _transformers_encoder_classes()
    patched = 0
    for module in model.modules():
        if not isinstance(module, hf_classes) or _SHADOW in module.__dict__:
            continue
        reason = _why_not_patchable(module)
        if reason is not None:
            logger.warning("bert_fast.patch: left a %s unpatched because %s", type(module).__name__, reason)
            continue
        try:
            shadow = _build_shadow(module, impl)
        except ConfigError as e:
            logger.warning("bert_fast.patch: left a %s unpatched: %s", type(module).__name__, e)
            continue
        module.__dict__[_SHADOW] = shadow  # not a registered submodule: its parameters are the model's own
        if graphs:
            from .inference import GraphedEncoder

            module.__dict__[_GRAPHS] = GraphedEncoder(shadow, eval_model=False)
        module.forward = _fused_forward(module, type(module).forward.__get__(module))
        patched += 1
    if patched == 0:
        served = ", ".join(_ENCODER_CLASSES.values())
        raise ConfigError(f"bert_fast.patch: found no patchable transformers encoder ({served}) in "
                         f"{type(model).__name__}")
    logger.info("bert_fast.patch: %d encoder(s) now run bert_fast (impl=%r)", patched, impl)
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Restore transformers' own forward on every encoder `patch` changed. Returns `model`."""
    for module in model.modules():
        if _SHADOW in module.__dict__:
            del module.__dict__[_SHADOW]
            module.__dict__.pop(_GRAPHS, None)
            del module.__dict__["forward"]
    return model


def is_patched(model: nn.Module) -> bool:
    return any(_SHADOW in m.__dict__ for m in model.modules())
