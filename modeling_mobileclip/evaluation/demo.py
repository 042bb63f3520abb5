"""Offline end-to-end zero-shot run: build a preset with random weights, fuse it, save it as a Hub-style directory,
reload it through `pipeline("zero-shot-image-classification")` and classify a rendered image.

    python -m modeling_mobileclip.evaluation.demo --variant mobileclip-s0 --output ./mobileclip-s0-random
"""

import argparse
import time

import torch
from PIL import Image, ImageDraw
from transformers import pipeline

from .. import MobileCLIPConfig, MobileCLIPModel, MobileCLIPProcessor

LABELS = ["a red circle", "a blue square", "a green triangle"]


def render_image(size: int = 320) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill="red")
    return image


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mobileclip-s0")
    parser.add_argument("--output", default="mobileclip-demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = MobileCLIPModel(MobileCLIPConfig.from_variant(args.variant)).eval().reparameterize()
    model.save_pretrained(args.output)
    MobileCLIPProcessor.from_variant(args.variant).save_pretrained(args.output)
    classifier = pipeline("zero-shot-image-classification", model=args.output)
    result = classifier(render_image(), candidate_labels=LABELS)
    print(f"{args.variant} (random weights, fused) saved to {args.output} and reloaded by the pipeline in "
          f"{time.perf_counter() - start:.1f}s:")
    for row in result:
        print(f"  {row['score']:.4f}  {row['label']}")
    return result


if __name__ == "__main__":
    main()
