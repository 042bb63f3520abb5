"""onnxruntime vs PyTorch latency of the exported fused encoders, side by side in one process (interleaved, median).

    python benchmarks/bench_onnx.py [--variant mobileclip-s0] [--repeats 15] [--threads 2]
    python benchmarks/bench_onnx.py --quick      # CI smoke run: tiny config, 2 repeats, no claims
"""

import argparse
import sys
import tempfile
from pathlib import Path

import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_towers import interleaved_medians  # noqa: E402

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel, MobileCLIPTextConfig, MobileCLIPVisionConfig
from modeling_mobileclip.export import ImageEncoder, TextEncoder, export_onnx


def quick_config() -> MobileCLIPConfig:
    return MobileCLIPConfig(
        text_config=MobileCLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                         num_hidden_layers=2),
        vision_config=MobileCLIPVisionConfig(image_size=64, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64)),
        projection_dim=24)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mobileclip-s0")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = quick_config() if args.quick else MobileCLIPConfig.from_variant(args.variant)
    model = MobileCLIPModel(config).eval().reparameterize().requires_grad_(False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    size, repeats = config.vision_config.image_size, 2 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp), opset=17)
        sessions = {kind: onnxruntime.InferenceSession(str(Path(tmp) / f"{kind}_encoder.onnx"), options,
                                                       providers=["CPUExecutionProvider"]) for kind in ("image", "text")}
        print(f"{args.variant if not args.quick else 'tiny'} fused, fp32, cpu, {args.threads} threads, median of "
              f"{repeats}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}")
        print("| encoder | batch | PyTorch ms | onnxruntime ms | onnxruntime / PyTorch |\n|---|---|---|---|---|")
        for batch in (1, 16):
            images = torch.rand(batch, 3, size, size)
            ids = torch.zeros(batch, 77, dtype=torch.long)
            ids[:, 0], ids[:, 1], ids[:, 2] = 49406, 320, 49407
            image_encoder, text_encoder = ImageEncoder(model), TextEncoder(model)
            with torch.inference_mode():
                t = interleaved_medians({
                    "image_pt": lambda: image_encoder(images),
                    "image_ort": lambda: sessions["image"].run(None, {"pixel_values": images.numpy()}),
                    "text_pt": lambda: text_encoder(ids),
                    "text_ort": lambda: sessions["text"].run(None, {"input_ids": ids.numpy()}),
                }, repeats)
            for kind in ("image", "text"):
                pt, ort = t[f"{kind}_pt"], t[f"{kind}_ort"]
                print(f"| {kind} | {batch} | {pt * 1e3:.1f} | {ort * 1e3:.1f} | {ort / pt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
