"""ONNX export of both encoders (dynamic batch axis) and the onnxruntime parity check."""

from pathlib import Path

import numpy as np
import torch

from .encoders import check_parity, encoders, example_inputs


def export_onnx(model, folder: Path, opset: int) -> None:
    examples = example_inputs(model, batch=2)
    for kind, (module, input_name, output_name) in encoders(model).items():
        # TrainingMode.PRESERVE exports the eval-mode model as it is: the default EVAL mode re-folds the ConvFFN
        # BatchNorms at export, which moved fused MobileCLIP-S0 embeddings by 1.8e-3 in onnxruntime (PRESERVE: 6.7e-8).
        torch.onnx.export(module, (examples[kind],), str(folder / f"{kind}_encoder.onnx"), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=[input_name], output_names=[output_name], opset_version=opset,
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})


def verify_onnx(model, folder: Path) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch, batches of 1 and 3 (the dynamic axis); raises above 1e-4."""
    import onnxruntime

    diffs = {}
    for kind, (module, input_name, _) in encoders(model).items():
        session = onnxruntime.InferenceSession(str(folder / f"{kind}_encoder.onnx"), providers=["CPUExecutionProvider"])
        worst = 0.0
        for batch in (1, 3):
            inputs = example_inputs(model, batch, seed=batch)[kind]
            with torch.no_grad():
                expected = module(inputs).numpy()
            got = session.run(None, {input_name: inputs.numpy()})[0]
            worst = max(worst, float(np.abs(got - expected).max()))
        diffs[kind] = worst
    check_parity(diffs, "onnxruntime")
    return diffs
