"""Whether the resources a run asks for can be granted, before anything waits for them.

A local Ray instance never grows: a request larger than any of its nodes is refused at once
(`check_requests_fit`). A joined cluster may autoscale: `wait_for_nodes` asks the autoscaler
for what the run needs and waits up to resources.node_wait_s for nodes that can hold it.
"""

from __future__ import annotations

import math
import os
import time

import ray
import ray.train

from stress.config import ResourceConfig
from stress.constants import DEFAULT_TASK_GPUS, DEFAULT_WORKER_GPUS
from stress.errors import StressError


def node_types_maximum(config: dict) -> dict[str, float]:
    """The most of each resource a cluster launcher config's node types can bring.

    The head counts once; each worker type up to its own max_workers; and where the config sets a
    global max_workers (the launcher's cap on worker nodes), per resource only that many of the
    worker nodes that bring the most of it.
    """
    types = config.get("available_node_types") or {}
    head_type = config.get("head_node_type")
    head = (types.get(head_type) or {}).get("resources") or {}
    workers = [spec.get("resources") or {} for name, spec in types.items() if name != head_type
               for _ in range(int(spec.get("max_workers", 0)))]  # every worker node the types allow
    cap = config.get("max_workers")
    total = {}
    for key in {k for node in [head, *workers] for k in node}:
        amounts = sorted((float(node.get(key, 0.0)) for node in workers), reverse=True)
        total[key] = float(head.get(key, 0.0)) + sum(amounts if cap is None else amounts[: int(cap)])
    return {k: v for k, v in total.items() if v > 0}


def _autoscaling_config_path() -> str | None:
    """The config file of the autoscaler of the cluster this process is connected to, where it runs on this machine.

    Ray's cluster launcher starts the autoscaler (monitor.py) on the head with
    --autoscaling-config=~/ray_bootstrap_config.yaml; a submitted job's driver runs on the head.
    The monitor is matched by the GCS port it was given, so another cluster on the machine never counts.
    """
    try:
        port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    except Exception:  # noqa: BLE001 - not connected
        return None
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in args):
            continue
        if not any(a.startswith("--gcs-address=") and a.rsplit(":", 1)[-1] == port for a in args):
            continue
        for a in args:
            if a.startswith("--autoscaling-config="):
                return os.path.expanduser(a.split("=", 1)[1])
    return None


def autoscaler_maximum() -> dict[str, float]:
    """The most of each resource the autoscaler's node types can bring ({} without an autoscaler).

    First the cluster config published in the GCS (what Ray Train itself reads to refuse
    impossible worker groups; KubeRay and hosted Ray publish it). Ray's own cluster launcher
    publishes none, so then the launcher config its autoscaler runs with, read on the head where
    a submitted job's driver runs. A fixed cluster or a local instance has neither.
    """
    try:
        from ray._private.state import state

        published = {k: float(v) for k, v in (state.get_max_resources_from_cluster_config() or {}).items()}
    except Exception:  # noqa: BLE001 - a private API: without it, the launcher config or only the nodes alive now count
        published = {}
    if published:
        return published
    path = _autoscaling_config_path()
    if path is None:
        return {}
    try:
        import yaml

        with open(path) as handle:
            return node_types_maximum(yaml.safe_load(handle) or {})
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return {}


def cluster_resources() -> dict[str, float]:
    """Per resource, the larger of what is alive now and what the autoscaler can add."""
    alive = {k: float(v) for k, v in ray.cluster_resources().items()}
    maximum = autoscaler_maximum()
    return {k: max(alive.get(k, 0.0), maximum.get(k, 0.0)) for k in set(alive) | set(maximum)}


def cluster_has_gpus() -> bool:
    """GPUs alive now, or GPU node types the autoscaler can start (a GPU pool that scales from zero)."""
    return cluster_resources().get("GPU", 0) > 0


def resolve_gpus(requested: float, default_when_present: float) -> float:
    """-1 means: `default_when_present` if the cluster has GPUs, else 0."""
    if requested != -1:
        return requested
    return default_when_present if cluster_has_gpus() else 0.0


def worker_gpus(resources: ResourceConfig, totals: dict[str, float] | None = None) -> float:
    """GPUs per training worker: resources.gpus_per_worker, or for -1 a whole GPU each where the
    cluster has one for every worker of both trainers, else 0 without GPUs.

    Where there are fewer GPUs (one GPU on a workstation) and each trainer is one worker, the
    two trainers share them in equal fractions (1/k GPU each), so they still train at once
    instead of one waiting for the other. Workers of one multi-worker trainer never share a GPU
    (NCCL refuses two ranks on one device): those keep a whole GPU each and take turns.
    `totals` is the cluster's resources (default: alive now plus what the autoscaler can add).
    """
    if resources.gpus_per_worker != -1:
        return resources.gpus_per_worker
    total = (cluster_resources() if totals is None else totals).get("GPU", 0.0)
    workers = 2 * resources.workers_per_trainer
    if total <= 0:
        return 0.0
    if total >= workers or resources.workers_per_trainer > 1:
        return DEFAULT_WORKER_GPUS
    return 1.0 / math.ceil(workers / total)


def check_requests_fit(resources: ResourceConfig, cluster: dict[str, float]) -> None:
    """Refuse resource requests this cluster can never grant, before anything waits for them.

    Ray would otherwise queue the trainers or tasks forever without a word. `cluster` is the
    cluster's total resources (connect()'s answer); on an autoscaling cluster nodes may still
    come, so call this only for a fixed one (a local instance).
    """
    gpus_per_worker = worker_gpus(resources, cluster)
    task_gpus = resolve_gpus(resources.task_gpus, DEFAULT_TASK_GPUS)
    needs = {
        "training worker": {"CPU": resources.cpus_per_worker, "GPU": gpus_per_worker},
        "fan-out task": {"CPU": resources.task_cpus, "GPU": task_gpus},
    }
    for what, request in needs.items():
        for kind, amount in request.items():
            have = cluster.get(kind, 0.0)
            if amount > have:
                flag = {"training worker": {"CPU": "--cpus-per-worker", "GPU": "--gpus-per-worker"},
                        "fan-out task": {"CPU": "--task-cpus", "GPU": "--task-gpus"}}[what][kind]
                raise StressError(f"each {what} asks for {amount:g} {kind} but this Ray instance has {have:g}; lower {flag}")
    trainer_cpus = resources.workers_per_trainer * resources.cpus_per_worker
    if trainer_cpus > cluster.get("CPU", 0.0):
        raise StressError(f"one trainer needs {trainer_cpus:g} CPUs ({resources.workers_per_trainer} workers x "
                          f"{resources.cpus_per_worker:g}) but this Ray instance has {cluster.get('CPU', 0.0):g}")


def _requests(resources: ResourceConfig) -> dict[str, dict[str, float]]:
    gpus_per_worker = worker_gpus(resources)
    task_gpus = resolve_gpus(resources.task_gpus, DEFAULT_TASK_GPUS)
    return {
        "training worker": {k: v for k, v in {"CPU": resources.cpus_per_worker, "GPU": gpus_per_worker}.items() if v > 0},
        "fan-out task": {k: v for k, v in {"CPU": resources.task_cpus, "GPU": task_gpus}.items() if v > 0},
    }


def unplaceable(resources: ResourceConfig, nodes: list[dict[str, float]]) -> list[str]:
    """What no node of `nodes` (each node's total resources) can hold: one phrase per request."""
    def copies(node: dict[str, float], bundle: dict[str, float]) -> int:
        return int(min((node.get(k, 0.0) // v for k, v in bundle.items()), default=0)) if bundle else 1 << 30

    missing = []
    for what, bundle in _requests(resources).items():
        if not any(copies(node, bundle) >= 1 for node in nodes):
            missing.append(f"a {what} ({', '.join(f'{v:g} {k}' for k, v in bundle.items())})")
    worker = _requests(resources)["training worker"]
    if not missing and sum(copies(node, worker) for node in nodes) < resources.workers_per_trainer:
        missing.append(f"{resources.workers_per_trainer} training workers of one trainer")
    return missing


def _alive_nodes() -> list[dict[str, float]]:
    return [{k: float(v) for k, v in node["Resources"].items()} for node in ray.nodes() if node.get("Alive")]


def wait_for_nodes(resources: ResourceConfig, timeout_s: float, log=print, nodes=_alive_nodes, sleep=time.sleep) -> None:
    """On a joined cluster: wait up to `timeout_s` for nodes that can hold the requests, then refuse.

    An autoscaling cluster adds nodes when asked (`ray.autoscaler.sdk.request_resources`); a
    fixed one never does, and the job ends here with a one-line error instead of queueing
    forever. The request is withdrawn once the nodes are there (Ray Train asks for itself).
    """
    missing = unplaceable(resources, nodes())
    if not missing:
        return
    bundles = [_requests(resources)["training worker"]] * (2 * resources.workers_per_trainer) + [_requests(resources)["fan-out task"]]
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
    except Exception:  # noqa: BLE001 - no autoscaler: the wait below still ends with the error
        request_resources = None
    log(f"waiting up to {timeout_s:g} s for nodes that can hold {'; '.join(missing)} "
        "(an autoscaling cluster adds them; a fixed one never will; --node-wait sets the limit)")
    deadline = time.monotonic() + timeout_s
    try:
        while missing and time.monotonic() < deadline:
            sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            missing = unplaceable(resources, nodes())
    finally:
        if request_resources is not None:
            request_resources(bundles=[])
    if missing:
        raise StressError(f"no node of this cluster can hold {'; '.join(missing)} after {timeout_s:g} s; "
                          "lower the request (--gpus-per-worker, --cpus-per-worker, --task-gpus, --task-cpus) or add nodes")
    log("nodes are there: starting")


def check_resources(resources: ResourceConfig, totals: dict[str, float], address: str | None, log=print) -> None:
    """Before anything waits on Ray: a local instance never grows, a joined cluster may (see wait_for_nodes)."""
    if address or os.environ.get("RAY_ADDRESS"):
        wait_for_nodes(resources, resources.node_wait_s, log)
    else:
        check_requests_fit(resources, totals)


def available_slots(task_cpus: float, task_gpus: float) -> int:
    """How many fan-out tasks the cluster can run at once, counting nodes the autoscaler can add.

    Sizing the shards to that gives the autoscaler the demand to grow; sized to the nodes alive at
    the start, an autoscaling cluster would never see more than one node's worth of tasks.
    """
    resources = cluster_resources()
    slots = resources.get("CPU", 1) / task_cpus if task_cpus > 0 else resources.get("CPU", 1)
    if task_gpus > 0:
        slots = min(slots, resources.get("GPU", 0) / task_gpus)
    return max(1, int(slots))


def default_concurrent_trials(resources: ResourceConfig, totals: dict[str, float] | None = None) -> int:
    """Trials that fit at once: each needs both trainers' workers, and the scarcest resource decides.

    `totals` is the cluster's resources (default: what is alive now). With GPU trainers, 4
    single-GPU nodes of 8 CPUs hold 2 trials (4 GPUs / 2 per trial), not the 16 the CPUs would.
    """
    totals = cluster_resources() if totals is None else totals
    workers = 2 * resources.workers_per_trainer
    need = {"CPU": workers * resources.cpus_per_worker,
            "GPU": workers * worker_gpus(resources, totals)}
    fits = [totals.get(kind, 0.0) // amount for kind, amount in need.items() if amount > 0]
    return max(1, int(min(fits))) if fits else 1
