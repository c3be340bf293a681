"""Which precision runs where: refusals and auto's pick on faked CPUs and GPUs, and the engine running the pick."""

from __future__ import annotations

import pytest
import torch

import stemsplit
from helpers import separate_tensor
from stemsplit import precision
from stemsplit.precision import Choice, choose, flags_in
from stemsplit.registry import load_bag
from stemsplit.separation import Settings

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # Zen 3, Skylake, most laptops
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_vnni", "avx512_bf16"}  # Zen 4, Cooper Lake
AMX = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16", "amx_int8"}  # Sapphire Rapids
NEOVERSE_V1 = {"fp", "asimd", "sve", "bf16", "i8mm"}  # Graviton 3

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme avx2 avx512f avx512_bf16
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm sve bf16
CPU implementer\t: 0x41
"""


@pytest.fixture
def fake_cpu(monkeypatch):
    def fake(flags: set[str]) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    return fake


@pytest.fixture
def fake_gpu(monkeypatch):
    def fake(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return fake


def refusal(requested: str, device: str) -> str:
    with pytest.raises(ValueError) as error:
        choose(requested, device)
    return str(error.value)


def test_an_arm_cpu_without_bf16_is_told_what_it_lacks(fake_cpu, monkeypatch):
    fake_cpu({"fp", "asimd", "sve"})  # Graviton 2
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    assert refusal("bfloat16", "cpu") == "bfloat16 is slower than float32 on this CPU (no bf16); use float32"


def test_flags_are_read_from_x86_and_arm_cpuinfo():
    assert flags_in(X86_CPUINFO) == {"fpu", "vme", "avx2", "avx512f", "avx512_bf16"}
    assert flags_in(ARM_CPUINFO) == {"fp", "asimd", "evtstrm", "sve", "bf16"}


def test_cpu_without_native_bfloat16_refuses_half_precisions_and_auto_runs_float32(fake_cpu):
    fake_cpu(AVX2_ONLY)
    assert refusal("bfloat16", "cpu") == ("bfloat16 is slower than float32 on this CPU "
                                          "(no avx512_bf16 or amx_bf16); use float32")
    assert refusal("float16", "cpu") == "float16 is for GPUs; use float32"
    assert choose("auto", "cpu") == Choice("float32", "auto: nothing is faster than float32 on this cpu")
    assert choose("float32", "cpu") == Choice("float32", "requested; matches the reference")


@pytest.mark.parametrize("flags, native", [(AVX512_BF16, "avx512_bf16"), (AMX, "amx_bf16"), (NEOVERSE_V1, "bf16")],
                         ids=["avx512_bf16", "amx", "arm"])
def test_cpu_with_native_bfloat16_runs_it_for_auto(fake_cpu, flags, native):
    fake_cpu(flags)
    assert choose("auto", "cpu") == Choice("bfloat16", f"auto: native bfloat16 ({native})")
    assert choose("bfloat16", "cpu") == Choice("bfloat16", f"requested; native bfloat16 ({native})")
    assert refusal("float16", "cpu") == "float16 is for GPUs; use auto (bfloat16 here)"


def test_gpus_get_the_half_precisions_their_tensor_cores_have(fake_gpu):
    fake_gpu((6, 1))  # Pascal: no tensor cores
    assert choose("auto", "cuda") == Choice("float32", "auto: nothing is faster than float32 on this cuda")
    assert refusal("float16", "cuda") == ("float16 is slower than float32 on this GPU (no tensor cores for it); "
                                          "use float32")
    fake_gpu((7, 5))  # Turing: float16 only
    assert choose("auto", "cuda") == Choice("float16", "auto: tensor cores (compute capability 7.5)")
    assert refusal("bfloat16", "cuda") == ("bfloat16 is slower than float32 on this GPU (no tensor cores for it); "
                                           "use auto (float16 here)")
    fake_gpu((8, 6))  # Ampere: both
    assert choose("auto", "cuda").precision == "float16"
    assert choose("bfloat16", "cuda") == Choice("bfloat16", "requested; tensor cores (compute capability 8.6)")


def test_apple_gpus_run_float16():
    assert choose("auto", "mps") == Choice("float16", "auto: Apple GPU half precision")
    assert refusal("bfloat16", "mps") == "bfloat16 is not a fast mode on Apple GPUs; use auto (float16 here)"


def test_unknown_precision_names_the_choices():
    assert refusal("int4", "cpu") == "precision must be one of auto, float32, bfloat16, float16"


@pytest.fixture(scope="module")
def bag(tiny_repo):
    return load_bag("tiny", tiny_repo)


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    # One segment of tiny: enough to see which precision ran.
    return 0.2 * torch.randn(2, 30_000, generator=torch.Generator().manual_seed(0))


def test_engine_runs_float32_for_auto_and_refuses_bfloat16_on_a_cpu_without_it(fake_cpu, bag, mix):
    fake_cpu(AVX2_ONLY)
    assert torch.equal(separate_tensor(bag, mix, Settings(precision="auto")), separate_tensor(bag, mix))
    with pytest.raises(ValueError, match="^bfloat16 is slower than float32 on this CPU"):
        separate_tensor(bag, mix, Settings(precision="bfloat16"))


def test_engine_runs_bfloat16_for_auto_on_a_cpu_with_it(fake_cpu, bag, mix):
    fake_cpu(AVX512_BF16)
    fast = separate_tensor(bag, mix, Settings(precision="auto"))
    assert torch.equal(fast, separate_tensor(bag, mix, Settings(precision="bfloat16")))
    assert not torch.equal(fast, separate_tensor(bag, mix))


def test_api_refuses_a_slow_precision_and_tells_which_auto_picked(fake_cpu, tiny_repo):
    fake_cpu(AVX2_ONLY)
    with pytest.raises(ValueError, match=r"^bfloat16 is slower than float32 on this CPU \(no avx512_bf16 or "
                                         r"amx_bf16\); use float32$"):
        stemsplit.load_model("tiny", repo=tiny_repo, device="cpu", precision="bfloat16")
    assert stemsplit.load_model("tiny", repo=tiny_repo, device="cpu", precision="auto").settings.precision == "float32"
    fake_cpu(AMX)
    assert stemsplit.load_model("tiny", repo=tiny_repo, device="cpu", precision="auto").settings.precision == "bfloat16"
