"""Export a MobileCLIP model as two fused encoders, image and text, each with a dynamic batch axis.

    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format onnx --output ./s0-onnx
    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format coreml --output ./s0-coreml

Users deploy the encoders split: the image encoder runs on the camera feed, the text encoder once per prompt.

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
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor

from . import MobileCLIPModel  # noqa: F401  (registers the Auto classes)

FORMATS = ("onnx", "coreml")
PARITY_TOLERANCE = 1e-4
EXTENSIONS = {"onnx": ".onnx", "coreml": ".mlpackage"}


# One class per tower, not one class parameterised by tower: `forward`'s argument name becomes the input name of the
# torch.export graph and so of the CoreML model.
class ImageEncoder(torch.nn.Module):
    """pixel_values -> L2-normalised image embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return F.normalize(self.model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)


class TextEncoder(torch.nn.Module):
    """input_ids -> L2-normalised text embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return F.normalize(self.model.get_text_features(input_ids=input_ids).pooler_output, dim=-1)


# ----------------------------------------------------------------------------------------------------------
# Model and example inputs
# ----------------------------------------------------------------------------------------------------------


def is_fused(model) -> bool:
    configs = [getattr(model.config, name, None) for name in ("vision_config", "text_config")]
    return all(getattr(config, "inference_mode", True) for config in configs)


def load_fused_model(model_id: str) -> torch.nn.Module:
    """The model in float32 eval mode with eager attention (a plain graph to export), fused if it was not."""
    local = Path(model_id)
    if local.exists() and not (local / "config.json").is_file():
        raise ValueError(f"--model {model_id!r} has no config.json; pass a directory written by "
                         f"`model.save_pretrained(...)` or a hub id.")
    model = AutoModel.from_pretrained(model_id, dtype=torch.float32, attn_implementation="eager",
                                      trust_remote_code=True).eval()
    missing = [name for name in ("get_image_features", "get_text_features") if not hasattr(model, name)]
    if missing:
        raise ValueError(f"--model {model_id!r} loaded as {type(model).__name__}, which lacks {missing}; pass a "
                         f"MobileCLIP (or other CLIP-style dual encoder) checkpoint.")
    model.requires_grad_(False)
    if not is_fused(model):
        print(f"{model_id} is not fused: fusing it first with model.reparameterize() (the exported graphs are the "
              f"fused inference graphs; save it fused with `model.reparameterize().save_pretrained(...)` to skip "
              f"this step).", file=sys.stderr)
        model.reparameterize()
    return model


def example_inputs(model, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images and captions of different lengths (`<start> tokens <end>`, 0-padded to the context length)."""
    gen = torch.Generator().manual_seed(seed)
    size, text_config = model.config.vision_config.image_size, model.config.text_config
    context, eos = text_config.max_position_embeddings, text_config.eos_token_id
    input_ids = torch.zeros(batch, context, dtype=torch.long)
    for row in range(batch):
        length = int(torch.randint(1, context - 1, (1,), generator=gen))
        input_ids[row, 0] = eos - 1  # <|startoftext|>
        input_ids[row, 1 : length + 1] = torch.randint(1, eos - 1, (length,), generator=gen)
        input_ids[row, length + 1] = eos
    return {"image": torch.rand(batch, 3, size, size, generator=gen), "text": input_ids}


def encoders(model) -> dict[str, tuple[torch.nn.Module, str, str]]:
    return {"image": (ImageEncoder(model), "pixel_values", "image_embeds"),
            "text": (TextEncoder(model), "input_ids", "text_embeds")}


# ----------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------


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
    _check_parity(diffs, "onnxruntime")
    return diffs


# ----------------------------------------------------------------------------------------------------------
# CoreML
# ----------------------------------------------------------------------------------------------------------


def _import_coremltools():
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
    ct = _import_coremltools()
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
    ct = _import_coremltools()
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
    _check_parity(diffs, "CoreML")
    return diffs


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def _check_parity(diffs: dict[str, float], runtime: str) -> None:
    bad = {kind: diff for kind, diff in diffs.items() if diff > PARITY_TOLERANCE}
    if bad:
        raise RuntimeError(f"The {runtime} encoders differ from PyTorch by {bad} (tolerance {PARITY_TOLERANCE}); "
                           f"nothing was written. Please report this with the model id and versions.")


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
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.max_batch < 1:
        raise ValueError(f"--max-batch {args.max_batch}; expected a positive integer.")
    if args.output.exists() and not args.output.is_dir():
        raise ValueError(f"--output {str(args.output)!r} is a file; pass a directory.")
    if args.format == "coreml":
        _import_coremltools()  # fail before loading weights
    model = load_fused_model(args.model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    summary = {f"{kind}_encoder": f"{kind}_encoder{EXTENSIONS[args.format]}" for kind in ("image", "text")}
    summary.update(format=args.format, image_size=model.config.vision_config.image_size,
                   context_length=model.config.text_config.max_position_embeddings,
                   logit_scale=float(model.logit_scale.exp().clamp(max=100).item()),
                   outputs="L2-normalised embeddings; logits = logit_scale * image_embeds @ text_embeds.T")
    # Everything is built in a staging folder beside --output and moved in only once complete and verified.
    with tempfile.TemporaryDirectory(dir=args.output.parent, prefix=f".{args.output.name}.partial-") as staging:
        staging = Path(staging)
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
            AutoProcessor.from_pretrained(args.model, trust_remote_code=True).save_pretrained(staging)
        except (OSError, ValueError) as err:
            print(f"No processor saved next to the encoders ({str(err).strip().splitlines()[0]}); preprocess as "
                  f"the model card describes.", file=sys.stderr)
        (staging / "export_config.json").write_text(json.dumps(summary, indent=2) + "\n")
        _install(staging, args.output)
    print(f"Wrote {args.output}/: {summary['image_encoder']}, {summary['text_encoder']}, export_config.json",
          file=sys.stderr)
    return summary


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"error: {err}")
