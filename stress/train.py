"""The training loop: plain PyTorch, usable without Ray, resumable from a per-epoch state.

Both variants share everything but the augmentation: the same seed gives the same
initial weights, the same validation split and the same batch order. The data order
and the augmentation draws of epoch `e` come from a generator seeded by (seed, e),
so a run restarted from the checkpoint of epoch e continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import copy
import random
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from stress.augment import augment_batch, input_stats, normalize
from stress.config import ExperimentConfig
from stress.evaluate.predict import evaluate
from stress.models import create_model
from stress.precision import autocast, resolve_precision

EpochCallback = Callable[[dict, dict], None]  # (checkpoint state, epoch metrics) -> None


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(config: ExperimentConfig) -> nn.Module:
    """The initial model for `config`; identical weights for both variants of a seed."""
    torch.manual_seed(config.train.seed)
    return create_model(config.model)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator behind epoch `epoch`'s data order and augmentation draws."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _reduce_sum(values: torch.Tensor) -> torch.Tensor:
    # Data-parallel workers each see a shard: sum their counts so metrics cover the whole epoch.
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def training_memory_format(device: torch.device | str) -> torch.memory_format:
    """channels_last on the CPU, where convolution and pooling run markedly faster in it
    (benchmarks/bench_training.py measures it); the default layout elsewhere (on an H200,
    channels_last was no faster for SimpleCNN: benchmarks/README.md, section 5)."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def to_device_arrays(arrays: dict[str, np.ndarray], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move the split's numpy arrays to `device` once; images stay uint8.

    On the CPU the tensors share the arrays' memory: object-store arrays are read-only
    shared memory, so every worker on a node reads the same single copy. The training
    loop only ever indexes them (which copies), never writes to them.
    """
    if torch.device(device).type != "cpu":
        return {name: torch.tensor(np.asarray(value), device=device) for name, value in arrays.items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {name: torch.from_numpy(np.asarray(value)) for name, value in arrays.items()}


def is_training_name(variant: str) -> bool:
    """"baseline", "augmented", or "fold<k>": a cross-validation fold of the label audit, trained with the baseline recipe."""
    return variant in ("baseline", "augmented") or (variant.startswith("fold") and variant[4:].isdigit())


def synchronised_batchnorm(model: nn.Module, device: torch.device | str, world_size: int) -> nn.Module:
    """With data-parallel workers on CUDA, BatchNorm layers as SyncBatchNorm (statistics over the global batch).

    torch's SyncBatchNorm runs only on accelerators; on CPU, and with one worker, the model is returned
    as it is, and each CPU worker normalises with its own share of the batch.
    """
    if world_size > 1 and torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def train_variant(
    config: ExperimentConfig,
    variant: str,
    data: dict[str, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    resume: dict | None = None,
    on_epoch: EpochCallback | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] = lambda m: m,
    rank: int = 0,
    world_size: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Train one variant ("baseline", "augmented", or a label-audit fold "fold<k>": the baseline recipe) and return the final state.

    data: device tensors train_x/val_x/test_x (uint8 N,3,H,W) and train_y/val_y/test_y (int64).
    resume: a state returned by an earlier on_epoch call; training continues after its epoch.
    on_epoch(state, metrics): called after every epoch on every worker (checkpointing, reporting).
    The returned state has keys model, optimizer, epoch, rng, history, config, variant, test.
    """
    if not is_training_name(variant):
        raise ValueError(f"unknown variant {variant!r}")
    t = config.train
    seed_everything(t.seed)
    layout = training_memory_format(device)
    stats = input_stats(config.model)
    model = build_model(config).to(device, memory_format=layout)
    # On CUDA, Adam's fused kernel: one launch per step instead of one per operation and parameter group
    # (benchmarks/bench_precision.py --device cuda measures both).
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                                 fused=True if torch.device(device).type == "cuda" else None)
    history: list[dict] = []
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        history = list(resume["history"])
        start_epoch = int(resume["epoch"])
        torch.set_rng_state(resume["rng"])
    if world_size > 1 and rank == 0 and torch.device(device).type != "cuda" and \
            any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log(f"[{variant}] BatchNorm statistics stay per worker on CPU (torch's SyncBatchNorm needs a GPU)")
    model = prepare_model(synchronised_batchnorm(model, device, world_size))
    train_x, train_y = data["train_x"], data["train_y"]
    per_worker_batch = t.batch_size // world_size
    n_per_worker = len(train_y) // world_size  # equal shards keep the workers' step counts in lockstep
    state: dict = {}
    for epoch in range(start_epoch + 1, t.epochs + 1):
        model.train()
        generator = epoch_generator(t.seed, epoch)
        order = torch.randperm(len(train_y), generator=generator)[rank::world_size][:n_per_worker].to(device)
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
        count = 0  # on the host: a per-step host-to-device copy would wait for the GPU every step
        started = time.perf_counter()
        for i in range(0, n_per_worker, per_worker_batch):
            index = order[i : i + per_worker_batch]
            images = train_x[index]
            if variant == "augmented":
                images = augment_batch(images, t.crop_padding, t.flip_probability, generator)
            labels = train_y[index]
            with autocast(t.precision, device):
                logits = model(normalize(images, stats).contiguous(memory_format=layout))
            logits = logits.float()  # the loss and every metric in fp32
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals[0] += loss.detach().double() * len(labels)
            totals[1] += (logits.argmax(1) == labels).sum().double()
            count += len(labels)
        totals = _reduce_sum(torch.cat([totals, torch.tensor([count], dtype=torch.float64, device=device)]))
        seconds = time.perf_counter() - started
        val = evaluate(_unwrap(model), data["val_x"], data["val_y"], t.eval_batch_size, t.precision, stats=stats)
        metrics = {
            "epoch": epoch,
            "train_loss": float(totals[0] / totals[2]),
            "train_acc": float(totals[1] / totals[2]),
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "seconds": seconds,
            "images_per_second": float(totals[2]) / seconds,
            # What --precision resolved to where this worker trained ("auto" depends on the device).
            "precision": resolve_precision(t.precision, device),
            "device": torch.device(device).type,
        }
        history.append(metrics)
        test = None
        if epoch == t.epochs:
            test = evaluate(_unwrap(model), data["test_x"], data["test_y"], t.eval_batch_size, t.precision, stats=stats)
            metrics = {**metrics, "test_loss": test["loss"], "test_acc": test["acc"]}
        if rank == 0:
            log(
                f"[{variant}] epoch {epoch}/{t.epochs} train_loss {metrics['train_loss']:.4f} train_acc {metrics['train_acc']:.4f} "
                f"val_loss {metrics['val_loss']:.4f} val_acc {metrics['val_acc']:.4f} {metrics['images_per_second']:.0f} img/s"
                # A fold's "test" images are the training images it held out.
                + (f" {'out_of_fold_acc' if variant.startswith('fold') else 'test_acc'} {test['acc']:.4f}" if test else "")
            )
        state = {
            # Copies, not references: the live tensors keep changing after this epoch.
            "model": {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "epoch": epoch,
            "rng": torch.get_rng_state(),
            "history": list(history),
            "config": config.to_dict(),
            "variant": variant,
            "test": test,
        }
        if on_epoch is not None:
            on_epoch(state, metrics)
    if not state and resume is not None:
        state = dict(resume)  # already finished: nothing left to train
    return state


def training_identity(config: ExperimentConfig, arrays: dict) -> str:
    """What a trainer's checkpoint was trained from: the data, model and training options, and the split it was given (its
    arrays' shapes and labels: a label-audit fold's split depends on the fold count, which no training option holds).

    A checkpoint left under the same name by a run with other options (a run name reused with another --lr or
    --precision) has another identity, so the trainer starts from scratch instead of resuming from it.
    """
    import hashlib
    import json

    options = config.to_dict()
    digest = hashlib.sha256(json.dumps({k: options[k] for k in ("data", "model", "train")}, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        digest.update(f"{name}:{array.shape}:{array.dtype};".encode())
        if name.endswith("_y"):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]

