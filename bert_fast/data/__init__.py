"""Pretraining data: corpus readers, sentence splitting, example creation, the sharded store, masking, loaders,
packing."""

from ..errors import DataError
from .corpus import CorpusError, CorpusStats, read_documents, wikipedia_sample_path
from .loader import PretrainingBatches, make_loader, micro_batch_indices
from .masking import MaskingSettings, mask_tokens
from .packing import PackedBudgets, PackedPretrainingBatches, pack_histogram, pack_online
from .prepare import cached_store, cached_tokenizer, default_cache_dir, train_tokenizer
from .sentences import split_sentences
from .store import ExampleSettings, ExampleStore, write_store

__all__ = [
    "CorpusError",
    "CorpusStats",
    "DataError",
    "ExampleSettings",
    "ExampleStore",
    "MaskingSettings",
    "PackedBudgets",
    "PackedPretrainingBatches",
    "PretrainingBatches",
    "cached_store",
    "cached_tokenizer",
    "default_cache_dir",
    "make_loader",
    "mask_tokens",
    "micro_batch_indices",
    "pack_histogram",
    "pack_online",
    "read_documents",
    "split_sentences",
    "train_tokenizer",
    "wikipedia_sample_path",
    "write_store",
]
