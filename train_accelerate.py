"""Multi-modal reinforced training (MobileCLIP / DataCompDR recipe) of any CLIP-like student with 🤗 Accelerate.

    accelerate launch train_accelerate.py                    # tiny MobileCLIP on the embedded toy DataCompDR, offline
    accelerate launch train_accelerate.py --resume outputs/train-tiny         # after a crash: continues exactly
    accelerate launch --num_processes 8 train_accelerate.py --model mobileclip-s0 --train-data datacompdr:12m \\
        --image-dir "/data/datacomp12m/{00000..01279}.tar" --eval-data /data/imagenet/val --batch-size 1024 \\
        --max-steps 30000 --warmup-steps 1000 --num-workers 8 --loss-weights 0,1 --teacher-logit-scales 100,100 \\
        --mixed-precision bf16 --output-dir runs/s0 --push-to-hub org/mobileclip-s0-dr12m --license apple-amlr

Per step, every image is one stored augmentation replayed at the student's resolution, its teacher target is that
augmentation's stored embedding, and the text batch holds each image's ground-truth caption and one synthetic caption
(`--caption-mode`). The loss is `training.losses.mobileclip_loss`: per caption kind `w0 * CLIP + w1 * KD`.

`--train-data` streams the tar shards (`training.stream_batches`: no copy, exact resume); the embedded toy set trains
map-style (`training.map_batches`). The loop never branches on the model family: `--model` picks a
`training.students.Student` adapter.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm

from modeling_mobileclip.evaluation.prompts import save_model_templates
from modeling_mobileclip.training.args import parse_args
from modeling_mobileclip.training.card import training_card
from modeling_mobileclip.training.checkpoints import (
    check_output_dir,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from modeling_mobileclip.training.data_report import log_uids, report_data, truncate_uid_log
from modeling_mobileclip.training.grad_layout import match_gradient_layouts
from modeling_mobileclip.training.heldout import evaluate
from modeling_mobileclip.training.hub_upload import HubUploader, check_hub_push
from modeling_mobileclip.training.losses import mobileclip_loss, total_loss
from modeling_mobileclip.training.optim import build_optimizer, warmup_cosine_schedule
from modeling_mobileclip.training.run import Run, build_eval, build_train_data, total_steps
from modeling_mobileclip.training.students import student_class
from modeling_mobileclip.training.trackers import trackers


def start_processes(args) -> None:
    """The process group, then the output folder every process agrees on (a new dated one by default)."""
    from accelerate.utils import broadcast_object_list

    # Without cpu=True, accelerate on a machine with no accelerator ignores torchrun's WORLD_SIZE and every process of
    # `accelerate launch --multi_gpu --num_processes N` trains alone as "rank 0 of 1". The process state comes first:
    # the trackers' constructors (@on_main_process) would otherwise create it without the flag.
    state = PartialState(cpu=not torch.accelerator.is_available())
    if args.output_dir is None:
        name = [f"outputs/{Path(args.model).name.replace(':', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"]
        args.output_dir = broadcast_object_list(name)[0] if state.num_processes > 1 else name[0]
    check_output_dir(args)


def setup(args) -> Run:
    """Accelerator, seed, student, optimizer, data, schedule, a single `prepare`, then the resume."""
    accelerator = Accelerator(
        cpu=PartialState().device.type == "cpu", gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, log_with=trackers(args) or None,
        # total_limit=None: checkpoints.save_checkpoint rotates, and only after the new checkpoint is complete.
        project_config=ProjectConfiguration(project_dir=args.output_dir, automatic_checkpoint_naming=True,
                                            logging_dir=str(Path(args.output_dir) / "logs"), total_limit=None))
    check_hub_push(args, accelerator)  # --push-to-hub: token, repo access, licence and card, before any work
    if args.resume is None and args.overwrite_output_dir and accelerator.is_main_process:
        shutil.rmtree(Path(args.output_dir) / "checkpoints", ignore_errors=True)  # automatic naming restarts at 0
    accelerator.wait_for_everyone()
    set_seed(args.seed)  # also fixes the weight initialisation
    trust = args.trust_remote_code  # never asked on stdin: a prompt would hang under accelerate launch
    student = student_class(args.model, trust)(args.model, args.from_scratch, trust)
    if args.gradient_checkpointing:
        student.enable_gradient_checkpointing(student.model)
    if accelerator.num_processes > 1:  # DDP: gradients in their parameters' strides (training/grad_layout.py)
        match_gradient_layouts(student.model)
    optimizer = build_optimizer(student.model, args.model, lr=args.lr, betas=args.betas, eps=args.eps,
                                weight_decay=args.weight_decay)
    data = build_train_data(args, accelerator, student)
    steps = total_steps(args, data, accelerator.num_processes)
    warmup = args.warmup_steps if args.warmup_steps is not None else min(1000, steps // 10)
    # Kept out of `prepare` (which would step it num_processes times per call); saved in our JSON state.
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=warmup, total_steps=steps)
    eval_roles, eval_loader = build_eval(args, data, student)
    model, optimizer, eval_loader = accelerator.prepare(student.model, optimizer, eval_loader)
    run = Run(accelerator=accelerator, student=student, model=model, optimizer=optimizer, scheduler=scheduler,
              data=data, total_steps=steps, eval_roles=eval_roles, eval_loader=eval_loader,
              hub=HubUploader(args, accelerator))
    resumed = load_checkpoint(accelerator, Path(args.resume)) if args.resume else None
    if resumed is not None:
        run.restore(resumed)
        accelerator.print(f"Resumed from {resumed['path']} at optimizer step {run.step}")
        if args.log_sample_uids and accelerator.is_main_process:
            truncate_uid_log(Path(args.output_dir), run.step)
    run.train_loader = data.loader(run.step, steps, resumed["data"] if resumed else None)
    config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
    accelerator.init_trackers("mobileclip", config={**config, "num_processes": accelerator.num_processes,
                                                    "num_train_samples": data.num_samples, "data_mode": data.mode,
                                                    "total_steps": steps})
    if data.skipped:
        accelerator.log({f"data/skipped_{k}": v for k, v in data.skipped.items()}, step=run.step)
    return run


def next_batch(run: Run, batches, must_agree: bool) -> dict | None:
    """The next batch with samples, or None when the data ended. `must_agree` (a stream that ends, --epochs): all
    processes stop together at the first micro-step where one of them has no batch left, so none hangs in a
    collective; what the others still held is reported, not trained."""
    batch = None
    for item in batches:
        run.skipped.update(item.get("skipped", {}))
        run.dropped += item.get("dropped", 0)
        if item["uids"]:
            batch = item
            break
    if must_agree:
        missing = torch.tensor(float(batch is None), device=run.accelerator.device)
        if run.accelerator.reduce(missing, "max").item() > 0:  # accelerate's reduce has no "min" (it would sum)
            # Count, without training, what this process still held (at most the shard imbalance between ranks).
            if batch is not None:
                run.dropped += len(batch["uids"])
            for item in batches:
                run.dropped += len(item["uids"]) + item.get("dropped", 0)
            return None
    if batch is None:
        return None
    if "epochs" in batch:
        run.trained_per_epoch.update(batch["epochs"].tolist())
    batch = {k: v.to(run.accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    batch["pixel_values"] = run.data.normalize(batch["pixel_values"])  # uint8 -> normalised float32, on the device
    return batch


def compute_loss(run: Run, args, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
    accelerator, (dims, scales) = run.accelerator, run.data.teachers
    image, text, scale = run.student.features(run.model, batch["pixel_values"], batch["input_ids"])
    text, syn = text.split(image.shape[0]) if "teacher_syn_text_emb" in batch else (text, None)
    parts = mobileclip_loss(image, text, scale, loss_weights=args.loss_weights, syn_text_features=syn,
                            teacher_image_emb=batch["teacher_image_emb"], teacher_text_emb=batch["teacher_text_emb"],
                            teacher_syn_text_emb=batch.get("teacher_syn_text_emb"), teacher_dims=dims,
                            teacher_logit_scales=scales, rank=accelerator.process_index,
                            world_size=accelerator.num_processes)
    return total_loss(parts), parts, scale


def train_step(run: Run, args, batch: dict) -> dict:
    """One micro-step; returns the process-averaged loss parts (for logging). Raises on a non-finite loss."""
    accelerator, model = run.accelerator, run.model
    with accelerator.accumulate(model):
        loss, parts, scale = compute_loss(run, args, batch)
        if args.debug_nan_at_step is not None and run.step + 1 == args.debug_nan_at_step:
            loss = loss * float("nan")
        names = sorted(parts)
        logged = accelerator.reduce(torch.stack([loss.detach()] + [parts[k].detach() for k in names]), "mean")
        if not torch.isfinite(logged[0]):
            uids = gather_object(batch["uids"])
            raise FloatingPointError(
                f"Non-finite loss {logged[0].item()} at optimizer step {run.step + 1} (micro-step "
                f"{accelerator.step}); sample uids of the global batch: {uids}. No checkpoint was written for this "
                f"step; the last good one is {latest_checkpoint(Path(args.output_dir))}. Try a lower --lr or "
                f"--mixed-precision no, then --resume {args.output_dir}.")
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm) \
            if accelerator.sync_gradients else None
        run.optimizer.step()
        if accelerator.sync_gradients:
            run.scheduler.step()
            run.student.clamp_logit_scale(model)
        run.optimizer.zero_grad()
    metrics = {"train/loss": logged[0].item(), **{f"train/{k}": v.item() for k, v in zip(names, logged[1:])},
               "train/logit_scale": float(scale.detach())}
    if grad_norm is not None:
        metrics["train/grad_norm"] = float(grad_norm)
    return metrics


def guarded_step(run: Run, args, batch: dict) -> dict:
    try:
        return train_step(run, args, batch)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not isinstance(err, torch.OutOfMemoryError) and "can't allocate memory" not in str(err) \
                and "out of memory" not in str(err):
            raise
        raise RuntimeError(f"Out of memory at --batch-size {args.batch_size} per device. Use a smaller --batch-size "
                           f"with --gradient-accumulation-steps to keep the optimizer batch, --gradient-checkpointing, "
                           f"or --mixed-precision bf16. Note: accumulation does not add contrastive negatives "
                           f"(they are --batch-size x processes).") from err


def train(args) -> Path:
    """The loop: optimizer steps from the resumed one to the run's length; logging, evaluation, checkpoints."""
    start_processes(args)
    if args.no_progress:  # also the libraries' bars (weights loading, dataset preparation)
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    run = setup(args)
    accelerator, gas = run.accelerator, args.gradient_accumulation_steps
    global_batch = args.batch_size * accelerator.num_processes * gas
    bar = tqdm(total=run.total_steps, initial=run.step, unit="step", desc="train",
               disable=args.no_progress or not accelerator.is_local_main_process)
    batches, must_agree = iter(run.train_loader), run.data.mode == "stream" and args.epochs is not None
    tic = time.perf_counter()
    while run.step < run.total_steps:
        for _ in range(gas):
            batch = next_batch(run, batches, must_agree)
            if batch is None:
                break
            metrics = guarded_step(run, args, batch)
            if args.log_sample_uids:
                log_uids(run, args.output_dir, batch)
        if batch is None:
            accelerator.print(f"The data ended (--epochs {args.epochs}) after {run.step} optimizer steps.")
            break
        run.step += 1
        samples_per_s = global_batch / (time.perf_counter() - tic)  # data loading included, evaluation not
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", samples_s=f"{samples_per_s:.0f}")
        if run.step % args.log_every == 0 or run.step == 1:
            accelerator.log({**metrics, "train/lr": run.scheduler.get_last_lr()[0],
                             "train/samples_per_s": samples_per_s}, step=run.step)
        if run.step % args.eval_every == 0 or run.step == run.total_steps:
            run.last_eval = evaluate(run)
            accelerator.log(run.last_eval, step=run.step)
            accelerator.print(f"step {run.step}: " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in run.last_eval.items()))
        if run.step % args.checkpoint_every == 0:
            path = save_checkpoint(accelerator, run.training_state(), args.checkpoints_total_limit)
            run.hub.checkpoint(path, run.step)
        tic = time.perf_counter()
    bar.close()
    report_data(run)
    return finish(run, args)


def finish(run: Run, args) -> Path:
    """The student in its family's format + model card (main process), the final Hub push, trackers closed."""
    accelerator, out = run.accelerator, Path(args.output_dir)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(run.model)
    if accelerator.is_main_process:
        card = training_card(run, args)
        if card is None:
            print("No --license given: the model card (README.md) was not written; rerun the save with --license.")
        run.student.save(accelerator.unwrap_model(run.model), state_dict, out, card)
        if args.train_data is None or args.eval_templates is not None:  # the toy set's prompts, or the user's
            save_model_templates(out, run.eval_roles.get("templates") or [])
        run.hub.final()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def main(argv=None) -> Path:
    """Train and save; bad input raises (ValueError, FileNotFoundError, FloatingPointError) with a message naming the
    input and the fix. `cli` is the command-line wrapper that prints that message as one line."""
    args = parse_args(argv, description=__doc__.split("\n\n")[0])
    out = train(args)
    if PartialState().is_main_process:
        print(f"Saved the trained model, its processor/tokenizer and model card to {out}")
    return out


def cli(argv=None) -> None:
    """`python train_accelerate.py` / `accelerate launch train_accelerate.py` / `mobileclip-train`: a user error is
    one `error:` line and exit status 2 (`--debug` shows the traceback); success exits 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        if "--debug" in argv:
            raise
        rank = PartialState().process_index if PartialState._shared_state else 0
        print(f"error: {err}" + (f" (process {rank})" if rank else ""), file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
