"""Shared fixtures: keep the tests to one thread on the shared CPUs, tiny configs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from stress.config import ExperimentConfig, merge


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread per test: the machine is shared, and results do not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_config():
    """A factory for a validated config on synthetic data with a small model: `tiny_config(**{"train.epochs": 2})`."""

    def make(**overrides: Any) -> ExperimentConfig:
        values = {
            "data.source": "synthetic",
            "data.synthetic_train": 240,
            "data.synthetic_test": 40,
            "data.val_size": 40,
            "model.widths": (8, 16, 32),
            "model.hidden": 32,
            "train.epochs": 2,
            "train.batch_size": 32,
            "train.eval_batch_size": 100,
            "train.lr": 3e-3,
        }
        values.update(overrides)
        return merge(ExperimentConfig(), values)

    return make
