"""Validation of a batch before it reaches the model: every bad input is a clear error, never wrong numbers.

Value checks (ids inside the vocabulary, token types inside the type vocabulary) need the values on the host;
they share a single device-to-host transfer, and are skipped while torch.compile traces or a CUDA graph is
being captured (where a host sync is not allowed).
"""

from __future__ import annotations

import torch

from .config import BertConfig
from .errors import InputError
from .families import packed_position_ids
from .families import position_ids as default_position_ids


def _capturing() -> bool:
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _check_integer(name: str, t: torch.Tensor) -> None:
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InputError(f"{name} must hold integer ids, got dtype {t.dtype}")


def check_inputs(
    config: BertConfig,
    device: torch.device,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
):
    """Validate a batch and fill in the defaults: token types 0, the family's positions (0..seq-1 for BERT, after
    the pad id for RoBERTa's family). Returns the four tensors. Families without token types ignore them."""
    if not isinstance(input_ids, torch.Tensor):
        raise InputError(f"input_ids must be a tensor, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
    _check_integer("input_ids", input_ids)
    seq_len = input_ids.shape[1]
    longest = config.family.max_sequence_length(config)
    if seq_len > longest and position_ids is None:
        raise InputError(f"sequence length {seq_len} is longer than the model's {longest} positions")
    if input_ids.device != device:
        raise InputError(f"input_ids is on {input_ids.device} but the model is on {device}")

    named = {"attention_mask": attention_mask, "token_type_ids": token_type_ids, "position_ids": position_ids}
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.shape != input_ids.shape:
            raise InputError(f"{name} has shape {tuple(t.shape)} but input_ids has {tuple(input_ids.shape)}")
        if t.device != device:
            raise InputError(f"{name} is on {t.device} but the model is on {device}")
    for name in ("token_type_ids", "position_ids"):
        if named[name] is not None:
            _check_integer(name, named[name])

    if token_type_ids is None or not config.family.token_types:
        token_type_ids = torch.zeros_like(input_ids)
    if position_ids is None:
        position_ids = default_position_ids(config.family, input_ids, config.pad_token_id)

    if not _capturing() and input_ids.numel():
        _check_values(config, input_ids, attention_mask, token_type_ids, position_ids)
    return input_ids, attention_mask, token_type_ids, position_ids


def _check_values(config, input_ids, attention_mask, token_type_ids, position_ids) -> None:
    mask = attention_mask if attention_mask is not None else input_ids.new_ones(())
    stats = torch.stack([
        input_ids.min(), input_ids.max(), token_type_ids.min(), token_type_ids.max(),
        position_ids.min(), position_ids.max(), (mask != mask.to(torch.bool).to(mask.dtype)).any().long(),
    ]).tolist()  # one host transfer for every value check
    ids_min, ids_max, types_min, types_max, pos_min, pos_max, mask_not_binary = stats
    if mask_not_binary:
        raise InputError(
            "attention_mask must hold 1 for real tokens and 0 for padding (it looks like an additive mask)"
        )
    if ids_min < 0:
        raise InputError(f"input_ids holds a negative id ({ids_min})")
    if ids_max >= config.vocab_size:
        raise InputError(f"input_ids holds id {ids_max}, outside the vocabulary of {config.vocab_size}")
    if types_min < 0 or types_max >= config.type_vocab_size:
        bad = types_min if types_min < 0 else types_max
        raise InputError(f"token_type_ids holds {bad}; the model has {config.type_vocab_size} token types")
    if pos_min < 0 or pos_max >= config.max_position_embeddings:
        bad = pos_min if pos_min < 0 else pos_max
        raise InputError(f"position_ids holds {bad}; the model has {config.max_position_embeddings} positions")


def check_packed_inputs(
    config: BertConfig,
    device: torch.device,
    input_ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
):
    """Validate packed sequences (tokens,) with their offsets; default token types 0 and per-sequence positions."""
    if input_ids.dim() != 1:
        raise InputError(f"packed input_ids must have shape (tokens,), got {tuple(input_ids.shape)}")
    _check_integer("input_ids", input_ids)
    if cu_seqlens.dim() != 1 or cu_seqlens.dtype != torch.int32 or cu_seqlens.numel() < 2:
        raise InputError(f"cu_seqlens must be int32 of shape (batch + 1,), got {cu_seqlens.dtype} "
                         f"{tuple(cu_seqlens.shape)}")
    longest = config.family.max_sequence_length(config)
    if max_seqlen > longest and position_ids is None:
        raise InputError(f"max_seqlen {max_seqlen} is longer than the model's {longest} positions")
    for name, t in {"input_ids": input_ids, "cu_seqlens": cu_seqlens, "token_type_ids": token_type_ids,
                    "position_ids": position_ids}.items():
        if t is not None and t.device != device:
            raise InputError(f"{name} is on {t.device} but the model is on {device}")
    for name, t in {"token_type_ids": token_type_ids, "position_ids": position_ids}.items():
        if t is not None and t.shape != input_ids.shape:
            raise InputError(f"{name} has shape {tuple(t.shape)} but input_ids has {tuple(input_ids.shape)}")
    if position_ids is None:
        position_ids = packed_position_ids(config.family, input_ids, cu_seqlens, config.pad_token_id)
    if token_type_ids is None or not config.family.token_types:
        token_type_ids = torch.zeros_like(input_ids)
    if not _capturing():
        lengths = cu_seqlens.diff()
        first, last, longest, most_negative = torch.stack([
            cu_seqlens[0].long(), cu_seqlens[-1].long(), lengths.max().long(), lengths.min().long(),
        ]).tolist()
        if first != 0 or last != input_ids.shape[0] or most_negative < 0:
            raise InputError(f"cu_seqlens must rise from 0 to the {input_ids.shape[0]} tokens, "
                             f"got {cu_seqlens.tolist()[:8]}...")
        if longest > max_seqlen:
            raise InputError(f"a sequence has {longest} tokens, more than max_seqlen={max_seqlen}")
        if input_ids.numel():
            _check_values(config, input_ids, None, token_type_ids, position_ids)
    return input_ids, cu_seqlens, token_type_ids, position_ids
