"""The held-out evaluation of a training run: zero-shot accuracy and image<->text recall@k of the student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def load_eval_split(data: dict, args) -> dict:
    """The held-out set with its roles: {"ds", "image", "label" or None, "caption" or None, "classnames", ...}."""
    from modeling_mobileclip.evaluation import eval_dataset as mc_eval
    from modeling_mobileclip.evaluation.prompts import load_templates

    spec = data["eval"]
    ds = mc_eval.load_eval_dataset(spec, cache_dir=str(Path(args.cache_dir) / "datasets") if args.cache_dir else None)
    roles = {"ds": ds, "spec": spec, "image": mc_eval.resolve_image_column(ds, None, spec), "label": None,
             "caption": None, "classnames": None}
    try:
        roles["label"] = mc_eval.resolve_label_column(ds, None, spec)
        roles["classnames"] = mc_eval.resolve_classnames(ds, roles["label"], args.eval_classnames, spec)
        templates = data["templates"]
        roles["templates"] = list(templates) if isinstance(templates, list) else load_templates(templates)
    except ValueError:
        pass  # no labels: retrieval only
    try:
        roles["caption"] = mc_eval.resolve_caption_column(ds, None, spec)
    except ValueError:
        pass  # no captions: zero-shot only
    if roles["label"] is None and roles["caption"] is None:
        raise ValueError(f"--eval-data {spec!r} has neither labels (zero-shot) nor captions (retrieval); columns: "
                         f"{ds.column_names}.")
    return roles


class HeldOut(torch.utils.data.Dataset):
    """Held-out images (and captions) preprocessed the way the student evaluates them."""

    def __init__(self, roles: dict, student):
        self.roles, self.student = roles, student

    def __len__(self) -> int:
        return len(self.roles["ds"])

    def __getitem__(self, index: int) -> dict:
        row = self.roles["ds"][index]
        item = {"pixel_values": self.student.eval_pixels([row[self.roles["image"]]])[0], "index": torch.tensor(index)}
        if self.roles["caption"] is not None:
            caption = row[self.roles["caption"]]
            item["input_ids"] = self.student.tokenize([caption if isinstance(caption, str) else caption[0]])[0]
        return item


# Evaluation


@torch.no_grad()
def evaluate(run) -> dict:
    """Held-out zero-shot accuracy and image<->text recall@k; image features gathered with `gather_for_metrics`."""
    from modeling_mobileclip.evaluation.zeroshot import load_metric, retrieval_similarity, zeroshot_logits

    accelerator, student, roles = run.accelerator, run.student, run.eval_roles
    model = accelerator.unwrap_model(run.model)
    was_training = model.training
    model.eval()
    images, texts, order = [], [], []
    for batch in run.eval_loader:
        with accelerator.autocast():
            gathered = accelerator.gather_for_metrics(
                (student.encode_image(model, batch["pixel_values"]), batch["index"],
                 student.encode_text(model, batch["input_ids"]) if "input_ids" in batch else batch["index"]))
        images.append(gathered[0])
        order.append(gathered[1])
        texts.append(gathered[2])
    images, texts = torch.cat(images).float(), torch.cat(texts).float()
    metrics = {}
    if roles["label"] is not None:
        labels = np.asarray(roles["ds"][roles["label"]])[torch.cat(order).cpu().numpy()]
        prompts = [t.replace("{}", name) for name in roles["classnames"] for t in roles["templates"]]
        with accelerator.autocast():
            prompt_features = torch.cat([student.encode_text(model, student.tokenize(prompts[i:i + 256]).to(
                images.device)) for i in range(0, len(prompts), 256)]).float()
        classifier = torch.nn.functional.normalize(
            prompt_features.view(len(roles["classnames"]), len(roles["templates"]), -1).mean(1), dim=-1).T
        result = load_metric("zeroshot_accuracy").compute(
            predictions=zeroshot_logits(images, classifier).cpu().numpy(), references=labels, top_k=(1, 5))
        metrics.update({f"eval/zeroshot_{k}": v for k, v in result.items() if v is not None})
    if roles["caption"] is not None:
        result = load_metric("retrieval_recall").compute(
            predictions=retrieval_similarity(images, texts).cpu().numpy(), references=np.arange(len(texts)),
            k_values=(1, 5))
        metrics.update({f"eval/{k}": v for k, v in result.items()})
    model.train(was_training)
    return metrics


