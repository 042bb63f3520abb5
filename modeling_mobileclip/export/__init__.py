"""Export a MobileCLIP model as two fused encoders (image, text) with a dynamic batch axis: ONNX or CoreML.

    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format onnx --output ./s0-onnx

(also the `mobileclip-export` console script; formats, outputs and checks are described in `cli.py`).

    encoders.py       the exported modules (one per tower), example inputs, loading and fusing, the parity check
    onnx_export.py    ONNX export and its onnxruntime check
    precision.py      the ONNX precisions (fp16, int8-dynamic, int8-static) from onnx / onnxruntime's tools
    parity.py         the parity report of each precision: embedding differences, zero-shot agreement and accuracy
    coreml_export.py  CoreML conversion (from `torch.export` graphs) and its check (macOS)
    cli.py            the command line: staging folder, export_config.json, processor files
"""
