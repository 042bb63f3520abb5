"""The fast inference path: `optimize_for_inference(model)` fuses, picks precision and memory format from the machine
(AVX-512, AVX512-BF16, AMX; the GPU), compiles, and reports the plan (docs/fast-inference.md).

    from modeling_mobileclip.inference import optimize_for_inference

    model = optimize_for_inference(MobileCLIPModel.from_pretrained(path))
    print(model.inference_plan)
"""

from .machine import Machine, describe_machine
from .optimize import compile_for_inference, optimize_for_inference
from .plan import InferencePlan, choose_plan

__all__ = ["InferencePlan", "Machine", "choose_plan", "compile_for_inference", "describe_machine",
           "optimize_for_inference"]
