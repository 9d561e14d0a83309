"""Shared fixtures: keep the tests to one thread on the shared CPUs, tiny configs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stress.config import ExperimentConfig, merge
from stress.constants import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread per test: the machine is shared, and results do not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# What a config written before the dataset and the model were resolved stood for: CIFAR-10's class
# names and input statistics, SimpleCNN's Grad-CAM layer. Given explicitly, they make such a config
# resolve as it did.
RESOLVED_AS_BEFORE = {"data.class_names": CIFAR10_CLASSES, "model.mean": CIFAR10_MEAN, "model.std": CIFAR10_STD,
                      "stress.cam_layer": "features.relu3"}


def resolved_as_before(values: dict) -> ExperimentConfig:
    """ExperimentConfig of an old config dict, with RESOLVED_AS_BEFORE filled in.

    An old dict without data.val_size meant the old default, 5000 (the pipeline now resolves 0 to a tenth
    of the training images in use: 5000 for CIFAR-10, so real run folders keep their keys)."""
    config = merge(ExperimentConfig.from_dict(values), RESOLVED_AS_BEFORE)
    return config if "val_size" in values.get("data", {}) else merge(config, {"data.val_size": 5000})


def tiny_overrides() -> dict[str, Any]:
    """Dotted overrides for a small run: synthetic data, a small model, two epochs (also for module-scoped fixtures)."""
    return {
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
        "stress.fourier_images": 0,  # the Fourier heat map is tested on its own (tests/unit/driver/test_stages.py)
        "stress.texture_images": 0,  # so are the texture probes and the attacks (tests/unit/driver/test_probe_stages.py)
        "stress.adversarial_images": 0,
    }


@pytest.fixture
def tiny_config():
    """A factory for a validated config on synthetic data with a small model: `tiny_config(**{"train.epochs": 2})`."""

    def make(**overrides: Any) -> ExperimentConfig:
        return merge(ExperimentConfig(), {**tiny_overrides(), **overrides})

    return make


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def drawn_fixture_run(tmp_path_factory) -> tuple[Path, list[Path]]:
    """tests/fixtures/run_small with every figure drawn, once for all report tests: (folder, figures written).

    Tests that change files copy the folder first.
    """
    import json
    import os

    from filelock import FileLock

    from stress.artifacts import RunFolder
    from stress.report.figures import write_figures

    # Under pytest-xdist every worker has its own base temp folder inside one shared parent: the first
    # worker to get here draws the figures there, the others wait for it and read the same folder.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, listing = shared / "drawn_fixture", shared / "drawn_fixture.json"
    with FileLock(str(shared / "drawn_fixture.lock")):
        if not listing.is_file():
            shutil.copytree(FIXTURES / "run_small", folder / "run_small")
            written = write_figures(RunFolder(folder / "run_small"), log=lambda message: None)
            listing.write_text(json.dumps([str(p) for p in written]))
    return folder / "run_small", [Path(p) for p in json.loads(listing.read_text())]


@pytest.fixture(scope="session")
def small_results():
    """Two untrained SimpleCNNs evaluated shard by shard on 60 random images: (weights, model config, images, labels, merged)."""
    from stress.config import ModelConfig
    from stress.driver.fanout import merge_shards, shard_bounds
    from stress.evaluate.shards import evaluate_shard
    from stress.models import create_model

    torch.manual_seed(0)
    weights = {v: create_model(ModelConfig()).state_dict() for v in ("baseline", "augmented")}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(60) % 10
    config = {"name": "simple_cnn", "widths": [32, 64, 128], "hidden": 256, "num_classes": 10, "in_channels": 3, "image_size": 32}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        merged = {
            v: merge_shards([evaluate_shard(weights[v], config, images, labels, a, b, faithfulness_every=10, faithfulness_steps=4)
                             for a, b in shard_bounds(60, 3)], 60)
            for v in weights
        }
    finally:
        torch.set_num_threads(previous)
    return weights, config, images, labels, merged


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium (selenium driver) with a fresh profile, for the module's browser tests; skips without one."""
    import stress.report.browser as tools

    if tools.find_browser() is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    driver = tools.start_chromium(tmp_path_factory.mktemp("chromium-profile"))  # a fresh --user-data-dir
    yield driver
    driver.quit()
