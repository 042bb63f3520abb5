"""Latency of our towers against their peers, side by side in one process (interleaved runs, median).

Rows (fp32, CPU, `--threads` threads, batch 1 and 16):
- image tower vs timm's registered trunk (`fastvit_mci0/1/2`, `vit_base_mci_224`) with the same weights, un-fused and
  fused (timm's `reparameterize_model` on the timm side);
- text tower vs open_clip's text encoder of the same architecture (S1/S2/B) and vs transformers' `sam3_lite_text`
  6-layer model for the S0 Text-RepMixer encoder (weights random: speed does not depend on them);
- fused vs un-fused speed-up per variant;
- image+text latency at batch 1 vs transformers' CLIP ViT-B/16 (the paper's baseline).

    python benchmarks/bench_towers.py            # full table (several minutes on 2 cores)
    python benchmarks/bench_towers.py --quick    # smoke run used in CI: one variant, 2 repeats, no claims
"""

import argparse
import copy
import statistics
import time

import open_clip
import timm
import torch
from timm.utils.model import reparameterize_model
from transformers import CLIPConfig, CLIPModel

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel

TIMM_NAMES = {"mobileclip-s0": "fastvit_mci0", "mobileclip-s1": "fastvit_mci1", "mobileclip-s2": "fastvit_mci2",
              "mobileclip2-b": "vit_base_mci_224"}
OPEN_CLIP_NAMES = {"mobileclip-s1": "MobileCLIP-S1", "mobileclip-s2": "MobileCLIP-S2", "mobileclip-b": "MobileCLIP-B"}


def interleaved_medians(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per call of each function, running them in turn so that drift hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timm_twin(model: MobileCLIPModel, timm_name: str) -> torch.nn.Module:
    """timm's registered trunk + head carrying exactly our image-tower weights."""
    reference = timm.create_model(timm_name, num_classes=model.config.projection_dim).eval()
    state = {k.removeprefix("vision_model.trunk."): v for k, v in model.state_dict().items()
             if k.startswith("vision_model.trunk.")}
    head = "head.fc" if timm_name.startswith("fastvit") else "head"
    state[f"{head}.weight"] = model.visual_projection.weight
    bias = model.visual_projection.bias
    state[f"{head}.bias"] = bias if bias is not None else torch.zeros(model.config.projection_dim)
    reference.load_state_dict(state)
    return reference


def image_rows(variant: str, batches: list[int], repeats: int) -> list[str]:
    config = MobileCLIPConfig.from_variant(variant)
    ours = MobileCLIPModel(config).eval()
    peer = timm_twin(ours, TIMM_NAMES[variant])
    fused_ours, fused_peer = copy.deepcopy(ours).reparameterize(), reparameterize_model(peer)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, config.vision_config.image_size, config.vision_config.image_size)
        t = interleaved_medians({
            "ours": lambda: ours.get_image_features(pixel_values=x), "timm": lambda: peer(x),
            "ours_fused": lambda: fused_ours.get_image_features(pixel_values=x), "timm_fused": lambda: fused_peer(x),
        }, repeats)
        rows.append(f"| {variant} image | {TIMM_NAMES[variant]} | {batch} | {t['ours'] * 1e3:.1f} / {t['timm'] * 1e3:.1f}"
                    f" | {t['ours'] / t['timm']:.3f} | {t['ours_fused'] * 1e3:.1f} / {t['timm_fused'] * 1e3:.1f} | "
                    f"{t['ours_fused'] / t['timm_fused']:.3f} | {t['ours'] / t['ours_fused']:.2f}x |")
    return rows


def text_rows(variant: str, batches: list[int], repeats: int) -> list[str]:
    ours = MobileCLIPModel(MobileCLIPConfig.from_variant(variant)).eval()
    fused = copy.deepcopy(ours).reparameterize()
    if variant == "mobileclip-s0":
        from transformers import Sam3LiteTextConfig, Sam3LiteTextTextModel

        peer_name = "sam3_lite_text (6 layers)"
        peer = Sam3LiteTextTextModel(Sam3LiteTextConfig(text_config=dict(num_hidden_layers=6)).text_config).eval()
        run_peer = lambda ids: peer(input_ids=ids)  # noqa: E731
    else:
        peer_name = f"open_clip {OPEN_CLIP_NAMES[variant]}"
        peer = open_clip.create_model(OPEN_CLIP_NAMES[variant], pretrained=None).eval()
        run_peer = peer.encode_text
    rows = []
    for batch in batches:
        ids = torch.randint(1, 49000, (batch, 77))
        ids[:, 0], ids[:, 20], ids[:, 21:] = 49406, 49407, 0
        t = interleaved_medians({
            "ours": lambda: ours.get_text_features(input_ids=ids), "peer": lambda: run_peer(ids),
            "ours_fused": lambda: fused.get_text_features(input_ids=ids),
        }, repeats)
        rows.append(f"| {variant} text | {peer_name} | {batch} | {t['ours'] * 1e3:.1f} / {t['peer'] * 1e3:.1f} | "
                    f"{t['ours'] / t['peer']:.3f} | {t['ours_fused'] * 1e3:.1f} / - | - | "
                    f"{t['ours'] / t['ours_fused']:.2f}x |")
    return rows


def vs_clip_rows(variants: list[str], repeats: int) -> list[str]:
    clip = CLIPModel(CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                           patch_size=16, image_size=224), projection_dim=512)).eval()
    clip_ids, clip_x = torch.randint(1, 49000, (1, 77)), torch.rand(1, 3, 224, 224)
    fns = {"clip": lambda: (clip.get_image_features(pixel_values=clip_x), clip.get_text_features(input_ids=clip_ids))}
    for variant in variants:
        model = MobileCLIPModel(MobileCLIPConfig.from_variant(variant)).eval().reparameterize()
        size = model.config.vision_config.image_size
        x, ids = torch.rand(1, 3, size, size), clip_ids.clone()
        fns[variant] = (lambda m, x, ids: lambda: (m.get_image_features(pixel_values=x),
                                                   m.get_text_features(input_ids=ids)))(model, x, ids)
    t = interleaved_medians(fns, repeats)
    return [f"| {v} (fused) | {t[v] * 1e3:.1f} | {t['clip'] * 1e3:.1f} | {t['clip'] / t[v]:.2f}x |" for v in variants]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: S0 only, batch 1, 2 repeats")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 2 if args.quick else args.repeats
    batches = [1] if args.quick else [1, 16]
    image_variants = ["mobileclip-s0"] if args.quick else list(TIMM_NAMES)
    text_variants = ["mobileclip-s0"] if args.quick else ["mobileclip-s0", "mobileclip-s1", "mobileclip-b"]
    print(f"device cpu, fp32, {args.threads} threads, median of {repeats} interleaved runs, torch {torch.__version__}")
    print("| tower | peer | batch | ms ours / peer | ratio | fused ms ours / peer | fused ratio | fused speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for variant in image_variants:
            print("\n".join(image_rows(variant, batches, repeats)), flush=True)
        for variant in text_variants:
            print("\n".join(text_rows(variant, batches, repeats)), flush=True)
        print("\n| model, batch 1, image + text | ms | CLIP ViT-B/16 ms | speed-up vs ViT-B/16 |\n|---|---|---|---|")
        vs = ["mobileclip-s0"] if args.quick else ["mobileclip-s0", "mobileclip-s1", "mobileclip-s2", "mobileclip-b"]
        print("\n".join(vs_clip_rows(vs, repeats)), flush=True)


if __name__ == "__main__":
    main()
