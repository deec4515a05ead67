"""Every pretraining setting in one place: a TOML file with [model], [data], [train] and [phase2] tables.

The defaults are the embedded quick run (`bert-fast pretrain` with no arguments): a BERT-tiny on the Wikipedia
sample in gensim's wheel, an 8k WordPiece vocabulary, sequences of 128, 300 steps of 32 examples: about two
minutes on a 2-core CPU (`--model mini` learns more per step and takes about three times as long). The paper's
recipe for BERT-base is, as overrides:

    [model]  size = "base"
    [data]   vocab_size = 30522, dupe_factor = 10
    [train]  steps = 1000000, batch_size = 256, lr = 1e-4, warmup_steps = 10000
    [phase2] (its 90%/10% variant: steps = 900000 at 128 above, then) steps = 100000, seq_len = 512

Packed rows (MLPerf's way): [data] packing = "offline" (or "online"); a step is then train.batch_tokens token
slots (rows of seq_len), holding a varying number of whole examples (training/packing.py).

A file sets what it names; command-line flags and `--set section.key=value` override it; the resolved config
is written to the run folder as config.toml (which `--config` reads back).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigFileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


CHOICES = {"data.packing": ("none", "online", "offline")}


@dataclass
class ModelSection:
    size: str = "tiny"  # tiny | mini | small | medium | base | large: the preset the fields below change
    model_type: str = "bert"  # the family (bert, roberta, xlm-roberta, camembert, electra, distilbert); NSP is BERT's
    impl: str = "auto"  # auto: the fused kernels on CUDA where measured faster (bert_fast.ops.auto_uses_fused)
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    # Any other BertConfig field; 0 or "" keeps the preset's value (intermediate_size: 4 x hidden_size).
    num_hidden_layers: int = 0
    hidden_size: int = 0
    num_attention_heads: int = 0
    intermediate_size: int = 0
    vocab_size: int = 0  # 0: the tokenizer's; larger (e.g. a multiple of 64) leaves unused rows
    type_vocab_size: int = 0
    hidden_act: str = ""
    initializer_range: float = 0.0
    layer_norm_eps: float = 0.0

    def bert_config(self, tokenizer_vocab_size: int, pad_token_id: int):
        """The BertConfig this section describes, for a tokenizer of tokenizer_vocab_size pieces."""
        from ..config import BertConfig
        from ..errors import ConfigError

        if self.vocab_size and self.vocab_size < tokenizer_vocab_size:
            raise ConfigFileError(f"model.vocab_size={self.vocab_size} is smaller than the tokenizer's "
                                  f"{tokenizer_vocab_size} pieces")
        chosen = {name: getattr(self, name) for name in _MODEL_FIELDS if getattr(self, name)}
        if "hidden_size" in chosen and "intermediate_size" not in chosen:
            chosen["intermediate_size"] = 4 * chosen["hidden_size"]
        chosen["model_type"] = self.model_type
        if self.model_type in ("roberta", "xlm-roberta", "camembert"):
            chosen.setdefault("type_vocab_size", 1)  # one segment, as the family's checkpoints have it
        try:
            return BertConfig.preset(
                self.size, **{"vocab_size": tokenizer_vocab_size, **chosen}, pad_token_id=pad_token_id,
                hidden_dropout_prob=self.hidden_dropout_prob,
                attention_probs_dropout_prob=self.attention_probs_dropout_prob,
                max_position_embeddings=self.max_position_embeddings)
        except ConfigError as e:
            raise ConfigFileError(f"[model]: {e}") from e


# ModelSection's fields that are BertConfig's own (beside the dropouts and positions, always set).
_MODEL_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
                 "type_vocab_size", "hidden_act", "initializer_range", "layer_norm_eps")


@dataclass
class DataSection:
    corpus: list[str] = field(default_factory=list)  # files or folders; empty: the Wikipedia sample
    tokenizer: str = ""  # a tokenizer folder; empty: train a WordPiece vocabulary on the corpus
    vocab_size: int = 8192  # of a trained tokenizer
    lowercase: bool = True
    split_sentences: bool = True  # split corpus lines into sentences (a one-sentence line stays whole)
    seq_len: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 2
    eval_fraction: float = 0.05  # share of documents held out for evaluation
    shard_examples: int = 65536
    mlm_probability: float = 0.15
    whole_word_masking: bool = False
    packing: str = "none"  # none | online (best fit per micro-batch) | offline (rows fixed once per store)
    max_examples_per_row: int = 3  # of a packed row
    num_workers: int = -1  # DataLoader workers per rank; -1: 2 on CUDA, 1 on the CPU
    cache_dir: str = ""  # tokenizer and example stores; empty: $BERT_FAST_CACHE or ~/.cache/bert_fast


@dataclass
class TrainSection:
    steps: int = 300  # optimizer steps (of phase 1, when there is a phase 2)
    batch_size: int = 32  # examples per optimizer step, over all ranks and accumulation steps
    micro_batch_size: int = 0  # examples per rank per forward; 0: batch_size / ranks (no accumulation)
    # Packed: token slots per optimizer step (rows of seq_len; real tokens fill all but the packing's padding),
    # split evenly over the batch_size / micro_batch_size micro-batches; 0: batch_size x seq_len.
    batch_tokens: int = 0
    optimizer: str = "adamw"  # adamw (fused on CUDA) | lamb
    lr: float = 1e-3
    warmup_steps: int = -1  # -1: warmup_ratio * total steps
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-6
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere | bf16 | fp16 | fp32
    device: str = "auto"  # auto: cuda when available
    seed: int = 42
    log_every: int = 10
    eval_every: int = 100  # 0: only at the end
    eval_batches: int = 16  # held-out micro-batches per evaluation (at most)
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2
    stop_at: int = 0  # stop after this step (a checkpoint is written there) to continue later with --resume
    distributed: str = "ddp"  # ddp | fsdp (under torchrun)
    fused_mlm_loss: bool = False  # MLM loss through chunked linear + cross-entropy (no full logits)
    # each step's forward, backward and optimizer step as one CUDA graph per batch shape (capture.py): bf16 or fp32,
    # one process, unpacked batches. Off by default: it has not run on a GPU yet.
    capture: bool = False
    objective: str = "mlm_nsp"  # mlm_nsp: BERT's MLM + next sentence prediction | mlm: masked LM alone (RoBERTa)
    peak_tflops: float = 0.0  # the device's peak for MFU; 0: known GPUs by name, none on the CPU
    progress: bool = True
    profile_steps: int = 0  # > 0: profile this many steps after the first 12 (torch.profiler) into RUN_DIR/profile
    tensorboard: bool = True  # also write TensorBoard events when it is installed


@dataclass
class Phase2Section:
    steps: int = 0  # 0: a single phase
    seq_len: int = 512
    batch_size: int = 0  # 0: the batch size of phase 1
    micro_batch_size: int = 0
    batch_tokens: int = 0  # packed: as train.batch_tokens; 0: batch_size x seq_len of this phase


SECTIONS = ("model", "data", "train", "phase2")


@dataclass
class PretrainConfig:
    out: str = ""  # run folder; empty: runs/pretrain-<size>-<date>
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    phase2: Phase2Section = field(default_factory=Phase2Section)

    # --- reading and writing ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        config = cls()
        for key, value in assignments_of(data):
            config.set(key, value)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> PretrainConfig:
        return cls.from_dict(read_toml(path))

    def get(self, dotted: str) -> Any:
        if dotted == "out":
            return self.out
        section_name, _, name = dotted.partition(".")
        return getattr(getattr(self, section_name), name)

    def set(self, dotted: str, value: Any) -> None:
        """Set `section.key` (or `out`), checking the name and converting to the field's type."""
        if dotted == "out":
            self.out = str(value)
            return
        section_name, _, name = dotted.partition(".")
        section = getattr(self, section_name, None)
        if not dataclasses.is_dataclass(section):
            raise ConfigFileError(f"unknown setting {dotted!r}: no table [{section_name}]")
        fields = {f.name: f for f in dataclasses.fields(section)}
        if name not in fields:
            raise ConfigFileError(f"unknown setting {dotted!r}; [{section_name}] has {sorted(fields)}")
        default = getattr(type(section)(), name)
        value = _convert(dotted, value, default)
        if dotted in CHOICES and value not in CHOICES[dotted]:
            raise ConfigFileError(f"{dotted} = {value!r} is not one of {CHOICES[dotted]}")
        setattr(section, name, value)

    def override(self, assignment: str) -> None:
        """Apply one `section.key=value` (value in TOML syntax; a bare word is a string)."""
        self.set(*parse_override(assignment))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        data = self.to_dict()
        lines = [f"out = {_toml_value(data.pop('out'))}"]
        for section, values in data.items():
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"no config file at {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path} is not valid TOML: {e}") from e


def assignments_of(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """A config file's tables as (`section.key` or `out`, value) pairs, in file order."""
    pairs = []
    for key, value in data.items():
        if key == "out":
            pairs.append(("out", value))
        elif key in SECTIONS and isinstance(value, dict):
            pairs += [(f"{key}.{name}", v) for name, v in value.items()]
        else:
            raise ConfigFileError(f"unknown config table [{key}]; the tables are {', '.join(SECTIONS)}")
    return pairs


def parse_override(assignment: str) -> tuple[str, Any]:
    """`section.key=value` (value in TOML syntax; a bare word is a string) as (name, value)."""
    if "=" not in assignment:
        raise ConfigFileError(f"--set expects section.key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


# --- resuming: the run's own settings, and the few that may change --------------------------------------

# Settings that do not change what any step computes: a resumed run may give them anew.
RESUME_QUIET = ("train.stop_at", "train.log_every", "train.eval_every", "train.eval_batches",
                "train.checkpoint_every", "train.keep_checkpoints", "train.progress", "train.profile_steps",
                "train.tensorboard", "train.peak_tflops", "data.num_workers", "data.cache_dir")
# Settings that may change with a warning: what the change means.
RESUME_LOUD = {
    "train.steps": "the total steps: the learning rate now decays to zero over the new total, from the checkpoint on",
    "phase2.steps": "the total steps: the learning rate now decays to zero over the new total, from the checkpoint on",
}
# Settings of one command, not of the run: a resumed run starts from their defaults.
PER_INVOCATION = ("train.stop_at", "train.profile_steps")


def resumed_config(run_dir: str | Path, assignments: list[tuple[str, Any]]) -> tuple[PretrainConfig, list[str]]:
    """The config a resumed run continues with: the run's own config.toml, with `assignments` (what the command
    gave again) checked against it. Returns it and a note per changed total-steps setting; any other changed
    setting that decides what a step computes is a ResumeError naming it."""
    from ..errors import ResumeError
    from .runs import settings_for_resume

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ResumeError(f"{run_dir} holds no config.toml: there is no run to resume there (start one without "
                          "--resume)")
    saved = PretrainConfig.from_file(run_dir / "config.toml")
    fresh = PretrainConfig()
    for name in PER_INVOCATION:
        saved.set(name, fresh.get(name))
    config = PretrainConfig.from_dict(saved.to_dict())
    for key, value in assignments:
        config.set(key, value)
    config.out = str(run_dir)
    given = {key: config.get(key) for key, _ in assignments if key != "out"}
    notes = settings_for_resume({key: saved.get(key) for key in given}, given, RESUME_QUIET, RESUME_LOUD)
    return config, notes


def _convert(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        return str(value)
    elif isinstance(default, list):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [value]
    raise ConfigFileError(f"{name} = {value!r}: expected a {type(default).__name__}")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")
