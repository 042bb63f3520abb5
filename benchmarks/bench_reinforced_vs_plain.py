"""Reinforced vs plain training at equal steps and seeds, on the embedded toy DataCompDR (the shape of MobileCLIP2
Table 2 / MobileCLIP Table 3 at micro scale).

    python benchmarks/bench_reinforced_vs_plain.py            # 3 seeds x 6 runs of 1,000 steps, ~30 min on 2 CPU cores
    python benchmarks/bench_reinforced_vs_plain.py --quick    # CI smoke test: a tiny toy set, 1 seed, 3 steps

Writes benchmarks/results/bench_reinforced_vs_plain.md and .json (--results-dir to change; --quick writes to a temp
dir).

Every run is `train_accelerate.main` with the same steps, batch, learning rate, schedule and seed; only the recipe
differs (`--caption-mode`, `--loss-weights`):

* plain: ground-truth (alt-text) captions, CLIP loss (w = 1, 0);
* + synthetic captions: ground-truth and synthetic captions, CLIP loss, two-term sum (w = 1, 0);
* + distillation: ground-truth captions, distillation only (w = 0, 1, the paper's lambda = 1);
* + both: ground-truth and synthetic captions, distillation (the DataCompDR-12M recipe).

"+ synthetic captions" and "+ both" encode twice the texts per step (as in the paper, which compares at equal
iterations). Metrics on the held-out set (144 pictures never seen in training): zero-shot top-1 over 24
"colour shape" classes and image<->text recall@1 on unique human-style captions; mean and sample standard deviation
over the seeds. The MobileCLIP student is the tiny MCi preset; the ViT student a tiny transformers `CLIPModel`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_accelerate  # noqa: E402
from common import add_results_option, header_line, machine_header, write_results  # noqa: E402
from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr  # noqa: E402

RECIPES = {
    "plain": ["--caption-mode", "gt", "--loss-weights", "1,0"],
    "+ synthetic captions": ["--caption-mode", "gt+syn", "--loss-weights", "1,0"],
    "+ distillation": ["--caption-mode", "gt", "--loss-weights", "0,1"],
    "+ both (DataCompDR recipe)": ["--caption-mode", "gt+syn", "--loss-weights", "0,1"],
}
STUDENTS = {"MobileCLIP (tiny MCi)": ("tiny", list(RECIPES)),
            "ViT (tiny CLIP, ViT-8/32 px)": ("tiny-clip", ["plain", "+ both (DataCompDR recipe)"])}
METRICS = {"zero-shot top-1": "eval/zeroshot_acc1", "image->text R@1": "eval/text_retrieval_recall@1",
           "text->image R@1": "eval/image_retrieval_recall@1"}
QUICK_SPEC = dict(num_train=64, samples_per_shard=32, num_augmentations=2, teacher_images=64, teacher_steps=4,
                  teacher_batch_size=16)


def run_one(model: str, recipe: str, seed: int, args, cache_dir: str, out: Path) -> dict:
    """One training run in this process; returns its final held-out metrics."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    toy = ["--toy-spec", ",".join(f"{k}={v}" for k, v in QUICK_SPEC.items())] if args.quick else []
    train_accelerate.main([*toy, "--cache-dir", cache_dir, "--output-dir", str(out), "--model", model,
                           "--seed", str(seed), "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
                           "--eval-every", str(args.steps), "--checkpoint-every", str(10 * args.steps),
                           "--report-to", "jsonl", *RECIPES[recipe]])
    rows = [json.loads(line) for line in (out / "logs" / "mobileclip" / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in reversed(rows) if "eval/zeroshot_acc1" in r)


def summarise(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke test: tiny toy set, 1 seed, 3 steps")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cache-dir", default=None, help="toy data cache (default: the user cache; --quick: a temp dir)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest on a small CPU)")
    add_results_option(p)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.batch_size = 1, 3, 8
    torch.set_num_threads(args.threads)
    header = machine_header("fp32", args.threads)
    print(header_line(header), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or (tmp if args.quick else None)
        root = build_toy_datacompdr(ToySpec(**(QUICK_SPEC if args.quick else {})), cache_dir)
        cache_dir = str(root.parent)
        results: dict[tuple[str, str], list[dict]] = {}
        start = time.perf_counter()
        for seed in range(args.seeds):  # seeds outermost: a slow spell of a shared machine hits every recipe alike
            for student, (model, recipes) in STUDENTS.items():
                for recipe in recipes:
                    out = Path(tmp) / f"{model}-{list(RECIPES).index(recipe)}-{seed}"
                    results.setdefault((student, recipe), []).append(run_one(model, recipe, seed, args, cache_dir,
                                                                             out))
        minutes = (time.perf_counter() - start) / 60
        toy = json.loads((root / "toy.json").read_text())
    teachers = ", ".join(f"{t['name']} {100 * t['zeroshot_acc1']:.1f}" for t in toy["teachers"])
    intro = (f"Toy DataCompDR {root.name}: {toy['num_train']} training pictures x {toy['spec']['num_augmentations']} "
             f"stored augmentations, {toy['spec']['num_synthetic']} synthetic captions, 2 teachers; held-out set "
             f"{toy['num_eval']} pictures, {len(toy['eval_classnames'])} classes. Teachers' zero-shot top-1 (%): "
             f"{teachers}. {args.steps} steps x batch {args.batch_size}, lr 1e-3, warmup 10 %, cosine, "
             f"{args.seeds} seed(s) (mean ± sample std); {args.threads} torch thread(s), float32; {minutes:.1f} min "
             "in total.")
    table = ["| student | recipe | " + " | ".join(f"{m} (%)" for m in METRICS) + " |",
             "|---|---|" + "---:|" * len(METRICS)]
    for (student, recipe), runs in results.items():
        cells = [summarise([r[key] for r in runs]) for key in METRICS.values()]
        table.append(f"| {student} | {recipe} | " + " | ".join(cells) + " |")
    print("", intro, "", *table, sep="\n")
    write_results("bench_reinforced_vs_plain", args, header, intro, ["\n".join(table)],
                  [{"student": student, "recipe": recipe, "runs": [{k: r[k] for k in METRICS.values()} for r in runs]}
                   for (student, recipe), runs in results.items()])


if __name__ == "__main__":
    main()
