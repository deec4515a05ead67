"""The BERT family on one GPU: RoBERTa-base- and XLM-R-base-shaped models (random weights, XLM-R's 250k
vocabulary), bf16 inference against transformers' sdpa in the same run, and their bf16 parity with
transformers in fp32.

Run on one CUDA GPU:  python -m bench.bench_families [--quick]
Rows (tokens/s of real tokens, ms, peak memory, max abs error and min per-token cosine against HF fp32) go to
bench/results/families.jsonl; the table to bench/results/families.md.
"""

from __future__ import annotations

import argparse
import gc

import torch

from bert_fast import BertModel, benchmark
from bert_fast.config import BertConfig

from .common import RESULTS_DIR, format_table, save_rows

SHAPES = {"roberta-base": ("roberta", 50265), "xlm-roberta-base": ("xlm-roberta", 250002)}
WORKLOADS = [w for w in benchmark.WORKLOADS if w.name in ("infer-B256-S128", "infer-B64-S512-ragged")]
PROVIDERS = ("bert_fast", "hf-sdpa")


def config_for(name: str) -> BertConfig:
    model_type, vocab = SHAPES[name]
    return BertConfig.preset("base", model_type=model_type, vocab_size=vocab, max_position_embeddings=514,
                             pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)


def make_batch(workload, config: BertConfig, device) -> dict:
    """The benchmark's batch with the family's pad id at padding and no token types."""
    batch = benchmark.make_batch(workload, config.vocab_size, device, torch.Generator().manual_seed(0))
    pad = batch["attention_mask"] == 0
    return {"input_ids": batch["input_ids"].masked_fill(pad, config.pad_token_id),
            "attention_mask": batch["attention_mask"]}


def build(provider: str, config: BertConfig, state: dict, device, dtype=torch.bfloat16):
    import transformers

    if provider == "bert_fast":
        model = BertModel(config, impl="triton")
    else:
        data = config.to_dict()
        hf_config = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
        hf_config._attn_implementation = "sdpa" if provider != "hf-fp32" else "eager"
        model = transformers.AutoModel.from_config(hf_config)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def parity(name: str, config: BertConfig, state: dict, batch: dict, device) -> dict:
    """Our bf16 fused path and HF sdpa in bf16, each against HF in fp32."""
    real = batch["attention_mask"].bool()
    outs = {}
    for provider, dtype in (("hf-fp32", torch.float32), ("bert_fast", torch.bfloat16), ("hf-sdpa", torch.bfloat16)):
        model = build(provider, config, state, device, dtype)
        with torch.inference_mode():
            outs[provider] = model(**batch).last_hidden_state[real].float()
        del model
        gc.collect()
        torch.cuda.empty_cache()
    ref = outs.pop("hf-fp32")
    return {p: {"max_abs_error": (o - ref).abs().max().item(),
                "min_cosine": torch.nn.functional.cosine_similarity(o, ref, dim=-1).min().item()}
            for p, o in outs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma separated, of {list(SHAPES)}")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_families needs a CUDA device")
    device = torch.device("cuda")
    iters, warmup = (5, 2) if args.quick else (20, 5)
    rows = []
    for name in args.models.split(","):
        config = config_for(name)
        torch.manual_seed(0)
        state = BertModel(config, impl="reference").state_dict()  # random weights, shared by every provider
        for workload in WORKLOADS:
            batch = make_batch(workload, config, device)
            real_tokens = int(batch["attention_mask"].sum())
            for provider in PROVIDERS:
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                model = build(provider, config, state, device)

                def infer(model=model, batch=batch):
                    with torch.inference_mode():
                        return model(**batch)

                ms = benchmark.time_ms(infer, warmup, iters)
                row = {"bench": "families", "model": name, "workload": workload.name, "provider": provider,
                       "real_tokens": real_tokens, "ms": ms, "tokens_per_s": real_tokens / (ms / 1e3),
                       "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
                del model
                rows.append(row)
                save_rows("families", [row])  # saved as measured: a call cut off keeps what it finished
                print(f"{name:17s} {workload.name:22s} {provider:10s} {row['tokens_per_s'] / 1e3:9.1f}k tok/s "
                      f"{ms:8.2f} ms {row['peak_mem_gib']:6.2f} GiB", flush=True)
        checks = parity(name, config, state, make_batch(WORKLOADS[1], config, device), device)
        for provider, values in checks.items():
            row = {"bench": "families-parity", "model": name, "provider": provider, **values}
            rows.append(row)
            save_rows("families", [row])
            print(f"{name:17s} bf16 vs HF fp32  {provider:10s} max abs err {values['max_abs_error']:.3e} "
                  f"min cosine {values['min_cosine']:.6f}", flush=True)
    speed = [r for r in rows if r["bench"] == "families"]
    accuracy = [r for r in rows if r["bench"] == "families-parity"]
    table = (format_table(speed, ["model", "workload", "provider", "tokens_per_s", "ms", "peak_mem_gib"]) + "\n\n"
             + format_table(accuracy, ["model", "provider", "max_abs_error", "min_cosine"]))
    (RESULTS_DIR / "families.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
