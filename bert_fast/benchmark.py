"""End-to-end benchmark: bert_fast against Hugging Face transformers, measured in the same run.

Workloads (bf16 on CUDA; real tokens counted, padding never):
- inference: B256 x S128 all full; B64 x S512 with lengths uniform(64..512);
- training step (MLM + NSP, 15% of real tokens labelled, AdamW fused, autocast bf16): B256 x S128 and B128 x S128
  all full; B32 x S512 ragged;
- fine-tuning step (sentence classification, 2 labels): B32 x S64 ragged, as a fine-tuning run pads each batch;
- small-batch latency: B1 x S16, B1 / B8 / B32 x S128.
Providers: ours (impl="triton"; "+graphs" through CUDA graphs: GraphedEncoder for latency, a CapturedStep for
training steps; "+fused-ffn" / "+fused-ffn-persistent" with the FFN up-projection as one Triton GEMM with the GELU
in its epilogue, see bert_fast.set_fused_linear_gelu), our reference path, HF eager, HF sdpa, torch.compile(HF
sdpa). Every provider gets the same weights. The graphs provider gets its batch on the host, as a tokenizer hands
it over (packing and the copy are part of its time); the others get it on the device. Time is the median of
CUDA-event-timed iterations after warm-up; peak memory is torch's allocator peak.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
from dataclasses import dataclass

import torch

from .buckets import bucket_of, pack_batch
from .config import BertConfig
from .heads import BertForSequenceClassification
from .inference import GraphedEncoder
from .modeling import BertForPreTraining, BertModel
from .ops import set_fused_linear_gelu


@dataclass(frozen=True)
class Workload:
    name: str
    mode: str  # "inference" | "train" | "latency"
    batch: int
    seq: int
    ragged: bool  # lengths uniform(seq/8 .. seq) instead of all full
    task: str = "pretraining"  # training steps: "pretraining" (MLM + NSP) or "classification" (fine-tuning)


WORKLOADS = [
    Workload("infer-B256-S128", "inference", 256, 128, False),
    Workload("infer-B64-S512-ragged", "inference", 64, 512, True),
    Workload("train-B256-S128", "train", 256, 128, False),
    Workload("train-B128-S128", "train", 128, 128, False),
    Workload("train-B32-S512-ragged", "train", 32, 512, True),
    Workload("finetune-B32-S64-ragged", "train", 32, 64, True, "classification"),
    Workload("latency-B1-S16", "latency", 1, 16, False),
    Workload("latency-B1-S128", "latency", 1, 128, False),
    Workload("latency-B8-S128", "latency", 8, 128, False),
    Workload("latency-B32-S128", "latency", 32, 128, False),
]
# Model sizes: BertConfig's presets, and all-MiniLM-L6-v2's shape (the small model people fine-tune and embed with).
SIZES = {"minilm-l6": {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12,
                       "intermediate_size": 1536}}


def size_config(size: str) -> BertConfig:
    return BertConfig(**SIZES[size]) if size in SIZES else BertConfig.preset(size)
# "+fused-ffn" runs with bert_fast.set_fused_linear_gelu("tiled"), "+fused-ffn-persistent" with "persistent".
FUSED_FFN = {"bert_fast+fused-ffn": "tiled", "bert_fast+fused-ffn-persistent": "persistent"}
# Our own PyTorch reference path (impl="reference"): the fused path's gain over it, by model size, is what
# impl="auto" should follow (bench/gpu_session.sh impl-e2e).
REFERENCE = "bert_fast-reference"
PROVIDERS = ["bert_fast", "bert_fast+graphs", *FUSED_FFN, REFERENCE, "hf-eager", "hf-sdpa", "hf-sdpa+compile"]
# Run when no providers are named. The fused-FFN settings and the reference path are opt-in, asked for by name,
# so the default run keeps to one device call.
DEFAULT_PROVIDERS = [p for p in PROVIDERS if p not in FUSED_FFN and p != REFERENCE]


def make_batch(workload: Workload, vocab_size: int, device, generator: torch.Generator) -> dict:
    b, s = workload.batch, workload.seq
    if workload.ragged:
        lengths = torch.randint(max(2, s // 8), s + 1, (b,), generator=generator)
    else:
        lengths = torch.full((b,), s)
    mask = torch.arange(s)[None, :] < lengths[:, None]
    ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (b, s), generator=generator).masked_fill(~mask, 0)
    types = ((torch.arange(s)[None, :] >= (lengths[:, None] // 2)) & mask).long()
    batch = {"input_ids": ids, "attention_mask": mask.long(), "token_type_ids": types}
    if workload.mode == "train" and workload.task == "classification":
        batch["labels"] = torch.randint(0, 2, (b,), generator=generator)
    elif workload.mode == "train":
        chosen = (torch.rand(b, s, generator=generator) < 0.15) & mask
        batch["labels"] = torch.where(chosen, ids, -100)
        batch["next_sentence_label"] = torch.randint(0, 2, (b,), generator=generator)
    return {k: v.to(device) for k, v in batch.items()}


def _hf_model(config: BertConfig, mode: str, attn: str, task: str = "pretraining"):
    import transformers

    hf_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    hf_config._attn_implementation = attn
    if mode != "train":
        return transformers.BertModel(hf_config)
    if task == "classification":
        return transformers.BertForSequenceClassification(hf_config)
    return transformers.BertForPreTraining(hf_config)


def shared_state(config: BertConfig, task: str = "pretraining", seed: int = 0) -> dict:
    """The weights every provider loads: a pretraining model's, or a 2-label classifier's for fine-tuning."""
    torch.manual_seed(seed)
    if task == "classification":
        return BertForSequenceClassification(dataclasses.replace(config, num_labels=2), impl="reference").state_dict()
    return BertForPreTraining(config, impl="reference").state_dict()


def build(provider: str, config: BertConfig, mode: str, state: dict, device, task: str = "pretraining"):
    """A model for one provider with the shared weights, ready for the workload's mode."""
    train = mode == "train"
    if task == "classification":
        config = dataclasses.replace(config, num_labels=2)
    if not train:  # the bare encoder's keys
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    if provider.startswith("bert_fast"):
        impl = "reference" if provider == REFERENCE else "triton"
        head = BertForSequenceClassification if task == "classification" else BertForPreTraining
        model = (head if train else BertModel)(config, impl=impl)
    else:
        model = _hf_model(config, mode, "eager" if provider == "hf-eager" else "sdpa", task)
    model.load_state_dict(state, strict=True)
    model = model.to(device)
    if not train:
        model = model.to(torch.bfloat16)
    model.train(train)
    if provider == "hf-sdpa+compile":
        model = torch.compile(model)
    if provider == "bert_fast+graphs" and not train:
        model = GraphedEncoder(model)
    return model


def captured_step_fn(model, batch: dict, config: BertConfig, task: str):
    """A training step through a CapturedStep: the batch packed on the host into its bucket, copied and replayed."""
    from .training.capture import CapturedStep

    device = batch["input_ids"].device
    optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-4, device=device), fused=True,
                                  capturable=True)
    step = CapturedStep(model, optimizer, autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)
    host = {k: v.cpu() for k, v in batch.items()}
    mlm = task == "pretraining"
    bucket = bucket_of(host, mlm=mlm)
    if bucket is None:
        raise ValueError("the workload's batch has no training bucket")
    static = pack_batch(host, bucket, config.pad_token_id, mlm=mlm)

    def train_step():
        return step(static)[0]

    return train_step, optimizer


def step_fn(model, batch: dict, mode: str, optimizer=None):
    if mode != "train":
        call_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

        def infer():
            with torch.inference_mode():
                return model(**call_batch)

        return infer

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return train_step


def time_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_one(provider: str, workload: Workload, config: BertConfig, state: dict, batch: dict, warmup: int,
            iters: int) -> dict:
    device = batch["input_ids"].device
    graphs = provider == "bert_fast+graphs"
    if graphs and workload.mode == "inference":  # large batches: nothing to gain from graphs
        return {}
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = build(provider, config, workload.mode, state, device, workload.task)
    optimizer = None
    if graphs and workload.mode == "train":
        fn, optimizer = captured_step_fn(model, batch, config, workload.task)
    elif workload.mode == "train":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        fn = step_fn(model, batch, workload.mode, optimizer)
    else:  # the graphs provider takes the batch from the host
        fn = step_fn(model, {k: v.cpu() for k, v in batch.items()} if graphs else batch, workload.mode)
    previous = set_fused_linear_gelu(FUSED_FFN[provider]) if provider in FUSED_FFN else None
    try:
        ms = time_ms(fn, warmup, iters)
    finally:
        if provider in FUSED_FFN:
            set_fused_linear_gelu(previous)
    real_tokens = int(batch["attention_mask"].sum())
    row = {"workload": workload.name, "provider": provider, "mode": workload.mode, "batch": workload.batch,
           "seq": workload.seq, "ragged": workload.ragged, "real_tokens": real_tokens, "ms": ms,
           "tokens_per_s": real_tokens / (ms / 1e3), "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
    del model, optimizer, fn
    return row


def run(sizes=("base", "large"), workloads=None, providers=None, warmup: int = 5, iters: int = 20, seed: int = 0,
        log=print, on_row=None) -> list[dict]:
    """Every (size, workload, provider) row; `on_row(row)` sees each as soon as it is measured (to save it at once)."""
    if not torch.cuda.is_available():
        raise RuntimeError("the end-to-end benchmark needs a CUDA device")
    device = torch.device("cuda")
    rows = []
    for size in sizes:
        config = size_config(size)
        states = {}
        for workload in workloads or WORKLOADS:
            if workload.task not in states:
                states[workload.task] = shared_state(config, workload.task, seed)
            state = states[workload.task]
            generator = torch.Generator().manual_seed(seed)
            batch = make_batch(workload, config.vocab_size, device, generator)
            for provider in providers or DEFAULT_PROVIDERS:
                try:
                    row = run_one(provider, workload, config, state, batch, warmup, iters)
                except torch.cuda.OutOfMemoryError:
                    row = {"workload": workload.name, "provider": provider, "error": "out of memory"}
                if row:
                    row["model"] = size
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
                    log(f"{size:5s} {workload.name:24s} {provider:18s} "
                        + (f"{row['tokens_per_s'] / 1e3:9.1f}k tok/s  {row['ms']:8.2f} ms  "
                           f"{row['peak_mem_gib']:6.2f} GiB" if "ms" in row else row["error"]))
    return rows


def ratio_table(rows: list[dict], peer: str = "hf-sdpa") -> list[dict]:
    """Per (model, workload): every provider's tokens/s and its ratio to the peer."""
    table = []
    keys = sorted({(r["model"], r["workload"]) for r in rows if "ms" in r})
    for model, workload in keys:
        group = {r["provider"]: r for r in rows if r.get("model") == model and r["workload"] == workload and "ms" in r}
        base = group.get(peer)
        for provider, r in group.items():
            table.append({"model": model, "workload": workload, "provider": provider,
                          "tok/s": r["tokens_per_s"], "ms": r["ms"], "GiB": r["peak_mem_gib"],
                          f"x {peer}": r["tokens_per_s"] / base["tokens_per_s"] if base else None})
    return table
