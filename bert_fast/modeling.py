"""BERT (Devlin et al., 2019) in PyTorch: one model, two implementations.

Module and parameter names are Hugging Face's, so its state dicts load with strict=True. Each layer's fused
steps (attention, bias+GELU, bias+dropout+residual+LayerNorm) go through the dispatch layer in `ops.py`: the
reference implementation computes them in plain PyTorch on the padded batch, the triton implementation with our
kernels on the packed real tokens. The modules themselves are the same for both.

The same modules serve BERT's family (RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA, DistilBERT): `config.family`
(families.py) sets what differs (position ids, token types, ELECTRA's embedding projection, DistilBERT's names),
and each task model keeps its encoder under the family's attribute (`bert`, `roberta`, `electra`, `distilbert`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from . import ops as ops_lib
from .config import BertConfig
from .errors import ConfigError, InputError
from .families import register_renames
from .inputs import check_inputs, check_packed_inputs
from .outputs import BertModelOutput, MaskedLMOutput, PreTrainingOutput
from .packed import flattened_sequences, forward_flattened

logger = logging.getLogger("bert_fast")


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        family, width = config.family, config.embedding_width
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        # RoBERTa's position table has a padding row too (the position padding tokens get), kept out of training.
        position_padding = config.pad_token_id if family.positions == "after_padding" else None
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width, padding_idx=position_padding)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if family.token_types else None
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, ops) -> torch.Tensor:
        # ids: any shape (padded (batch, seq) or packed (tokens,)); returns (..., embedding width)
        words = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            words = words + self.token_type_embeddings(token_type_ids)
        positions = self.position_embeddings(position_ids)
        hidden = ops.add_layer_norm(words, positions, self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps)
        return self.dropout(hidden)


class BertSelfAttention(nn.Module):
    """Query, key and value projections fused into one (3H, H) matrix.

    Checkpoints keep Hugging Face's separate `query`, `key`, `value` names: state_dict() splits the fused matrix
    and load_state_dict() fuses the three, so the fusion is invisible outside this module.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout_p = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_fuse_qkv)

    def forward(self, hidden, layout, ops) -> torch.Tensor:
        qkv = self.qkv(hidden).unflatten(-1, (3, self.num_heads, self.head_dim))  # (..., 3, heads, head_dim)
        dropout_p = self.dropout_p if self.training else 0.0
        context = layout.attention(ops, qkv, dropout_p, None)  # (..., heads, head_dim)
        return context.flatten(-2)  # (..., hidden)


_QKV = ("query", "key", "value")


def _split_qkv(module, state_dict, prefix, local_metadata):
    for kind in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}qkv.{kind}")
        for name, part in zip(_QKV, fused.chunk(3, dim=0)):
            state_dict[f"{prefix}{name}.{kind}"] = part


def _fuse_qkv(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in _QKV]
        if all(k in state_dict for k in keys):
            parts = [state_dict.pop(k) for k in keys]
            if len({p.shape for p in parts}) != 1:
                error_msgs.append(f"{prefix}query/key/value.{kind} have different shapes {[tuple(p.shape) for p in parts]}")
                continue
            state_dict[f"{prefix}qkv.{kind}"] = torch.cat(parts, dim=0)


class BertSelfOutput(nn.Module):
    """Output projection, then bias + dropout + residual + LayerNorm in one step."""

    def __init__(self, config: BertConfig, in_features: int | None = None, dropout: bool = True):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout else 0.0)

    def forward(self, hidden, residual, ops) -> torch.Tensor:
        # The bias is left out of the matmul so the fused step adds it with the dropout and residual.
        projected = F.linear(hidden, self.dense.weight)
        return ops.add_layer_norm(
            projected, residual, self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps,
            x_bias=self.dense.bias, dropout_p=self.dropout.p if self.training else 0.0,
        )


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config, dropout=config.family.attention_output_dropout)

    def forward(self, hidden, layout, ops) -> torch.Tensor:
        return self.output(self.self(hidden, layout, ops), hidden, ops)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.approximate = config.gelu_approximate

    def forward(self, hidden, ops) -> torch.Tensor:
        return ops.linear_gelu(hidden, self.dense.weight, self.dense.bias, self.approximate)


class BertOutput(BertSelfOutput):
    """The feed-forward block's down projection and post-LN step (the same computation from the wider input)."""

    def __init__(self, config: BertConfig):
        super().__init__(config, in_features=config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden, layout, ops) -> torch.Tensor:
        return ops.encoder_layer(self, hidden, layout, ops)

    def forward_steps(self, hidden, layout, ops) -> torch.Tensor:
        """The layer's steps one by one through the dispatch layer (the fused path may run them as one node)."""
        attended = self.attention(hidden, layout, ops)
        return self.output(self.intermediate(attended, ops), attended, ops)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden, layout, ops, output_hidden_states: bool = False):
        all_hidden = [hidden] if output_hidden_states else None
        for layer in self.layer:
            hidden = layer(hidden, layout, ops)
            if output_hidden_states:
                all_hidden.append(hidden)
        return hidden, all_hidden


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(first_token))


# --- the shared base: construction, initialisation, implementation switch, checkpoints ------------------


class BertPreTrainedModel(nn.Module):
    """What every BERT model here shares: config, weight init, the impl switch and HF-format checkpoints."""

    def __init__(self, config: BertConfig, impl: str = "auto"):
        super().__init__()
        self.config = config
        self.impl = ops_lib.check_impl(impl)
        self._resolved_impl: str | None = None

    @property
    def encoder_prefix(self) -> str:
        """Prefix of the encoder's keys inside this model's state dict ("" for the bare encoder): the family's
        attribute, as in transformers (`bert.`, `roberta.`, `electra.`, `distilbert.`)."""
        return self.config.family.prefix + "."

    @property
    def base_model(self) -> BertModel:
        """The encoder inside a task model (the model itself for BertModel)."""
        return getattr(self, self.config.family.prefix)

    def _add_encoder(self, encoder: BertModel) -> None:
        self.add_module(self.config.family.prefix, encoder)

    # The implementation switch: one setting, read by forward through the dispatch layer.
    def set_impl(self, impl: str) -> BertPreTrainedModel:
        """Switch a built model (and the encoder inside it) to another implementation; weights are unchanged."""
        ops_lib.check_impl(impl)
        for module in self.modules():
            if isinstance(module, BertPreTrainedModel):
                module.impl = impl
                module._resolved_impl = None
        return self

    def implementation(self, device: torch.device, static: bool = False) -> ops_lib.Ops:
        """The dispatch layer's functions this model runs on `device` (its impl setting resolved; `static`: for a
        bucket's batch)."""
        ops = ops_lib.resolve(self.impl, device, self.config.hidden_size, static)
        if ops.name != self._resolved_impl and not torch.compiler.is_compiling():
            if self.impl == "auto":
                logger.info("bert_fast: impl='auto' uses %s on %s (hidden size %d%s)", ops.name, device.type,
                            self.config.hidden_size, ", a static batch" if static else "")
            self._resolved_impl = ops.name
        return ops

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        # An inner BertModel initialised itself when it was built: initialise only what this model adds
        # (drawing BERT-large's weights twice costs seconds).
        for child in self.children():
            if not isinstance(child, BertPreTrainedModel):
                child.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Models with an MLM decoder share its weight with the word embeddings."""

    @property
    def tied_keys(self) -> tuple[str, ...]:
        """Keys of this model's state dict that checkpoints leave out because they are tied to another key."""
        return ()

    @classmethod
    def from_pretrained(cls, path, impl: str = "auto", dtype=None, device=None, **config_overrides):
        """Load a Hugging Face BERT folder (config.json + model.safetensors or pytorch_model.bin). No network."""
        from .checkpoint import load_pretrained

        return load_pretrained(cls, path, impl=impl, dtype=dtype, device=device, **config_overrides)

    def save_pretrained(self, path) -> None:
        """Write config.json + model.safetensors, each atomically, in a folder transformers loads."""
        from .checkpoint import save_pretrained

        save_pretrained(self, path)


class BertModel(BertPreTrainedModel):
    """The encoder. Families without a pooler (ELECTRA, DistilBERT) never get one; ELECTRA's embeddings are
    widened by `embeddings_project` before the first layer."""

    encoder_prefix = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True, impl: str = "auto"):
        super().__init__(config, impl)
        family = config.family
        self.embeddings = BertEmbeddings(config)
        if family.embedding_projection and config.embedding_width != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_width, config.hidden_size)
        else:
            self.embeddings_project = None
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer and family.pooler else None
        register_renames(self, family.encoder_names)  # DistilBERT's q_lin, sa_layer_norm ... in state dicts
        self.init_weights()

    @property
    def base_model(self) -> BertModel:
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_packed: bool = False,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        layout: ops_lib.StaticLayout | None = None,
    ) -> BertModelOutput:
        """Encode a padded batch. Outputs are (batch, seq, hidden) with zeros at padded positions on the packed
        path; with return_packed=True, last_hidden_state is (tokens, hidden) over real tokens only, sequence after
        sequence, and the output carries cu_seqlens and the flat indices of those tokens in (batch * seq).

        A flattened batch (transformers' DataCollatorWithFlattening: input_ids (1, tokens) with position_ids that
        restart per sequence, or cu_seqlens) encodes each sequence alone; see packed.forward_flattened.

        With a bucket's `layout` (bert_fast.buckets.pack_batch), the inputs arrive packed to the bucket's shapes
        and every output has the bucket's shapes: nothing depends on the batch's values (CUDA-graph capture).
        """
        # Flattened inputs from outside (packed.py): a separate path, recognised here.
        flat = None if layout is not None else flattened_sequences(input_ids, attention_mask, position_ids,
                                                                    cu_seqlens)
        if flat is not None:
            return forward_flattened(self, input_ids, flat, max_seqlen, token_type_ids, position_ids,
                                     output_hidden_states, return_packed)
        hidden, layout, all_hidden = self.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                 output_hidden_states, layout=layout)
        pooled = self.pooler(layout.first_tokens(hidden)) if self.pooler is not None else None
        if return_packed:
            return self._packed_output(hidden, pooled, all_hidden, layout, attention_mask)
        return BertModelOutput(last_hidden_state=layout.unpack(hidden), pooler_output=pooled,
                               hidden_states=layout.unpack_all(all_hidden))

    def _packed_output(self, hidden, pooled, all_hidden, layout, attention_mask) -> BertModelOutput:
        batch_size, seq_len = layout.batch_size, layout.seq_len
        if isinstance(layout, ops_lib.StaticLayout):
            raise InputError("return_packed=True: a bucket's layout is packed already (its scatter_index says where)")
        if isinstance(layout, ops_lib.PackedLayout):  # the fused path: already packed, its indices known
            packing, repack = layout, (lambda h: h)
        else:  # the reference path runs padded: pack its outputs the same way the fused path does
            packing = ops_lib.packed_layout(attention_mask, batch_size, seq_len, hidden.device)
            repack = (lambda h: packing.pack(layout.unpack(h)))
        indices = packing.indices
        if indices is None:
            indices = torch.arange(batch_size * seq_len, device=hidden.device)
        return BertModelOutput(
            last_hidden_state=repack(hidden), pooler_output=pooled,
            hidden_states=tuple(repack(h) for h in all_hidden) if all_hidden else None,
            cu_seqlens=packing.cu_seqlens, indices=indices,
        )

    def forward_packed(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                       token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                       output_hidden_states: bool = False) -> BertModelOutput:
        """Encode sequences that arrive packed: input_ids (tokens,), cu_seqlens (batch + 1,) int32 offsets,
        max_seqlen >= the longest sequence. Returns packed (tokens, hidden) states and (batch, hidden) pooled.

        Positions default to 0..len-1 within each sequence. Nothing here needs a device-to-host sync once
        the inputs are validated, so this is the entry point CUDA-graph capture uses.
        """
        input_ids, cu_seqlens, token_type_ids, position_ids = check_packed_inputs(
            self.config, self.embeddings.word_embeddings.weight.device, input_ids, cu_seqlens, max_seqlen,
            token_type_ids, position_ids,
        )
        ops = self.implementation(input_ids.device, static=True)
        layout = ops_lib.PrepackedLayout(cu_seqlens, max_seqlen)
        hidden, all_hidden = self._encode_layout(input_ids, token_type_ids, position_ids, layout, ops,
                                                 output_hidden_states)
        pooled = self.pooler(layout.first_tokens(hidden)) if self.pooler is not None else None
        return BertModelOutput(last_hidden_state=hidden, pooler_output=pooled,
                               hidden_states=tuple(all_hidden) if all_hidden else None, cu_seqlens=cu_seqlens)

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
               output_hidden_states=False, layout: ops_lib.StaticLayout | None = None):
        """Embeddings and encoder in the implementation's own layout: (hidden, layout, all hidden states).

        Heads that need only some positions (the MLM head at masked tokens, [CLS] for NSP) take these
        and pick their positions through the layout, without scattering the whole batch back. With a bucket's
        `layout`, input_ids, token_type_ids and position_ids are packed (tokens,) tensors laid out by it, checked
        on the host when the batch was packed.
        """
        if layout is not None:
            ops = self.implementation(input_ids.device, static=True)
            hidden, all_hidden = self._encode_layout(input_ids, token_type_ids, position_ids, layout, ops,
                                                     output_hidden_states)
            return hidden, layout, all_hidden
        input_ids, attention_mask, token_type_ids, position_ids = check_inputs(
            self.config, self.embeddings.word_embeddings.weight.device, input_ids, attention_mask, token_type_ids,
            position_ids,
        )
        batch_size, seq_len = input_ids.shape
        ops = self.implementation(input_ids.device)
        layout = ops.layout(attention_mask, batch_size, seq_len, input_ids.device)
        hidden, all_hidden = self._encode_layout(layout.pack(input_ids), layout.pack(token_type_ids),
                                                 layout.pack(position_ids), layout, ops, output_hidden_states)
        return hidden, layout, all_hidden

    def _encode_layout(self, input_ids, token_type_ids, position_ids, layout, ops, output_hidden_states):
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, ops)
        if self.embeddings_project is not None:
            hidden = self.embeddings_project(hidden)
        return self.encoder(hidden, layout, ops, output_hidden_states)


# --- pretraining heads ---------------------------------------------------------------------------------


class BertPredictionHeadTransform(nn.Module):
    """dense, GELU, LayerNorm. ELECTRA's generator narrows to its embedding width here; RoBERTa and ELECTRA use
    exact GELU whatever hidden_act says."""

    def __init__(self, config: BertConfig):
        super().__init__()
        width = config.embedding_width
        self.dense = nn.Linear(config.hidden_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.approximate = config.gelu_approximate if config.family.mlm_activation == "hidden_act" else "none"

    def forward(self, hidden, ops) -> torch.Tensor:
        activated = ops.linear_gelu(hidden, self.dense.weight, self.dense.bias, self.approximate)
        return ops.add_layer_norm(activated, None, self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps)


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.embedding_width, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one bias, under both of Hugging Face's names

    def forward(self, hidden, ops) -> torch.Tensor:
        return self.decoder(self.transform(hidden, ops))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, hidden, ops):
        return self.predictions(hidden, ops)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertMLMLoss(nn.Module):
    """Masked-LM head and loss at the labelled positions only.

    The decoder (tied to the word embeddings) projects onto the whole vocabulary; computing it only where a
    label is (15% of tokens in pretraining) saves most of its cost. With fused=True the loss never holds the
    (positions, vocab) logits at once (kernels.linear_cross_entropy) and returns no logits.
    """

    def __init__(self, fused: bool = False):
        super().__init__()
        self.fused = fused

    def forward(self, head: BertLMPredictionHead, hidden, labels, layout, ops):
        chosen, targets = layout.labelled(hidden, labels)  # (labelled, hidden), (labelled,)
        transformed = head.transform(chosen, ops)
        if self.fused and torch.is_grad_enabled():  # evaluation (no grad) has no gradient to save memory on
            from bert_fast_kernels import linear_cross_entropy

            return linear_cross_entropy(transformed, head.decoder.weight, head.bias, targets), None
        logits = head.decoder(transformed)
        return masked_lm_loss(logits, targets), logits


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions with a label (-100 elsewhere), in float32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


class BertForPreTraining(BertPreTrainedModel):
    """BERT with its two pretraining heads: masked LM (decoder tied to the word embeddings) and next sentence.

    Without labels, prediction_logits is (batch, seq, vocab) as in transformers. With labels, the MLM head runs
    only where labels != -100 and prediction_logits is (labelled positions, vocab) in row-major order, so
    `labels[labels != -100]` are its targets; with `fused_mlm_loss=True` it is None.
    """

    tied_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def __init__(self, config: BertConfig, impl: str = "auto", fused_mlm_loss: bool = False):
        if config.model_type != "bert":
            raise ConfigError(f"next sentence prediction is BERT's pretraining objective; model_type="
                              f"{config.model_type!r} pretrains with masked LM alone (BertForMaskedLM, "
                              "--objective mlm)")
        super().__init__(config, impl)
        self.bert = BertModel(config, add_pooling_layer=True, impl=impl)
        self.cls = BertPreTrainingHeads(config)
        self.masked_lm = BertMLMLoss(fused=fused_mlm_loss)
        self.init_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                next_sentence_label=None, output_hidden_states: bool = False, layout=None) -> PreTrainingOutput:
        hidden, layout, all_hidden = self.bert.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                      output_hidden_states, layout=layout)
        ops = self.bert.implementation(hidden.device, static=isinstance(layout, ops_lib.StaticLayout))
        nsp_logits = self.cls.seq_relationship(self.bert.pooler(layout.first_tokens(hidden)))
        if labels is None:
            mlm_loss, mlm_logits = None, layout.unpack(self.cls.predictions(hidden, ops))
        else:
            mlm_loss, mlm_logits = self.masked_lm(self.cls.predictions, hidden, labels, layout, ops)
        nsp_loss = None
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1), ignore_index=-100)
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        return PreTrainingOutput(
            loss=sum(losses) if losses else None,
            prediction_logits=mlm_logits,
            seq_relationship_logits=nsp_logits,
            hidden_states=layout.unpack_all(all_hidden),
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
        )


class BertForMaskedLM(BertPreTrainedModel):
    """The encoder with the masked-LM head (decoder tied to the word embeddings). Logits follow BertForPreTraining's
    rule: all positions without labels, labelled positions only with them.

    Every family's masked LM: the head's parameters carry the family's names in state dicts (RoBERTa's
    `lm_head.*`, ELECTRA's generator `generator_predictions.*` and `generator_lm_head`, DistilBERT's `vocab_*`).
    """

    def __init__(self, config: BertConfig, impl: str = "auto", fused_mlm_loss: bool = False):
        super().__init__(config, impl)
        self._add_encoder(BertModel(config, add_pooling_layer=False, impl=impl))
        self.cls = BertOnlyMLMHead(config)
        self.masked_lm = BertMLMLoss(fused=fused_mlm_loss)
        register_renames(self, config.family.mlm_names)
        self.init_weights()

    @property
    def tied_keys(self) -> tuple[str, ...]:
        return self.config.family.mlm_tied_keys

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.base_model.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states: bool = False, layout=None) -> MaskedLMOutput:
        encoder = self.base_model
        hidden, layout, all_hidden = encoder.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                    output_hidden_states, layout=layout)
        ops = encoder.implementation(hidden.device, static=isinstance(layout, ops_lib.StaticLayout))
        if labels is None:
            loss, logits = None, layout.unpack(self.cls(hidden, ops))
        else:
            loss, logits = self.masked_lm(self.cls.predictions, hidden, labels, layout, ops)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=layout.unpack_all(all_hidden))
