"""Data-parallel training: two gloo workers with DDP reproduce the single-worker global batch.

Each rank takes every other image of the epoch's permutation and half the global batch, so the two
ranks' batches together are exactly the single worker's batch; DDP averages their gradients, which
for equal halves equals the gradient of the whole batch. Without augmentation the weights agree.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from stress.config import ExperimentConfig, merge
from stress.data import load_dataset, split_dataset
from stress.train import to_device_arrays, train_variant

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not


def _config() -> ExperimentConfig:
    return merge(ExperimentConfig(), {
        "data.source": "synthetic", "data.synthetic_train": 400, "data.synthetic_test": 100, "data.val_size": 80,
        "train.epochs": 2, "train.batch_size": 32, "model.widths": [8, 16, 16], "model.hidden": 32,
    })


def _data(config: ExperimentConfig) -> dict:
    return to_device_arrays(split_dataset(load_dataset(config.data), config.data, config.train.seed).arrays(), "cpu")


def _worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = _config()
        state = train_variant(config, "baseline", _data(config), prepare_model=DistributedDataParallel,
                              rank=rank, world_size=world, log=lambda line: None)
        results[rank] = {"model": state["model"], "history": state["history"]}
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ddp_workers_match_one_worker_with_the_global_batch():
    torch.set_num_threads(1)
    config = _config()
    single = train_variant(config, "baseline", _data(config), log=lambda line: None)
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        for name, tensor in single["model"].items():
            torch.testing.assert_close(results[rank]["model"][name], tensor, rtol=1e-4, atol=1e-5)
    # Metrics are summed over both workers, so they describe the whole epoch.
    for ddp_epoch, single_epoch in zip(results[0]["history"], single["history"]):
        assert ddp_epoch["train_acc"] == pytest.approx(single_epoch["train_acc"], abs=1e-9)
        assert ddp_epoch["train_loss"] == pytest.approx(single_epoch["train_loss"], rel=1e-4)
        assert ddp_epoch["images_per_second"] * ddp_epoch["seconds"] == pytest.approx(320)
