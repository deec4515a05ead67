"""The test set-up itself: a failing test prints the seed of its random inputs, and the seed replays them."""

import re
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def test_a_failure_prints_its_seed_and_the_seed_replays_it(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_draws="""
        import torch

        def test_draw():
            print("drew", torch.rand(1).item())
            assert False
    """)
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    text = first.stdout.str()
    seed = re.search(r"inputs drawn from torch seed (\d+); replay with BERT_FAST_TEST_SEED=\1", text).group(1)
    drew = re.search(r"drew ([\d.e-]+)", text).group(1)
    monkeypatch.setenv("BERT_FAST_TEST_SEED", seed)
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert f"drew {drew}" in again.stdout.str()
