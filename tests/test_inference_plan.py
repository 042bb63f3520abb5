"""The machine description and the inference plan: auto choices follow the CPU's ISA (no bf16 without AVX512-BF16 or
AMX unless forced), the image backbone and the compiler; forced choices are kept; bad values get one clear error."""

import pytest
import torch
from conftest import tiny_config

from modeling_mobileclip.inference import Machine, choose_plan, describe_machine
from modeling_mobileclip.inference.machine import cpu_flags

MCI = tiny_config("mci-s0text")
VIT = tiny_config("vit-patch")
AMX = Machine("cpu", "Xeon with AMX", "AVX512", bf16=True, amx=True, compiler=True)
AVX512_BF16 = Machine("cpu", "Xeon with AVX512-BF16", "AVX512", bf16=True, amx=False, compiler=True)
AVX512 = Machine("cpu", "AVX-512 without bf16", "AVX512", bf16=False, amx=False, compiler=True)
AVX2 = Machine("cpu", "AVX2 laptop", "AVX2", bf16=False, amx=False, compiler=False)


def test_this_cpu_is_described_from_its_flags():
    machine, flags = describe_machine("cpu"), cpu_flags()
    assert machine.cpu_capability == torch.backends.cpu.get_cpu_capability()
    if flags:
        assert machine.bf16 == bool({"avx512_bf16", "amx_bf16"} & flags)
        assert machine.amx == ("amx_bf16" in flags)
    plan = choose_plan(MCI, machine)
    assert plan.dtype == ("bfloat16" if machine.bf16 else "float32") and plan.isa == machine.isa


@pytest.mark.parametrize(("machine", "dtype", "isa"), [(AMX, "bfloat16", "AMX-BF16"),
                                                       (AVX512_BF16, "bfloat16", "AVX512-BF16"),
                                                       (AVX512, "float32", "AVX512"), (AVX2, "float32", "AVX2")])
def test_auto_precision_follows_the_isa(machine, dtype, isa):
    plan = choose_plan(MCI, machine)
    assert (plan.dtype, plan.isa, plan.torch_dtype) == (dtype, isa, getattr(torch, dtype))
    assert plan.compile == machine.compiler and plan.fused


def test_forcing_bf16_without_hardware_support_is_allowed_and_says_so():
    plan = choose_plan(MCI, AVX512, dtype=torch.bfloat16, compile=False, memory_format="contiguous")
    assert (plan.dtype, plan.compile, plan.memory_format) == ("bfloat16", False, "contiguous")
    assert "forced" in str(plan) and "emulated" in str(plan)
    assert choose_plan(MCI, AMX, dtype="fp32").dtype == "float32"


def test_memory_format_follows_the_backbone():
    assert choose_plan(MCI, AMX).memory_format == "channels_last"
    assert choose_plan(VIT, AMX).memory_format == "contiguous"


def test_the_plan_prints_every_choice_with_its_reason():
    plan = choose_plan(MCI, AMX)
    text = str(plan)
    assert text.splitlines()[0] == ("InferencePlan(device=cpu, dtype=bfloat16, memory_format=channels_last, "
                                    "compile=True, fused=True, isa=AMX-BF16)")
    assert all(reason in text for reason in plan.reasons) and "AMX-BF16 tiles" in text


def test_gpu_plans():
    ampere = Machine("cuda:0", "NVIDIA A100", "AVX2", bf16=True, amx=False, compiler=True)
    turing = Machine("cuda:0", "NVIDIA T4", "AVX2", bf16=False, amx=False, compiler=False)
    assert (choose_plan(MCI, ampere).dtype, choose_plan(MCI, ampere).compile) == ("bfloat16", True)
    assert (choose_plan(MCI, turing).dtype, choose_plan(MCI, turing).compile) == ("float16", False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "int8"}, "dtype='int8' is not an inference precision; pass one of"),
    ({"memory_format": "nhwc"}, "memory_format='nhwc'; pass one of"),
    ({"compile": "yes"}, "compile='yes'; pass True, False or 'auto'"),
])
def test_bad_choices_name_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        choose_plan(MCI, AMX, **kwargs)


def test_forcing_compile_without_a_compiler_names_the_fix():
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler on cpu.*compile=False"):
        choose_plan(MCI, AVX2, compile=True)


def test_unknown_or_absent_devices_are_refused():
    with pytest.raises(ValueError, match="'xla' is not supported"):
        describe_machine("xla")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            describe_machine("cuda")
