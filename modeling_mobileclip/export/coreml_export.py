"""CoreML conversion of both encoders from `torch.export` graphs; the parity check runs where CoreML runs (macOS)."""

from pathlib import Path

import numpy as np
import torch

from .encoders import check_parity, encoders, example_inputs


def import_coremltools():
    try:
        import coremltools
    except ImportError as err:
        raise ValueError("--format coreml needs coremltools: `pip install coremltools`, or this project's `export` "
                         "extra (conversion runs on Linux and macOS; running the result needs macOS).") from err
    return coremltools


def coreml_runtime_available() -> bool:
    """coremltools converts anywhere but predicts only on macOS (its native runtime library)."""
    try:
        from coremltools import libcoremlpython  # noqa: F401
    except ImportError:
        return False
    return True


def export_coreml(model, folder: Path, max_batch: int) -> None:
    """ML programs from `torch.export` graphs (coremltools' TorchScript path fails on torch >= 2.8 traces)."""
    ct = import_coremltools()
    examples = example_inputs(model, batch=2)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    for kind, (module, input_name, output_name) in encoders(model).items():
        program = torch.export.export(module, (examples[kind],), dynamic_shapes={input_name: {0: batch}})
        mlmodel = ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS17,
                             outputs=[ct.TensorType(name=output_name)])
        mlmodel.short_description = f"MobileCLIP {kind} encoder: {input_name} -> L2-normalised {output_name}"
        mlmodel.save(str(folder / f"{kind}_encoder.mlpackage"))


def verify_coreml(model, folder: Path) -> dict[str, float]:
    """As `verify_onnx`, in CoreML (macOS only)."""
    ct = import_coremltools()
    diffs = {}
    for kind, (module, input_name, _) in encoders(model).items():
        mlmodel = ct.models.MLModel(str(folder / f"{kind}_encoder.mlpackage"))
        worst = 0.0
        for batch in (1, 3):
            inputs = example_inputs(model, batch, seed=batch)[kind]
            with torch.no_grad():
                expected = module(inputs).numpy()
            feed = inputs.numpy().astype(np.int32 if kind == "text" else np.float32)
            got = next(iter(mlmodel.predict({input_name: feed}).values()))
            worst = max(worst, float(np.abs(got - expected).max()))
        diffs[kind] = worst
    check_parity(diffs, "CoreML")
    return diffs
