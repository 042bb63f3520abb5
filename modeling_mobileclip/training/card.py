"""Model cards for trained students of the families `hub_cards` does not cover (transformers CLIP/SigLIP, open_clip),
and the card fields a training run records (data, teachers, hyper-parameters, held-out results)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def generic_card(card: dict, library: str, load_snippet: str):
    """A Hub model card for the families `hub_cards` does not cover: metadata, how to load, training, results."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from hub_cards.model_card import metric_task

    results = [EvalResult(task_type=metric_task(metric), dataset_type=row["key"], dataset_name=row["dataset"],
                          metric_type=metric, metric_value=float(value))
               for row in card["eval_results"] for metric, value in row["metrics"].items()]
    name = card["name"]
    data = ModelCardData(library_name=library, license=card["license"], datasets=card["datasets"],
                         base_model=card["base_model"], pipeline_tag="zero-shot-image-classification",
                         tags=["clip", "mobileclip-hf", "multi-modal-reinforced-training"],
                         model_name=name if results else None, eval_results=results or None)
    training = card["training"]
    rows = "\n".join(f"| {r.dataset_name} | {r.metric_type} | {r.metric_value:.4f} |" for r in results)
    teachers = "\n".join(f"- `{t['model']}`: {t['embedding_dim']}-d, distillation logit scale {t['logit_scale']}"
                         for t in training["teachers"])
    body = (f"# {name}\n\nA CLIP-style image-text model ({library}) trained with MobileCLIP's multi-modal "
            f"reinforced training "
            f"(stored augmentations, synthetic captions, distillation from a teacher ensemble) by mobileclip-hf's "
            f"`train_accelerate.py`.\n\n## How to load\n\n```python\n{load_snippet}"
            f"\n```\n\n## Training\n\n- data: {', '.join(map(str, training['data']))}\n- teachers (embedding order):"
            f"\n{teachers}\n- hyper-parameters: `{json.dumps(training['hyperparameters'], default=str)}`\n"
            f"- command: `{training['command']}`\n\n## Held-out results\n\n| dataset | metric | value |\n|---|---|---:|"
            f"\n{rows}\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def training_card(run, args) -> dict | None:
    """The card fields of a finished run (None without a licence: no card is written)."""
    sources = run.data.sources
    if sources["license"] is None:
        return None
    eval_results = [{"key": Path(str(run.eval_roles["spec"])).name, "dataset": "held-out evaluation",
                     "metrics": {k[5:]: v for k, v in run.last_eval.items()}}] if run.last_eval else []
    fields = card_fields(args, sources["license"], sources["datasets"], run.data.teacher_rows, eval_results,
                         {"num_processes": run.accelerator.num_processes, "total_steps": run.total_steps,
                          "data_mode": run.data.mode})
    if args.train_data is None and args.eval_data is None:  # the toy set: widgets show pictures of its domain
        from dataset_scripts.toy_data import widget_examples

        fields["widget_images"] = widget_examples(run.eval_roles["ds"])
    return fields


def card_fields(args, license: str, data: list, teachers: list[dict], eval_results: list[dict],
                run_facts: dict) -> dict:
    """What a card states about a run: the flags' part (repo, licence, base model, hyper-parameters, command) and
    what the run found (`data`, `teachers`, `eval_results`, `run_facts`); the Hub pre-flight check builds it from
    the flags alone."""
    loaded_from_hub = "/" in args.model and not Path(args.model).exists() and not args.from_scratch \
        and not args.model.startswith("open_clip:")
    hyperparameters = {k: getattr(args, k) for k in (
        "max_steps", "epochs", "samples", "batch_size", "gradient_accumulation_steps", "lr", "betas", "weight_decay",
        "warmup_steps", "max_grad_norm", "loss_weights", "caption_mode", "mixed_precision", "seed")}
    return {
        "repo_id": args.push_to_hub, "name": (args.push_to_hub or str(Path(args.output_dir).resolve())).split("/")[-1],
        "license": license, "datasets": None, "base_model": args.model if loaded_from_hub else None,
        "eval_results": eval_results,
        "training": {"data": data, "command": "accelerate launch train_accelerate.py " + " ".join(sys.argv[1:]),
                     "teachers": teachers, "hyperparameters": hyperparameters | run_facts},
    }
