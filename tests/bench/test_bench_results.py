"""Result handling of the GPU benchmarks, on the CPU: tables built from saved rows."""

import json

import pytest

from bench import bench_e2e, bench_elementwise


def test_elementwise_pivot_per_call_and_on_the_device():
    rows = [
        {"op": "copy", "hidden": 768, "mode": "copy", "provider": "copy", "gb_s": 2000.0, "device_gb_s": 2800.0},
        {"op": "add_ln", "hidden": 768, "mode": "fwd", "provider": "ours", "gb_s": 500.0, "device_gb_s": 2520.0},
        {"op": "add_ln", "hidden": 768, "mode": "fwd", "provider": "compile", "gb_s": 1000.0, "device_gb_s": None},
    ]
    (per_call,) = bench_elementwise.pivot(rows)
    assert per_call["ours/compile"] == 0.5 and per_call["ours/copy"] == 0.25
    (device,) = bench_elementwise.pivot(rows, "device_gb_s")
    assert device["ours/copy"] == 0.9 and "ours/compile" not in device  # compile could not be captured


def test_e2e_table_and_plot_from_saved_rows(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(bench_e2e, "RESULTS_DIR", tmp_path)
    row = {"model": "base", "workload": "infer-B256-S128", "ms": 10.0, "peak_mem_gib": 1.0}
    rows = [{**row, "git_sha": "abc1234", "provider": "bert_fast", "tokens_per_s": 3e6},
            {**row, "git_sha": "abc1234", "provider": "hf-sdpa", "tokens_per_s": 2e6},
            {**row, "git_sha": "0000000", "provider": "bert_fast", "tokens_per_s": 1.0}]  # fmt: skip
    (tmp_path / "e2e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("sys.argv", ["bench_e2e", "--from-rows", "abc1234", "--name", "cut_off"])
    bench_e2e.main()
    table = (tmp_path / "cut_off.md").read_text()
    assert "| base | infer-B256-S128 | bert_fast | 3,000,000 |" in table and "| 1.5 |" in table
    assert (tmp_path / "cut_off.png").stat().st_size > 0
    monkeypatch.setattr("sys.argv", ["bench_e2e", "--from-rows", "fffffff"])
    with pytest.raises(SystemExit):
        bench_e2e.main()
    assert "no rows of commit fffffff" in capsys.readouterr().err


def test_launch_bench_smoke_run_covers_every_layer(capsys):
    from bench import bench_launch

    bench_launch.main(["--quick"])
    out = capsys.readouterr().out
    for op in ("bias_gelu", "add_layer_norm", "attention"):
        for layer in ("launcher", "eager", "custom-op", "torch"):
            assert f"{op:15s} {layer:15s} fwd      ours " in out, (op, layer)
    assert f"{'encoder-layer':15s} {'layer-triton':15s} fwd+bwd  ours " in out
    assert f"{'encoder-layer':15s} {'layer-reference':15s} fwd+bwd  -  " in out  # one launch path: none
    assert "cpu, interpreter" in out and "not saved" in out


def _pretrain_log(ref_ppl: float) -> str:
    """A bench_pretrain log as its progress lines print it: two runs, two evaluations each."""
    lines = []
    for name, ppl_2 in (("ours-bf16-triton", 500.0), ("ours-fp32-reference", ref_ppl)):
        lines += [f"== {name}: mini, 100 steps of 8 x 128",
                  "step 10/100 loss=9.600 lr=1.00e-04 tok_s=1,000 mfu=0.1%",
                  "step 50/100 loss=7.500 lr=8.00e-04 tok_s=4,000 mfu=0.4%",
                  "step 50: eval mlm_acc 0.100 ppl 900.0 nsp_acc 0.500",
                  "step 90/100 loss=7.000 lr=1.00e-04 tok_s=6,000 mfu=0.6%",
                  f"step 100: eval mlm_acc 0.120 ppl {ppl_2} nsp_acc 0.600"]
    return "\n".join(lines) + "\n"


def test_pretrain_rows_and_plot_recovered_from_a_cut_off_runs_log(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import math

    from bench import bench_pretrain

    results = tmp_path / "results"
    results.mkdir()
    env_row = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "triton": "3.6", "transformers": "5.17",
               "cuda": "13.0", "git_sha": "abc1234", "date": "2026-01-01T00:00:00+00:00", "provider": "x"}
    (results / "e2e.jsonl").write_text(json.dumps(env_row) + "\n")
    monkeypatch.setattr(bench_pretrain, "RESULTS_DIR", results)
    log = tmp_path / "run.log"
    log.write_text(_pretrain_log(ref_ppl=510.0))
    argv = ["bench_pretrain", "--from-log", str(log), "--log-sha", "abc1234", "--runs-dir", str(tmp_path / "runs")]
    monkeypatch.setattr("sys.argv", argv)
    assert bench_pretrain.main() == 0
    rows = [json.loads(line) for line in (results / "bench_pretrain.jsonl").read_text().splitlines()]
    fast, ref, convergence = rows
    assert fast["device"] == "NVIDIA H100 80GB HBM3" and fast["date"] == env_row["date"]  # the run's, not ours
    assert fast["source"] == "log run.log" and fast["git_sha"] == "abc1234"
    assert fast["tokens_per_s"] == 5000.0 and fast["mfu"] == pytest.approx(0.005)  # warm-up interval left out
    assert ref["final_eval_perplexity"] == 510.0 and fast["final_eval_mlm_accuracy"] == 0.12
    expected = abs(math.log(500.0) - math.log(510.0)) / math.log(510.0)
    assert convergence["max_rel_diff_eval_mlm"] == pytest.approx(expected) and convergence["passed"]
    assert "max_rel_diff_train_mlm" not in convergence  # the log holds the total loss only: not compared
    assert (results / "pretrain_convergence.png").stat().st_size > 0

    log.write_text(_pretrain_log(ref_ppl=5000.0))  # held-out MLM loss 27% apart: the check fails
    assert bench_pretrain.main() == 1
    log.write_text("step 10/100 loss=9.6 lr=1e-4 tok_s=1 mfu=0.1%\n")
    with pytest.raises(ValueError, match="no run of bench_pretrain"):
        bench_pretrain.main()
    monkeypatch.setattr("sys.argv", argv[:3] + ["--log-sha", "fffffff"])
    with pytest.raises(ValueError, match="no result rows of commit fffffff"):
        bench_pretrain.main()


def test_the_committed_pretrain_log_parses_to_both_runs_evaluations():
    from bench import bench_pretrain
    from bench.common import RESULTS_DIR

    runs = bench_pretrain.runs_from_log(RESULTS_DIR / "bench_pretrain_43ce038.log")
    assert list(runs) == ["ours-bf16-triton", "ours-fp32-reference"]
    for run in runs.values():
        assert (run["model"], run["steps"], run["batch_size"]) == ("mini", 2000, 128)
        assert [r["step"] for r in run["records"] if r["split"] == "eval"] == list(range(200, 2001, 200))
    curves = bench_pretrain.compare_curves(runs["ours-bf16-triton"]["records"],
                                           runs["ours-fp32-reference"]["records"], 2000)
    assert curves["max_rel_diff_eval_mlm"] == pytest.approx(0.00207, abs=1e-5) and curves["passed"]


def test_finetune_row_separates_the_first_epochs_warm_up_from_the_steady_state():
    from bench.bench_finetune import summary_row

    epochs = [{"train_tokens": 1000, "train_seconds": 10.0, "eval_seconds": 1.0},  # compiles and autotunes
              {"train_tokens": 1000, "train_seconds": 2.0, "eval_seconds": 1.0},
              {"train_tokens": 1000, "train_seconds": 2.0, "eval_seconds": 1.0}]
    summary = {"config": {"seed": 1, "lr": 1e-4, "batch_size": 16, "max_length": 128}, "impl": "triton",
               "precision": "bf16", "epochs": epochs, "best_epoch": 3, "dev": {"f1": 0.5}, "test": {"f1": 0.55},
               "train_seconds": 14.0, "test_seconds": 0.5}
    row = summary_row("wnut", summary)
    assert row["train_tokens_per_s"] == pytest.approx(3000 / 14) and row["steady_train_tokens_per_s"] == 500.0
    assert (row["dev"], row["test"], row["eval_s"]) == (0.5, 0.55, 3.0)
    one_epoch = summary_row("wnut", {**summary, "epochs": epochs[:1], "train_seconds": 10.0})
    assert one_epoch["steady_train_tokens_per_s"] is None  # no epoch after the warm-up one
