"""Starting or joining Ray: `connect`.

A local instance (no --address, no $RAY_ADDRESS) is started fresh, with its dashboard on a
free loopback port and the environment its processes need for clean logs and for Ray Train's
placement-group cleaner (LOCAL_ENV); a cluster address is checked to answer like a Ray head
before ray.init is allowed to wait on it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ray
import ray.train

from stress.errors import StressError

# Set for a local instance, before it starts: its raylet and every worker inherit them.
LOCAL_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # Train's patched print() on workers: progress lines are written directly
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # watches spot preemption; a local instance has none (and it logs an error line)
}


# Ray's default `local_fs_capacity_threshold`: above this share of its temp dir's disk in use, a
# raylet refuses to spill objects and logs an error line every 10 s for as long as it runs.
RAY_DISK_THRESHOLD = 0.95


def raised_disk_threshold(used: float, threshold: float) -> float | None:
    """The spill threshold a local instance gets when its disk is already at or over `threshold`.

    None while `used` (the share of the disk in use) is under it. Otherwise halfway between what
    is in use now and a full disk: the job can still spill into half of what is left, and Ray
    still refuses before the disk is full, but it no longer repeats its warning from the start.
    """
    if used < threshold:
        return None
    return min(used + (1.0 - used) / 2.0, 0.999)


def _disk_in_use(path: Path) -> tuple[float, float]:
    """(share in use, free GB) of the file system that holds `path`, as Ray counts it (1 - free/total)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return 1.0 - usage.free / usage.total, usage.free / 1e9


def _disk_environment(log: Callable[[str], None] | None) -> dict[str, str]:
    """RAY_local_fs_capacity_threshold for a local instance whose temp dir's disk is nearly full, and one line saying so."""
    temp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())
    try:
        threshold = float(os.environ.get("RAY_local_fs_capacity_threshold", RAY_DISK_THRESHOLD))
        used, free_gb = _disk_in_use(temp)
    except (OSError, ValueError):
        return {}
    raised = raised_disk_threshold(used, threshold)
    if raised is None:
        return {}
    if log is not None:
        log(f"disk: {temp} is {used:.1%} full ({free_gb:.1f} GB free); Ray's spill limit for this local instance "
            f"raised from {threshold:.0%} to {raised:.1%} (RAY_local_fs_capacity_threshold)")
    return {"RAY_local_fs_capacity_threshold": f"{raised:.4f}"}


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def _quiet_token_notice() -> None:
    """Drop Ray's notice that it turned token authentication on for the instance this job starts itself.

    The job chose that instance and keeps token auth on; nothing is left for the user to do.
    """
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("Token authentication is enabled for this Ray cluster"))


def free_port() -> int:
    """A TCP port on loopback that is free now (for the local instance's dashboard)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect(address: str | None = None, num_cpus: int | None = None, timeout_s: float = 60.0,
            log: Callable[[str], None] | None = None) -> dict:
    """Start Ray locally or join the cluster in $RAY_ADDRESS / `address`; return the cluster's resources.

    A local instance runs its dashboard on a free loopback port, and RAY_API_SERVER_ADDRESS
    points at it: Ray Train's placement-group cleaner, which frees a cancelled trainer's
    reservation, asks the dashboard's state API, and would otherwise find nothing (or, with
    two local instances on the machine, the wrong one).
    """
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        if target and target not in ("auto", "local"):
            _check_reachable(target, timeout_s=min(timeout_s, 10.0))
        kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
        if address:
            kwargs["address"] = address
        elif not os.environ.get("RAY_ADDRESS"):
            # "local" starts a fresh instance: plain ray.init() would join whatever cluster a
            # `ray start` on this machine last recorded (/tmp/ray/ray_current_cluster), or hang on a dead one.
            port = free_port()
            kwargs.update(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
            environment = {**LOCAL_ENV, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}", **_disk_environment(log)}
            if num_cpus:
                kwargs["num_cpus"] = num_cpus
        else:
            environment = {}
        previous = signal.getsignal(signal.SIGTERM)
        # The local instance's processes start inside ray.init and keep this environment; this
        # process gets its own back.
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        if environment:
            _quiet_token_notice()
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            target = address or os.environ.get("RAY_ADDRESS") or "a local instance"
            raise StressError(f"cannot connect to Ray at {target}: {str(exc).splitlines()[0]}") from None
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        # ray.init installs its own SIGTERM handler (exit without cleanup, then an abort in the
        # core worker); the job's handler turns SIGTERM into a clean KeyboardInterrupt instead.
        if threading.current_thread() is threading.main_thread() and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # A local instance reports its CPUs moments after it starts. A joined cluster may have none
    # until its autoscaler adds nodes (a head with CPU: 0): resources.wait_for_nodes asks for them.
    joined = (address or os.environ.get("RAY_ADDRESS") or "local") != "local"
    deadline = time.time() + (0.0 if joined else timeout_s)
    resources = ray.cluster_resources()
    while not resources.get("CPU") and time.time() < deadline:
        time.sleep(0.5)
        resources = ray.cluster_resources()
    return {k: float(v) for k, v in resources.items() if k in ("CPU", "GPU", "memory")}


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast with one line when a Ray address does not answer, or answers but is not Ray.

    ray.init would wait much longer. Ray's GCS and client server speak gRPC, i.e. HTTP/2: a
    gRPC server answers the HTTP/2 connection preface with a SETTINGS frame, which an open port
    of some other service (a web server, a database, a silent listener) does not.
    """
    import socket
    from urllib.parse import urlparse

    try:
        parsed = urlparse(address if "://" in address else f"ray://{address}")
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if host is None or port is None:
        raise StressError(f"Ray address {address!r} is not of the form HOST:PORT or ray://HOST:PORT")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.sendall(preface)
            header = connection.recv(9)
    except socket.timeout:
        raise StressError(f"{address} accepts connections but does not answer like a Ray head within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise StressError(f"Ray at {address} does not answer within {timeout_s:.0f} s ({exc.strerror or type(exc).__name__})") from None
    if len(header) < 4 or header[3] != 4:  # frame type 4 = SETTINGS
        raise StressError(f"{address} is not a Ray head (it does not speak gRPC); pass the head's GCS address, e.g. HOST:6379")
