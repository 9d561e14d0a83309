"""Where a SimpleCNN training step's CPU time goes, per group of operators, in fp32 and bf16 (run by hand).

    .venv/bin/python benchmarks/profile_train_step.py [--steps 20] [--rounds 3] [--out FILE.json]

Both precisions in channels_last, the layout `train_variant` uses on the CPU, batch 128, one
thread, the step `bench_precision.py` times (forward under `stress.precision.autocast`, loss in
fp32, Adam on fp32 weights). torch.profiler records each operator's self CPU time over `--steps`
steps; the operators are summed into groups (convolution forward and backward, max-pool, ReLU,
linear layers, the zero fills of gradient buffers, casts and copies, everything else: Adam's
element-wise updates, the loss). The rounds alternate the precisions and the median per group is
reported.

What it shows: the whole step's bf16 / fp32 speed-up is each group's speed-up weighted by that
group's share of the fp32 step (Amdahl). The last line gives the speed-up the convolutions would
need for the whole step to run 2x faster in bf16, with the other groups at their measured times.
"""

from __future__ import annotations

import argparse
import statistics

import common
import torch
from bench_precision import make_train
from torch.profiler import ProfilerActivity, profile

from stress.precision import cpu_bf16_flags

GROUPS = {  # aten operator -> group; operators not named here are "other"
    "aten::mkldnn_convolution": "convolution forward",
    "aten::convolution_backward": "convolution backward",
    "aten::max_pool2d_with_indices": "max-pool",
    "aten::max_pool2d_with_indices_backward": "max-pool",
    "aten::clamp_min": "ReLU",
    "aten::relu": "ReLU",
    "aten::threshold_backward": "ReLU",
    "aten::mm": "linear",
    "aten::addmm": "linear",
    "aten::fill_": "zero fills",
    "aten::zero_": "zero fills",
    "aten::copy_": "casts and copies",
    "aten::_to_copy": "casts and copies",
}
ORDER = ["convolution forward", "convolution backward", "max-pool", "ReLU", "linear", "zero fills", "casts and copies", "other"]


def group_times(events) -> dict[str, float]:
    """Self CPU seconds per group from a profiler's key averages."""
    totals = dict.fromkeys(ORDER, 0.0)
    for event in events:
        if not event.key.startswith("aten::"):
            continue  # record_function ranges (Optimizer.step) hold aten ops, counted under their own names
        totals[GROUPS.get(event.key, "other")] += event.self_cpu_time_total / 1e6
    return totals


def profile_steps(precision: str, steps: int) -> dict[str, float]:
    """Seconds per step per group, after `steps` untimed warm-up steps of the same model."""
    run, _ = make_train(precision, torch.channels_last, steps)
    run()  # untimed: fills the allocator's and oneDNN's primitive caches
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return {group: seconds / steps for group, seconds in group_times(prof.key_averages()).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="profiled steps per round [20]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating fp32 and bf16 [3]")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = common.machine_info()
    bf16_flags = cpu_bf16_flags()
    print(f"CPU: {machine['cpu_model']}; bf16 flags: {', '.join(bf16_flags) or 'none'}; torch {torch.__version__}; one thread")
    samples: dict[str, list[dict[str, float]]] = {"fp32": [], "bf16": []}
    for round_index in range(args.rounds):
        for precision in (("fp32", "bf16") if round_index % 2 == 0 else ("bf16", "fp32")):
            samples[precision].append(profile_steps(precision, args.steps))
    per_step = {p: {g: statistics.median(s[g] for s in samples[p]) for g in ORDER} for p in samples}
    fp32_total, bf16_total = (sum(per_step[p].values()) for p in ("fp32", "bf16"))
    rows = []
    for group in ORDER:
        fp32_ms, bf16_ms = per_step["fp32"][group] * 1e3, per_step["bf16"][group] * 1e3
        rows.append({"group": group, "fp32_ms": fp32_ms, "bf16_ms": bf16_ms, "share_fp32": fp32_ms / (fp32_total * 1e3),
                     "speedup": fp32_ms / bf16_ms if bf16_ms > 0 else float("nan")})
    rows.append({"group": "whole step", "fp32_ms": fp32_total * 1e3, "bf16_ms": bf16_total * 1e3, "share_fp32": 1.0,
                 "speedup": fp32_total / bf16_total})
    common.print_table(rows, [("group", "group", ""), ("fp32_ms", "fp32 ms/step", ".2f"), ("bf16_ms", "bf16 ms/step", ".2f"),
                              ("share_fp32", "share of fp32 step", ".2f"), ("speedup", "fp32 / bf16", ".2f")])
    conv = ("convolution forward", "convolution backward")
    conv_fp32 = sum(per_step["fp32"][g] for g in conv)
    conv_bf16 = sum(per_step["bf16"][g] for g in conv)
    rest_bf16 = bf16_total - conv_bf16
    # The convolutions' speed-up that a 2x step needs with the other groups at their measured bf16 times.
    needed = conv_fp32 / (fp32_total / 2 - rest_bf16) if fp32_total / 2 > rest_bf16 else float("inf")
    print(f"convolutions: {conv_fp32 / fp32_total:.0%} of the fp32 step, {conv_fp32 / conv_bf16:.2f}x faster in bf16; "
          f"a 2x step would need them {needed:.2f}x faster, the other groups as measured")
    if args.out:
        common.write_json(args.out, {"machine": machine, "bf16_flags": bf16_flags, "torch": torch.__version__, "steps": args.steps,
                                     "rounds": args.rounds, "rows": rows,
                                     "convolution_speedup": conv_fp32 / conv_bf16, "convolution_speedup_for_2x_step": needed})


if __name__ == "__main__":
    main()
