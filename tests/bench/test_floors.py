"""bench/floors.py and bench/bench_ceilings.py: the floors the benchmark notes quote, against hand-computed cases."""

import pytest

from bench import floors

H100 = floors.Ceilings(matmul=680e12, copy=3.02e12)


def test_length_moments():
    assert floors.length_moments(8, ragged=False) == (8.0, 64.0)
    assert floors.length_moments(64, ragged=True) == pytest.approx((36.0, sum(n * n for n in range(8, 65)) / 57))


def test_bias_gelu_forward_floor_is_one_read_and_one_write_at_copy_speed():
    row = next(r for r in floors.elementwise_rows(H100) if r["workload"] == "bias_gelu fwd 16384x3072")
    assert row["floor_us"] == pytest.approx(2 * 16384 * 3072 * 2 / 3.02e12 * 1e6)  # 66.7 us


def test_attention_turns_compute_bound_with_long_sequences():
    rows = {r["workload"]: r for r in floors.attention_rows(H100)}
    assert rows["attention fwd S128"]["bound"] == "bytes"
    assert rows["attention fwd S512"]["bound"] == "flops"
    assert rows["attention fwd S512"]["floor_us"] == pytest.approx(4 * 32 * 512**2 * 12 * 64 / 680e12 * 1e6)


def test_bert_base_inference_floor_by_hand():
    parts = floors.e2e_seconds_per_token(H100, "base", 128, ragged=False, train=False, batch=256)
    gemm = 12 * 2 * (4 * 768**2 + 2 * 768 * 3072) / 680e12
    attention = 12 * max(4 * 128 * 768 / 680e12, 4 * 768 * 2 / 3.02e12)
    epilogues = 12 * (2 * 3 * 768 + 2 * 3072) * 2 / 3.02e12
    assert parts == pytest.approx({"gemm": gemm, "attention": attention, "epilogues": epilogues})
    assert 1 / sum(parts.values()) == pytest.approx(2.78e6, rel=0.01)


def test_fused_ffn_floor_drops_the_forward_gelu_pass():
    split = floors.e2e_seconds_per_token(H100, "base", 128, ragged=False, train=False, batch=256)
    fused = floors.e2e_seconds_per_token(H100, "base", 128, ragged=False, train=False, batch=256, fused_ffn=True)
    assert split["epilogues"] - fused["epilogues"] == pytest.approx(12 * 2 * 3072 * 2 / 3.02e12)
    assert 1 / sum(fused.values()) == pytest.approx(3.22e6, rel=0.01)  # bench/NOTES.md §1
    train_split = floors.e2e_seconds_per_token(H100, "base", 128, ragged=False, train=True, batch=256)
    train_fused = floors.e2e_seconds_per_token(H100, "base", 128, ragged=False, train=True, batch=256, fused_ffn=True)
    assert train_split["epilogues"] - train_fused["epilogues"] == pytest.approx(12 * 3072 * 2 / 3.02e12)


def test_main_prints_both_tables(capsys):
    floors.main(["--matmul-tflops", "700", "--copy-tbs", "3"])
    out = capsys.readouterr().out
    assert "bf16 matmul 700 TFLOP/s" in out and "BERT-large train B32 S512" in out and "attention fwd S512" in out


def test_ceilings_smoke_run_and_effective_rate(capsys):
    from bench import bench_ceilings

    bench_ceilings.main(["--quick"])
    out = capsys.readouterr().out
    assert "ffn_down" in out and "wgrad" in out and "training_tflop_s" in out
    rows = [
        {"model": "base", "kind": "fwd", "flops": 4e12, "ms": 10.0},
        {"model": "base", "kind": "wgrad", "flops": 4e12, "ms": 30.0},
        {"model": "large", "kind": "fwd", "flops": 1e12, "ms": 1.0},
    ]
    rates = {r["model"]: r for r in bench_ceilings.effective_rates(rows)}
    assert rates["base"]["inference_tflop_s"] == pytest.approx(400.0)  # 4e12 FLOP in 10 ms
    assert rates["base"]["training_tflop_s"] == pytest.approx(200.0)  # 8e12 FLOP in 40 ms
    assert rates["large"]["training_tflop_s"] == pytest.approx(1000.0)
