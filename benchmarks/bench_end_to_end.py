"""End-to-end run of jobs/stress_test.py: time per stage, Ray's share, peak memory per process (run by hand).

    .venv/bin/python benchmarks/bench_end_to_end.py --out benchmarks/results/end_to_end.json
    .venv/bin/python benchmarks/bench_end_to_end.py --quick

The job runs as a subprocess on a small real-data config (default: --train-limit 10000
--epochs 1 --stress-limit 1000, all corruptions) into a fresh run folder. Reported:
- wall time per stage from the run folder's manifest.json `stage_seconds`, as shares of the
  job's wall time (the reference measured in the same run);
- Ray's share: `ray_start` plus the gap between the job's wall time and the sum of the
  stages (interpreter and library start-up, Ray shutdown), and, inside `train`, the time
  around the training loops (Ray Train start-up, checkpointing: train stage - the slower
  variant's loop + validation time from history.json);
- peak resident memory (VmHWM) of the driver and of every process of the job's own Ray
  instance. Those are found as descendants of the subprocess (the driver starts gcs_server
  and the raylet, the raylet starts the workers), never by a name match, and they are
  sampled from /proc every `--interval` s. Each process's largest RssAnon (private memory)
  and RssShmem (pages of shared memory, i.e. object-store objects read zero-copy) and, from
  smaps_rollup, Pss (shared pages split among their users) are kept too.

Dataset check: the splits are `ray.put` once by the driver; a worker that reads them
zero-copy shows them under RssShmem (shared, counted once in physical memory: the Pss sum
over processes shows that), a worker that holds its own copy shows them under RssAnon.
The report prints both per worker next to the dataset's size.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repo on sys.path)

KIB = 1024
GIB = 1024**3
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
ROLLUP_FIELDS = ("Pss", "Pss_Anon", "Pss_Shmem")


def read_kib_fields(path: str, fields: tuple[str, ...]) -> dict[str, int]:
    """Lines 'Name:   123 kB' of a /proc file -> {name: bytes} for `fields`."""
    values = {}
    try:
        with open(path) as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in fields:
                    values[name] = int(rest.split()[0]) * KIB
    except (OSError, ValueError, IndexError):
        pass
    return values


def parent_map() -> dict[int, int]:
    """pid -> parent pid for every process we can read."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    text = handle.read()
                parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])  # field 4, after "(comm) state"
            except (OSError, ValueError):
                pass
    return parents


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class MemorySampler(threading.Thread):
    """Samples /proc for the job's process tree until stopped; keeps each process's maxima and titles."""

    def __init__(self, root: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.processes: dict[int, dict] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        self.samples += 1
        for pid in descendants(self.root, parent_map()):
            values = read_kib_fields(f"/proc/{pid}/status", STATUS_FIELDS)
            if not values:
                continue
            values.update(read_kib_fields(f"/proc/{pid}/smaps_rollup", ROLLUP_FIELDS))
            record = self.processes.setdefault(pid, {"pid": pid, "titles": [], "first_seen": time.time()})
            title = command_line(pid)
            if title and title not in record["titles"]:
                record["titles"].append(title[:300])
            record["last_seen"] = time.time()
            for key, value in values.items():
                record[key] = max(record.get(key, 0), value)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def classify(pid: int, root: int, titles: list[str]) -> str:
    """A short role for a process of the job from its titles (set by Ray as ray::<task or actor>)."""
    if pid == root:
        return "driver"
    ray_titles = [t.split()[0] for t in titles if t.startswith("ray::")]
    if ray_titles:
        names = [t for t in dict.fromkeys(ray_titles) if t != "ray::IDLE"]
        return "worker " + ",".join(n[5:] for n in names) if names else "worker (idle only)"
    for name in ("raylet", "gcs_server", "log_monitor", "dashboard", "runtime_env", "monitor.py"):
        if any(name in t for t in titles):
            return name
    return os.path.basename(titles[0].split()[0]) if titles and titles[0] else "?"


# Lines of the job's log that mark the steps inside the stages, first occurrence (substring match).
TIMELINE_MARKERS = {
    "prepare done (data: line)": "data: {",
    "training submitted": "in parallel on Ray Train",
    "first TrainController asks for resources": "Requesting resources",
    "first training worker group started": "Started training worker group",
    "first epoch finished": "epoch 1/",
    "both trainings finished": "[augmented] training finished",
    "evaluate submitted": "evaluate: ",
    "stress submitted": "stress: ",
    "figures written": "figures: ",
    "run folder printed": "run folder: ",
}


def timeline(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds since the job started at which each marker first appeared in its output."""
    found = {}
    for name, marker in TIMELINE_MARKERS.items():
        hit = next((t for t, line in lines if marker in line), None)
        if hit is not None:
            found[name] = hit
    if "both trainings finished" not in found:  # the variants may finish in either order
        finished = [t for t, line in lines if "training finished" in line]
        if finished:
            found["both trainings finished"] = max(finished)
    return dict(sorted(found.items(), key=lambda item: item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.DEFAULT_DATA))
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--stress-limit", type=int, default=1000)
    parser.add_argument("--job-args", default="", help="more flags for jobs/stress_test.py, e.g. '--corruptions gaussian_noise,contrast'")
    parser.add_argument("--folder", default=None, help="parent folder of the run folder (default: a new /tmp/stress_bench_e2e_<time>)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between /proc samples (each costs ~0.1 s of CPU on a busy machine)")
    parser.add_argument("--quick", action="store_true",
                        help="a much smaller job: 3000 train images (1000 val), 2000 test, 2 corruptions at severity 3 on 500 images")
    parser.add_argument("--out", default="benchmarks/results/end_to_end.json")
    args = parser.parse_args()

    folder = pathlib.Path(args.folder or f"/tmp/stress_bench_e2e_{time.strftime('%Y%m%d_%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    job = [sys.executable, str(common.REPO / "jobs" / "stress_test.py"), "--data", args.data, "--out", str(folder),
           "--run-name", "bench", "--epochs", str(args.epochs)]
    if args.quick:
        job += ["--train-limit", "3000", "--val-size", "1000", "--test-limit", "2000", "--stress-limit", "500",
                "--corruptions", "gaussian_noise,contrast", "--severities", "3", "--faithfulness-images", "100"]
    else:
        job += ["--train-limit", str(args.train_limit), "--stress-limit", str(args.stress_limit)]
    job += args.job_args.split()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if pathlib.Path("/tmp/ray/ray_current_cluster").exists():
        # A `ray start` cluster on this machine: plain ray.init() would join it. Start our own instead.
        job += ["--address", "local"]
    info = common.machine_info()
    print(f"load {info['load_average']} on {info['nproc']} CPUs; running:\n  {' '.join(job)}")
    log_path = folder / "job.log"
    lines: list[tuple[float, str]] = []  # (seconds since start, line) as the job prints them
    started = time.perf_counter()
    process = subprocess.Popen([job[0], "-u", *job[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               cwd=common.REPO, text=True, bufsize=1)
    sampler = MemorySampler(process.pid, args.interval)
    sampler.start()
    with open(log_path, "w") as log:
        for line in process.stdout:  # unbuffered child: each line arrives when printed
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
            log.write(f"{lines[-1][0]:8.1f}s  {line}")
            log.flush()
    code = process.wait()
    wall = time.perf_counter() - started
    sampler.stop()
    if code != 0:
        print(log_path.read_text()[-3000:])
        sys.exit(f"job failed with exit code {code}; log: {log_path}")
    run = folder / "bench"
    manifest = common.json.loads((run / "manifest.json").read_text())
    stages = manifest["stage_seconds"]
    split = manifest["dataset"]
    histories = {v: common.json.loads((run / "variants" / v / "history.json").read_text()) for v in ("baseline", "augmented")}

    # -- time --------------------------------------------------------------------------------
    unaccounted = wall - sum(stages.values())
    loops = {v: sum(e["seconds"] for e in h["epochs"]) for v, h in histories.items()}
    # The first line ("data: ...") is printed at the end of `prepare`, after Ray started; the last
    # ("run folder: ...") just before the interpreter exits and Ray shuts down.
    first = next((t for t, line in lines if line.startswith("data:")), None)
    last = next((t for t, line in reversed(lines) if line.startswith("run folder:")), None)
    startup = first - stages.get("prepare", 0.0) - stages.get("ray_start", 0.0) if first is not None else None
    teardown = wall - last if last is not None else None
    rows = [{"part": name, "seconds": seconds, "share": seconds / wall} for name, seconds in stages.items()]
    rows.append({"part": "outside stages", "seconds": unaccounted, "share": unaccounted / wall})
    if startup is not None and teardown is not None:
        rows.append({"part": "  of which: start-up (interpreter, imports)", "seconds": startup, "share": startup / wall})
        rows.append({"part": "  of which: exit (Ray shutdown)", "seconds": teardown, "share": teardown / wall})
        rest = unaccounted - startup - teardown
        rows.append({"part": "  of which: summary, manifest", "seconds": rest, "share": rest / wall})
    rows.append({"part": "job wall", "seconds": wall, "share": 1.0})
    ray_share = (stages.get("ray_start", 0.0) + unaccounted) / wall  # the brief's definition: an upper bound
    ray_share_strict = (stages.get("ray_start", 0.0) + (teardown or 0.0)) / wall
    train_around = stages.get("train", 0.0) - max(loops.values()) if "train" in stages else None
    print()
    common.print_table(rows, [("part", "stage", ""), ("seconds", "seconds", ".1f"), ("share", "share of wall", ".3f")])
    print(f"Ray start-up and scheduling share (ray_start + outside stages): {ray_share:.3f}; "
          f"ray_start + Ray shutdown at exit alone: {ray_share_strict:.3f}")
    if train_around is not None:
        print(f"train stage {stages['train']:.1f}s; training loops (history) {', '.join(f'{v} {s:.1f}s' for v, s in loops.items())}: "
              f"{train_around:.1f}s ({train_around / wall:.3f} of wall) around the slower loop "
              "(Ray Train start-up, per-epoch validation, checkpoints, shutdown)")

    steps = timeline(lines)
    print("\ntimeline of the job's output (s since start): " + "; ".join(f"{k} {v:.0f}" for k, v in steps.items()))

    # -- memory ------------------------------------------------------------------------------
    dataset_bytes = 3072 * (split["train"] + split["val"] + split["test"]) + 8 * (split["train"] + split["val"] + split["test"])
    memory = []
    for pid, record in sorted(sampler.processes.items()):
        record["role"] = classify(pid, process.pid, record["titles"])
        memory.append(record)
    workers = [r for r in memory if r["role"].startswith("worker")]
    driver = next((r for r in memory if r["role"] == "driver"), {})
    mem_rows = [
        {"role": r["role"][:60], "pid": r["pid"], "peak_gib": r.get("VmHWM", 0) / GIB, "anon_mib": r.get("RssAnon", 0) / 2**20,
         "shmem_mib": r.get("RssShmem", 0) / 2**20, "pss_mib": r.get("Pss", 0) / 2**20}
        for r in memory if r.get("VmHWM", 0) > 50 * 2**20
    ]
    print()
    common.print_table(mem_rows, [("role", "process", ""), ("pid", "pid", "d"), ("peak_gib", "VmHWM GiB", ".2f"),
                                  ("anon_mib", "max RssAnon MiB", ".0f"), ("shmem_mib", "max RssShmem MiB", ".0f"),
                                  ("pss_mib", "max Pss MiB", ".0f")])
    driver_peak = driver.get("VmHWM", 0)
    print(f"driver peak {driver_peak / GIB:.2f} GiB (target < 2 GiB: {'met' if driver_peak < 2 * GIB else 'MISSED'}); "
          f"{len(workers)} Ray worker processes, largest peak {max((w.get('VmHWM', 0) for w in workers), default=0) / GIB:.2f} GiB; "
          f"sum of all peaks {sum(r.get('VmHWM', 0) for r in memory) / GIB:.2f} GiB, sum of max Pss {sum(r.get('Pss', 0) for r in memory) / GIB:.2f} GiB; "
          f"{sampler.samples} samples")
    print(f"dataset as shipped (train {split['train']} + val {split['val']} + test {split['test']} images): {dataset_bytes / 2**20:.0f} MiB")

    common.write_json(args.out, {
        "benchmark": "end_to_end", "machine": info, "command": job, "run_folder": str(run), "exit_code": code,
        "wall_s": wall, "stage_seconds": stages, "outside_stages_s": unaccounted, "ray_share": ray_share,
        "ray_share_strict": ray_share_strict, "startup_s": startup, "teardown_s": teardown, "timeline": steps, "job_lines": lines,
        "training_loop_seconds": loops, "train_around_loops_s": train_around, "dataset": split, "dataset_bytes": dataset_bytes,
        "driver_peak_bytes": driver_peak, "driver_target_met": driver_peak < 2 * GIB, "samples": sampler.samples,
        "interval_s": args.interval, "processes": memory,
    })


if __name__ == "__main__":
    main()
