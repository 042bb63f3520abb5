"""Export a MobileCLIP model as two fused encoders, image and text, each with a dynamic batch axis.

    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format onnx --output ./s0-onnx
    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format coreml --output ./s0-coreml

(also installed as the `mobileclip-export` console script). Users deploy the encoders split: the image encoder runs on
the camera feed, the text encoder once per prompt.

- `onnx`: `image_encoder.onnx` (pixel_values [batch, 3, H, W] float32 -> image_embeds [batch, D]) and
  `text_encoder.onnx` (input_ids [batch, 77] int64 -> text_embeds [batch, D]), checked against PyTorch in
  onnxruntime (batches of 1 and 3) before anything is written to `--output`.
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

from ..conversion.staging import check_parent_writable, recover_interrupted, staging_folder
from .coreml_export import coreml_runtime_available, export_coreml, import_coremltools, verify_coreml
from .encoders import load_fused_model
from .onnx_export import export_onnx, verify_onnx

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling_mobileclip.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--max-batch", type=int, default=256, help="CoreML: largest batch the encoders accept")
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
    model = load_fused_model(args.model, args.trust_remote_code)
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
        try:
            with explain_remote_code_refusal(args.model):
                processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
            processor.save_pretrained(staging)
        except (OSError, ValueError) as err:
            print(f"No processor saved next to the encoders ({str(err).strip().splitlines()[0]}); preprocess as "
                  f"the model card describes.", file=sys.stderr)
        (staging / "export_config.json").write_text(json.dumps(summary, indent=2) + "\n")
        _install(staging, args.output)
    print(f"Wrote {args.output}/: {summary['image_encoder']}, {summary['text_encoder']}, export_config.json",
          file=sys.stderr)
    return summary


def run(argv=None) -> int:
    """The command (`python -m`, console script): `main`, with bad input printed as one line instead of a traceback."""
    try:
        main(argv)
    except ValueError as err:
        sys.exit(f"error: {err}")
    return 0
