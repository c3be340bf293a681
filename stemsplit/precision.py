"""Which network precisions are fast on which device, and the int8 copy of a network.

A half precision is only a fast mode where the hardware computes it natively: elsewhere
PyTorch emulates it, many times slower than float32 (bfloat16 on a CPU without avx512_bf16
or AMX took 25 times as long). So a precision is accepted only where it is faster than
float32, and "auto" picks the fastest one that keeps the fast modes' quality bar.
"""

from __future__ import annotations

import copy
import platform
import subprocess
import sys
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

PRECISIONS = ("float32", "bfloat16", "float16", "int8")
CHOICES = ("auto", *PRECISIONS)
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
X86_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 arithmetic
ARM_BFLOAT16_FLAG = "bf16"  # /proc/cpuinfo "Features" on aarch64 Linux
MACOS_BFLOAT16_KEY = "hw.optional.arm.FEAT_BF16"
INT8_FLAG = "avx2"  # oneDNN's int8 matrix products need at least AVX2 (faster still with VNNI)
CUDA_FLOAT16_CAPABILITY = (7, 0)  # tensor cores
CUDA_BFLOAT16_CAPABILITY = (8, 0)
INT8_LEVELS = 127


@dataclass(frozen=True)
class Choice:
    precision: str
    reason: str


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the OS reports them (Linux /proc/cpuinfo, macOS sysctl)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text(errors="replace").splitlines()
        return frozenset(flag for line in lines if line.split(":")[0].strip() in ("flags", "Features")
                         for flag in line.split(":", 1)[1].split())
    if sys.platform == "darwin" and platform.machine() == "arm64":
        answer = subprocess.run(["sysctl", "-n", MACOS_BFLOAT16_KEY], capture_output=True, text=True)
        return frozenset({ARM_BFLOAT16_FLAG} if answer.stdout.strip() == "1" else ())
    return frozenset()


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def describe_cpu() -> str:
    """One line naming the CPU and what decides its fast modes, for logs and benchmark tables."""
    flags = cpu_flags()
    native = [flag for flag in (*X86_BFLOAT16_FLAGS, ARM_BFLOAT16_FLAG) if flag in flags]
    return (f"{cpu_name()}, torch {torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"native bfloat16: {', '.join(native) or 'none'}, "
            f"int8: {'vnni' if 'avx512_vnni' in flags or 'avx_vnni' in flags else INT8_FLAG if INT8_FLAG in flags else 'none'}")


def native_bfloat16_flags() -> list[str]:
    flags = cpu_flags()
    return [flag for flag in (*X86_BFLOAT16_FLAGS, ARM_BFLOAT16_FLAG) if flag in flags]


def fast_precisions(device: torch.device) -> dict[str, str]:
    """The precisions faster than float32 on `device`, fastest first, each with the reason."""
    if device.type == "cpu":
        fast = {}
        if INT8_FLAG in cpu_flags():
            fast["int8"] = "int8 matrix products of the transformer's linear layers (AVX2)"
        if native_bfloat16_flags():
            fast["bfloat16"] = f"native bfloat16 ({', '.join(native_bfloat16_flags())})"
        return fast
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        fast = {}
        if capability >= CUDA_FLOAT16_CAPABILITY:
            fast["float16"] = f"tensor cores (compute capability {capability[0]}.{capability[1]})"
        if capability >= CUDA_BFLOAT16_CAPABILITY:
            fast["bfloat16"] = f"tensor cores (compute capability {capability[0]}.{capability[1]})"
        return fast
    if device.type == "mps":
        return {"float16": "Apple GPU half precision"}
    return {}


def slow_reason(precision: str, device: torch.device) -> str:
    """Why `precision` is not a fast mode on `device`."""
    if precision == "int8":
        return "int8 is for x86 CPUs with AVX2" if device.type == "cpu" else "int8 is for CPUs"
    if device.type == "cpu":
        if precision == "float16":
            return "float16 is for GPUs"
        return f"bfloat16 is slower than float32 on this CPU (no {' or '.join(X86_BFLOAT16_FLAGS)})"
    if device.type == "mps":
        return f"{precision} is not a fast mode on Apple GPUs"
    return f"{precision} is slower than float32 on this GPU (no tensor cores for it)"


def choose(requested: str, device: str | torch.device) -> Choice:
    """The precision to run: `requested` where it is fast on `device` (else ValueError), or auto's pick."""
    device = torch.device(device)
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}")
    fast = fast_precisions(device)
    if requested == "auto":
        if not fast:
            return Choice("float32", f"auto: nothing is faster than float32 on this {device.type}")
        best = next(iter(fast))
        return Choice(best, f"auto: the fastest on this {device.type}: {fast[best]}")
    if requested == "float32":
        return Choice("float32", "requested; matches the reference")
    if requested in fast:
        return Choice(requested, f"requested; {fast[requested]}")
    instead = f"auto ({next(iter(fast))} here)" if fast else "float32"
    raise ValueError(f"{slow_reason(requested, device)}; use {instead}")


def autocast(device: torch.device, precision: str):
    """The context a network runs in at `precision`."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    return nullcontext()


_int8_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def network(model: nn.Module, precision: str) -> nn.Module:
    """`model` itself, or for int8 its int8 copy (made once, sharing every other weight)."""
    if precision != "int8":
        return model
    if model not in _int8_copies:
        _int8_copies[model] = int8_copy(model)
    return _int8_copies[model]


def int8_copy(model: nn.Module) -> nn.Module:
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    quantised = copy.deepcopy(model, memo=shared)
    for parent in quantised.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear(child))
    return quantised


class Int8Linear(nn.Module):
    """A linear layer whose products run in int8: weights rounded once per output channel,
    inputs rounded per row as they come, products summed exactly in int32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / INT8_LEVELS
        self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / INT8_LEVELS
        products = torch._int_mm(torch.round(rows / scale).to(torch.int8), self.weight_t)
        out = products * (scale * self.weight_scale)
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], -1)
