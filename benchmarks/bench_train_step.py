"""Training-step throughput: MobileCLIP's reinforced loss against a plain CLIP loss step on the same model, in one
process (interleaved rounds, median).

Each step is the body of `train_accelerate.py`'s step on one process: forward of the un-fused model in train mode,
loss from `training.losses`, backward, gradient clipping at 1.0, AdamW step (`training.optim.build_optimizer`).
The teacher embeddings are DataCompDR-shaped (two 768-d teachers, logit scales 100) and precomputed, as the dataset
stores them. Rows:
- `clip_loss`: plain CLIP contrastive loss on b images and their b captions (the baseline);
- `mobileclip_loss`, one caption set: the same forward, contrastive + distillation (w = 0.5, 0.5: both terms, the
  most expensive setting). Its overhead over the baseline is the cost of the reinforced loss itself (target < 5%);
- `train_accelerate.py` step: b images with a ground-truth and a synthetic caption each (2b captions in one text
  forward) and the two-term reinforced loss, as the training script runs it. The extra text forward is the cost of
  DataCompDR's synthetic captions, not of the loss.

    python benchmarks/bench_train_step.py                  # the docs table (MobileCLIP-S0, batch 16)
    python benchmarks/bench_train_step.py --quick          # CI smoke run: tiny config, batch 4, no claims

Writes benchmarks/results/bench_train_step.md and .json (--results-dir to change; --quick writes to a temp dir).
"""

import torch
from common import (benchmark_parser, format_ratio, header_line, interleaved_times, machine_header, median_ms,
                    parse_benchmark_args, tiny_config, trained_magnitudes, write_results)

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel
from modeling_mobileclip.training.losses import clip_loss, mobileclip_loss, total_loss
from modeling_mobileclip.training.optim import build_optimizer

TEACHER_DIMS, TEACHER_LOGIT_SCALES = [768, 768], [100.0, 100.0]
LOSS_WEIGHTS = (0.5, 0.5)
MAX_GRAD_NORM = 1.0


def random_batch(batch: int, image_size: int, context: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 49000, (2 * batch, context))
    ids[:, 0], ids[:, 20:] = 49406, 0
    ids[:, 19] = 49407
    teacher = lambda: torch.nn.functional.normalize(torch.randn(batch, sum(TEACHER_DIMS)), dim=-1)  # noqa: E731
    return {"pixel_values": torch.rand(batch, 3, image_size, image_size), "input_ids": ids,
            "teacher_image_emb": teacher(), "teacher_text_emb": teacher(), "teacher_syn_text_emb": teacher()}


def step_functions(model: MobileCLIPModel, optimizer: torch.optim.Optimizer, batch: dict) -> dict:
    """The three steps; each runs forward, loss, backward, clipping and the optimizer step once."""
    b = batch["pixel_values"].shape[0]
    teachers = dict(teacher_dims=TEACHER_DIMS, teacher_logit_scales=TEACHER_LOGIT_SCALES)

    def step(input_ids, loss_fn):
        out = model(input_ids=input_ids, pixel_values=batch["pixel_values"])
        loss = total_loss(loss_fn(out))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad()

    def plain(out):
        return clip_loss(out.image_embeds, out.text_embeds, out.logit_scale)

    def reinforced(out):
        return mobileclip_loss(out.image_embeds, out.text_embeds, out.logit_scale, loss_weights=LOSS_WEIGHTS,
                               teacher_image_emb=batch["teacher_image_emb"],
                               teacher_text_emb=batch["teacher_text_emb"], **teachers)

    def reinforced_two_captions(out):
        gt, syn = out.text_embeds.split(b)
        return mobileclip_loss(out.image_embeds, gt, out.logit_scale, loss_weights=LOSS_WEIGHTS,
                               syn_text_features=syn, teacher_image_emb=batch["teacher_image_emb"],
                               teacher_text_emb=batch["teacher_text_emb"],
                               teacher_syn_text_emb=batch["teacher_syn_text_emb"], **teachers)

    one_caption, two_captions = batch["input_ids"][:b], batch["input_ids"]
    return {"clip_loss": lambda: step(one_caption, plain),
            "mobileclip_loss": lambda: step(one_caption, reinforced),
            "train_accelerate": lambda: step(two_captions, reinforced_two_captions)}


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="tiny config, batch 4", calls_per_round=1)
    parser.add_argument("--variant", default="mobileclip-s0")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parse_benchmark_args(parser, argv)
    config = tiny_config() if args.quick else MobileCLIPConfig.from_variant(args.variant)
    batch_size = 4 if args.quick else args.batch_size
    header = machine_header("fp32", args.threads)
    print(header_line(header), flush=True)
    model = trained_magnitudes(MobileCLIPModel(config)).train()
    optimizer = build_optimizer(model, args.variant)
    batch = random_batch(batch_size, config.vision_config.image_size, config.text_config.max_position_embeddings)
    times = interleaved_times(step_functions(model, optimizer, batch), args.schedule)
    name = "tiny" if args.quick else args.variant
    intro = (f"{name} un-fused, train mode, fp32, cpu, {args.threads} threads, batch {batch_size}, AdamW; "
             f"{args.schedule.describe()}; torch {torch.__version__}")
    table = ["| step | captions per image | s / step | samples / s | time vs clip_loss step |", "|---|---|---|---|---|"]
    labels = {"clip_loss": ("`clip_loss` (plain CLIP)", 1), "mobileclip_loss": ("`mobileclip_loss` (reinforced)", 1),
              "train_accelerate": ("`train_accelerate.py` step (reinforced, GT + synthetic)", 2)}
    for key, (label, captions) in labels.items():
        seconds = median_ms(times[key]) / 1e3
        table.append(f"| {label} | {captions} | {seconds:.2f} | {batch_size / seconds:.1f} | "
                     f"{format_ratio(times[key], times['clip_loss'])} |")
    print(intro, *table, sep="\n", flush=True)
    write_results("bench_train_step", args, header, intro, ["\n".join(table)], {"seconds_per_step": times})


if __name__ == "__main__":
    main()
