"""Image + text latency of fused MobileCLIP against transformers' CLIP ViT-B/16, the paper's baseline, in one process.

One image and one 77-token caption per call (batch 1, fp32, CPU), interleaved rounds, median. Each row also gives the
FLOPs of the call and the achieved GFLOP/s next to the machine's fp32 GEMM rate at the same thread count, which says
how much of the hardware a model uses (convolution-heavy MCi towers reach less of it than ViT-B's large matmuls).
The reference row is the issue's peer: timm's fused `fastvit_mci0` + transformers' 6-layer `sam3_lite_text` (the
same architecture as MobileCLIP-S0, no code of ours).

    python benchmarks/bench_vs_clip.py              # the docs table
    python benchmarks/bench_vs_clip.py --quick      # CI smoke run: S0 and the reference only, no claims

Writes benchmarks/results/bench_vs_clip.md and .json (--results-dir to change; --quick writes to a temp dir).
"""

import timm
import torch
from common import (benchmark_parser, caption_ids, count_flops, format_ratio, gemm_gflops, header_line,
                    interleaved_times, machine_header, median_ms, parse_benchmark_args, trained_magnitudes,
                    write_results)
from timm.utils.model import reparameterize_model
from transformers import CLIPConfig, CLIPModel, Sam3LiteTextConfig, Sam3LiteTextTextModel

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel

VARIANTS = ("mobileclip-s0", "mobileclip-s1", "mobileclip-s2", "mobileclip-b")
REFERENCE = "timm fastvit_mci0 + sam3_lite_text (fused)"


def clip_vit_b16(num_layers: int = 12) -> CLIPModel:
    """transformers' CLIP ViT-B/16 (image 224, 12 x 768; text 12 x 512), random weights."""
    config = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=num_layers),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                           num_hidden_layers=num_layers, patch_size=16, image_size=224),
        projection_dim=512)
    return CLIPModel(config).eval()


def image_and_text(model, pixel_values: torch.Tensor, input_ids: torch.Tensor):
    """One call of a CLIP-API model: both embeddings (what a retrieval app computes for a new image and query)."""
    return lambda: (model.get_image_features(pixel_values=pixel_values), model.get_text_features(input_ids=input_ids))


def reference_s0():
    """The same call on the issue's peer: timm's fused MCi0 trunk + transformers' S0-architecture text tower."""
    image_tower = reparameterize_model(trained_magnitudes(timm.create_model("fastvit_mci0", num_classes=512).eval()))
    text_config = Sam3LiteTextConfig(text_config=dict(num_hidden_layers=6)).text_config
    text_tower = trained_magnitudes(Sam3LiteTextTextModel(text_config).eval())
    pixel_values, input_ids = torch.rand(1, 3, 256, 256), caption_ids(1)
    return lambda: (image_tower(pixel_values), text_tower(input_ids=input_ids).pooler_output)


def main(argv=None) -> None:
    args = parse_benchmark_args(benchmark_parser(__doc__, quick="S0 and the reference, 1-layer CLIP"), argv)
    variants = VARIANTS[:1] if args.quick else VARIANTS
    header = machine_header("fp32", args.threads)
    print(header_line(header), flush=True)

    clip = clip_vit_b16(num_layers=1 if args.quick else 12)
    candidates = {"CLIP ViT-B/16": image_and_text(clip, torch.rand(1, 3, 224, 224), caption_ids(1))}
    for variant in variants:
        model = trained_magnitudes(MobileCLIPModel(MobileCLIPConfig.from_variant(variant)).eval()).reparameterize()
        size = model.config.vision_config.image_size
        candidates[f"{variant} (fused)"] = image_and_text(model, torch.rand(1, 3, size, size), caption_ids(1))
    candidates[REFERENCE] = reference_s0()

    flops = {name: count_flops(fn) for name, fn in candidates.items()}
    with torch.inference_mode():
        times = interleaved_times(candidates, args.schedule)
    gemm = gemm_gflops(args.schedule)
    baseline = times["CLIP ViT-B/16"]
    intro = (f"cpu, fp32, {args.threads} threads, batch 1 (one 256/224 px image + one 77-token caption), "
             f"{args.schedule.describe()}; torch {torch.__version__}; fp32 GEMM 1024^3 on this machine: "
             f"{gemm:.0f} GFLOP/s")
    table = ["| model | GFLOP | ms | GFLOP/s | of GEMM rate | speed-up vs CLIP ViT-B/16 |", "|---|---|---|---|---|---|"]
    for name, t in times.items():
        rate = flops[name] / 1e9 / (median_ms(t) / 1e3)
        table.append(f"| {name} | {flops[name] / 1e9:.2f} | {median_ms(t):.1f} | {rate:.0f} | {rate / gemm:.0%} | "
                     f"{format_ratio(baseline, t)}x |")
    print(intro, *table, sep="\n", flush=True)
    write_results("bench_vs_clip", args, header, intro, ["\n".join(table)],
                  {"seconds_per_call": times, "flops": flops, "gemm_gflops": gemm})


if __name__ == "__main__":
    main()
