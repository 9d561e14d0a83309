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

PRECISIONS = ("fp32", "bf16", "auto")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine ("flags" line of /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
