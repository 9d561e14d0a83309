"""torch.compile for the evaluation and stress passes: compile time against time saved (run by hand).

    .venv/bin/python benchmarks/bench_compile.py --out benchmarks/results/compile.json

SimpleCNN in eval mode, batch 500 (the stress stage's batch), channels_last, one thread (a
fan-out task gets one CPU), for each precision:
- compile seconds: the first call of `torch.compile(model)` minus one steady-state call,
  measured in a fresh subprocess with an empty inductor cache, as on a fresh node (a Ray
  worker process compiles once; a second model instance in the same process reuses the
  compiled graph, which is measured too);
- steady-state seconds per batch, eager against compiled, interleaved rounds (the reference
  is eager, measured in the same run), and the top-1 agreement of the two on random inputs;
- the balance over a default run: the stress stage's forward batches (10,000 test images x
  (17 corruptions x 5 severities + the shifts) x 2 models / 500) times the time saved per
  batch, minus the compile time once per worker process (--workers, default 2 on this
  machine, compiling in parallel, so the wall cost is one compile).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common

CHILD = r"""
import json, sys, time, torch
from stress.config import ModelConfig
from stress.models import create_model
from stress.precision import autocast
torch.set_num_threads(1)
precision, rounds, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
eager = create_model(ModelConfig()).eval().to(memory_format=torch.channels_last)
x = torch.randn(500, 3, 32, 32).contiguous(memory_format=torch.channels_last)
compiled = torch.compile(eager)
def call(model):
    with torch.no_grad(), autocast(precision, "cpu"):
        return model(x).float()
t = time.perf_counter(); call(compiled); first = time.perf_counter() - t
t = time.perf_counter(); call(compiled); steady_one = time.perf_counter() - t
other = torch.compile(create_model(ModelConfig()).eval().to(memory_format=torch.channels_last))
t = time.perf_counter(); call(other); second_instance = time.perf_counter() - t
call(eager)
samples = {"eager": [], "compiled": []}
for r in range(rounds):
    for name in (["eager", "compiled"] if r % 2 == 0 else ["compiled", "eager"]):
        model = eager if name == "eager" else compiled
        t = time.perf_counter()
        for _ in range(batches):
            call(model)
        samples[name].append((time.perf_counter() - t) / batches)
agreement = float((call(eager).argmax(1) == call(compiled).argmax(1)).float().mean())
print(json.dumps({"first_call": first, "steady_call": steady_one, "second_instance_first_call": second_instance,
                  "samples": samples, "agreement": agreement}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10, help="batches per timed round")
    parser.add_argument("--workers", type=int, default=2, help="fan-out worker processes of a default run here")
    parser.add_argument("--out")
    args = parser.parse_args()
    from stress.constants import CORRUPTIONS
    from stress.perturb.shifts import list_shifts

    cells = len(CORRUPTIONS) * 5 + len(list_shifts())
    batches_per_run = 10_000 * cells * 2 // 500
    out = {"machine": common.machine_info(), "batches_per_default_run": batches_per_run, "workers": args.workers, "results": {}}
    rows = []
    for precision in args.precision.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:  # a cold inductor cache, as on a fresh node
            child = subprocess.run([sys.executable, "-c", CHILD, precision, str(args.rounds), str(args.batches)],
                                   capture_output=True, text=True, check=True, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
        r = json.loads(child.stdout.strip().splitlines()[-1])
        eager = common.median(r["samples"]["eager"])
        compiled = common.median(r["samples"]["compiled"])
        speedup = common.summarise_ratio([e / c for e, c in zip(r["samples"]["eager"], r["samples"]["compiled"])])
        compile_s = r["first_call"] - r["steady_call"]
        saved = batches_per_run * (eager - compiled) / args.workers  # wall seconds, the batches spread over the workers
        balance = saved - compile_s  # the workers compile in parallel: one compile of wall time
        r.update(eager_s_per_batch=eager, compiled_s_per_batch=compiled, speedup=speedup, compile_s=compile_s,
                 saved_wall_s_per_default_run=saved, balance_wall_s=balance, seconds=time.perf_counter() - started)
        out["results"][precision] = r
        rows.append({"precision": precision, "compile": compile_s, "eager": eager * 1000, "compiled": compiled * 1000,
                     "speedup": speedup["median"], "saved": saved, "balance": balance, "agree": r["agreement"]})
    print(f"CPU {out['machine'].get('cpu_model')}; {batches_per_run} forward batches of 500 in a default run's stress stage")
    common.print_table(rows, [("precision", "precision", ""), ("compile", "compile s", ".1f"), ("eager", "eager ms/batch", ".1f"),
                              ("compiled", "compiled ms/batch", ".1f"), ("speedup", "speed-up", ".2f"),
                              ("saved", "saved s/run", ".0f"), ("balance", "balance s/run", ".0f"), ("agree", "top-1 agreement", ".4f")])
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
