"""Numeric precision of forward passes: fp32, or bf16 autocast where the hardware runs it fast.

`bf16` means autocast for forward passes only: weights, optimiser state, losses and every
reported number stay fp32 (logits are cast back before any softmax, loss or metric).
`auto` picks bf16 where the device has fast bf16 (a CUDA device that supports it; a CPU with
AMX-BF16 or AVX-512 BF16 units, read from /proc/cpuinfo and torch's capability probe), else fp32.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from stress.config import COMPILE_SETTINGS

PRECISIONS = ("fp32", "bf16", "auto")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first CPU's `name` line in /proc/cpuinfo; None where there is no such file or line."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine ("flags" line of /proc/cpuinfo; empty elsewhere)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name ("model name" in /proc/cpuinfo), else what the platform says, else "unknown"."""
    import platform

    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_signature() -> str | None:
    """The CPU's family, model and stepping numbers from /proc/cpuinfo ("family 25, model 17, stepping 1"), which
    tell its generation where a virtual machine's model name does not ("AMD EPYC"); None where there are none."""
    fields = (("family", "cpu family"), ("model", "model"), ("stepping", "stepping"))
    present = [f"{label} {value}" for label, key in fields if (value := _cpuinfo_field(key))]
    return ", ".join(present) or None


def cpu_bf16_flags() -> list[str]:
    """This CPU's bf16 and AMX feature flags, sorted (what decides whether bf16 runs fast on it)."""
    return sorted(flag for flag in cpu_flags() if "bf16" in flag or flag.startswith("amx"))


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix or vector units (AMX-BF16, AVX-512 BF16)."""
    capability = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX512", "AMX" on newer builds
    return "AMX" in capability.upper() or any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"fp32" or "bf16" for `precision` ("fp32" | "bf16" | "auto") on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device | str):
    """A context for forward passes: bf16 autocast when `precision` resolves to bf16, else a no-op."""
    device = torch.device(device)
    if resolve_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# torch.compile of the stress and Fourier stages' forward passes pays once a worker runs this many batches: on
# SimpleCNN at batch 500 on a CPU it costs 15-17 s per worker and saves 74-105 ms per batch
# (benchmarks/bench_compile.py), so it breaks even at 150-230 batches; 1,000 leaves a margin for slower
# compilers and busier machines. A default CIFAR-10 run has about 2,900 (stress) + 500 (Fourier) per worker on 2 CPUs.
COMPILE_MIN_BATCHES_PER_WORKER = 1000


def cpp_compiler_available() -> bool:
    """True when inductor finds the C++ compiler it builds CPU kernels with (g++ or $CXX on Linux)."""
    try:
        from torch._inductor import cpp_builder

        return bool(cpp_builder.get_cpp_compiler())
    except Exception:  # noqa: BLE001 - any failure to find one means no compiler
        return False


def resolve_compile(setting: str, model_name: str, task_gpus: float, batches_per_worker: float) -> tuple[bool, str]:
    """Whether the stress and Fourier stages compile their forward passes, and why (one clause for the log).

    "on" and "off" decide. "auto" compiles only where it was measured to pay: SimpleCNN, on CPU
    tasks, with at least COMPILE_MIN_BATCHES_PER_WORKER forward batches per worker, and a C++
    compiler for inductor. GPU tasks and other networks stay eager: there the balance is unmeasured.
    """
    if setting not in COMPILE_SETTINGS:
        raise ValueError(f"unknown compile setting {setting!r}; valid: {', '.join(COMPILE_SETTINGS)}")
    if setting != "auto":
        return setting == "on", f"--compile {setting}"
    if task_gpus > 0:
        return False, "auto: tasks run on GPUs, where compiling was not measured to pay"
    if model_name != "simple_cnn":
        return False, f"auto: compiling was measured to pay for simple_cnn only, not {model_name}"
    if batches_per_worker < COMPILE_MIN_BATCHES_PER_WORKER:
        return False, (f"auto: {batches_per_worker:,.0f} forward batches per worker, fewer than the "
                       f"{COMPILE_MIN_BATCHES_PER_WORKER:,} at which compiling pays")
    if not cpp_compiler_available():
        return False, "auto: no C++ compiler for inductor (g++ or $CXX)"
    return True, f"auto: {batches_per_worker:,.0f} forward batches per worker, compiling pays above {COMPILE_MIN_BATCHES_PER_WORKER:,}"
