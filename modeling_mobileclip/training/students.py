"""Student adapters: the training loop talks only to these, never to a model family directly.

A `Student` builds the model, its replay transform and tokenizer, returns (image features, text features, logit
scale) from one forward, names its learnable logit-scale parameter (clamped after every optimizer step) and saves the
result in the family's own format with a model card: MobileCLIP, transformers CLIP / SigLIP, open_clip.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import PIL.Image
import torch

from hub_cards.remote_code import RemoteCodeRefusedError, explain_remote_code_refusal

from .card import generic_card

LOGIT_SCALE_MAX = 100.0  # CLIP's cap on exp(logit_scale)


def _largest_log_scale(dtype: torch.dtype) -> float:
    """ln 100 rounded *down* in `dtype`: float32's nearest ln 100 has exp() = 100.0000076, where the forward's
    clamp at 100 would zero the gradient again."""
    value = torch.tensor(math.log(LOGIT_SCALE_MAX), dtype=dtype)
    while torch.exp(value) > LOGIT_SCALE_MAX:
        value = torch.nextafter(value, torch.zeros((), dtype=dtype))
    return value.item()

def _replay_params(image_processor) -> dict:
    """ReplayTransform arguments from a transformers image processor: output size, interpolation, mean/std."""
    crop, size = getattr(image_processor, "crop_size", None), image_processor.size
    edge = (crop["height"] if crop and getattr(image_processor, "do_center_crop", False)
            else size.get("height") or size.get("shortest_edge"))
    return dict(size=edge, interpolation=PIL.Image.Resampling(int(image_processor.resample)).name.lower(),
                mean=tuple(image_processor.image_mean), std=tuple(image_processor.image_std))


class Student:
    """A transformers dual encoder (`model(input_ids=, pixel_values=)` returning `image_embeds`/`text_embeds`)."""

    def __init__(self, name: str, from_scratch: bool = False, trust_remote_code: bool = False):
        self.name, self.from_scratch, self.trust_remote_code = name, from_scratch, trust_remote_code
        self.model, self.processor = self.build()

    def build(self):
        import transformers

        # trust_remote_code is always explicit: with None transformers asks on stdin, which hangs under accelerate.
        trust, auto = {"trust_remote_code": self.trust_remote_code}, transformers.AutoModel
        with explain_remote_code_refusal(self.name):
            model = (auto.from_config(transformers.AutoConfig.from_pretrained(self.name, **trust), **trust)
                     if self.from_scratch else auto.from_pretrained(self.name, **trust))
            return model, transformers.AutoProcessor.from_pretrained(self.name, **trust)

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
        # exp() of the learnable parameter, which `clamp_logit_scale` keeps in [0, ln 100] (`model` may be DDP-wrapped).
        return getattr(model, "module", model).logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    @torch.no_grad()
    def clamp_logit_scale(self, model) -> None:
        """After every optimizer step, as open_clip's loop does: clamping only exp() in the forward would give the
        parameter a zero gradient once AdamW pushes it past ln 100, and it would never come back."""
        scale = getattr(model, "module", model).logit_scale
        scale.clamp_(0, _largest_log_scale(scale.dtype))


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
        from hub_cards.endpoint import write_endpoint_files

        model.save_pretrained(out, state_dict=state_dict)
        self.processor.save_pretrained(out)
        write_endpoint_files(out, model.config.model_type)  # handler.py for Inference Endpoints
        if card is not None:
            self.model_card(self.name, model, self.processor, card).save(out / "README.md")

    @classmethod
    def model_card(cls, name: str, model, processor, card: dict):
        """The Hub card `save` writes, from `training.card.card_fields`; `model` None: before the model exists (the
        `--push-to-hub` pre-flight check validates this card's metadata)."""
        source = card["repo_id"] or "path/to/this/folder"
        return generic_card(card, "transformers", f"from transformers import AutoModel, AutoProcessor\n\n"
                            f"model = AutoModel.from_pretrained(\"{source}\")\n"
                            f"processor = AutoProcessor.from_pretrained(\"{source}\")")


def _unit(output) -> torch.Tensor:
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.nn.functional.normalize(features.float(), dim=-1)


class MobileCLIPStudent(Student):
    """MobileCLIP: `tiny`, a preset (random init) or a checkpoint; its card comes from `hub_cards`."""

    def build(self):
        from dataset_scripts.toy_data import tiny_mobileclip
        from modeling_mobileclip import MOBILECLIP_VARIANTS, MobileCLIPConfig, MobileCLIPModel, MobileCLIPProcessor

        if self.name == "tiny":
            return tiny_mobileclip()
        if self.name.lower() in MOBILECLIP_VARIANTS:
            return (MobileCLIPModel(MobileCLIPConfig.from_variant(self.name)),
                    MobileCLIPProcessor.from_variant(self.name))
        return super().build()

    def logit_scale(self, model, output) -> torch.Tensor:
        return output.logit_scale  # already exp() and clamped at 100 by the model

    def save(self, model, state_dict, out: Path, card: dict | None) -> None:
        model.save_pretrained(out, state_dict=state_dict)
        self.processor.save_pretrained(out)
        if card is not None:
            self.model_card(self.name, model, self.processor, card).write(out)

    @classmethod
    def model_card(cls, name: str, model, processor, card: dict):
        from hub_cards import generate_model_card

        if model is None:  # the pre-flight check: a tiny stand-in runs the widget examples, the flags give the rest
            from dataset_scripts.toy_data import tiny_mobileclip

            model, processor = tiny_mobileclip()
        variant = name.lower() if name.lower() in _mobileclip_variants() else None
        return generate_model_card(
            model, variant, repo_id=card["repo_id"], processor=processor, converted_from_apple=False,
            license=card["license"], base_model=card["base_model"], datasets=card["datasets"],
            eval_results=card["eval_results"], training=card["training"], widget_images=card.get("widget_images"))


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
        from transformers import (
            CLIPConfig,
            CLIPImageProcessor,
            CLIPModel,
            CLIPProcessor,
            CLIPTokenizer,
            SiglipConfig,
            SiglipImageProcessor,
            SiglipModel,
            SiglipProcessor,
        )

        from modeling_mobileclip.tokenization_mobileclip import CONTEXT_LENGTH, clip_bpe_vocab

        if self.name not in ("tiny-clip", "tiny-siglip"):
            return super().build()
        size = TINY_VISION["image_size"]
        # transformers' own CLIPTokenizer (pads with <|endoftext|>; CLIP pools at the first one), so the saved
        # processor loads without this package and without trust_remote_code.
        vocab, merges = clip_bpe_vocab()
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)
        if self.name == "tiny-clip":
            model = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32))
            image_processor = CLIPImageProcessor(size={"shortest_edge": size},
                                                 crop_size={"height": size, "width": size})
            return model, CLIPProcessor(image_processor, tokenizer)
        text = {k: v for k, v in TINY_TEXT.items() if k not in ("bos_token_id", "eos_token_id")}
        model = SiglipModel(SiglipConfig(text_config=dict(text, projection_size=32), vision_config=TINY_VISION))
        image_processor = SiglipImageProcessor(size={"height": size, "width": size})
        return model, SiglipProcessor(image_processor, tokenizer)


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
        return out["image_features"], out["text_features"], out["logit_scale"].clamp(max=LOGIT_SCALE_MAX)

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
            self.model_card(self.name, model, None, card).save(out / "README.md")

    @classmethod
    def model_card(cls, name: str, model, processor, card: dict):
        source = f"hf-hub:{card['repo_id']}" if card["repo_id"] else "local-dir:path/to/this/folder"
        return generic_card(card, "open_clip", f"import open_clip\n\nmodel, _, preprocess = "
                            f"open_clip.create_model_and_transforms(\"{source}\")\n"
                            f"tokenizer = open_clip.get_tokenizer(\"{source}\")")


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def student_class(name: str, trust_remote_code: bool = False) -> type[Student]:
    """The adapter for `--model` (see --help); unknown names get a message listing the accepted forms, a folder
    with code of its own a `RemoteCodeRefusedError` unless `trust_remote_code`."""
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
        with explain_remote_code_refusal(name):
            model_type = transformers.AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code).model_type
    except RemoteCodeRefusedError:
        raise
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


