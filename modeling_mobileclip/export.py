"""Export a MobileCLIP model as two fused ONNX encoders (image and text), each with a dynamic batch axis.

    python -m modeling_mobileclip.export --model path/or/org/mobileclip-s0 --format onnx --output ./mobileclip-s0-onnx

Writes `image_encoder.onnx` (pixel_values [batch, 3, H, W] -> image_embeds [batch, D], L2-normalised),
`text_encoder.onnx` (input_ids [batch, 77] int64 -> text_embeds [batch, D], L2-normalised), `export_config.json`
(shapes, logit scale, opset) and the processor files, then checks both graphs against PyTorch in onnxruntime.
Users deploy them split: the image encoder runs on the camera feed, the text encoder once per prompt.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor

from . import MobileCLIPModel  # noqa: F401  (registers the Auto classes)

PARITY_TOLERANCE = 1e-4


class ImageEncoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return F.normalize(self.model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)


class TextEncoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return F.normalize(self.model.get_text_features(input_ids=input_ids).pooler_output, dim=-1)


def load_fused_model(model_id: str) -> torch.nn.Module:
    model = AutoModel.from_pretrained(model_id, dtype=torch.float32, attn_implementation="eager").eval()
    model.requires_grad_(False)
    vision_config = getattr(model.config, "vision_config", None)
    if vision_config is not None and not vision_config.inference_mode:
        print(f"{model_id} is not fused: fusing it first with model.reparameterize() (the exported graphs are the "
              "fused inference graphs).")
        model.reparameterize()
    return model


def export_onnx(model, output: Path, opset: int) -> dict:
    config = model.config
    size, context = config.vision_config.image_size, config.text_config.max_position_embeddings
    examples = {"image": torch.rand(2, 3, size, size), "text": torch.zeros(2, context, dtype=torch.long)}
    examples["text"][:, 0], examples["text"][:, 1], examples["text"][:, 2] = 49406, 320, config.text_config.eos_token_id
    encoders = {"image": (ImageEncoder(model), "pixel_values", "image_embeds"),
                "text": (TextEncoder(model), "input_ids", "text_embeds")}
    for kind, (module, input_name, output_name) in encoders.items():
        # TrainingMode.PRESERVE exports the eval-mode model as it is: the default EVAL mode re-folds the ConvFFN
        # BatchNorms at export, which moved fused MobileCLIP-S0 embeddings by 1.8e-3 in onnxruntime (PRESERVE: 6.7e-8).
        torch.onnx.export(module, (examples[kind],), str(output / f"{kind}_encoder.onnx"), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=[input_name], output_names=[output_name], opset_version=opset,
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return {kind: (encoders[kind][0], examples[kind]) for kind in encoders}


def verify_onnx(output: Path, encoders: dict) -> dict:
    """Max abs difference between onnxruntime and PyTorch for batches of 1 and 3 (proves the dynamic batch)."""
    import onnxruntime

    diffs = {}
    for kind, (module, example) in encoders.items():
        session = onnxruntime.InferenceSession(str(output / f"{kind}_encoder.onnx"), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        worst = 0.0
        for batch in (1, 3):
            inputs = example[:1].repeat(batch, *([1] * (example.dim() - 1)))
            if kind == "image":
                inputs = torch.rand_like(inputs)
            with torch.no_grad():
                expected = module(inputs).numpy()
            got = session.run(None, {input_name: inputs.numpy()})[0]
            worst = max(worst, float(np.abs(got - expected).max()))
        diffs[kind] = worst
        if worst > PARITY_TOLERANCE:
            raise RuntimeError(f"{kind}_encoder.onnx differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE}).")
    return diffs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or Hub id")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")
    args = parser.parse_args(argv)

    model = load_fused_model(args.model)
    args.output.mkdir(parents=True, exist_ok=True)
    encoders = export_onnx(model, args.output, args.opset)
    try:
        AutoProcessor.from_pretrained(args.model).save_pretrained(args.output)
    except (OSError, ValueError) as err:
        print(f"No processor saved next to the encoders ({err}); preprocess as the model card describes.")
    summary = {"image_encoder": "image_encoder.onnx", "text_encoder": "text_encoder.onnx", "opset": args.opset,
               "image_size": model.config.vision_config.image_size,
               "context_length": model.config.text_config.max_position_embeddings,
               "logit_scale": float(model.logit_scale.exp().clamp(max=100).item()),
               "outputs": "L2-normalised embeddings; logits = logit_scale * image_embeds @ text_embeds.T"}
    if not args.no_verify:
        summary["max_abs_diff_vs_pytorch"] = verify_onnx(args.output, encoders)
        print(f"onnxruntime vs PyTorch max abs diff: {summary['max_abs_diff_vs_pytorch']}")
    (args.output / "export_config.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
