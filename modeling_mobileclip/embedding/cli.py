"""Embed a folder or dataset of images (or a file of texts) for an index, at full throughput.

    python -m modeling_mobileclip.embedding --model path/or/org/mobileclip-s0 --images photos/ --output photos-emb/ \\
        --batch-size 64 --num-workers 2
    python -m modeling_mobileclip.embedding --model mobileclip-s0 --images imagenet-val/ --output val-emb/
    python -m modeling_mobileclip.embedding --model mobileclip-s0 --texts queries.txt --output queries-emb/

(also the `mobileclip-embed` console script). `--images`: a folder (searched recursively for jpg/jpeg/png/webp; ids
are the relative paths) or a dataset (`save_to_disk` folder, `.parquet`, hub id; ids are row indices, or
`--id-column`). DataLoader workers decode and preprocess; the model runs fused, in eval and inference mode, batched.
Output: `shard-NNNNN.safetensors` (L2-normalised float32 embeddings + their ids) and `index.json`, written last;
every file is written under a temporary name and renamed, and a run started again with the same arguments keeps the
finished shards. Unreadable images are skipped, counted and named in `index.json`. Read the result with
`modeling_mobileclip.embedding.load_embeddings(folder)` -> (ids, embeddings).
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoProcessor

from hub_cards.remote_code import TRUST_REMOTE_CODE_HELP, explain_remote_code_refusal

from ..commands import run_command
from ..export.encoders import load_fused_model
from ..inference import optimize_for_inference
from .run import embed_images, embed_texts
from .sources import image_source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling_mobileclip.embedding", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or hub id (with its processor)")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", help="folder of images (recursive) or image dataset")
    inputs.add_argument("--texts", type=Path, help="UTF-8 file, one text per line")
    parser.add_argument("--output", required=True, type=Path, help="output folder (shards + index.json)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding and preprocessing")
    parser.add_argument("--shard-size", type=int, default=10_000, help="embeddings per shard (and per resume unit)")
    parser.add_argument("--image-column", default=None, help="dataset column with the images (default: found)")
    parser.add_argument("--id-column", default=None, help="dataset column used as ids (default: row index)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="the towers' precision: auto = optimize_for_inference's choice for the machine (bfloat16 "
                             "with AVX512-BF16 / AMX or on a GPU, else float32); embeddings are stored float32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.shard_size < 1 or args.num_workers < 0:
        raise ValueError(f"--batch-size {args.batch_size} and --shard-size {args.shard_size} must be positive, "
                         f"--num-workers {args.num_workers} at least 0.")
    if args.output.exists() and not args.output.is_dir():
        raise ValueError(f"--output {str(args.output)!r} is a file; pass a folder.")
    if args.texts is not None and not args.texts.is_file():
        raise ValueError(f"--texts {str(args.texts)!r} is not a file; pass a UTF-8 file with one text per line.")
    if args.images is not None and not Path(args.images).exists() and args.images.startswith(("/", ".")):
        raise ValueError(f"--images {args.images!r} does not exist; pass a folder of images or a dataset.")


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = None
    if args.texts is not None:
        texts = [line for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"--texts {str(args.texts)!r} holds no text; pass a file with one text per line.")
    source = image_source(args.images, args.image_column, args.id_column) if args.images is not None else None
    model = load_fused_model(args.model, args.trust_remote_code, attn_implementation="sdpa")
    # The fast path without compiling: batch shapes vary (the last batch), and a compile costs more than it saves
    # on all but very large sets.
    optimize_for_inference(model, device=args.device, dtype=args.dtype, compile=False)
    print(f"Embedding with {str(model.inference_plan).splitlines()[0]}", file=sys.stderr)
    with explain_remote_code_refusal(args.model):
        try:
            processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        except OSError as err:
            raise ValueError(f"--model {args.model!r} has no processor ({str(err).strip().splitlines()[0]}); save "
                             f"one next to the weights with `processor.save_pretrained(...)`.") from err
    common = {"batch_size": args.batch_size, "shard_size": args.shard_size, "progress": not args.no_progress,
              "model_name": args.model}
    if texts is not None:
        record = embed_texts(model, processor, texts, args.output, source=str(args.texts), **common)
        print(f"Embedded {record['count']} texts into {args.output}/", file=sys.stderr)
        return record
    record = embed_images(model, processor, source, args.output, num_workers=args.num_workers,
                          source_name=args.images, **common)
    skipped = "" if not record["skipped_count"] else (
        f"; skipped {record['skipped_count']} unreadable: "
        + ", ".join(f"{i} ({why})" for i, why in record["skipped"][:5])
        + (" ..." if record["skipped_count"] > 5 else "") + " (all in index.json)")
    rate = f", {record['images_per_second']} images/s" if record["images_per_second"] else ""
    print(f"Embedded {record['count']} of {record['items']} images into {args.output}/{rate}{skipped}",
          file=sys.stderr)
    return record


def run(argv=None) -> int:
    """The command (`python -m`, console script): bad input is one `error:` line and exit status 2."""
    return run_command(main, argv)
