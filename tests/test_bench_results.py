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
    for layer in ("layer-triton", "layer-reference"):
        assert f"{'encoder-layer':15s} {layer:15s} fwd+bwd  ours " in out, layer
    assert "cpu, interpreter" in out and "not saved" in out
