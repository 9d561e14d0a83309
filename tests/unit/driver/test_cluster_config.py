"""Offline checks of the cluster configs: cluster.yaml through Ray's own validator, k8s/rayjob.yaml by content.

No cloud account is involved: `prepare_config` only merges the AWS provider defaults,
and `validate_config` checks the result against Ray's JSON schema.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYJOB_YAML = ROOT / "k8s" / "rayjob.yaml"
ENTRYPOINT = "jobs/stress_test.py"


def load_cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepare_and_validate(config: dict) -> dict:
    """What `ray up` does before it contacts the cloud: fill defaults, merge commands, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def project_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()


def parse_job_flags(arguments: list[str]) -> argparse.Namespace:
    """Parse the job's flags with the job's own flag table, then build (and so validate) its config."""
    from stress.cli import add_experiment_flags, config_from_args

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_experiment_flags(parser)
    parser.add_argument("--address")
    args = parser.parse_args(arguments)
    config_from_args(args)
    return args


# -- cluster.yaml --------------------------------------------------------------


def test_cluster_yaml_passes_ray_validator():
    prepared = prepare_and_validate(load_cluster_config())
    assert prepared["provider"]["type"] == "aws"
    # The merged command lists are what each node really runs.
    assert prepared["head_setup_commands"][: len(prepared["setup_commands"])] == prepared["setup_commands"]
    assert prepared["worker_setup_commands"][: len(prepared["setup_commands"])] == prepared["setup_commands"]


def test_validator_rejects_a_broken_cluster_yaml():
    # Proof that the check above can fail: an unknown key inside a node type is a schema error,
    # and a head_node_type that names no node type is refused.
    import jsonschema

    config = load_cluster_config()
    config["available_node_types"]["gpu_worker"]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError):
        prepare_and_validate(config)
    config = load_cluster_config()
    config["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        prepare_and_validate(config)


def test_cluster_yaml_head_does_no_work_and_gpu_workers_autoscale():
    config = load_cluster_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and not head["resources"].get("GPU")  # the driver's node: no tasks, no training
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers, "no worker node type"
    gpu_workers = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    assert gpu_workers, "no GPU worker node type"
    for worker in gpu_workers:
        assert worker["min_workers"] == 0
        # Two trainings run at once with one GPU each.
        assert worker["max_workers"] * worker["resources"]["GPU"] >= 2
        assert worker["max_workers"] <= config["max_workers"]


def test_cluster_yaml_docker_matches_installed_ray_and_has_large_shm():
    import ray

    docker = load_cluster_config()["docker"]
    image = docker["image"]
    assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), image
    shm = [opt for opt in docker["run_options"] if opt.startswith("--shm-size")]
    assert len(shm) == 1
    size = re.fullmatch(r"--shm-size=(\d+)g", shm[0])
    assert size and int(size.group(1)) >= 4, shm[0]


def test_cluster_yaml_installs_exactly_the_pinned_dependencies():
    commands = " ".join(load_cluster_config()["setup_commands"])
    pip_lines = [c for c in load_cluster_config()["setup_commands"] if "pip install" in c and "--no-deps" not in c]
    assert len(pip_lines) == 1
    # torchattacks alone goes in without its dependencies, as `make setup` installs it (see the Makefile)
    assert [c for c in load_cluster_config()["setup_commands"] if "--no-deps" in c] == [
        'pip install --no-cache-dir --no-deps "torchattacks==3.5.1"']
    installed = {requirement_name(a): a for a in shlex.split(pip_lines[0]) if not a.startswith("-")}
    installed.pop("pip", None)
    installed.pop("install", None)
    wanted = {requirement_name(r): r for r in project_dependencies()}
    assert installed == wanted, commands


def test_cluster_yaml_dashboard_stays_on_the_head_and_token_auth_is_on():
    config = load_cluster_config()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    # Every node starts Ray with token auth and reads the token copied by file_mounts.
    mounted = next(iter(config["file_mounts"]))
    assert mounted == "~/.ray-cluster-auth"
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = [c for c in commands if "ray start" in c]
        assert len(start) == 1
        assert "RAY_AUTH_MODE=token" in start[0]
        assert "RAY_AUTH_TOKEN_PATH=$HOME/.ray-cluster-auth/auth_token" in start[0]


# -- k8s/rayjob.yaml -------------------------------------------------------------


def load_rayjob() -> dict:
    return yaml.safe_load(RAYJOB_YAML.read_text())


def test_rayjob_runs_the_job_entrypoint_with_valid_flags():
    job = load_rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["python", ENTRYPOINT]
    args = parse_job_flags(words[2:])
    # Results must land on the shared volume that head and workers mount.
    assert args.out.startswith("/mnt/shared/")
    assert args.gpus_per_worker == 1


def test_parse_job_flags_rejects_a_misspelt_flag():
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parse_job_flags(["--gpu-per-worker", "1"])


def test_rayjob_cluster_has_idle_head_gpu_workers_shared_volume_and_token_auth():
    import ray

    cluster = load_rayjob()["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = cluster["workerGroupSpecs"]
    assert len(groups) == 1
    gpu = groups[0]
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert gpu["replicas"] >= 2  # both trainings at once
    for template in (head["template"], gpu["template"]):
        pod = template["spec"]
        claim = {v["name"]: v for v in pod["volumes"]}["shared"]["persistentVolumeClaim"]["claimName"]
        assert claim == "stress-shared"
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["shared"] == "/mnt/shared"
        assert pod["containers"][0]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")


def test_rayjob_runtime_env_pins_the_project_dependencies():
    runtime_env = yaml.safe_load(load_rayjob()["spec"]["runtimeEnvYAML"])
    pinned = {requirement_name(p): p for p in runtime_env["pip"]}
    assert "ray" not in pinned  # the image provides ray; a second install would clash
    for requirement in project_dependencies():
        name = requirement_name(requirement)
        if name != "ray":
            assert pinned.get(name) == requirement.replace(" ", ""), name
    assert runtime_env["working_dir"].endswith(".zip")
    assert runtime_env["env_vars"]["STRESS_DATA_DIR"].startswith("/mnt/shared/")



def torchattacks_folder(pod: dict) -> str | None:
    """The folder into which `pod`'s init containers install torchattacks without its dependencies, if its Ray
    container mounts the same volume there and has that folder on PYTHONPATH; else None."""
    from stress.driver.probe_stages import AUTOATTACK_INSTALL

    pin = AUTOATTACK_INSTALL.split()[-1]  # the version `make setup` and cluster.yaml install
    ray_container = pod["containers"][0]
    for init in pod.get("initContainers", []):
        words = init["command"]
        targets = [w.split("=", 1)[1] for w in words if w.startswith("--target=")]
        if words[:2] != ["pip", "install"] or "--no-deps" not in words or pin not in words or len(targets) != 1:
            continue
        folder = targets[0]
        volume = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}.get(folder)
        mounted = {m["mountPath"]: m["name"] for m in ray_container["volumeMounts"]}.get(folder)
        path = {e["name"]: e["value"] for e in ray_container.get("env", [])}.get("PYTHONPATH", "")
        if volume and mounted == volume and folder in path.split(":") and init["image"] == ray_container["image"]:
            return folder
    return None


def test_every_rayjob_pod_installs_torchattacks_without_its_dependencies_onto_its_pythonpath():
    """The attack stage's AutoAttack runs on the GPU workers and the driver checks for it on the head: both
    pod templates install torchattacks as `make setup` does (--no-deps: its requests pin clashes with Ray's)."""
    spec = load_rayjob()["spec"]
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        folder = torchattacks_folder(pod)
        assert folder is not None, pod
        assert {v["name"]: v for v in pod["volumes"]}[
            {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}[folder]].get("emptyDir") is not None
    # With its dependencies it would clash: not in the runtime env's pip list.
    assert "torchattacks" not in {requirement_name(r) for r in yaml.safe_load(spec["runtimeEnvYAML"])["pip"]}


def test_the_torchattacks_check_fails_on_a_pod_that_misses_a_part():
    pod = load_rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert torchattacks_folder(pod) is not None
    broken = copy.deepcopy(pod)
    broken["containers"][0]["env"] = []  # not on PYTHONPATH
    assert torchattacks_folder(broken) is None
    broken = copy.deepcopy(pod)
    broken["initContainers"][0]["command"].remove("--no-deps")
    assert torchattacks_folder(broken) is None
    broken = copy.deepcopy(pod)
    broken["containers"][0]["volumeMounts"] = broken["containers"][0]["volumeMounts"][:1]  # the folder not mounted
    assert torchattacks_folder(broken) is None

def test_cluster_yaml_marks_only_the_head_as_non_spot():
    from stress.constants import NON_SPOT_RESOURCE

    config = load_cluster_config()
    marked = {name for name, node in config["available_node_types"].items() if node["resources"].get(NON_SPOT_RESOURCE)}
    assert marked == {config["head_node_type"]}
    spot = {name for name, node in config["available_node_types"].items() if node["node_config"].get("InstanceMarketOptions")}
    assert spot and not spot & marked
