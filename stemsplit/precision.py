"""Which network precisions are fast on which device.

A half precision is a fast mode only where the hardware computes it natively; elsewhere
PyTorch emulates it, many times slower than float32 (bfloat16 on a CPU without
avx512_bf16 or AMX took 25 times as long). So a half precision is refused where it would
be slower than float32, and "auto" picks the fastest precision this device has.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("float32", "bfloat16", "float16")
CHOICES = ("auto", *PRECISIONS)
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
X86_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 arithmetic
ARM_BFLOAT16_FLAG = "bf16"  # /proc/cpuinfo "Features" on aarch64 Linux
ARM_MACHINES = ("aarch64", "arm64")
MACOS_BFLOAT16_KEY = "hw.optional.arm.FEAT_BF16"
CUDA_FLOAT16_CAPABILITY = (7, 0)  # tensor cores
CUDA_BFLOAT16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Choice:
    precision: str
    reason: str


def flags_in(cpuinfo: str) -> frozenset[str]:
    """The feature flags listed in the text of /proc/cpuinfo (x86 "flags", ARM "Features")."""
    return frozenset(flag for line in cpuinfo.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
                     for flag in line.split(":", 1)[1].split())


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the OS reports them (Linux /proc/cpuinfo, macOS sysctl)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return flags_in(cpuinfo.read_text(errors="replace"))
    if sys.platform == "darwin" and platform.machine() == "arm64":
        answer = subprocess.run(["sysctl", "-n", MACOS_BFLOAT16_KEY], capture_output=True, text=True)
        return frozenset({ARM_BFLOAT16_FLAG} if answer.stdout.strip() == "1" else ())
    return frozenset()


def native_bfloat16_flags() -> list[str]:
    return [flag for flag in (*X86_BFLOAT16_FLAGS, ARM_BFLOAT16_FLAG) if flag in cpu_flags()]


def describe_cpu() -> str:
    """The CPU and what decides its fast mode, in one line for logs and benchmark tables."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    return (f"{name}, torch {torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"native bfloat16: {', '.join(native_bfloat16_flags()) or 'none'}")


def fast_precisions(device: torch.device) -> dict[str, str]:
    """The precisions faster than float32 on `device`, best first, each with the reason."""
    if device.type == "cpu":
        native = native_bfloat16_flags()
        return {"bfloat16": f"native bfloat16 ({', '.join(native)})"} if native else {}
    if device.type == "cuda":
        major, minor = capability = torch.cuda.get_device_capability(device)
        cores = f"tensor cores (compute capability {major}.{minor})"
        fast = {"float16": cores} if capability >= CUDA_FLOAT16_CAPABILITY else {}
        return {**fast, "bfloat16": cores} if capability >= CUDA_BFLOAT16_CAPABILITY else fast
    if device.type == "mps":
        return {"float16": "Apple GPU half precision"}
    return {}


def slow_reason(precision: str, device: torch.device) -> str:
    """Why `precision` is not a fast mode on `device`."""
    if device.type == "cpu":
        if precision == "float16":
            return "float16 is for GPUs"
        wanted = ARM_BFLOAT16_FLAG if platform.machine().lower() in ARM_MACHINES else " or ".join(X86_BFLOAT16_FLAGS)
        return f"bfloat16 is slower than float32 on this CPU (no {wanted})"
    if device.type == "mps":
        return f"{precision} is not a fast mode on Apple GPUs"
    return f"{precision} is slower than float32 on this GPU (no tensor cores for it)"


def choose(requested: str, device: str | torch.device) -> Choice:
    """The precision to run: `requested` where it is not slower than float32 on `device`
    (else a ValueError saying what to use), or for "auto" the fastest there is."""
    device = torch.device(device)
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}")
    fast = fast_precisions(device)
    if requested == "auto":
        if not fast:
            return Choice("float32", f"auto: nothing is faster than float32 on this {device.type}")
        best = next(iter(fast))
        return Choice(best, f"auto: {fast[best]}")
    if requested == "float32":
        return Choice("float32", "requested; matches the reference")
    if requested in fast:
        return Choice(requested, f"requested; {fast[requested]}")
    instead = f"auto ({next(iter(fast))} here)" if fast else "float32"
    raise ValueError(f"{slow_reason(requested, device)}; use {instead}")


def autocast(device: torch.device, precision: str):
    """The context a network runs in at `precision` (a chosen one, not "auto")."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    return nullcontext()
