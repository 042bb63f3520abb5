"""Tiny, randomly initialised teachers and captioners saved to local folders, for offline tests and benchmarks.

Each builder writes a folder that the reinforcement tool loads through exactly the path a real Hub model takes
(``open_clip.create_model_and_transforms("local-dir:...")`` / ``from_pretrained(folder)``); only the size differs.
"""

from __future__ import annotations

import json
import os

import torch

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _save_open_clip(folder: str, model_cfg: dict, size: int, seed: int, init=None) -> str:
    import open_clip

    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, "open_clip_pytorch_model.bin")
    if os.path.exists(weights):
        os.remove(weights)  # else create_model below would load a stale checkpoint
    preprocess_cfg = {"size": size, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
                      "resize_mode": "shortest"}
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, f)
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights yet: random init
    if init is not None:
        init(model)
    torch.save(model.state_dict(), weights)
    return f"open_clip:local-dir:{folder}"


def tiny_open_clip_clip(folder: str, image_size: int = 32, embed_dim: int = 16, seed: int = 0) -> str:
    cfg = {"embed_dim": embed_dim,
           "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    return _save_open_clip(folder, cfg, image_size, seed)


def tiny_open_clip_coca(folder: str, image_size: int = 32, seed: int = 0, logit_std: float = 6.0) -> str:
    """A CoCa whose next-token logits have standard deviation about ``logit_std``.

    open_clip leaves the multimodal decoder's ``text_projection`` as ``torch.empty`` (its ``init_parameters`` is
    never called), i.e. whatever memory held, often all zeros: every caption token would then be a uniform draw
    over the 49,408 tokens. Here it is drawn normal, scaled so that the nucleus (top-p 0.9) holds tens of tokens,
    as a trained captioner's does, rather than most of the vocabulary (std 1).
    """
    # embed_dim must equal the multimodal width: the decoder cross-attends to the projected image tokens.
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16,
                          "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
           "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                        "embed_cls": True, "output_tokens": True},
           "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                              "attn_pooler_heads": 2},
           "custom_text": True}

    def init(model):
        width = model.text_decoder.width
        torch.nn.init.normal_(model.text_decoder.text_projection, std=logit_std * width ** -0.5)

    return _save_open_clip(folder, cfg, image_size, seed, init)


def tiny_mobileclip(folder: str, image_size: int = 28, seed: int = 0) -> str:
    """A transformers MobileCLIP (the 'vit-patch' tiny family of tests/conftest.py) saved with its processor."""
    from modeling_mobileclip import (MobileCLIPConfig, MobileCLIPModel, MobileCLIPProcessor, MobileCLIPTextConfig,
                                     MobileCLIPTokenizer, MobileCLIPVisionConfig)

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                max_position_embeddings=77, num_hidden_layers=2)
    vision = dict(backbone="vit", image_size=image_size, patch_size=14, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=64, stem="patch", layer_norm_eps=1e-5, pre_norm=True,
                  projection_bias=True)
    config = MobileCLIPConfig(text_config=MobileCLIPTextConfig(**text), vision_config=MobileCLIPVisionConfig(**vision),
                              projection_dim=24)
    torch.manual_seed(seed)
    MobileCLIPModel(config).eval().save_pretrained(folder)
    tokenizer = MobileCLIPTokenizer.from_bpe_file()
    base = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    image_processor = base.image_processor.__class__(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
    MobileCLIPProcessor(image_processor, tokenizer).save_pretrained(folder)
    return folder  # the bare save_pretrained folder is a teacher spec


def _clip_tokenizer():
    """A transformers ``CLIPTokenizer`` with the real CLIP BPE (built offline from the copy open_clip ships)."""
    from transformers import CLIPTokenizer

    from modeling_mobileclip import MobileCLIPTokenizer

    source = MobileCLIPTokenizer.from_bpe_file()
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split())
              for m in json.loads(source.backend_tokenizer.to_str())["model"]["merges"]]
    return CLIPTokenizer(vocab=source.get_vocab(), merges=merges, model_max_length=77)


def tiny_clip(folder: str, image_size: int = 40, seed: int = 0) -> str:
    """A transformers ``CLIPModel`` with ``CLIPProcessor`` (CLIP BPE tokenizer, OpenAI mean/std)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=20)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor, _clip_tokenizer()).save_pretrained(folder)
    return folder


def tiny_siglip(folder: str, image_size: int = 32, seed: int = 0) -> str:
    """A transformers ``SiglipModel`` with ``SiglipProcessor`` (mean/std 0.5; the CLIP BPE stands in for SigLIP's
    SentencePiece vocabulary, which needs a package this project does not depend on)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    config = SiglipConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2))
    torch.manual_seed(seed)
    SiglipModel(config).eval().save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    SiglipProcessor(image_processor, _clip_tokenizer()).save_pretrained(folder)
    return folder


_WORDS = ("a photo of the dog cat on in with red blue green small large car tree house person two sitting "
          "standing next to street grass water white black man woman").split()


def _word_tokenizer(pad: str, bos: str, eos: str, unk: str):
    """A word-level fast tokenizer over ``_WORDS`` (and '.'), so sampled captions read as words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([pad, bos, eos, unk, "."] + list(_WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=pad, bos_token=bos, eos_token=eos,
                                   sep_token=eos, unk_token=unk)


def tiny_vision_encoder_decoder(folder: str, image_size: int = 32, seed: int = 0) -> str:
    """A ViT encoder + GPT-2 decoder captioner (``VisionEncoderDecoderModel``) with a word-level tokenizer."""
    from transformers import (GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig,
                              ViTImageProcessor)

    tokenizer = _word_tokenizer("<pad>", "<s>", "</s>", "<unk>")
    encoder = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=37)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return f"hf:{folder}"


def tiny_blip(folder: str, image_size: int = 32, seed: int = 0) -> str:
    """A ``BlipForConditionalGeneration`` captioner with ``BlipProcessor`` (loadable as an image-text-to-text
    pipeline) and a word-level tokenizer."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = _word_tokenizer("[PAD]", "[DEC]", "[SEP]", "[UNK]")
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=1, sep_token_id=2, eos_token_id=2, pad_token_id=0),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": image_size, "width": image_size}), tokenizer).save_pretrained(
        folder)
    return folder


def tiny_git(folder: str, image_size: int = 32, seed: int = 0) -> str:
    """A ``GitForCausalLM`` captioner (decoder-only: the image tokens prefix the text) with a word-level tokenizer."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM

    tokenizer = _word_tokenizer("<pad>", "<s>", "</s>", "<unk>")
    config = GitConfig(
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = GitForCausalLM(config).eval()
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return f"hf:{folder}"


def build_tiny_models(root: str, crop_size: int = 48) -> dict:
    """All tiny models under ``root``; returns their spec strings (teachers at crop size and below, captioners)."""
    return {
        "open_clip_at_crop": tiny_open_clip_clip(os.path.join(root, "oc_clip_crop"), image_size=crop_size, seed=1),
        "open_clip_small": tiny_open_clip_clip(os.path.join(root, "oc_clip_small"), image_size=32, seed=2),
        "open_clip_large": tiny_open_clip_clip(os.path.join(root, "oc_clip_large"), image_size=crop_size + 16,
                                               seed=3),
        "mobileclip": tiny_mobileclip(os.path.join(root, "mobileclip"), image_size=28, seed=4),
        "clip": tiny_clip(os.path.join(root, "clip"), image_size=40, seed=7),
        "siglip": tiny_siglip(os.path.join(root, "siglip"), image_size=32, seed=8),
        "ved": tiny_vision_encoder_decoder(os.path.join(root, "ved"), seed=5),
        "blip": tiny_blip(os.path.join(root, "blip"), seed=9),
        "coca": tiny_open_clip_coca(os.path.join(root, "coca"), seed=6),
    }
