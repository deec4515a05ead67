"""Capture and restore every random generator a training step draws from (exact resume).

Python's `random`, NumPy's global generator, torch's CPU generator and each CUDA device's generator. Data
pipelines here draw from their own seeded generators and do not depend on these.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise RuntimeError(f"checkpoint holds RNG states of {len(state['cuda'])} CUDA devices, this process "
                               f"sees {torch.cuda.device_count()}")
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
