"""Several sequences in one row: the encoder on packed rows, and flattened batches from outside.

A packed batch lays sequences back to back; `cu_seqlens` (int32 offsets over the flattened tokens) says where
each begins, and attention stays within each sequence. The fused path runs such a batch as it is (varlen
attention takes the same cu_seqlens); the reference path keeps the rows padded, (rows, row_len, hidden), and masks
attention block-diagonally: a token attends to the tokens of its own sequence only. That is Hugging Face's
computation with a 3-D attention mask, and equal to encoding each sequence alone.

Flattened inputs (transformers' DataCollatorWithFlattening): input_ids of shape (1, tokens) with position_ids
that restart at every sequence, or with cu_seqlens given. `flattened_sequences` recognises them, with transformers'
own rule: a sequence starts wherever a position is not its predecessor's plus one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError
from .inputs import check_packed_inputs
from .ops import PaddedLayout, PrepackedLayout


def sequence_index(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(total,) long: the sequence each flat token belongs to."""
    tokens = torch.arange(total, device=cu_seqlens.device, dtype=torch.int32)
    return torch.searchsorted(cu_seqlens[1:].to(torch.int32), tokens, right=True)


def block_diagonal_attention(q, k, v, same_sequence: torch.Tensor, dropout_p: float = 0.0,
                             softmax_scale: float | None = None) -> torch.Tensor:
    """Attention within sequences on padded rows, in plain PyTorch (the reference path's specification).

    q, k, v: (rows, row_len, heads, head_dim); same_sequence: (rows, row_len, row_len) bool, true where query
    and key belong to the same sequence. Returns (rows, row_len, heads, head_dim) in q's dtype.
    """
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (rows, heads, row_len, head_dim)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~same_sequence[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # every token is in its own sequence: no row without a key
    if dropout_p > 0.0:
        probs = torch.nn.functional.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v).transpose(1, 2)


@dataclass
class BlockDiagonalLayout(PaddedLayout):
    """Padded rows holding several sequences each: attention masked to each token's own sequence."""

    same_sequence: torch.Tensor | None = None  # (rows, row_len, row_len) bool

    def attention(self, ops, qkv: torch.Tensor, dropout_p: float, softmax_scale: float | None):
        q, k, v = qkv.unbind(dim=-3)  # each (rows, row_len, heads, head_dim)
        return block_diagonal_attention(q, k, v, self.same_sequence, dropout_p, softmax_scale)


def packed_rows_layout(ops, cu_seqlens: torch.Tensor, rows: int, row_len: int):
    """The layout the implementation runs packed rows in: flat tokens with cu_seqlens (fused), or the rows with
    a block-diagonal mask (reference)."""
    if ops.packed:
        return PrepackedLayout(cu_seqlens, row_len)
    sequence = sequence_index(cu_seqlens, rows * row_len).view(rows, row_len)
    return BlockDiagonalLayout(None, rows, row_len, same_sequence=sequence[:, :, None] == sequence[:, None, :])


def encode_packed_rows(bert, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor,
                       cu_seqlens: torch.Tensor) -> torch.Tensor:
    """A bert_fast BertModel on packed rows (rows, row_len) whose sequences (padding tails included, each a
    sequence of its own) cu_seqlens marks over the flattened rows. Returns (rows * row_len, hidden)."""
    if input_ids.dim() != 2:
        raise InputError(f"packed rows must have shape (rows, row_len), got {tuple(input_ids.shape)}")
    rows, row_len = input_ids.shape
    device = bert.embeddings.word_embeddings.weight.device
    flat_ids, cu_seqlens, flat_types, flat_positions = check_packed_inputs(
        bert.config, device, input_ids.reshape(-1), cu_seqlens, row_len, token_type_ids.reshape(-1),
        position_ids.reshape(-1))
    ops = bert.implementation(device)
    layout = packed_rows_layout(ops, cu_seqlens, rows, row_len)
    shape = (-1,) if ops.packed else (rows, row_len)
    hidden, _ = bert._encode_layout(flat_ids.view(shape), flat_types.view(shape), flat_positions.view(shape), layout,
                                    ops, False)
    return hidden.reshape(rows * row_len, -1)


# --- flattened inputs from outside -----------------------------------------------------------------------


def _boundaries(starts: torch.Tensor) -> torch.Tensor:
    """cu_seqlens from a (tokens,) bool that is true where a sequence starts (always at token 0)."""
    first = starts.nonzero().flatten().to(torch.int32)
    end = torch.tensor([starts.numel()], dtype=torch.int32, device=starts.device)
    return torch.cat([first, end])


def flattened_sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                        position_ids: torch.Tensor | None, cu_seqlens: torch.Tensor | None = None,
                        seq_idx: torch.Tensor | None = None) -> torch.Tensor | None:
    """The cu_seqlens (int32) of a flattened batch, or None for an ordinary one.

    A batch is flattened when cu_seqlens (or seq_idx, a sequence number per token) is given, or when input_ids
    is one row, (1, tokens), whose position_ids restart somewhere. Recognising the latter costs one device sync.
    """
    if cu_seqlens is None and seq_idx is None:
        if position_ids is None or input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 2:
            return None
        if attention_mask is not None:
            return None  # a padded single row: transformers' rule reads positions only without a mask
        positions = position_ids.reshape(-1)
        starts = torch.ones_like(positions, dtype=torch.bool)
        starts[1:] = positions[1:] != positions[:-1] + 1
        if not bool(starts[1:].any()):
            return None
        return _boundaries(starts)
    tokens = input_ids.numel()
    if input_ids.dim() == 2 and input_ids.shape[0] != 1:
        raise InputError(f"flattened input_ids must be one row (1, tokens), got {tuple(input_ids.shape)}")
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise InputError("a flattened batch has no padding: its attention_mask must be all ones (or None)")
    if cu_seqlens is None:
        ids = seq_idx.reshape(-1)
        if ids.numel() != tokens:
            raise InputError(f"seq_idx has {ids.numel()} entries for {tokens} tokens")
        starts = torch.ones_like(ids, dtype=torch.bool)
        starts[1:] = ids[1:] != ids[:-1]
        return _boundaries(starts)
    cu_seqlens = cu_seqlens.reshape(-1)
    if cu_seqlens.dtype.is_floating_point:
        raise InputError(f"cu_seqlens must hold integer offsets, got {cu_seqlens.dtype}")
    return cu_seqlens.to(torch.int32)


def longest(cu_seqlens: torch.Tensor) -> int:
    """The longest sequence's length (one device sync)."""
    return int(cu_seqlens.diff().max()) if cu_seqlens.numel() > 1 else 0


def forward_flattened(bert, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int | None,
                      token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None,
                      output_hidden_states: bool = False, return_packed: bool = False):
    """A bert_fast BertModel on a flattened batch: every sequence encoded alone (BertModel.forward_packed).

    last_hidden_state (and each of hidden_states) keeps input_ids' shape, (1, tokens, hidden) for transformers'
    layout, or (tokens, hidden) with return_packed; pooler_output has one row per sequence, from its first token.
    """
    shape = input_ids.shape

    def flat(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is not None and t.shape != shape:
            raise InputError(f"a flattened batch's tensors share input_ids' shape {tuple(shape)}, got "
                             f"{tuple(t.shape)}")
        return None if t is None else t.reshape(-1)

    cu_seqlens = cu_seqlens.to(input_ids.device)
    out = bert.forward_packed(flat(input_ids), cu_seqlens, max_seqlen or longest(cu_seqlens), flat(token_type_ids),
                              flat(position_ids), output_hidden_states=output_hidden_states)
    if return_packed:
        out.indices = torch.arange(input_ids.numel(), device=input_ids.device)
        return out
    out.last_hidden_state = out.last_hidden_state.view(*shape, -1)
    if out.hidden_states is not None:
        out.hidden_states = tuple(h.view(*shape, -1) for h in out.hidden_states)
    return out
