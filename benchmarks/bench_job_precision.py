"""The whole default job in fp32 and in auto, back to back on the same machine (run by hand).

    .venv/bin/python benchmarks/bench_job_precision.py --out benchmarks/results/job_precision.json
    .venv/bin/python benchmarks/bench_job_precision.py --job-args "--train-limit 5000 --epochs 1 --stress-limit 500"

Each precision runs `jobs/stress_test.py --precision P` as a subprocess into its own fresh run
folder, with the default settings unless --job-args adds flags. The runs go one after the other
(--order, fp32 first by default); --rounds 2 runs the pair again in the opposite order, so that a
drift in the background load does not favour one side. Reported per stage: the seconds from each
run folder's manifest.json (`stage_seconds`) and the ratio fp32 / auto (above 1 = auto faster),
the job's wall time around the subprocess, the precision each run resolved to, and the load average
before and after each run. A job that fails stops the benchmark with its exit code and log path.

On a CPU without bf16 units `auto` resolves to fp32; the ratio is then the cost of that fallback
(about 1 if nothing else differs).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repo on sys.path)


def run_job(precision: str, folder: pathlib.Path, data: str, job_args: list[str]) -> dict:
    """Run the job once into folder/<precision>_<n>; its stage seconds, wall time and resolved precision."""
    run_name = f"{precision}_{len(list(folder.glob(precision + '_*')))}"
    log = folder / f"{run_name}.log"
    command = [sys.executable, "-u", str(common.REPO / "jobs" / "stress_test.py"), "--data", data,
               "--out", str(folder), "--run-name", run_name, "--precision", precision, *job_args]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    load_before = common.load_average()
    print(f"[{time.strftime('%H:%M:%S')}] {precision}: {shlex.join(command)}  (log {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=common.REPO)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"error: the {precision} job exited with {code}; see {log}")
    manifest = json.loads((folder / run_name / "manifest.json").read_text())
    print(f"[{time.strftime('%H:%M:%S')}] {precision}: {wall:.0f} s", flush=True)
    return {"precision": precision, "run": str(folder / run_name), "wall_s": wall,
            "stage_seconds": manifest["stage_seconds"], "resolved": manifest["precision"],
            "load_before": load_before, "load_after": common.load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.DEFAULT_DATA))
    parser.add_argument("--order", default="fp32,auto", help="precisions in the order of the first round [fp32,auto]")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each later round reverses the order [1]")
    parser.add_argument("--job-args", default="", help="more flags for jobs/stress_test.py")
    parser.add_argument("--folder", default=None, help="parent of the run folders (default: a new /tmp/stress_bench_job_<time>)")
    parser.add_argument("--out", default="benchmarks/results/job_precision.json")
    args = parser.parse_args()

    order = [p.strip() for p in args.order.split(",") if p.strip()]
    if sorted(order) != ["auto", "fp32"]:
        parser.error("--order must name fp32 and auto once each")
    folder = pathlib.Path(args.folder or f"/tmp/stress_bench_job_{time.strftime('%Y%m%d_%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"machine": common.machine_info(), "job_args": args.job_args, "data": args.data, "runs": []}
    for round_index in range(args.rounds):
        for precision in order if round_index % 2 == 0 else order[::-1]:
            payload["runs"].append(run_job(precision, folder, args.data, shlex.split(args.job_args)))
            common.write_json(args.out, payload)  # partial results survive a later failure

    stages = list(payload["runs"][0]["stage_seconds"])
    rows = []
    for stage in [*stages, "wall"]:
        seconds = {p: [r["wall_s"] if stage == "wall" else r["stage_seconds"].get(stage, 0.0)
                       for r in payload["runs"] if r["precision"] == p] for p in order}
        fp32, auto = common.median(seconds["fp32"]), common.median(seconds["auto"])
        rows.append({"stage": stage, "fp32_s": f"{fp32:.1f}", "auto_s": f"{auto:.1f}",
                     "ratio": f"{fp32 / auto:.2f}" if auto > 0 else "-"})
    payload["table"] = rows
    resolved = sorted({json.dumps(r["resolved"]["resolved"]) for r in payload["runs"] if r["precision"] == "auto"})
    print(f"CPU: {payload['machine']['cpu_model']}; auto resolved to {', '.join(resolved)}")
    common.print_table(rows, [("stage", "stage", "<"), ("fp32_s", "fp32 s", ">"), ("auto_s", "auto s", ">"),
                              ("ratio", "fp32 / auto", ">")])
    common.write_json(args.out, payload)


if __name__ == "__main__":
    main()
