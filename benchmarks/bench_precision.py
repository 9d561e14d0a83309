"""Training step and inference of SimpleCNN per precision and memory layout (run by hand).

    .venv/bin/python benchmarks/bench_precision.py --out benchmarks/results/precision.json
    .venv/bin/python benchmarks/bench_precision.py --quick

Subjects, on random inputs of CIFAR-10's shape, one thread, CPU time per image (with `--device cuda`:
wall time with torch.cuda.synchronize, since the work runs on the GPU):
- train_<precision>_<layout>: Adam steps at batch 128 (forward under `stress.precision.autocast`,
  loss in fp32, fp32 weights), as `stress.train.train_variant` does them;
- infer_<precision>_<layout>: `stress.evaluate.predict.predict_logits` at batch 500, the batch the
  evaluation and stress tasks use.
Precision fp32 or bf16, layout NCHW (contiguous) or channels_last. On CUDA the training step is
also measured with Adam's fused kernel (`_fused`), which `train_variant` uses there, and captured
once in a CUDA graph and replayed (`_graph`), which it does not. `--compiled-train` adds the
channels_last step with forward and loss under `torch.compile` (`_compiled`; the compile happens
in the untimed warm-up call), which `train_variant` does not do either. Every figure is a
throughput ratio to fp32 NCHW measured in the same run (interleaved rounds, median).
The CPU model and its bf16 flags are printed and stored with the figures: on a CPU without
bf16 units bf16 is emulated and slower, which is why `--precision auto` falls back to fp32 there.
"""

from __future__ import annotations

import argparse

import common
import torch
import torch.nn.functional as F

from stress.config import ModelConfig
from stress.augment import CIFAR10_STATS
from stress.evaluate.predict import predict_logits
from stress.models import create_model
from stress.precision import autocast, cpu_bf16_flags, cpu_has_fast_bf16

TRAIN_BATCH, INFER_BATCH = 128, 500
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _training_setup(layout: torch.memory_format, device: str, **adam):
    """SimpleCNN, its Adam optimiser (lr 1e-3, `adam` options) and one random batch, seeded alike for every subject."""
    torch.manual_seed(0)
    model = create_model(ModelConfig()).to(device, memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **adam)
    inputs = torch.randn(TRAIN_BATCH, 3, 32, 32, device=device).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (TRAIN_BATCH,), device=device)
    return model, optimizer, inputs, labels


def make_train(precision: str, layout: torch.memory_format, steps: int, device: str = "cpu", fused: bool = False,
               compiled: bool = False):
    model, optimizer, inputs, labels = _training_setup(layout, device, fused=fused or None)

    def forward_loss(inputs, labels):
        with autocast(precision, device):
            logits = model(inputs)
        return F.cross_entropy(logits.float(), labels)

    forward = torch.compile(forward_loss) if compiled else forward_loss  # compiled: forward and loss, backward by AOTAutograd

    def run() -> None:
        for _ in range(steps):
            loss = forward(inputs, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)

    return run, steps * TRAIN_BATCH


def make_train_graph(precision: str, layout: torch.memory_format, steps: int):
    """The same Adam step captured once in a CUDA graph and replayed (CUDA only): what launching no
    kernels from Python would give. Not what train_variant does; measured to see whether it would pay."""
    model, optimizer, inputs, labels = _training_setup(layout, "cuda", capturable=True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graph requires
        for _ in range(3):
            optimizer.zero_grad(set_to_none=False)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        step()

    def run() -> None:
        for _ in range(steps):
            graph.replay()
        synchronize("cuda")

    # The graph reads and writes these tensors' memory but does not hold them: without a reference they
    # are freed on return, their memory is reused, and the replays read garbage labels.
    run.keep = (model, optimizer, inputs, labels, step)  # type: ignore[attr-defined]
    return run, steps * TRAIN_BATCH


def make_infer(precision: str, layout: torch.memory_format, batches: int, device: str = "cpu"):
    torch.manual_seed(0)
    model = create_model(ModelConfig()).to(device, memory_format=layout).eval()
    images = torch.randint(0, 256, (batches * INFER_BATCH, 3, 32, 32), dtype=torch.uint8, device=device).contiguous(memory_format=layout)

    def run() -> None:
        predict_logits(model, images, INFER_BATCH, precision, stats=CIFAR10_STATS)
        synchronize(device)

    return run, batches * INFER_BATCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer steps")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="on cuda the timer is wall time")
    parser.add_argument("--no-graphs", action="store_true", help="on cuda, leave out the CUDA-graph subjects")
    parser.add_argument("--compiled-train", action="store_true",
                        help="add the channels_last training step with torch.compile (forward and loss) in each precision")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine has no CUDA device")
    rounds, steps, batches = (2, 5, 2) if args.quick else (args.rounds, 20, 8)
    if cuda:  # a GPU step takes milliseconds: more of them per round
        steps, batches = steps * 10, batches * 10
    subjects, images = {}, {}
    for precision in ("fp32", "bf16"):
        for layout_name, layout in LAYOUTS.items():
            name = f"{precision}_{layout_name}"
            subjects[f"train_{name}"], images[f"train_{name}"] = make_train(precision, layout, steps, args.device)
            if cuda:
                subjects[f"train_{name}_fused"], images[f"train_{name}_fused"] = make_train(precision, layout, steps, args.device, True)
            if cuda and not args.no_graphs:
                try:
                    subjects[f"train_{name}_graph"], images[f"train_{name}_graph"] = make_train_graph(precision, layout, steps)
                except Exception as exc:  # noqa: BLE001 - an experiment; report and go on
                    print(f"train_{name}_graph: capture failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if args.compiled_train and layout_name == "cl":
                subjects[f"train_{name}_compiled"], images[f"train_{name}_compiled"] = make_train(precision, layout, steps, args.device,
                                                                                                compiled=True)
            subjects[f"infer_{name}"], images[f"infer_{name}"] = make_infer(precision, layout, batches, args.device)
    timer = "wall" if cuda else "cpu"
    machine = {**common.machine_info(), "gpu": torch.cuda.get_device_name(0) if cuda else None}
    bf16_flags = cpu_bf16_flags()
    print(f"CPU: {machine['cpu_model']}; bf16 flags: {', '.join(bf16_flags) or 'none'}; fast bf16: {cpu_has_fast_bf16()}")
    samples = common.interleave(subjects, rounds, log=print)
    rows = []
    for name in subjects:
        kind = name.split("_")[0]
        ratios = common.round_ratios(samples, name, f"{kind}_fp32_nchw", timer)
        seconds = common.median([s[timer] for s in samples[name]])
        rows.append({"subject": name, "images_per_s": images[name] / seconds, "timer": timer, "ratio": common.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})
    common.print_table(rows, [("subject", "subject", ""), ("images_per_s", f"img/{timer}-s", ".0f"),
                              ("ratio", "vs fp32 NCHW", ".2f"), ("ratio_min", "min", ".2f"), ("ratio_max", "max", ".2f")])
    if args.out:
        common.write_json(args.out, {"machine": machine, "device": args.device, "bf16_flags": bf16_flags, "fast_bf16": cpu_has_fast_bf16(),
                                     "rounds": rounds, "rows": rows})


if __name__ == "__main__":
    main()
