"""Ray Train, Ray tasks and Ray Tune for the pipeline (starting or joining Ray: stress.driver.connection).

- `train_variants` runs the baseline and the augmented training as two Ray Train
  TorchTrainers at the same time, each resumable by its (storage path, name).
- `run_tasks` fans plain-PyTorch shard functions out as Ray tasks with retries and
  progress, and gathers their results on the driver.
- `RayExecutor` offers these to the pipeline's stages (see stress.driver.fanout.Executor).
- `run_seed_sweep` runs a trial function once per seed through Ray Tune.

Only stress.driver imports ray (tests/unit/test_layout.py checks it); what the resources
asked for can be granted is checked in stress.driver.resources.
"""

from __future__ import annotations

import inspect
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from stress import storage
from stress.artifacts import load_torch
from stress.config import ExperimentConfig, ResourceConfig
from stress.constants import DEFAULT_TASK_GPUS, NON_SPOT_RESOURCE
from stress.driver.connection import connect
from stress.driver.resources import available_slots, check_resources, resolve_gpus, worker_gpus
from stress.errors import StressError
from stress.train import to_device_arrays, train_variant, training_identity

STATE_FILE = "state.pt"


# Set for the trainers' tasks wherever they run (their controllers and workers inherit them).
TRAINER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def write_line(line: str) -> None:
    # Ray Train patches print() on workers and would echo each progress line twice.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _train_worker(loop_config: dict) -> None:
    """Ray Train worker function: plain `train_variant` plus checkpoint reporting."""
    # Train's per-report INFO line comes from a logger named after its file, which
    # LoggingConfig does not reach; the root logger's level does.
    logging.getLogger().setLevel(logging.WARNING)
    config = ExperimentConfig.from_dict(loop_config["config"])
    variant = loop_config["variant"]
    tag = loop_config.get("tag", "")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(config.resources.cpus_per_worker)))
    arrays = ray.get(loop_config["data"])  # shipped once through the object store
    data = to_device_arrays(arrays, device)
    resume, identity = None, loop_config["identity"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = load_torch(Path(folder) / STATE_FILE)
        if saved.get("identity") == identity:
            resume = saved
            if rank == 0:
                write_line(f"{tag}[{variant}] resuming after epoch {resume['epoch']}")
        elif rank == 0:
            write_line(f"{tag}[{variant}] the checkpoint under this run name was trained from other options or data: "
                       "training from scratch")

    def report(state: dict, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                torch.save({**state, "identity": identity}, Path(folder) / STATE_FILE)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder) if rank == 0 else None)

    prepare = ray.train.torch.prepare_model if world > 1 else (lambda m: m)
    train_variant(
        config, variant, data, device=device, resume=resume, on_epoch=report,
        prepare_model=prepare, rank=rank, world_size=world, log=lambda line: write_line(tag + line),
    )


@ray.remote(num_cpus=0)
def _fit(config_dict: dict, variant: str, data_ref: list, storage: str, tag: str = "", identity: str = "") -> dict:
    # Each fit() blocks, so each trainer gets its own zero-CPU task to run both at once.
    config = ExperimentConfig.from_dict(config_dict)
    r = config.resources
    gpus = worker_gpus(r)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"config": config_dict, "variant": variant, "data": data_ref[0], "tag": tag, "identity": identity},
        scaling_config=ScalingConfig(
            num_workers=r.workers_per_trainer,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})},
        ),
        run_config=RunConfig(
            name=variant,
            storage_path=storage,
            # A reclaimed spot node that Ray drains is a preemption: retried without limit, not counted in max_failures.
            failure_config=FailureConfig(max_failures=r.max_failures, max_preemption_failures=-1),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig("WARNING"),  # ray.train's INFO lines (checkpoints, worker groups)
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"{variant} training failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError(f"{variant} training finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = load_torch(Path(folder) / STATE_FILE)
    return {"state": state, "gpus_per_worker": gpus}


def coordinator_placement(totals: dict[str, float] | None = None) -> dict[str, Any]:
    """Options that keep a coordinating task off spot nodes: a sliver of NON_SPOT_RESOURCE where the cluster has it.

    Ray Train starts a trainer's controller on the node of the task that calls fit(), so pinning
    that task pins the controller too. On a cluster without the resource (a laptop) nothing is asked.
    """
    totals = ray.cluster_resources() if totals is None else totals
    return {"resources": {NON_SPOT_RESOURCE: 0.001}} if totals.get(NON_SPOT_RESOURCE, 0) > 0 else {}


def train_variants(
    config: ExperimentConfig, arrays: dict, storage: str, variants: Iterable[str], on_done: Callable[[str, dict], None],
    tag: str = "",
) -> None:
    """Train `variants` concurrently with Ray Train; call on_done(variant, result) as each finishes.

    arrays: the split's arrays, shared by every variant, or {variant: its arrays} (the label audit's
    folds). Each distinct array set goes into the object store once; the trainers' workers read it
    from there. A re-run with the same storage path resumes each trainer from its last checkpoint, if that was trained from
    the same options and data (stress.train.training_identity); else the trainer starts from scratch.
    tag goes before every line the trainers' workers print (a sweep's "[seed 43] ").
    """
    shared = "train_x" in arrays
    train_coordinator_ready = start_train_coordinator()  # starts while the arrays go into the object store
    refs = {None: ray.put(arrays)} if shared else {v: ray.put(arrays[v]) for v in variants}
    if train_coordinator_ready is not None:
        ray.wait([train_coordinator_ready], timeout=COORDINATOR_START_TIMEOUT_S)
    # Wrapped in a list so Ray hands the reference itself (not its value) to the task.
    fit = _fit.options(runtime_env={"env_vars": TRAINER_ENV}, **coordinator_placement())
    pending = {fit.remote(config.to_dict(), v, [refs[None if shared else v]], storage, tag,
                          training_identity(config, arrays if shared else arrays[v])): v for v in variants}
    _gather(pending, on_done, "training of {key} failed")


# How long train_variants waits for Ray Train's autoscaling coordinator before it starts the trainers anyway.
COORDINATOR_START_TIMEOUT_S = 60.0


def start_train_coordinator() -> Any:
    """Start Ray Train's autoscaling coordinator, a detached actor, unless it runs; return a reference that resolves once it answers.

    Each trainer's controller sends it a resource request and waits 5 s at most (a constant in
    ray.train.v2's autoscaling_coordinator_client). The first controller creates the actor itself,
    and on two busy cores the new process took 3.5-5.7 s to answer: the controller then logs a
    warning with a traceback, although training goes on. Started before the trainers, it is ready
    when they ask. None where this Ray has no such coordinator.
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return None
    return get_or_create_autoscaling_coordinator().__ray_ready__.remote()


def _gather(pending: dict, on_result: Callable[[str, Any], None], failure: str) -> None:
    """Wait for every reference in `pending` (ref -> key); on_result(key, value) in completion order.

    The first failure cancels the rest and becomes a one-line StressError (`failure` names the key).
    """
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        key = pending.pop(done[0])
        try:
            value = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            cause = getattr(exc, "cause", None) or exc
            raise StressError(f"{failure.format(key=key)}: {str(cause).strip().splitlines()[0]}") from None
        on_result(key, value)


def run_tasks(
    function: Callable[..., Any],
    calls: list[tuple[str, tuple, dict]],
    resources: ResourceConfig,
    on_result: Callable[[str, Any], None],
    progress: Callable[[str], None] = print,
) -> None:
    """Run `function(*args, **kwargs)` as one Ray task per call; on_result(key, value) as each finishes.

    Large arguments should be ObjectRefs from `put`, so they are shipped once. Tasks that die
    (worker crash, node loss) are retried `resources.task_retries` times.
    """
    gpus = resolve_gpus(resources.task_gpus, DEFAULT_TASK_GPUS)
    remote = ray.remote(_on_assigned_device).options(
        name=getattr(function, "__name__", "task"),
        num_cpus=resources.task_cpus,
        num_gpus=gpus,
        max_retries=resources.task_retries,
        retry_exceptions=False,
        # Inside a Tune trial, child tasks would otherwise be squeezed into the trial's tiny placement group.
        scheduling_strategy="DEFAULT",
    )
    takes_device = "device" in inspect.signature(function).parameters
    pending = {remote.remote(function, takes_device, *args, **kwargs): key for key, args, kwargs in calls}
    total, started = len(pending), time.perf_counter()
    finished = 0

    def report(key: str, value: Any) -> None:
        nonlocal finished
        finished += 1
        progress(f"  [{finished}/{total}] {key} done ({time.perf_counter() - started:.0f} s)")
        on_result(key, value)

    _gather(pending, report, "task {key} failed after retries")


def _on_assigned_device(function: Callable[..., Any], takes_device: bool, *args, **kwargs) -> Any:
    """A fan-out task's body: `function` on the device Ray assigned to this task.

    Since Ray 2.60 a task that asked for no GPU still sees the node's GPUs, so the task body
    is told "cuda" only when Ray reserved a GPU for it (ray.get_gpu_ids()), else "cpu".
    """
    if takes_device:
        kwargs["device"] = "cuda" if ray.get_gpu_ids() else "cpu"
    return function(*args, **kwargs)


def put(value: Any) -> Any:
    """Place a large shared input in the object store once; pass the reference to tasks."""
    return ray.put(value)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def python_versions() -> dict[str, str]:
    import torchvision

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__, "ray": ray.__version__}


# What a trial driver reserves: memory, not CPU. Any CPU share would be missing for the
# trial's own training workers (two 1-CPU trainers and a 0.01-CPU trial do not fit on 2 CPUs,
# and the second trainer would wait for the first); Tune refuses an all-zero request.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 2**20}


def run_seed_sweep(base: ExperimentConfig, seeds: list[int], root: str, resume: bool, max_concurrent: int,
                   trial: Callable[[dict], None]) -> list[int]:
    """Run `trial` for every seed through Ray Tune; return the seeds whose trial finished.

    `trial(trial_config)` gets {"seed", "base" (the config as a dict), "root"} and reports
    through `ray.tune.report` a metrics dict that holds "seed" when it finished.

    Each trial reserves no CPU itself (its trainers and tasks ask for their own), and at most
    `max_concurrent` trials run at once, so trials queue instead of deadlocking on a small cluster.

    Resuming starts a new Tune experiment (`tune/attempt_<k>`) over every seed: the per-seed run
    folders carry the state (stage records, training checkpoints, saved shards), so a finished
    seed costs only its report, an interrupted one continues where it stopped, and a seed whose
    evaluation or stress options changed re-runs only the stages that read them.
    """
    from ray import tune

    tune_root = f"{root.rstrip('/')}/tune"  # a path, or a storage URI Tune writes to itself
    attempts = storage.subfolders(tune_root)
    if resume and attempts is None:
        raise StressError(f"{tune_root}: no sweep to resume (run without --resume first)")
    if not resume and attempts is not None:
        raise StressError(f"{tune_root} exists: pass --resume to continue that sweep, or choose another --run-name")
    attempt = 1 + sum(1 for name in attempts or () if name.startswith("attempt_"))
    tuner = tune.Tuner(
        tune.with_resources(trial, {**TRIAL_RESOURCES, **coordinator_placement().get("resources", {})}),
        param_space={"seed": tune.grid_search(seeds), "base": base.to_dict(), "root": str(root)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=f"attempt_{attempt}", storage_path=tune_root,
            # verbose=0: no status table every 30 s; each trial's own lines, tagged with its seed, are the progress.
            failure_config=tune.FailureConfig(max_failures=1), verbose=0,
        ),
    )
    results = tuner.fit()
    finished = []
    for result in results:
        if result.error is None and result.metrics and "seed" in result.metrics:
            finished.append(int(result.metrics["seed"]))
    return sorted(finished)


class RayExecutor:
    """The pipeline's work on Ray: trainers on Ray Train, fan-out tasks as Ray tasks (stress.driver.fanout.Executor)."""

    name = "ray"

    def __init__(self, tag: str = ""):
        self.tag = tag  # before every line the trainers' workers print

    def start(self, address: str | None, log=None) -> dict[str, float]:
        return connect(address, log=log)

    def check(self, resources: ResourceConfig, totals: dict[str, float], address: str | None, log) -> None:
        check_resources(resources, totals, address, log)

    def put(self, value: Any) -> Any:
        return put(value)

    def slots(self, resources: ResourceConfig) -> int:
        return available_slots(resources.task_cpus, self.task_gpus(resources))

    def task_gpus(self, resources: ResourceConfig) -> float:
        return resolve_gpus(resources.task_gpus, DEFAULT_TASK_GPUS)

    def run(self, function: Callable, calls: list, resources: ResourceConfig, on_result: Callable[[str, Any], None], log) -> None:
        run_tasks(function, calls, resources, on_result, log)

    def train_variants(self, config: ExperimentConfig, arrays: dict, storage: str, variants: list[str],
                       on_done: Callable[[str, dict], None], log: Callable[[str], None] = print) -> None:
        train_variants(config, arrays, storage, variants, on_done, self.tag)  # the workers print, with self.tag
