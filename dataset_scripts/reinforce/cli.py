"""The reinforcement's command line: ``python -m dataset_scripts.reinforce``, ``accelerate launch -m
dataset_scripts.reinforce`` or the ``mobileclip-reinforce`` console script (options: ``--help``)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Optional, Sequence

from modeling_mobileclip.commands import run_command

from .config import DTYPES
from .run import distributed_state, reinforce


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Reinforce an image-text dataset into the DataCompDR layout.")
    p.add_argument("--dataset", required=True, help="Hub dataset id, folder/glob of .tar or .parquet, or imagefolder")
    p.add_argument("--split", default="train")
    p.add_argument("--image-column"), p.add_argument("--text-column"), p.add_argument("--uid-column")
    p.add_argument("--url-column")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="output shard size for non-tar inputs")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--captioner", help="open_clip:<coca>/<tag>, hf:<repo>, a transformers id/folder, or 'none'")
    p.add_argument("--num-captions", type=int, default=5)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-caption-tokens", type=int, default=30)
    p.add_argument("--teachers", required=True, help="comma-separated teacher specs, in embedding order")
    p.add_argument("--teacher-logit-scales", type=_floats)
    p.add_argument("--num-augmentations", type=int, default=10)
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--interpolation", default="bicubic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--embedding-format", default="npz", choices=("npz", "pth.gz"))
    p.add_argument("--batch-size", type=int, default=32, help="samples per step")
    p.add_argument("--teacher-batch-size", type=int, default=256, help="views / texts per teacher forward")
    p.add_argument("--device")
    p.add_argument("--cache-dir", help="datasets cache folder for parquet / imagefolder / Hub inputs")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--output", required=True)
    p.add_argument("--license", help="licence of the result for the dataset card (no default)")
    p.add_argument("--push-to-hub", metavar="REPO_ID")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-shards", type=int,
                   help="stop after this many shards per process (e.g. to fit a job's time limit); rerun to go on")
    p.add_argument("--lease-seconds", type=float, default=600.0,
                   help="a shard claimed by a process that died (or hangs without heartbeat) is taken over by "
                        "another this long after its last heartbeat (docs/reinforcement.md#several-machines)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    captioner = None if args.captioner in (None, "", "none") else args.captioner
    summary = reinforce(
        args.dataset, args.output, [t.strip() for t in args.teachers.split(",") if t.strip()], captioner,
        teacher_logit_scales=args.teacher_logit_scales, num_captions=args.num_captions, top_p=args.top_p,
        max_caption_tokens=args.max_caption_tokens, num_augmentations=args.num_augmentations,
        crop_size=args.crop_size, interpolation=args.interpolation, seed=args.seed, dtype=args.dtype,
        embedding_format=args.embedding_format, split=args.split, samples_per_shard=args.samples_per_shard,
        image_column=args.image_column, text_column=args.text_column, uid_column=args.uid_column,
        url_column=args.url_column, max_samples=args.max_samples, license=args.license,
        batch_size=args.batch_size, teacher_batch_size=args.teacher_batch_size, device=args.device,
        cache_dir=args.cache_dir,
        trust_remote_code=args.trust_remote_code, push_to_hub=args.push_to_hub, progress=not args.no_progress,
        max_shards=args.max_shards, lease_seconds=args.lease_seconds,
    )
    shown = {k: v for k, v in summary.items() if k != "config"}
    print("reinforce: " + json.dumps(shown, default=str), flush=True)
    # Leave the process group cleanly (gloo ranks otherwise may abort at interpreter exit).
    state = distributed_state(args.device)
    state.wait_for_everyone()
    state.destroy_process_group()
    return summary


def console_main() -> int:
    """``mobileclip-reinforce`` and ``python -m``: bad input is one `error:` line and exit status 2. The summary dict
    that :func:`main` returns (for Python callers) must not reach the console wrapper, which exits with it."""
    return run_command(main)
