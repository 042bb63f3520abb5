"""Precisions of the exported ONNX encoders, made from the fp32 export by onnx / onnxruntime's own tools.

    fp32          the export as it is
    fp16          onnxruntime.transformers.float16.convert_float_to_float16 (float32 inputs and outputs kept, so the
                  encoders are fed as the fp32 ones)
    int8-dynamic  onnxruntime.quantization.quantize_dynamic: int8 weights, activations quantised per call (no
                  calibration data)
    int8-static   image encoder: onnxruntime.quantization.quantize_static, QDQ format, per-channel weights, activation
                  ranges calibrated (MinMax) on real processed images; Conv, MatMul, Gemm (`--calibration-data`);
                  text encoder: as
                  int8-dynamic (onnxruntime's advice for transformer models, and no images calibrate a text tower)

bfloat16 is not offered: onnxruntime's CPU execution provider has no bfloat16 MatMul or Conv kernel (a bfloat16 MatMul
fails with NOT_IMPLEMENTED at session creation in onnxruntime 1.32), so a bf16 graph would not run where this tool
checks it.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
BF16_UNSUPPORTED = ("bf16 is not offered: onnxruntime's CPU execution provider has no bfloat16 MatMul/Conv kernels "
                    "(session creation fails with NOT_IMPLEMENTED); choose fp16 for a half-size model, or "
                    "int8-dynamic / int8-static for a quarter-size one.")


def parse_precision(value: str) -> str:
    """`--precision` values: one of PRECISIONS; `bf16` gets the reason it is not offered."""
    if value in ("bf16", "bfloat16"):
        raise ValueError(BF16_UNSUPPORTED)
    if value not in PRECISIONS:
        raise ValueError(f"--precision {value!r} is not one of {list(PRECISIONS)}.")
    return value


def encoder_file(kind: str, precision: str) -> str:
    """`image_encoder.onnx` for fp32 (the name the export always had), `image_encoder.int8-static.onnx` otherwise."""
    return f"{kind}_encoder.onnx" if precision == "fp32" else f"{kind}_encoder.{precision}.onnx"


class PixelValuesReader:
    """An onnxruntime `CalibrationDataReader` (its `get_next` protocol) over batches of processed images."""

    def __init__(self, batches: list[np.ndarray], input_name: str = "pixel_values"):
        self._feeds = iter([{input_name: np.ascontiguousarray(batch, dtype=np.float32)} for batch in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def _preprocessed(source: Path, folder: Path) -> Path:
    # onnxruntime's advice before quantising: shape inference and graph optimisation, so the quantiser sees fused ops.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = folder / f"{source.stem}.pre.onnx"
    quant_pre_process(str(source), str(target))
    return target


def _quantize_dynamic(source: Path, target: Path, work: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Conv stays float: onnxruntime's ConvInteger (what dynamic quantisation makes of a Conv) has no int8-weight
    # kernel on CPU. MatMul / Gemm (every Linear, attention) get per-channel int8 weights, Gather (the token
    # embedding table, most of a text tower's bytes) int8 rows.
    quantize_dynamic(_preprocessed(source, work), target, op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                     per_channel=True, weight_type=QuantType.QInt8)


def _quantize_static(source: Path, target: Path, work: Path, calibration: list[np.ndarray]) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # Only the weight-carrying ops: elementwise ops, softmax and normalisations stay float (on the tiny test model,
    # quantising every op made the embeddings' mean cosine to fp32 0.931, these three 0.956).
    quantize_static(_preprocessed(source, work), target, PixelValuesReader(calibration),
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"], quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def _to_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


def convert_precision(folder: Path, precision: str, calibration: list[np.ndarray] | None = None) -> dict[str, str]:
    """Write both encoders of `precision` into `folder` from its fp32 `image_encoder.onnx` / `text_encoder.onnx`;
    returns {"image": file name, "text": file name, "method": how each was made}.

    `calibration`: batches of processed images (float32 [batch, 3, H, W]), required for int8-static."""
    if precision == "int8-static" and not calibration:
        raise ValueError("--precision int8-static needs calibration images: pass --calibration-data with a folder of "
                         "images or an image dataset (a few hundred representative pictures; 8+ work).")
    files = {kind: encoder_file(kind, precision) for kind in ("image", "text")}
    methods = {"fp32": "torch.onnx.export", "fp16": "onnxruntime.transformers.float16 (float32 I/O)",
               "int8-dynamic": "quantize_dynamic (MatMul/Gemm per-channel int8 weights, int8 Gather)"}
    if precision == "fp32":
        return {**files, "image_method": methods["fp32"], "text_method": methods["fp32"]}
    with tempfile.TemporaryDirectory(dir=folder, prefix=".quant-") as work:
        work = Path(work)
        for kind in ("image", "text"):
            source, target = folder / encoder_file(kind, "fp32"), folder / files[kind]
            if precision == "fp16":
                _to_fp16(source, target)
            elif precision == "int8-static" and kind == "image":
                _quantize_static(source, target, work, calibration)
            elif precision == "int8-static" and (folder / encoder_file(kind, "int8-dynamic")).is_file():
                shutil.copyfile(folder / encoder_file(kind, "int8-dynamic"), target)  # the same quantisation
            else:
                _quantize_dynamic(source, target, work)
    static = (f"quantize_static (QDQ, Conv/MatMul/Gemm, per-channel int8 weights, int8 activations, MinMax over "
              f"{sum(len(b) for b in calibration or [])} calibration images)")
    image_method = static if precision == "int8-static" else methods[precision]
    text_method = methods["int8-dynamic"] if precision == "int8-static" else methods[precision]
    return {**files, "image_method": image_method, "text_method": text_method}


def file_megabytes(path: Path) -> float:
    return round(os.path.getsize(path) / 2**20, 2)


def calibration_batches(spec: str, image_processor, size: int, batch_size: int = 16) -> list[np.ndarray]:
    """Up to `size` images of a folder or dataset (`embedding.sources`), spread evenly over it, processed exactly as
    at inference; an unreadable image is left out."""
    from ..embedding.sources import image_source

    if size < 1:
        raise ValueError(f"--calibration-size {size}; expected a positive number of images.")
    source = image_source(spec, flag="--calibration-data")
    picks = np.unique(np.linspace(0, len(source) - 1, num=min(size, len(source))).round().astype(int))
    images = [item.image for item in (source[int(i)] for i in picks) if item.image is not None]
    if not images:
        raise ValueError(f"--calibration-data {spec!r}: none of the {len(picks)} images read could be decoded.")
    return [image_processor(images=images[i : i + batch_size], return_tensors="np")["pixel_values"]
            for i in range(0, len(images), batch_size)]
