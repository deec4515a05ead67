"""Fixtures shared by the kernel tests."""

import bert_fast_kernels._launch as lean
import pytest


@pytest.fixture
def lean_setting():
    previous = lean.set_lean_launch(True)
    yield
    lean.set_lean_launch(previous)
