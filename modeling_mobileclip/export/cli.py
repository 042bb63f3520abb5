"""Export a MobileCLIP model as two fused encoders, image and text, each with a dynamic batch axis.

    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format onnx --output ./s0-onnx
    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format coreml --output ./s0-coreml

(also installed as the `mobileclip-export` console script). Users deploy the encoders split: the image encoder runs on
the camera feed, the text encoder once per prompt.

- `onnx`: `image_encoder.onnx` (pixel_values [batch, 3, H, W] float32 -> image_embeds [batch, D]) and
  `text_encoder.onnx` (input_ids [batch, 77] int64 -> text_embeds [batch, D]), checked against PyTorch in
  onnxruntime (batches of 1 and 3) before anything is written to `--output`.
- `--precision fp32 fp16 int8-dynamic int8-static` (one or more; ONNX only; `precision.py` says how each is made):
  `image_encoder.<precision>.onnx` / `text_encoder.<precision>.onnx` next to the fp32 names; int8-static calibrates
  on `--calibration-data` (a folder of images or an image dataset). bf16 is not offered (onnxruntime's CPU execution
  provider has no bfloat16 MatMul/Conv kernels).
- `parity_report.json` (also printed): per precision, the largest embedding difference from the PyTorch fp32 model
  and, with `--eval-data` (a labelled dataset: imagefolder, `save_to_disk` folder, parquet, hub id), the zero-shot
  top-1 agreement with PyTorch fp32 and the top-1 accuracy of each.
- `coreml`: `image_encoder.mlpackage` / `text_encoder.mlpackage` (ML programs, float32 compute, batch 1 to
  `--max-batch`; input_ids as int32), converted from `torch.export` graphs by coremltools. Converting works on Linux;
  running (and so the parity check) needs macOS, where it is done as for ONNX.

Both embeddings are L2-normalised, so `logits = logit_scale * image_embeds @ text_embeds.T`, with `logit_scale` (and the
shapes) in `export_config.json`. The processor files are saved next to the encoders for preprocessing and tokenizing.
A model that is not fused is fused first (the exported graphs are the inference graphs); `export_config.json` is
written last, so a directory holding it is a complete export.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from transformers import AutoProcessor

from hub_cards.remote_code import TRUST_REMOTE_CODE_HELP, explain_remote_code_refusal

from ..commands import run_command
from ..conversion.staging import check_parent_writable, recover_interrupted, staging_folder
from .coreml_export import coreml_runtime_available, export_coreml, import_coremltools, verify_coreml
from .encoders import load_fused_model
from .onnx_export import export_onnx, verify_onnx
from .parity import format_report, labelled_set, parity_report
from .precision import PRECISIONS, calibration_batches, convert_precision, encoder_file, file_megabytes, parse_precision

FORMATS = ("onnx", "coreml")
EXTENSIONS = {"onnx": ".onnx", "coreml": ".mlpackage"}


def _install(staging: Path, output: Path) -> None:
    """Move the finished files into `output`, replacing older ones; export_config.json (the completeness mark) last."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "export_config.json").unlink(missing_ok=True)
    for item in sorted(staging.iterdir(), key=lambda p: p.name == "export_config.json"):
        target = output / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _precision(value: str) -> str:
    try:
        return parse_precision(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _load_processor(args):
    """The model's processor, or None (with the reason) when it has none."""
    try:
        with explain_remote_code_refusal(args.model):
            return AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code), None
    except (OSError, ValueError) as err:
        return None, str(err).strip().splitlines()[0]


def _labelled(args, processor, model):
    from ..evaluation.eval_dataset import (
        load_eval_dataset,
        resolve_classnames,
        resolve_image_column,
        resolve_label_column,
    )
    from ..evaluation.prompts import load_templates

    dataset = load_eval_dataset(args.eval_data)
    label_column = resolve_label_column(dataset, None, args.eval_data)
    return labelled_set(processor, dataset, resolve_classnames(dataset, label_column, None, args.eval_data),
                        load_templates(args.eval_templates), args.eval_data,
                        model.config.text_config.max_position_embeddings,
                        image_column=resolve_image_column(dataset, None, args.eval_data), label_column=label_column,
                        limit=args.eval_limit)


def _export_precisions(args, model, staging: Path, processor) -> tuple[dict, dict | None]:
    """The requested precisions in `staging` (fp32 kept only if requested) and their parity report."""
    calibration = None
    if "int8-static" in args.precision:
        calibration = calibration_batches(args.calibration_data, processor.image_processor, args.calibration_size)
    written = {name: convert_precision(staging, name, calibration) for name in dict.fromkeys(args.precision)}
    for info in written.values():
        info["megabytes"] = {kind: file_megabytes(staging / info[kind]) for kind in ("image", "text")}
    report = None
    if not args.no_verify:
        labelled = _labelled(args, processor, model) if args.eval_data else None
        report = parity_report(model, staging, written, labelled)
        (staging / "parity_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(format_report(report), file=sys.stderr)
    if "fp32" not in args.precision:
        for kind in ("image", "text"):
            (staging / encoder_file(kind, "fp32")).unlink()
    return written, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling_mobileclip.export", description=__doc__,
                                     formatter_class=_Formatter)
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="what to export")
    parser.add_argument("--output", required=True, type=Path, help="folder for the encoders and export_config.json")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--max-batch", type=int, default=256, help="CoreML: largest batch the encoders accept")
    parser.add_argument("--precision", nargs="+", type=_precision, default=["fp32"], metavar="PRECISION",
                        help=f"ONNX precisions to write, of {', '.join(PRECISIONS)} (bf16: not supported by "
                             f"onnxruntime's CPU provider)")
    parser.add_argument("--calibration-data", default=None,
                        help="int8-static: folder of images (recursive) or image dataset to calibrate on")
    parser.add_argument("--calibration-size", type=int, default=128, help="calibration images used, spread evenly")
    parser.add_argument("--eval-data", default=None,
                        help="labelled dataset for the parity report's zero-shot agreement and accuracy")
    parser.add_argument("--eval-templates", default="photo",
                        help="prompt templates for --eval-data: a shipped set (photo, openai-imagenet) or a file")
    parser.add_argument("--eval-limit", type=int, default=None, help="use the first N images of --eval-data")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check against PyTorch")
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.max_batch < 1:
        raise ValueError(f"--max-batch {args.max_batch}; expected a positive integer.")
    if args.output.exists() and not args.output.is_dir():
        raise ValueError(f"--output {str(args.output)!r} is a file; pass a directory.")
    check_parent_writable(args.output)  # the staging folder goes next to it: fail before loading and exporting
    for line in recover_interrupted(args.output):  # staging folders of exports killed part-way (SIGKILL, power)
        print(line, file=sys.stderr)
    if args.format == "coreml":
        import_coremltools()  # fail before loading weights
        if args.precision != ["fp32"]:
            raise ValueError(f"--precision {' '.join(args.precision)} is for --format onnx; CoreML is exported fp32.")
    if "int8-static" in args.precision and not args.calibration_data:
        raise ValueError("--precision int8-static needs --calibration-data: a folder of images or an image dataset "
                         "like the ones the model will see (a few hundred pictures; 8+ work).")
    model = load_fused_model(args.model, args.trust_remote_code)
    processor, no_processor = _load_processor(args)
    if processor is None and (args.calibration_data or args.eval_data):
        raise ValueError(f"--model {args.model!r} has no processor ({no_processor}), which --calibration-data and "
                         f"--eval-data need; save one next to the weights with `processor.save_pretrained(...)`.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    summary = {f"{kind}_encoder": f"{kind}_encoder{EXTENSIONS[args.format]}" for kind in ("image", "text")}
    summary.update(format=args.format, image_size=model.config.vision_config.image_size,
                   context_length=model.config.text_config.max_position_embeddings,
                   logit_scale=float(model.logit_scale.exp().clamp(max=100).item()),
                   outputs="L2-normalised embeddings; logits = logit_scale * image_embeds @ text_embeds.T")
    # Everything is built in a staging folder beside --output and moved in only once complete and verified.
    with staging_folder(args.output) as staging:  # named after this process: a later run removes it if killed
        if args.format == "onnx":
            export_onnx(model, staging, args.opset)
            summary["opset"] = args.opset
            verify = verify_onnx
        else:
            export_coreml(model, staging, args.max_batch)
            summary["max_batch"] = args.max_batch
            verify = verify_coreml if coreml_runtime_available() else None
        if args.no_verify:
            pass
        elif verify is None:
            print("CoreML parity not checked: running CoreML models needs macOS.", file=sys.stderr)
        else:
            summary["max_abs_diff_vs_pytorch"] = verify(model, staging)
            print(f"{args.format} vs PyTorch max abs diff: {summary['max_abs_diff_vs_pytorch']}", file=sys.stderr)
        if args.format == "onnx":
            written, report = _export_precisions(args, model, staging, processor)
            first = written[args.precision[0]]
            summary.update(image_encoder=first["image"], text_encoder=first["text"], precisions={
                name: {"image_encoder": info["image"], "text_encoder": info["text"], "image_method":
                       info["image_method"], "text_method": info["text_method"], "megabytes": info["megabytes"]}
                for name, info in written.items()})
            if report is not None:
                summary["parity_report"] = "parity_report.json"
        if processor is not None:
            processor.save_pretrained(staging)
        else:
            print(f"No processor saved next to the encoders ({no_processor}); preprocess as the model card "
                  f"describes.", file=sys.stderr)
        (staging / "export_config.json").write_text(json.dumps(summary, indent=2) + "\n")
        _install(staging, args.output)
    print(f"Wrote {args.output}/: {summary['image_encoder']}, {summary['text_encoder']}, export_config.json",
          file=sys.stderr)
    return summary


def run(argv=None) -> int:
    """The command (`python -m`, console script): bad input is one `error:` line and exit status 2."""
    return run_command(main, argv)
