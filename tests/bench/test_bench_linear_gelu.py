"""bench/bench_linear_gelu.py on the CPU: the smoke run goes through every provider, and the table's ratios."""

from bench import bench_linear_gelu


def test_cpu_smoke_run_times_every_provider(capsys):
    bench_linear_gelu.main(["--quick"])
    out = capsys.readouterr().out
    for provider in ("fused", "fused-persistent", "split", "eager", "gemm"):
        assert f" {provider} " in out
    assert "not saved" in out


def test_pivot_ratios():
    rows = [{"model": "base", "tokens": 8, "mode": "fwd", "provider": p, "tflop_s": v}
            for p, v in (("fused", 600.0), ("fused-persistent", 700.0), ("split", 400.0), ("eager", 300.0),
                         ("compile", 500.0))]  # fmt: skip
    (row,) = bench_linear_gelu.pivot(rows)
    assert row["fused/split"] == 1.5 and row["persistent/split"] == 1.75
    assert row["fused/best-peer"] == 1.4  # the faster of ours against compile, the fastest of the peers


def test_pivot_of_device_times_skips_what_could_not_be_captured():
    rows = [{"model": "base", "tokens": 8, "mode": "fwd", "provider": p, "tflop_s": 1.0, "device_tflop_s": v}
            for p, v in (("fused", 660.0), ("fused-persistent", None), ("split", 600.0), ("compile", 550.0))]  # fmt: skip
    (row,) = bench_linear_gelu.pivot(rows, "device_tflop_s")
    assert row["fused/split"] == 1.1 and "persistent/split" not in row
    assert row["fused/best-peer"] == 1.2
