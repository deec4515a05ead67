"""Hugging Face-format checkpoints: read any BERT folder transformers writes, write folders it reads back.

A folder holds config.json and the weights as model.safetensors (or sharded with model.safetensors.index.json);
pytorch_model.bin (and its sharded index) is read with torch.load(weights_only=True). Nothing is downloaded.

Every family of families.py loads and saves in its own format (`roberta.`, `electra.`, `distilbert.` prefixes, its
own head names, its model_type and architectures in config.json).

Key names: encoder keys may come with or without the family's prefix (`bert.` ...); the `position_ids` /
`token_type_ids` buffers older checkpoints carry are skipped; tied decoder keys are neither required nor written.
Encoder keys that are missing, unexpected or mis-shaped are an error naming them. Task heads (and the pooler)
that the checkpoint lacks start from fresh weights and are listed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .config import BertConfig
from .errors import CheckpointError
from .families import FAMILIES, Family
from .files import atomic_write, atomic_write_text, read_json

logger = logging.getLogger("bert_fast")

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG = "config.json"

# Buffers some checkpoints carry that are not weights.
_SKIPPED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Parts of the encoder's own state dict that a checkpoint may lack without being broken: the pooler is left out
# of checkpoints saved from models without one (BertForMaskedLM, for one).
_OPTIONAL_ENCODER_PARTS = ("pooler.",)


# --- reading ---------------------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def _read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def _read_sharded(index_path: Path, read_one) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path} is not a valid shard index: {e}") from e
    state = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path} lists shard {shard}, which is missing from {index_path.parent}")
        state.update(read_one(shard_path))
    return state


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint folder, on the CPU, with their stored names and dtypes."""
    folder = check_folder(folder)
    candidates = [
        (SAFETENSORS, _read_safetensors),
        (SAFETENSORS_INDEX, lambda p: _read_sharded(p, _read_safetensors)),
        (TORCH_BIN, _read_torch_bin),
        (TORCH_BIN_INDEX, lambda p: _read_sharded(p, _read_torch_bin)),
    ]
    for name, read in candidates:
        if (folder / name).is_file():
            return read(folder / name)
    raise CheckpointError(f"no weights in {folder}: looked for {', '.join(name for name, _ in candidates)}")


def check_folder(folder: str | Path) -> Path:
    """A checkpoint is a folder: say so when given one of its files, or nothing at all."""
    folder = Path(folder)
    if folder.is_file():
        raise CheckpointError(f"{folder} is a file; give the checkpoint folder that holds it ({folder.parent})")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    return folder


def read_config(folder: str | Path, **overrides) -> BertConfig:
    folder = check_folder(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG}")
    data = read_json(path, CheckpointError) if path.stat().st_size else None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is empty or not a JSON object")
    data.update(overrides)
    return BertConfig.from_dict(data)


# --- matching checkpoint keys to a model -----------------------------------------------------------------


def _is_encoder_key(key: str, family: Family) -> bool:
    return key.startswith(family.encoder_parts)


def normalize_keys(state: dict[str, torch.Tensor], encoder_prefix: str,
                   family: Family = FAMILIES["bert"]) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys to the model's: the encoder under `encoder_prefix` ("" or the family's, e.g.
    "roberta.")."""
    out = {}
    for key, value in state.items():
        if key.endswith(_SKIPPED_SUFFIXES):
            continue
        # The first PyTorch ports of BERT named LayerNorm parameters after TensorFlow's gamma and beta.
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        bare = key.removeprefix(family.prefix + ".")
        out[encoder_prefix + bare if _is_encoder_key(bare, family) else key] = value
    return out


def _first_few(names: list[str], sep: str, shown: int = 3) -> str:
    """A long list named by its first few items and a count: a whole mismatched model is hundreds of names."""
    rest = f"{sep}and {len(names) - shown} more" if len(names) > shown else ""
    return sep.join(names[:shown]) + rest


def match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]):
    """Check a normalised checkpoint against the model. Returns (fresh head keys, unused head keys).

    Raises CheckpointError naming every missing, unexpected or mis-shaped encoder key.
    """
    prefix = model.encoder_prefix
    family = model.config.family
    expected = {k: v for k, v in model.state_dict().items() if k not in model.tied_keys}
    provided = {k: v for k, v in state.items() if k not in model.tied_keys}

    def in_encoder(key: str) -> bool:
        return key.startswith(prefix) and _is_encoder_key(key[len(prefix):], family)

    def optional(key: str) -> bool:
        return not in_encoder(key) or key[len(prefix):].startswith(_OPTIONAL_ENCODER_PARTS)

    missing = sorted(k for k in expected if k not in provided)
    unexpected = sorted(k for k in provided if k not in expected)
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(provided[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in provided and provided[k].shape != v.shape
    )
    problems = []
    if missing_encoder := [k for k in missing if not optional(k)]:
        problems.append(f"{len(missing_encoder)} encoder weights missing: " + _first_few(missing_encoder, ", "))
    # A pooler the model does not have (token classification, QA) is left unused, as transformers does.
    if unexpected_encoder := [k for k in unexpected if not optional(k)]:
        problems.append(f"{len(unexpected_encoder)} unexpected encoder weights: "
                        + _first_few(unexpected_encoder, ", "))
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} weights whose shape does not match the config: "
                        + _first_few(mis_shaped, "; "))
    if problems:
        raise CheckpointError("checkpoint does not fit the model (is config.json the one these weights were saved "
                              "with?): " + " | ".join(problems))
    fresh = [k for k in missing if optional(k)]
    unused = [k for k in unexpected if optional(k)]
    return fresh, unused


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load checkpoint weights (any naming) into a model; returns the keys that were freshly initialised."""
    state = normalize_keys(state, model.encoder_prefix, model.config.family)
    fresh, unused = match_state_dict(model, state)
    full = {k: v for k, v in model.state_dict().items() if k in fresh}
    full.update((k, v) for k, v in state.items() if k not in unused and k not in model.tied_keys)
    full.update((k, v) for k, v in model.state_dict().items() if k in model.tied_keys)
    model.load_state_dict(full, strict=True)
    model.tie_weights()
    if unused:
        logger.info("bert_fast: checkpoint weights not used by %s: %s", type(model).__name__, ", ".join(unused))
    if fresh:
        logger.warning("bert_fast: %s weights not in the checkpoint, initialised fresh: %s",
                       type(model).__name__, ", ".join(fresh))
    return fresh


def _parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(names)}")
    return names[dtype]


def load_pretrained(cls, path, impl="auto", dtype=None, device=None, **config_overrides):
    """Build `cls` from a checkpoint folder. dtype None keeps float32 weights; device None keeps the CPU."""
    config = read_config(path, **config_overrides)
    state = read_state_dict(path)
    model = cls(config, impl=impl)
    model.fresh_keys = load_state_into(model, state)
    dtype = _parse_dtype(dtype)
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    return model.eval()


# --- writing ---------------------------------------------------------------------------------------------


def checkpoint_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's HF-named tensors on the CPU, without tied duplicates. safetensors refuses tensors that share
    memory, so views (query/key/value are thirds of the fused QKV matrix) are copied; the rest are not."""
    tensors = {}
    for key, value in model.state_dict().items():
        if key in model.tied_keys:
            continue
        value = value.detach().to("cpu").contiguous()
        if value.untyped_storage().nbytes() != value.numel() * value.element_size():
            value = value.clone()
        tensors[key] = value
    return tensors


def save_pretrained(model: torch.nn.Module, path) -> None:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = checkpoint_tensors(model)
    dtype = next(iter(tensors.values())).dtype
    config = model.config.to_dict()
    config["architectures"] = [model.config.family.hf_class_name(type(model).__name__)]
    config["dtype"] = str(dtype).removeprefix("torch.")
    config.pop("torch_dtype", None)
    from safetensors.torch import save

    # Serialised in memory, then written through one atomic file: the old checkpoint survives any failure.
    atomic_write(folder / SAFETENSORS, lambda f: f.write(save(tensors, metadata={"format": "pt"})))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2, sort_keys=True))
