"""Multi-modal reinforced training (MobileCLIP / DataCompDR recipe) of any CLIP-like student with 🤗 Accelerate.

    accelerate launch train_accelerate.py                    # tiny MobileCLIP on the embedded toy DataCompDR, offline
    accelerate launch train_accelerate.py --resume outputs/train-tiny         # after a crash: continues exactly
    accelerate launch --num_processes 8 train_accelerate.py --model mobileclip-s0 --train-data datacompdr:12m \\
        --image-dir /data/datacomp12m --eval-data /data/imagenet/val --batch-size 1024 --max-steps 30000 \\
        --warmup-steps 1000 --loss-weights 0,1 --teacher-logit-scales 100,100 --mixed-precision bf16 \\
        --output-dir runs/s0 --push-to-hub org/mobileclip-s0-dr12m --license apple-amlr
    accelerate launch train_accelerate.py --model open_clip:ViT-B-16 ...      # or openai/clip-vit-base-patch16, ...

Per step, every image is one stored augmentation replayed at the student's resolution, its teacher target is that
augmentation's stored embedding, and the text batch holds each image's ground-truth caption and one synthetic caption,
encoded in one text forward (`--caption-mode gt+syn`; `gt` = the original data only, `mix` = the paper's mixing
ablation). The loss is `losses.mobileclip_loss`: per caption kind `w0 * CLIP + w1 * KD` (`--loss-weights w0,w1`).

Data order is a pure function of (seed, micro-step): micro-step m takes global positions [m * G, (m + 1) * G) of a
per-epoch permutation (G = per-device batch x processes) and rank r keeps its slice, so a resumed run, and a run on
another number of processes with the same global batch, sees exactly the same samples and augmentations.

The loop never branches on the model family: `--model` picks a `Student` adapter (MobileCLIP, transformers CLIP /
SigLIP, open_clip) that builds the model, its replay transform and tokenizer, returns (image features, text
features, logit scale) and saves the result in the family's own format with a model card.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator, PartialState
from accelerate.tracking import GeneralTracker, on_main_process
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from modeling_mobileclip.losses import mobileclip_loss, total_loss
from modeling_mobileclip.optim import build_optimizer, warmup_cosine_schedule

REQUIRED_COLUMNS = ("image", "image_width", "image_height", "text", "syn_text", "param_aug", "image_emb", "text_emb",
                    "num_gt_emb")
COMPLETE_MARKER = "checkpoint_complete.json"
CAPTION_MODES = ("gt+syn", "gt", "mix")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | tiny-clip | tiny-siglip | tiny-open-clip | a MobileCLIP "
                   "preset "
                   "(mobileclip-s0, ...; random init) |\na transformers CLIP/SigLIP/MobileCLIP checkpoint (hub id or "
                   "folder) | an open_clip name (ViT-B-16) or open_clip:<name>[/<pretrained tag>]")
    p.add_argument("--from-scratch", action="store_true", help="transformers checkpoints: use the config only")
    p.add_argument("--train-data", default=None, help="DataCompDR shards (glob, brace range) or datacompdr:<config> "
                   "(e.g. datacompdr:12m); default: the embedded toy DataCompDR")
    p.add_argument("--image-dir", default=None, help="images joined by uid (default: the shards' own images)")
    p.add_argument("--captions", default=None, help="ground-truth captions by uid (default: the shards' own txt)")
    p.add_argument("--eval-data", default=None, help="held-out set for the periodic evaluation (imagefolder, "
                   "save_to_disk folder, parquet, hub id):\nzero-shot accuracy if it has labels, image<->text "
                   "recall@1 if it has captions; default: the toy set's")
    p.add_argument("--eval-classnames", default=None, help="class names file for --eval-data labels that are not a "
                   "ClassLabel, or 'imagenet'")
    p.add_argument("--eval-templates", default=None, help="'openai-imagenet', 'photo' or a file (default: the toy "
                   "set's templates, else openai-imagenet)")
    p.add_argument("--cache-dir", default=None, help="toy data and datasets caches (default ~/.cache/mobileclip_hf)")
    p.add_argument("--toy-spec", default="", help="size of the embedded default, e.g. num_train=64,teacher_steps=5 "
                   "(fields of dataset_scripts.toy_data.ToySpec)")
    p.add_argument("--output-dir", default=None, help="default outputs/<model>-<date>-<time> (or the --resume folder)")
    p.add_argument("--resume", default=None, help="output dir of an earlier run: continue from its latest checkpoint")
    p.add_argument("--overwrite-output-dir", action="store_true")
    p.add_argument("--max-steps", type=int, default=200, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="per device and micro-step")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--betas", default="0.9,0.95")
    p.add_argument("--eps", type=float, default=None, help="default: open_clip's rule, 1e-6 if the model name has "
                                                           "'vit' else 1e-8")
    p.add_argument("--weight-decay", type=float, default=0.2)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of --max-steps, at most 1000")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--loss-weights", default="0.0,1.0", help="w0,w1: contrastive and distillation weights")
    p.add_argument("--caption-mode", default="gt+syn", choices=CAPTION_MODES)
    p.add_argument("--mix-ratio", type=float, default=0.5, help="--caption-mode mix: share of synthetic captions")
    p.add_argument("--teacher-dims", default=None, help="per-teacher widths, e.g. 768,768 (default: dataset metadata)")
    p.add_argument("--teacher-logit-scales", default=None, help="one per teacher (default: dataset metadata)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="optimizer steps between save_state")
    p.add_argument("--checkpoints-total-limit", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=100, help="optimizer steps between held-out evaluations")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--report-to", default="tensorboard,jsonl", help="trackers: comma-separated accelerate names "
                   "(tensorboard, wandb, mlflow, trackio, ...) and jsonl, or 'all' (every installed one) or 'none'")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload checkpoints in the background and "
                                                                          "the final model at the end")
    p.add_argument("--hub-private", action="store_true")
    p.add_argument("--license", default=None, help="licence of the trained weights for the model card (a Hub "
                   "licence id); the toy default is apache-2.0")
    p.add_argument("--debug-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests the NaN guard
    p.add_argument("--config", default=None, help="a YAML or JSON file of flags, keyed by flag name (max-steps: "
                   "30000, loss-weights: [0, 1], ...);\nflags given on the command line win")
    config_file = p.parse_known_args(argv)[0].config
    if config_file:
        p.set_defaults(**_config_defaults(p, config_file))
    args = p.parse_args(argv)
    args.loss_weights = _floats("--loss-weights", args.loss_weights, count=2)
    args.betas = tuple(_floats("--betas", args.betas, count=2))
    args.teacher_dims = _ints("--teacher-dims", args.teacher_dims) if args.teacher_dims else None
    args.teacher_logit_scales = _floats("--teacher-logit-scales", args.teacher_logit_scales) \
        if args.teacher_logit_scales else None
    args.toy_spec = _toy_spec(args.toy_spec)
    args.output_dir = args.output_dir or args.resume
    if args.warmup_steps is None:
        args.warmup_steps = min(1000, args.max_steps // 10)
    if not 0 <= args.mix_ratio <= 1:
        p.error(f"--mix-ratio {args.mix_ratio}: expected a share between 0 and 1")
    return args


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    """Flag values from a --config file, as the parser's defaults (so the command line still overrides them). Lists
    become the comma-separated strings the flags take."""
    import yaml  # a dependency of accelerate; YAML also reads JSON

    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        parser.error(f"--config {path}: cannot read it ({err})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values, e.g. `max-steps: 30000`")
    known = {action.dest for action in parser._actions} - {"help", "config"}
    defaults = {str(key).replace("-", "_"): ",".join(map(str, v)) if isinstance(v, list) else v
                for key, v in values.items()}
    unknown = sorted(set(defaults) - known)
    if unknown:
        parser.error(f"--config {path}: unknown flag(s) {unknown}; see --help for the flag names")
    return defaults


def _floats(flag: str, text: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise SystemExit(f"{flag}={text!r}: expected comma-separated numbers, e.g. 100,100") from None
    if count is not None and len(values) != count:
        raise SystemExit(f"{flag}={text!r}: expected {count} comma-separated numbers")
    return values


def _ints(flag: str, text: str) -> list[int]:
    values = _floats(flag, text)
    if any(v != int(v) or v <= 0 for v in values):
        raise SystemExit(f"{flag}={text!r}: expected comma-separated positive integers, e.g. 768,768")
    return [int(v) for v in values]


def _toy_spec(text: str) -> dict:
    import dataclasses

    from dataset_scripts.toy_data import ToySpec

    fields = {f.name: f.type for f in dataclasses.fields(ToySpec)}
    spec = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise SystemExit(f"--toy-spec {text!r}: {item!r} is not <field>=<value> with a field of {sorted(fields)}")
        spec[key] = (float if fields[key] == "float" else int)(value)
    return spec


# ---------------------------------------------------------------------------------------------------------------------
# Students: the loop only talks to these adapters.


def _replay_params(image_processor) -> dict:
    """ReplayTransform arguments from a transformers image processor: output size, interpolation, mean/std."""
    crop, size = getattr(image_processor, "crop_size", None), image_processor.size
    edge = (crop["height"] if crop and getattr(image_processor, "do_center_crop", False)
            else size.get("height") or size.get("shortest_edge"))
    return dict(size=edge, interpolation=PIL.Image.Resampling(int(image_processor.resample)).name.lower(),
                mean=tuple(image_processor.image_mean), std=tuple(image_processor.image_std))


class Student:
    """A transformers dual encoder (`model(input_ids=, pixel_values=)` returning `image_embeds`/`text_embeds`)."""

    def __init__(self, name: str, from_scratch: bool = False):
        self.name, self.from_scratch = name, from_scratch
        self.model, self.processor = self.build()

    def build(self):
        import transformers

        auto = transformers.AutoModel
        model = (auto.from_config(transformers.AutoConfig.from_pretrained(self.name)) if self.from_scratch
                 else auto.from_pretrained(self.name))
        return model, transformers.AutoProcessor.from_pretrained(self.name)

    @property
    def context_length(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    def replay_transform(self):
        from dataset_scripts.augment_replay import ReplayTransform

        return ReplayTransform(**_replay_params(self.processor.image_processor))

    def eval_pixels(self, images: list) -> torch.Tensor:
        return self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        # max_length padding for every family: SigLIP was trained on it, CLIP pools at EOT, MobileCLIP re-pads.
        return self.processor(text=texts, padding="max_length", truncation=True, max_length=self.context_length,
                              return_tensors="pt")["input_ids"]

    def logit_scale(self, model, output) -> torch.Tensor:
        # Learnable, clamped at 100 as open_clip's training loop does (`model` may be wrapped by DDP).
        return getattr(model, "module", model).logit_scale.exp().clamp(max=100)

    def features(self, model, pixel_values, input_ids):
        """(image features [b, d], text features [t, d], logit scale): through `model(...)`, so DDP syncs grads."""
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        return out.image_embeds, out.text_embeds, self.logit_scale(model, out)

    def encode_image(self, model, pixel_values) -> torch.Tensor:
        return _unit(model.get_image_features(pixel_values=pixel_values))

    def encode_text(self, model, input_ids) -> torch.Tensor:
        return _unit(model.get_text_features(input_ids=input_ids))

    def enable_gradient_checkpointing(self, model) -> None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def save(self, model, state_dict, out: Path, card: dict | None) -> None:
        """`save_pretrained` model + processor, and README.md (`card` None: no licence known, no card)."""
        model.save_pretrained(out, state_dict=state_dict)
        self.processor.save_pretrained(out)
        if card is not None:
            source = card["repo_id"] or "path/to/this/folder"
            generic_card(card, "transformers", f"from transformers import AutoModel, AutoProcessor\n\n"
                         f"model = AutoModel.from_pretrained(\"{source}\")\n"
                         f"processor = AutoProcessor.from_pretrained(\"{source}\")").save(out / "README.md")


def _unit(output) -> torch.Tensor:
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.nn.functional.normalize(features.float(), dim=-1)


class MobileCLIPStudent(Student):
    """MobileCLIP: `tiny`, a preset (random init) or a checkpoint; its card comes from `hub_cards`."""

    def build(self):
        from dataset_scripts.toy_data import tiny_mobileclip
        from modeling_mobileclip import (MOBILECLIP_VARIANTS, MobileCLIPConfig, MobileCLIPModel,
                                         MobileCLIPProcessor)

        if self.name == "tiny":
            return tiny_mobileclip()
        if self.name.lower() in MOBILECLIP_VARIANTS:
            return (MobileCLIPModel(MobileCLIPConfig.from_variant(self.name)),
                    MobileCLIPProcessor.from_variant(self.name))
        return super().build()

    def logit_scale(self, model, output) -> torch.Tensor:
        return output.logit_scale  # already exp() and clamped at 100 by the model

    def save(self, model, state_dict, out: Path, card: dict | None) -> None:
        from hub_cards import generate_model_card

        model.save_pretrained(out, state_dict=state_dict)
        self.processor.save_pretrained(out)
        if card is None:
            return
        variant = self.name.lower() if self.name.lower() in _mobileclip_variants() else None
        generate_model_card(
            model, variant, repo_id=card["repo_id"], processor=self.processor, converted_from_apple=False,
            license=card["license"], base_model=card["base_model"], datasets=card["datasets"],
            eval_results=card["eval_results"], training=card["training"]).write(out)


def _mobileclip_variants():
    from modeling_mobileclip import MOBILECLIP_VARIANTS

    return MOBILECLIP_VARIANTS


TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 max_position_embeddings=77, num_hidden_layers=2, bos_token_id=49406, eos_token_id=49407)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                   patch_size=8)


class CLIPStudent(Student):
    """transformers `CLIPModel` / `SiglipModel` (any checkpoint or config); `tiny-clip` / `tiny-siglip` build small
    ones with the CLIP BPE tokenizer."""

    def build(self):
        from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, SiglipConfig,
                                  SiglipImageProcessor, SiglipModel, SiglipProcessor)

        from modeling_mobileclip import MobileCLIPTokenizer

        if self.name not in ("tiny-clip", "tiny-siglip"):
            return super().build()
        size = TINY_VISION["image_size"]
        if self.name == "tiny-clip":
            model = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32))
            image_processor = CLIPImageProcessor(size={"shortest_edge": size},
                                                 crop_size={"height": size, "width": size})
            return model, CLIPProcessor(image_processor, MobileCLIPTokenizer.from_bpe_file())
        text = {k: v for k, v in TINY_TEXT.items() if k not in ("bos_token_id", "eos_token_id")}
        model = SiglipModel(SiglipConfig(text_config=dict(text, projection_size=32), vision_config=TINY_VISION))
        image_processor = SiglipImageProcessor(size={"height": size, "width": size})
        return model, SiglipProcessor(image_processor, MobileCLIPTokenizer.from_bpe_file())


class OpenCLIPStudent(Student):
    """open_clip: a name (`ViT-B-16`) or `open_clip:<name>[/<pretrained tag>]`, `tiny-open-clip`, or a folder with
    `open_clip_config.json`. Saved as an open_clip checkpoint (`open_clip.create_model("local-dir:<out>")`)."""

    TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                            "head_width": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}

    def build(self):
        import open_clip

        spec = self.name.removeprefix("open_clip:")
        if self.name == "tiny-open-clip":
            self.model_cfg = self.TINY
            model = open_clip.CLIP(**self.TINY)
            open_clip.set_model_preprocess_cfg(model, {"size": 32, "mode": "RGB", "mean": OPENAI_MEAN,
                                                       "std": OPENAI_STD, "interpolation": "bicubic",
                                                       "resize_mode": "shortest"})
            self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        elif Path(spec).is_dir():  # a folder this script (or open_clip's push_to_hf_hub) wrote
            self.model_cfg = json.loads((Path(spec) / "open_clip_config.json").read_text())["model_cfg"]
            model = open_clip.create_model(f"local-dir:{spec}")
            self.tokenizer = open_clip.get_tokenizer(f"local-dir:{spec}")
        else:  # a registered name, with an optional pretrained tag: ViT-B-16, ViT-B-16/datacomp_xl_s13b_b90k
            name, _, pretrained = spec.partition("/")
            self.model_cfg = open_clip.get_model_config(name)
            if self.model_cfg is None:
                raise ValueError(f"--model {self.name!r}: open_clip has no model {name!r}; see "
                                 f"open_clip.list_models().")
            model = open_clip.create_model(name, pretrained=pretrained or None)
            self.tokenizer = open_clip.get_tokenizer(name)
        model.output_dict = True
        cfg = self.preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
        self.val_transform = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                                       interpolation=cfg["interpolation"],
                                                       resize_mode=cfg["resize_mode"])
        return model, None

    @property
    def context_length(self) -> int:
        return self.model_cfg["text_cfg"].get("context_length", 77)

    def replay_transform(self):
        from dataset_scripts.augment_replay import ReplayTransform

        size = self.preprocess_cfg["size"]
        return ReplayTransform(size=size if isinstance(size, int) else tuple(size),
                               interpolation=self.preprocess_cfg["interpolation"],
                               mean=tuple(self.preprocess_cfg["mean"]), std=tuple(self.preprocess_cfg["std"]))

    def eval_pixels(self, images: list) -> torch.Tensor:
        return torch.stack([self.val_transform(im.convert("RGB")) for im in images])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts, context_length=self.context_length)

    def features(self, model, pixel_values, input_ids):
        out = model(pixel_values, input_ids)
        return out["image_features"], out["text_features"], out["logit_scale"].clamp(max=100)

    def encode_image(self, model, pixel_values) -> torch.Tensor:
        return _unit(model.encode_image(pixel_values))

    def encode_text(self, model, input_ids) -> torch.Tensor:
        return _unit(model.encode_text(input_ids))

    def enable_gradient_checkpointing(self, model) -> None:
        model.set_grad_checkpointing(True)

    def save(self, model, state_dict, out: Path, card: dict | None) -> None:
        """`open_clip_config.json` + `open_clip_model.safetensors` (open_clip's Hub layout) + README.md."""
        from open_clip.push_to_hf_hub import save_config_for_hf
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state_dict.items()}, out / "open_clip_model.safetensors")
        save_config_for_hf(model, out / "open_clip_config.json", self.model_cfg)
        if card is not None:
            source = f"hf-hub:{card['repo_id']}" if card["repo_id"] else "local-dir:path/to/this/folder"
            generic_card(card, "open_clip", f"import open_clip\n\nmodel, _, preprocess = "
                         f"open_clip.create_model_and_transforms(\"{source}\")\n"
                         f"tokenizer = open_clip.get_tokenizer(\"{source}\")").save(out / "README.md")


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def student_class(name: str) -> type[Student]:
    """The adapter for `--model` (see --help); unknown names get a message listing the accepted forms."""
    import open_clip

    if name == "tiny" or name.lower() in _mobileclip_variants():  # before open_clip, which also knows MobileCLIP2-*
        return MobileCLIPStudent
    if name.startswith("open_clip:") or name == "tiny-open-clip" or (Path(name) / "open_clip_config.json").is_file() \
            or name in open_clip.list_models():
        return OpenCLIPStudent
    if name in ("tiny-clip", "tiny-siglip"):
        return CLIPStudent
    import transformers

    try:
        model_type = transformers.AutoConfig.from_pretrained(name).model_type
    except (OSError, ValueError) as err:
        raise ValueError(f"--model {name!r} is neither a preset (tiny, tiny-clip, tiny-siglip, tiny-open-clip, "
                         f"{', '.join(_mobileclip_variants())}), an open_clip model (ViT-B-16, open_clip:<name>"
                         f"[/<tag>]) nor a loadable transformers checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0]}).") from None
    if model_type.startswith("mobileclip"):
        return MobileCLIPStudent
    if model_type in ("clip", "siglip", "siglip2"):
        return CLIPStudent
    raise ValueError(f"--model {name!r} is a {model_type!r} checkpoint; supported: MobileCLIP, CLIP, SigLIP "
                     f"(transformers) and open_clip models.")


def generic_card(card: dict, library: str, load_snippet: str):
    """A Hub model card for the families `hub_cards` does not cover: metadata, how to load, training, results."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = [EvalResult(task_type="zero-shot-image-classification" if metric.startswith("zeroshot")
                          else "image-text-retrieval", dataset_type=row["key"], dataset_name=row["dataset"],
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


# ---------------------------------------------------------------------------------------------------------------------
# Data


def resolve_data(args, accelerator) -> dict:
    """Train shards + joins and the held-out set; without --train-data, the toy DataCompDR (built once)."""
    if args.train_data is not None:
        if args.eval_data is None:
            raise ValueError("--train-data needs --eval-data (a held-out set for the periodic evaluation: images with "
                             "labels and/or captions).")
        return {"train": args.train_data, "image_dir": args.image_dir, "captions": args.captions,
                "eval": args.eval_data, "templates": args.eval_templates or "openai-imagenet",
                "license": args.license, "datasets": [args.train_data]}
    root = ensure_toy_data(args, accelerator)
    toy = json.loads((root / "toy.json").read_text())
    shards = sorted(str(p) for p in (root / "train").glob("*.tar"))
    return {"train": shards, "image_dir": args.image_dir or shards, "captions": args.captions or shards,
            "eval": args.eval_data or str(root / "eval"), "templates": args.eval_templates or toy["eval_templates"],
            "license": args.license or "apache-2.0", "datasets": [f"mobileclip-hf toy DataCompDR {root.name}"]}


def ensure_toy_data(args, accelerator) -> Path:
    from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr

    spec = ToySpec(**args.toy_spec)
    with accelerator.main_process_first():
        if accelerator.is_main_process and accelerator.num_processes > 1:
            # reinforce() takes part in accelerate's process group; build in a separate one-process interpreter.
            env = {k: v for k, v in os.environ.items() if not k.startswith(
                ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_", "ROLE_", "MASTER_", "TORCHELASTIC",
                 "ACCELERATE_"))}
            toy_args = [f"--{k.replace('_', '-')}={v}" for k, v in args.toy_spec.items()]
            cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
            subprocess.run([sys.executable, "-m", "dataset_scripts.toy_data", *cache, *toy_args], env=env, check=True)
        return build_toy_datacompdr(spec, args.cache_dir, log=accelerator.print)


def load_train_split(data: dict, args, accelerator):
    import datasets

    import dataset_scripts  # registers the "datacompdr" builder

    config, files = None, data["train"]
    if isinstance(files, str) and files.startswith("datacompdr:"):
        config, files = files[len("datacompdr:"):], None
    dataset_scripts.reset_datacompdr_stats()
    cache_dir = str(Path(args.cache_dir) / "datasets") if args.cache_dir else None
    with accelerator.main_process_first():  # the main process prepares the Arrow cache, the others reuse it
        ds = datasets.load_dataset("datacompdr", config, data_files={"train": files} if files else None,
                                   split="train", image_dir=data["image_dir"], captions=data["captions"],
                                   cache_dir=cache_dir)
    skipped = dataset_scripts.datacompdr_stats()["skipped"]
    if skipped and accelerator.is_main_process:
        accelerator.print(f"Skipped {sum(skipped.values())} training samples while preparing the data "
                          f"({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))}); training on the "
                          f"{len(ds)} complete ones.")
    check_columns(ds, "train")
    return ds, skipped


def check_columns(ds, split: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"The {split} split has no column(s) {missing} (it has {ds.column_names}); images need "
                         f"--image-dir, ground-truth captions need --captions, embeddings/augmentations/synthetic "
                         f"captions come from the DataCompDR shards themselves.")
    if len(ds) == 0:
        raise ValueError(f"The {split} split is empty: every sample was skipped (see the datacompdr log lines).")


def resolve_teachers(args, ds) -> tuple[list[int], list[float]]:
    """Per-teacher widths and distillation logit scales; their sum must be the stored embedding width."""
    from dataset_scripts import get_metadata

    meta = get_metadata(ds)
    width = ds.features["image_emb"].shape[1]
    dims = args.teacher_dims or meta.embedding_dims
    if not dims:
        raise ValueError(f"The dataset records no teacher widths; pass --teacher-dims (summing to {width}).")
    if sum(dims) != width:
        raise ValueError(f"--teacher-dims {dims} sum to {sum(dims)}, but the stored teacher embeddings are {width} "
                         f"wide (dataset metadata: teachers {[t.model for t in meta.teachers]} with widths "
                         f"{meta.embedding_dims}); pass widths that split {width}, e.g. "
                         f"{','.join(map(str, meta.embedding_dims or [width]))}.")
    scales = args.teacher_logit_scales or meta.logit_scales
    if len(scales) == 1 and len(dims) > 1:
        scales = scales * len(dims)
    if len(scales) != len(dims) or any(s is None for s in scales):
        raise ValueError(f"--teacher-logit-scales needs one value per teacher ({len(dims)}: widths {dims}), got "
                         f"{scales}; e.g. --teacher-logit-scales {','.join(['100'] * len(dims))}.")
    return list(dims), [float(s) for s in scales]


class StepBatches(torch.utils.data.Dataset):
    """Item m = this rank's slice of the global batch of micro-step m (a pure function of seed and m)."""

    def __init__(self, ds, transform, tokenize, *, caption_mode: str, mix_ratio: float, seed: int, batch_size: int,
                 rank: int, world_size: int):
        self.ds, self.transform, self.tokenize = ds, transform, tokenize
        self.caption_mode, self.mix_ratio = caption_mode, mix_ratio
        self.seed, self.batch_size, self.rank, self.world_size = seed, batch_size, rank, world_size

    def __len__(self) -> int:
        return 2**62

    @lru_cache(maxsize=4)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.ds))

    def global_indices(self, micro_step: int) -> list[int]:
        size, n = self.batch_size * self.world_size, len(self.ds)
        return [int(self._permutation(p // n)[p % n]) for p in range(micro_step * size, (micro_step + 1) * size)]

    def __getitem__(self, micro_step: int) -> dict:
        import random

        ids = self.global_indices(micro_step)[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        views = [self._view(i, random.Random(f"{self.seed}:{micro_step}:{i}")) for i in ids]
        batch = {"pixel_values": torch.stack([v["pixel_values"] for v in views]),
                 "teacher_image_emb": torch.stack([v["t_img"] for v in views]), "sample_ids": torch.tensor(ids)}
        if self.caption_mode == "gt+syn":  # one text forward: GT captions, then synthetic captions
            batch["input_ids"] = self.tokenize([v["gt"] for v in views] + [v["syn"] for v in views])
            batch["teacher_text_emb"] = torch.stack([v["t_gt"] for v in views])
            batch["teacher_syn_text_emb"] = torch.stack([v["t_syn"] for v in views])
        else:
            use_syn = [self.caption_mode == "mix" and v["mix"] < self.mix_ratio for v in views]
            batch["input_ids"] = self.tokenize([v["syn"] if s else v["gt"] for v, s in zip(views, use_syn)])
            batch["teacher_text_emb"] = torch.stack([v["t_syn"] if s else v["t_gt"] for v, s in zip(views, use_syn)])
        return batch

    def _view(self, index: int, rng) -> dict:
        ex = self.ds[index]
        aug, syn, mix = rng.randrange(len(ex["param_aug"])), rng.randrange(len(ex["syn_text"])), rng.random()
        text_emb = np.asarray(ex["text_emb"], dtype=np.float32)
        return {"pixel_values": self.transform(ex["image"], ex["param_aug"][aug]), "gt": ex["text"],
                "syn": ex["syn_text"][syn], "mix": mix,
                "t_img": torch.from_numpy(np.asarray(ex["image_emb"][aug], np.float32)),
                "t_gt": torch.from_numpy(text_emb[0]), "t_syn": torch.from_numpy(text_emb[ex["num_gt_emb"] + syn])}


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
    def __init__(self, roles: dict, student: Student):
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


def build_dataloaders(args, accelerator, student: Student) -> dict:
    data = resolve_data(args, accelerator)
    train_ds, skipped = load_train_split(data, args, accelerator)
    eval_roles = load_eval_split(data, args)
    steps = StepBatches(train_ds, student.replay_transform(), student.tokenize, caption_mode=args.caption_mode,
                        mix_ratio=args.mix_ratio, seed=args.seed, batch_size=args.batch_size,
                        rank=accelerator.process_index, world_size=accelerator.num_processes)
    eval_loader = torch.utils.data.DataLoader(HeldOut(eval_roles, student), batch_size=args.batch_size,
                                              num_workers=args.num_workers)
    from dataset_scripts import get_metadata

    dims, scales = resolve_teachers(args, train_ds)
    names = [t.model for t in get_metadata(train_ds).teachers] or [f"teacher-{k}" for k in range(len(dims))]
    described = [{"model": name, "embedding_dim": d, "logit_scale": s} for name, d, s in zip(names, dims, scales)]
    return dict(data=data, steps=steps, skipped=skipped, teachers=(dims, scales), teacher_rows=described,
                eval_roles=eval_roles, eval_loader=eval_loader, num_train=len(train_ds))


def train_loader(steps: StepBatches, start: int, stop: int, num_workers: int):
    # Not passed to `prepare`: StepBatches already splits each global batch across ranks, deterministically.
    return torch.utils.data.DataLoader(steps, batch_size=None, sampler=range(start, stop), num_workers=num_workers)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(run: dict) -> dict:
    """Held-out zero-shot accuracy and image<->text recall@k; image features gathered with `gather_for_metrics`."""
    from modeling_mobileclip.evaluation.zeroshot import load_metric, retrieval_similarity, zeroshot_logits

    accelerator, student, roles = run["accelerator"], run["student"], run["eval_roles"]
    model = accelerator.unwrap_model(run["model"])
    was_training = model.training
    model.eval()
    images, texts, order = [], [], []
    for batch in run["eval_loader"]:
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


# ---------------------------------------------------------------------------------------------------------------------
# Trackers, state, checkpoints, the Hub


class JSONLTracker(GeneralTracker):
    """Appends one JSON object per `log` call to `<logging_dir>/<run>/metrics.jsonl` (offline, dependency-free)."""

    name = "jsonl"
    requires_logging_directory = True

    @on_main_process
    def __init__(self, run_name: str, logging_dir: str):
        super().__init__()
        self.path = Path(logging_dir) / run_name / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict):
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=1, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")


def trackers(args) -> list:
    from accelerate.tracking import filter_trackers
    from accelerate.utils import LoggerType

    names = [n.strip() for n in args.report_to.split(",") if n.strip() and n.strip() != "none"]
    logs = str(Path(args.output_dir) / "logs")
    chosen = [JSONLTracker("mobileclip", logs)] if "jsonl" in names or "all" in names else []
    wanted = [n for n in names if n != "jsonl"]
    unknown = sorted(set(wanted) - {t.value for t in LoggerType})
    if unknown:
        raise ValueError(f"--report-to {args.report_to!r}: unknown tracker(s) {unknown}; choose from jsonl, "
                         f"{', '.join(t.value for t in LoggerType)} or none.")
    return chosen + filter_trackers(wanted, logs) if wanted else chosen


class TrainState:
    """Optimizer steps done; registered for checkpointing, so a resume knows where the data order continues."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    """accelerate's `checkpoints/checkpoint_<i>` folders as (i, path), complete or not."""
    found = []
    for folder in (Path(output_dir) / "checkpoints").glob("checkpoint_*"):
        match = re.fullmatch(r"checkpoint_(\d+)", folder.name)
        if match:
            found.append((int(match.group(1)), folder))
    return found


def latest_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest *complete* `checkpoints/checkpoint_<i>` (incomplete ones, e.g. from a killed run, are ignored)."""
    complete = [(i, folder) for i, folder in checkpoint_folders(output_dir) if (folder / COMPLETE_MARKER).is_file()]
    if not complete:
        return None
    iteration, folder = max(complete)
    return folder, iteration


class HubUploader:
    """`--push-to-hub`: each checkpoint to `last-checkpoint/` in the background (a snapshot of its files, replacing
    the previous one, one upload at a time), the final model to the repo root at the end."""

    def __init__(self, args, accelerator):
        self.repo_id, self.folder, self.private = args.push_to_hub, Path(args.output_dir), args.hub_private or None
        self.enabled = self.repo_id is not None and accelerator.is_main_process
        self.pending = None

    def checkpoint(self, path: Path, step: int) -> None:
        if not self.enabled:
            return
        from hub_cards.push import push_folder_to_hub

        self.wait()  # the previous upload had a whole checkpoint interval; uploads never pile up
        self.pending = push_folder_to_hub(path, self.repo_id, commit_message=f"Checkpoint at step {step}",
                                          path_in_repo="last-checkpoint", delete_patterns="*", private=self.private,
                                          run_as_future=True)

    def wait(self) -> None:
        if self.pending is None:
            return
        from hub_cards.push import HubPushError

        try:
            self.pending.result()
        except HubPushError as err:  # a lost checkpoint upload must not stop training; the final push will tell
            print(f"Warning: {err}", file=sys.stderr)
        self.pending = None

    def final(self) -> None:
        if not self.enabled:
            return
        from hub_cards.push import push_folder_to_hub

        self.wait()
        push_folder_to_hub(self.folder, self.repo_id, commit_message="Final model (train_accelerate.py)",
                           ignore_patterns=["checkpoints/*"], private=self.private)
        print(f"Pushed the final model to https://huggingface.co/{self.repo_id}")


def save_checkpoint(run: dict) -> Path:
    accelerator, state = run["accelerator"], run["state"]
    path = Path(accelerator.save_state())
    if accelerator.is_main_process:
        (path / COMPLETE_MARKER).write_text(json.dumps({"step": state.step}))
    accelerator.wait_for_everyone()
    run["hub"].checkpoint(path, state.step)
    return path


def resume(accelerator, args, state: TrainState) -> Path:
    found = latest_checkpoint(Path(args.resume))
    if found is None:
        raise ValueError(f"--resume {args.resume}: no complete checkpoint under {args.resume}/checkpoints.")
    path, iteration = found
    if accelerator.is_main_process:  # drop newer, incomplete folders so automatic naming can reuse their numbers
        for i, folder in checkpoint_folders(args.resume):
            if i > iteration:
                shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.load_state(str(path))
    accelerator.project_configuration.iteration = iteration + 1  # load_state does not restore it
    accelerator.print(f"Resumed from {path} at optimizer step {state.step}")
    return path


def check_output_dir(args) -> None:
    out = Path(args.output_dir)
    if args.resume is None and (out / "checkpoints").exists() and not args.overwrite_output_dir:
        raise ValueError(f"{out} already holds checkpoints; continue with --resume {out}, choose another "
                         f"--output-dir, or pass --overwrite-output-dir.")
    if args.push_to_hub and args.license is None and args.train_data is not None:
        raise ValueError(f"--push-to-hub {args.push_to_hub} needs --license (the licence of the trained weights for "
                         f"the model card; e.g. apache-2.0, or the licence your data and teachers require).")


# ---------------------------------------------------------------------------------------------------------------------
# The loop


def setup(args) -> dict:
    """Accelerator, then seed, then model/optimizer/scheduler, data, a single `prepare`, and the resume."""
    accelerator = Accelerator(
        cpu=PartialState().device.type == "cpu", gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers(args),
        project_config=ProjectConfiguration(project_dir=args.output_dir,
                                            logging_dir=str(Path(args.output_dir) / "logs"),
                                            automatic_checkpoint_naming=True, total_limit=args.checkpoints_total_limit))
    if args.resume is None and args.overwrite_output_dir and accelerator.is_main_process:
        shutil.rmtree(Path(args.output_dir) / "checkpoints", ignore_errors=True)  # automatic naming restarts at 0
    accelerator.wait_for_everyone()
    set_seed(args.seed)  # also fixes the weight initialisation
    student = student_class(args.model)(args.model, args.from_scratch)
    model = student.model
    if args.gradient_checkpointing:
        student.enable_gradient_checkpointing(model)
    optimizer = build_optimizer(model, args.model, lr=args.lr, betas=args.betas, eps=args.eps,
                                weight_decay=args.weight_decay)
    # Kept out of `prepare` (which would step it num_processes times per call); checkpointed via registration.
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=args.warmup_steps, total_steps=args.max_steps)
    loaders = build_dataloaders(args, accelerator, student)
    model, optimizer, eval_loader = accelerator.prepare(model, optimizer, loaders.pop("eval_loader"))
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if args.resume is not None:
        resume(accelerator, args, state)
    config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
    accelerator.init_trackers("mobileclip", config={**config, "num_processes": accelerator.num_processes,
                                                    "num_train_samples": loaders["num_train"]})
    if loaders["skipped"]:
        accelerator.log({f"data/skipped_{k}": v for k, v in loaders["skipped"].items()}, step=state.step)
    return dict(accelerator=accelerator, student=student, model=model, optimizer=optimizer, scheduler=scheduler,
                eval_loader=eval_loader, state=state, hub=HubUploader(args, accelerator), **loaders)


def compute_loss(run: dict, args, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
    accelerator, (dims, scales) = run["accelerator"], run["teachers"]
    image, text, scale = run["student"].features(run["model"], batch["pixel_values"], batch["input_ids"])
    text, syn = text.split(image.shape[0]) if "teacher_syn_text_emb" in batch else (text, None)
    parts = mobileclip_loss(image, text, scale, loss_weights=args.loss_weights, syn_text_features=syn,
                            teacher_image_emb=batch["teacher_image_emb"], teacher_text_emb=batch["teacher_text_emb"],
                            teacher_syn_text_emb=batch.get("teacher_syn_text_emb"), teacher_dims=dims,
                            teacher_logit_scales=scales, rank=accelerator.process_index,
                            world_size=accelerator.num_processes)
    return total_loss(parts), parts, scale


def train_step(run: dict, args, batch: dict) -> dict:
    """One micro-step; returns the process-averaged loss parts (for logging). Raises on a non-finite loss."""
    accelerator, model, state = run["accelerator"], run["model"], run["state"]
    with accelerator.accumulate(model):
        loss, parts, scale = compute_loss(run, args, batch)
        if args.debug_nan_at_step is not None and state.step + 1 == args.debug_nan_at_step:
            loss = loss * float("nan")
        names = sorted(parts)
        logged = accelerator.reduce(torch.stack([loss.detach()] + [parts[k].detach() for k in names]), "mean")
        if not torch.isfinite(logged[0]):
            ids = accelerator.gather(batch["sample_ids"]).tolist()
            raise FloatingPointError(
                f"Non-finite loss {logged[0].item()} at optimizer step {state.step + 1} (micro-step "
                f"{accelerator.step}); sample ids of the global batch: {ids}. No checkpoint was written for this "
                f"step; the last good one is {latest_checkpoint(Path(args.output_dir))}. Try a lower --lr or "
                f"--mixed-precision no, then --resume {args.output_dir}.")
        accelerator.backward(loss)
        grad_norm = None
        if accelerator.sync_gradients:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        run["optimizer"].step()
        if accelerator.sync_gradients:
            run["scheduler"].step()
        run["optimizer"].zero_grad()
    metrics = {"train/loss": logged[0].item(), **{f"train/{k}": v.item() for k, v in zip(names, logged[1:])},
               "train/logit_scale": float(scale.detach())}
    if grad_norm is not None:
        metrics["train/grad_norm"] = float(grad_norm)
    return metrics


def guarded_step(run: dict, args, batch: dict) -> dict:
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


def start_processes(args) -> None:
    """The process group, then the output folder every process agrees on (a new dated one by default)."""
    from accelerate.utils import broadcast_object_list

    # Without cpu=True, accelerate 1.15 on a machine with no accelerator ignores torchrun's WORLD_SIZE and every
    # process of `accelerate launch --multi_gpu --num_processes N` trains alone as "rank 0 of 1". The process state
    # comes first: the trackers' constructors (@on_main_process) would otherwise create it without the flag.
    state = PartialState(cpu=not torch.accelerator.is_available())
    if args.output_dir is None:
        name = [f"outputs/{Path(args.model).name.replace(':', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"]
        args.output_dir = broadcast_object_list(name)[0] if state.num_processes > 1 else name[0]
    check_output_dir(args)


def train(args) -> Path:
    """The loop: micro-steps from the resumed position to --max-steps optimizer steps, checkpoints, eval, logging."""
    start_processes(args)
    run = setup(args)
    accelerator, state, gas = run["accelerator"], run["state"], args.gradient_accumulation_steps
    loader = train_loader(run["steps"], state.step * gas, args.max_steps * gas, args.num_workers)
    bar = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train")
    global_batch = args.batch_size * accelerator.num_processes * gas
    run["last_eval"], tic = {}, time.perf_counter()
    for batch in loader:
        metrics = guarded_step(run, args, {k: v.to(accelerator.device) for k, v in batch.items()})
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        samples_per_s = global_batch / (time.perf_counter() - tic)  # data loading included, evaluation not
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", samples_s=f"{samples_per_s:.0f}")
        if state.step % args.log_every == 0 or state.step == 1:
            accelerator.log({**metrics, "train/lr": run["scheduler"].get_last_lr()[0],
                             "train/samples_per_s": samples_per_s}, step=state.step)
        if state.step % args.eval_every == 0 or state.step == args.max_steps:
            run["last_eval"] = evaluate(run)
            accelerator.log(run["last_eval"], step=state.step)
            bar.write(f"step {state.step}: " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in run["last_eval"].items()))
        if state.step % args.checkpoint_every == 0:
            save_checkpoint(run)
        tic = time.perf_counter()
    bar.close()
    return finish(run, args)


def finish(run: dict, args) -> Path:
    """The student in its family's format + model card (main process), the final Hub push, trackers closed."""
    accelerator, out = run["accelerator"], Path(args.output_dir)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(run["model"])
    if accelerator.is_main_process:
        data = run["data"]
        card = None if data["license"] is None else {
                "repo_id": args.push_to_hub, "name": (args.push_to_hub or str(out.resolve())).split("/")[-1],
                "license": data["license"], "datasets": None,
                "base_model": args.model if "/" in args.model and not Path(args.model).exists()
                and not args.from_scratch and not args.model.startswith("open_clip:") else None,
                "eval_results": [{"key": Path(str(run["eval_roles"]["spec"])).name, "dataset": "held-out evaluation",
                                  "metrics": {k[5:]: v for k, v in run["last_eval"].items()}}]
                if run["last_eval"] else [],
                "training": {"data": data["datasets"], "command": "accelerate launch train_accelerate.py " +
                             " ".join(sys.argv[1:]),
                             "teachers": run["teacher_rows"],
                             "hyperparameters": {k: getattr(args, k) for k in (
                                 "max_steps", "batch_size", "gradient_accumulation_steps", "lr", "betas",
                                 "weight_decay", "warmup_steps", "max_grad_norm", "loss_weights", "caption_mode",
                                 "mixed_precision", "seed")} | {"num_processes": accelerator.num_processes}}}
        if card is None:
            print("No --license given: the model card (README.md) was not written; rerun the save with --license.")
        run["student"].save(accelerator.unwrap_model(run["model"]), state_dict, out, card)
        run["hub"].final()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def main(argv=None) -> Path:
    args = parse_args(argv)
    out = train(args)
    print(f"Saved the trained model, its processor/tokenizer and model card to {out}")
    return out


if __name__ == "__main__":
    main()
