"""What the machine a model runs on can do: the CPU's instruction sets (AVX-512, AVX512-BF16, AMX), whether torch's
inductor has a compiler to build CPU kernels with, and the GPU's bf16 support and Triton for GPU kernels."""

import os
import platform
import shutil
from dataclasses import dataclass

import torch

# /proc/cpuinfo flags that decide the CPU precision: bf16 runs at full rate only with AVX512-BF16 dot products or AMX
# tiles; without them oneDNN emulates bf16 through fp32 and it is slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> frozenset[str]:
    """The `flags` line of /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    """The CPU's `model name` from /proc/cpuinfo, else what `platform` says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def openmp_policy() -> dict[str, str | int]:
    """The threading a CPU timing depends on: torch's intra-op threads and the OpenMP variables that are set."""
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_AFFINITY", "KMP_BLOCKTIME", "GOMP_CPU_AFFINITY",
             "OMP_PROC_BIND", "OMP_PLACES")
    return {"torch_threads": torch.get_num_threads(),
            **{name: os.environ[name] for name in names if name in os.environ}}


@dataclass(frozen=True)
class Machine:
    """The facts `choose_plan` decides from. `describe_machine` reads them; a test or a user can state them."""

    device: str  # "cpu", "cuda:0", "mps"
    name: str  # CPU model or GPU name
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...
    bf16: bool  # bf16 runs natively (CPU: AVX512-BF16 or AMX; GPU: torch.cuda.is_bf16_supported())
    amx: bool  # CPU AMX-BF16 tiles
    compiler: bool  # torch.compile can build kernels here (CPU: a C++ compiler; GPU: Triton)

    @property
    def isa(self) -> str:
        """The CPU's best bf16 / vector unit in words (or the GPU's name)."""
        if self.device != "cpu":
            return self.name
        if self.amx:
            return "AMX-BF16"
        return "AVX512-BF16" if self.bf16 else self.cpu_capability


def _has_cpp_compiler() -> bool:
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "clang++", "c++") if name)


def describe_machine(device: str | torch.device = "cpu") -> Machine:
    """Read what `device` ("cpu", "cuda", "cuda:1", "mps") supports."""
    device = torch.device(device)
    capability = torch.backends.cpu.get_cpu_capability()
    if device.type == "cpu":
        flags = cpu_flags()
        if flags:
            bf16, amx = bool(set(BF16_CPU_FLAGS) & flags), "amx_bf16" in flags
        else:  # no /proc/cpuinfo: ask torch's own CPU probe
            bf16, amx = torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported()
        return Machine("cpu", cpu_model(), capability, bf16, amx, _has_cpp_compiler())
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r}, but torch {torch.__version__} sees no CUDA GPU; pass "
                             "device='cpu' or install a CUDA build of torch.")
        from torch.utils._triton import has_triton

        index = device.index if device.index is not None else torch.cuda.current_device()
        return Machine(f"cuda:{index}", torch.cuda.get_device_name(index), capability,
                       torch.cuda.is_bf16_supported(), False, has_triton())
    if device.type == "mps":
        return Machine("mps", "Apple GPU (MPS)", capability, False, False, False)
    raise ValueError(f"device={str(device)!r} is not supported; pass 'cpu', 'cuda', 'cuda:<index>' or 'mps'.")
