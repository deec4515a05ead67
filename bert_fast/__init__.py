"""bert_fast: a fast, correct BERT encoder for PyTorch.

One model with two implementations (plain PyTorch reference, fused Triton kernels), loading and saving
Hugging Face BERT checkpoints unchanged.
"""

from .config import BertConfig
from .embeddings import embed
from .errors import BertFastError, CheckpointError, ConfigError, InputError, TokenizerError
from .heads import (
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from .modeling import BertForMaskedLM, BertForPreTraining, BertModel, BertPreTrainedModel
from .ops import set_fused_layer, set_fused_linear_gelu
from .outputs import BertModelOutput, MaskedLMOutput, PreTrainingOutput
from .patch import is_patched, patch, unpatch
from .tokenizer import BertTokenizer, Tokenizer

__version__ = "0.1.0"

__all__ = [
    "BertConfig",
    "BertFastError",
    "BertForMaskedLM",
    "BertForMultipleChoice",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertModelOutput",
    "BertPreTrainedModel",
    "BertTokenizer",
    "CheckpointError",
    "ConfigError",
    "InputError",
    "MaskedLMOutput",
    "PreTrainingOutput",
    "Tokenizer",
    "TokenizerError",
    "embed",
    "is_patched",
    "patch",
    "set_fused_layer",
    "set_fused_linear_gelu",
    "unpatch",
]
