"""The inference plan: which precision, memory format and compilation a model gets on a machine, and why.

    plan = choose_plan(model.config, describe_machine("cpu"))
    print(plan)  # one line per choice, each with its reason
"""

from dataclasses import dataclass

import torch

from .machine import Machine

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
MEMORY_FORMATS = ("channels_last", "contiguous")
FUSED_REASON = "fused: reparameterize() folds every re-parameterisable branch (exact)"


@dataclass(frozen=True)
class InferencePlan:
    """What `optimize_for_inference` did to a model. `str(plan)` prints it with the reason for each choice."""

    device: str
    dtype: str  # a key of DTYPES
    memory_format: str  # image tower activations: "channels_last" or "contiguous"
    compile: bool  # torch.compile (inductor, weights frozen as constants) of each tower
    isa: str  # the machine's best unit: "AMX-BF16", "AVX512-BF16", "AVX512", ... or the GPU's name
    reasons: tuple[str, ...]  # one sentence per choice
    fused: bool = True  # reparameterize(): always, it is exact

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def __str__(self) -> str:
        lines = [(f"InferencePlan(device={self.device}, dtype={self.dtype}, memory_format={self.memory_format}, "
                  f"compile={self.compile}, fused={self.fused}, isa={self.isa})")]
        return "\n".join(lines + [f"  - {reason}" for reason in self.reasons])


def _dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        names = {value: key for key, value in DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"dtype={dtype} is not an inference precision; pass one of {sorted(DTYPES)} or 'auto'.")
        return names[dtype]
    name = _DTYPE_ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not an inference precision; pass one of {sorted(DTYPES)} or 'auto'.")
    return name


def _choose_dtype(machine: Machine, dtype: str | torch.dtype) -> tuple[str, str]:
    if dtype != "auto":
        name = _dtype_name(dtype)
        emulated = machine.device == "cpu" and name != "float32" and not machine.bf16
        return name, (f"dtype {name}: forced" + (" (this CPU has neither AVX512-BF16 nor AMX: emulated, expect it "
                                                 "to be slower than float32)" if emulated else ""))
    if machine.device == "cpu":
        if machine.bf16:
            unit = "AMX-BF16 tiles" if machine.amx else "AVX512-BF16 dot products"
            return "bfloat16", f"dtype bfloat16: the CPU has {unit} (normalised embeddings within ~1e-2 of float32)"
        return "float32", "dtype float32: the CPU has neither AVX512-BF16 nor AMX, bf16 would be emulated"
    if machine.device.startswith("cuda"):
        if machine.bf16:
            return "bfloat16", f"dtype bfloat16: {machine.name} supports it (float32's range, tensor cores)"
        return "float16", f"dtype float16: {machine.name} has no bf16; float16 runs on its tensor cores"
    return "float16", f"dtype float16: {machine.device} has no fast bf16"


def _choose_memory_format(config, machine: Machine, memory_format: str) -> tuple[str, str]:
    if memory_format != "auto":
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format={memory_format!r}; pass one of {list(MEMORY_FORMATS)} or 'auto'.")
        return memory_format, f"memory format {memory_format}: forced"
    if config.vision_config.backbone == "fastvit":
        return "channels_last", ("memory format channels_last: the MCi tower is convolutions, which oneDNN / cuDNN "
                                 "run fastest on NHWC")
    return "contiguous", "memory format contiguous: the ViT tower is matrix multiplies on token rows"


def _choose_compile(machine: Machine, compile: bool | str) -> tuple[bool, str]:
    tool = "Triton" if machine.device.startswith("cuda") else "a C++ compiler"
    if compile != "auto":
        if not isinstance(compile, bool):
            raise ValueError(f"compile={compile!r}; pass True, False or 'auto'.")
        if compile and not machine.compiler:
            raise ValueError(f"compile=True, but torch.compile needs {tool} on {machine.device} and none was found; "
                             "install one (CPU: g++ or clang++, CUDA: triton) or pass compile=False.")
        return compile, f"compile {compile}: forced"
    if machine.device == "mps":
        return False, "compile False: inductor's MPS backend is not used here"
    if not machine.compiler:
        return False, f"compile False: no {tool} found for torch.compile's kernels"
    return True, ("compile True: inductor with frozen weights fuses the element-wise ops into the convolutions and "
                  "matmuls and pre-packs the weights (the first call per input shape compiles: tens of seconds)")


def choose_plan(config, machine: Machine, dtype: str | torch.dtype = "auto", compile: bool | str = "auto",
                memory_format: str = "auto") -> InferencePlan:
    """The plan for a model with `config` (a MobileCLIPConfig) on `machine`; "auto" decides from the machine, any
    other value is used as given (forced)."""
    dtype_name, dtype_reason = _choose_dtype(machine, dtype)
    layout, layout_reason = _choose_memory_format(config, machine, memory_format)
    compiled, compile_reason = _choose_compile(machine, compile)
    return InferencePlan(device=machine.device, dtype=dtype_name, memory_format=layout, compile=compiled,
                         isa=machine.isa, reasons=(FUSED_REASON, dtype_reason, layout_reason, compile_reason))
