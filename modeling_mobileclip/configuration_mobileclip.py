"""MobileCLIP / MobileCLIP2 configurations, variant presets and pretrained-tag metadata.

Papers: MobileCLIP (Vasu et al., CVPR 2024, arXiv 2311.17049) and MobileCLIP2 (TMLR 2025, arXiv 2508.20691).
This file is Hub-facing remote code: it imports only transformers/huggingface_hub.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISION_BACKBONES = ("fastvit", "vit")
FASTVIT_TOKEN_MIXERS = ("repmixer", "attention")
FASTVIT_NORMS = ("batchnorm", "layernorm")
VIT_STEMS = ("conv", "patch")
# Vision fields only the ViT trunk reads: a FastViT (MCi) config leaves them out of its config.json.
VIT_ONLY_FIELDS = ("patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "stem",
                   "stem_padding", "layer_norm_eps", "pre_norm", "no_embed_class")
TEXT_BLOCK_TYPES = ("transformer", "repmixer")


def _mci(layers, embed_dims, *, five_stage=False):
    """FastViT arguments of the MCi image towers (timm `fastvit_mci0..4` use the same settings)."""
    if five_stage:  # MCi3/4 (MobileCLIP-S3/S4, MobileCLIP2-S3/S4)
        return dict(
            backbone="fastvit", image_size=256, layers=layers, embed_dims=embed_dims, mlp_ratios=(4.0,) * 5,
            token_mixers=("repmixer",) * 3 + ("attention",) * 2, downsamples=(False, True, True, True, True),
            se_downsamples=(False,) * 5, pos_embs=(False, False, False, True, True), norm="layernorm",
            stem_use_scale_branch=False, projection_bias=True,
        )
    return dict(
        backbone="fastvit", image_size=256, layers=layers, embed_dims=embed_dims, mlp_ratios=(3.0,) * 4,
        token_mixers=("repmixer",) * 3 + ("attention",), downsamples=(False, True, True, True),
        se_downsamples=(False, False, True, True), pos_embs=(False, False, False, True), norm="batchnorm",
        stem_use_scale_branch=True,
        projection_bias=True,  # timm/open_clip classifier Linear; Apple v1 presets override it with False
    )


# Apple's v1 MobileCLIP-B image tower (ml-cvnets ViT): conv stem whose first conv has padding 1, LayerNorm eps 1e-5,
# no positional embedding on the CLS token, bias-free projection. timm's `vit_base_mci_224` (MobileCLIP2-B) differs:
# stem padding 0, eps 1e-6, and open_clip's head Linear has a bias.
_VIT_B_V1 = dict(backbone="vit", image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, stem="conv", stem_padding=1, layer_norm_eps=1e-5,
                 no_embed_class=True, projection_bias=False)
_VIT_B_V2 = dict(_VIT_B_V1, stem_padding=0, layer_norm_eps=1e-6, projection_bias=True)
# timm `vit_large_patch14_clip_224`: CLIP-style pre-norm ViT-L/14, exact GELU.
_VIT_L14 = dict(backbone="vit", image_size=224, patch_size=14, hidden_size=1024, num_hidden_layers=24,
                num_attention_heads=16, intermediate_size=4096, stem="patch", layer_norm_eps=1e-5, pre_norm=True,
                projection_bias=True)

_TEXT_S0 = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
                block_types=("repmixer",) + ("transformer",) * 4 + ("repmixer",), causal=False)
_TEXT_BASE = dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048, causal=False)
_TEXT_BASE_CAUSAL = dict(_TEXT_BASE, causal=True)
_TEXT_768 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, causal=False)

# Architecture arguments only (timm `model_args` style). v1 MCi towers project without bias (Apple `head.proj`);
# open_clip-format towers (MobileCLIP2, S3/S4/L-14) use timm's classifier Linear, with bias, as projection.
MOBILECLIP_VARIANTS = {
    "mobileclip-s0": dict(vision=dict(_mci((2, 6, 10, 2), (64, 128, 256, 512)), projection_bias=False),
                          text=_TEXT_S0, projection_dim=512),
    "mobileclip-s1": dict(vision=dict(_mci((4, 12, 20, 4), (64, 128, 256, 512)), projection_bias=False),
                          text=_TEXT_BASE, projection_dim=512),
    "mobileclip-s2": dict(vision=dict(_mci((4, 12, 24, 4), (80, 160, 320, 640)), projection_bias=False),
                          text=_TEXT_BASE, projection_dim=512),
    "mobileclip-b": dict(vision=_VIT_B_V1, text=_TEXT_BASE_CAUSAL, projection_dim=512),
    "mobileclip-b-lt": dict(vision=_VIT_B_V1, text=_TEXT_BASE_CAUSAL, projection_dim=512),
    "mobileclip-s3": dict(vision=_mci((2, 12, 24, 4, 2), (96, 192, 384, 768, 1536), five_stage=True),
                          text=_TEXT_768, projection_dim=768),
    "mobileclip-s4": dict(vision=_mci((2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048), five_stage=True),
                          text=_TEXT_768, projection_dim=768),
    "mobileclip-l-14": dict(vision=_VIT_L14, text=_TEXT_768, projection_dim=768),
    # MobileCLIP2-S0: Apple's MobileCLIP2-S0.json and open_clip configure a 12-layer 512-wide text tower, not the
    # README's 42.4 M hybrid (reference notes 0.8); we follow the configs, which the checkpoint keys must match.
    "mobileclip2-s0": dict(vision=_mci((2, 6, 10, 2), (64, 128, 256, 512)), text=_TEXT_BASE, projection_dim=512),
    "mobileclip2-s2": dict(vision=_mci((4, 12, 24, 4), (80, 160, 320, 640)), text=_TEXT_BASE, projection_dim=512),
    "mobileclip2-b": dict(vision=_VIT_B_V2, text=_TEXT_BASE_CAUSAL, projection_dim=512),
    "mobileclip2-s3": dict(vision=_mci((2, 12, 24, 4, 2), (96, 192, 384, 768, 1536), five_stage=True),
                           text=_TEXT_768, projection_dim=768),
    "mobileclip2-s4": dict(vision=_mci((2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048), five_stage=True),
                           text=_TEXT_768, projection_dim=768),
    "mobileclip2-l-14": dict(vision=_VIT_L14, text=_TEXT_768, projection_dim=768),
}

_NO_NORM = dict(image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0), resample="bilinear")
_OPENAI_NORM = dict(image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, resample="bilinear")
_OPENAI_NORM_BICUBIC = dict(_OPENAI_NORM, resample="bicubic")
_AMLR = dict(license="other", license_name="apple-amlr",
             license_link="https://github.com/apple/ml-mobileclip/blob/main/LICENSE_MODELS")


def _tag(hub_id, checkpoint, checkpoint_format, preprocess, params_m, latency_ms, in1k_top1, avg38, seen_b=13):
    return dict(hub_id=hub_id, checkpoint=checkpoint, checkpoint_format=checkpoint_format, **preprocess, **_AMLR,
                results=dict(imagenet_zeroshot_top1=in1k_top1, avg_38_datasets=avg38, seen_samples_billion=seen_b,
                             params_m_image_text=params_m, latency_ms_image_text=latency_ms,
                             source="https://github.com/apple/ml-mobileclip (README table, results/*.jsonl)"))


# Pretrained-tag metadata (timm `default_cfgs` style): where Apple publishes each variant, its preprocessing (v1 and
# MobileCLIP2 S0/S2/B take [0, 1] pixels with no normalisation; S3/S4/L-14 use OpenAI statistics, L-14 bicubic),
# licence, and Apple's published results (IN-1k zero-shot top-1 %, average over 38 datasets %, iPhone 12 Pro Max
# latency). Read by the image processor, converter, hub cards and tests.
PRETRAINED_TAGS = {
    "mobileclip-s0": _tag("apple/MobileCLIP-S0", "mobileclip_s0.pt", "apple", _NO_NORM, (11.4, 42.4), (1.5, 1.6), 67.8, 58.1),
    "mobileclip-s1": _tag("apple/MobileCLIP-S1", "mobileclip_s1.pt", "apple", _NO_NORM, (21.5, 63.4), (2.5, 3.3), 72.6, 61.3),
    "mobileclip-s2": _tag("apple/MobileCLIP-S2", "mobileclip_s2.pt", "apple", _NO_NORM, (35.7, 63.4), (3.6, 3.3), 74.4, 63.7),
    "mobileclip-b": _tag("apple/MobileCLIP-B", "mobileclip_b.pt", "apple", _NO_NORM, (86.3, 63.4), (10.4, 3.3), 76.8, 65.2),
    "mobileclip-b-lt": _tag("apple/MobileCLIP-B-LT", "mobileclip_blt.pt", "apple", _NO_NORM, (86.3, 63.4), (10.4, 3.3),
                            77.2, 65.8, seen_b=36),
    "mobileclip-s3": _tag("apple/MobileCLIP-S3", "mobileclip_s3.pt", "open_clip", _OPENAI_NORM, (125.1, 123.6), (8.0, 6.6),
                          78.3, 66.3),
    "mobileclip-s4": _tag("apple/MobileCLIP-S4", "mobileclip_s4.pt", "open_clip", _OPENAI_NORM, (321.6, 123.6),
                          (19.6, 6.6), 79.4, 68.1),
    "mobileclip-l-14": _tag("apple/MobileCLIP-L-14", "mobileclip_l14.pt", "open_clip", _OPENAI_NORM_BICUBIC,
                            (304.3, 123.6), (57.9, 6.6), 79.5, 66.9),
    "mobileclip2-s0": _tag("apple/MobileCLIP2-S0", "mobileclip2_s0.pt", "open_clip", _NO_NORM, (11.4, 63.4), (1.5, 1.6),
                           71.5, 59.7),
    "mobileclip2-s2": _tag("apple/MobileCLIP2-S2", "mobileclip2_s2.pt", "open_clip", _NO_NORM, (35.7, 63.4), (3.6, 3.3),
                           77.2, 64.1),
    "mobileclip2-b": _tag("apple/MobileCLIP2-B", "mobileclip2_b.pt", "open_clip", _NO_NORM, (86.3, 63.4), (10.4, 3.3),
                          79.4, 65.8),
    "mobileclip2-s3": _tag("apple/MobileCLIP2-S3", "mobileclip2_s3.pt", "open_clip", _OPENAI_NORM, (125.1, 123.6),
                           (8.0, 6.6), 80.7, 66.8),
    "mobileclip2-s4": _tag("apple/MobileCLIP2-S4", "mobileclip2_s4.pt", "open_clip", _OPENAI_NORM, (321.6, 123.6),
                           (19.6, 6.6), 81.9, 67.5),
    "mobileclip2-l-14": _tag("apple/MobileCLIP2-L-14", "mobileclip2_l14.pt", "open_clip", _OPENAI_NORM_BICUBIC,
                             (304.3, 123.6), (57.9, 6.6), 81.9, 67.8),
}


def resolve_variant(name: str) -> str:
    """Return the canonical preset name, or raise listing the valid ones."""
    key = name.lower().replace("_", "-")
    if key not in MOBILECLIP_VARIANTS:
        raise ValueError(f"Unknown MobileCLIP variant {name!r}. Valid variants: {', '.join(MOBILECLIP_VARIANTS)}.")
    return key


@strict
class MobileCLIPTextConfig(PreTrainedConfig):
    r"""Text tower: a pre-norm transformer (optionally with the S0 "Text-RepMixer" conv blocks), EOT pooling.

    Args:
        vocab_size: BPE vocabulary size (49408 for the CLIP tokenizer).
        hidden_size: Width of the token embeddings and every block.
        intermediate_size: Hidden width of the MLPs (and of the RepMixer ConvFFN).
        num_hidden_layers: Number of blocks.
        num_attention_heads: Attention heads of the transformer blocks.
        max_position_embeddings: Context length; inputs are re-padded to it with `pad_token_id` when `causal=False`.
        block_types: One of "transformer"/"repmixer" per block; None means all "transformer".
        repmixer_kernel_size: Token-axis kernel of the RepMixer depthwise convs (11 in MobileCLIP-S0).
        causal: Causal self-attention (MobileCLIP-B, B-LT, MobileCLIP2-B); the others attend bidirectionally.
        layer_norm_eps: LayerNorm epsilon (LayerNorms run in float32).
        layer_scale_init_value: Initial value of the RepMixer layer scales.
        inference_mode: Build the RepMixer blocks already fused (set by `reparameterize()`).
        hidden_act: Activation of the MLPs.
    """

    model_type = "mobileclip_text_model"
    base_config_key = "text_config"

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    block_types: list[str] | tuple[str, ...] | None = None
    repmixer_kernel_size: int = 11
    causal: bool = False
    layer_norm_eps: float = 1e-5
    layer_scale_init_value: float = 1e-5
    inference_mode: bool = False
    hidden_act: str = "gelu"
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407

    @property
    def layer_block_types(self) -> tuple[str, ...]:
        return tuple(self.block_types) if self.block_types is not None else ("transformer",) * self.num_hidden_layers

    def validate_architecture(self):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"text_config.hidden_size ({self.hidden_size}) is not divisible by "
                             f"num_attention_heads ({self.num_attention_heads}).")
        unknown = sorted(set(self.layer_block_types) - set(TEXT_BLOCK_TYPES))
        if unknown:
            raise ValueError(f"text_config.block_types has unknown block type(s) {unknown}; "
                             f"valid: {list(TEXT_BLOCK_TYPES)}.")
        if len(self.layer_block_types) != self.num_hidden_layers:
            raise ValueError(f"text_config.block_types has {len(self.layer_block_types)} entries but "
                             f"num_hidden_layers is {self.num_hidden_layers}; give one block type per layer.")
        if self.repmixer_kernel_size % 2 != 1:
            raise ValueError(f"text_config.repmixer_kernel_size must be odd, got {self.repmixer_kernel_size}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"text_config.{name}={value} is outside the vocabulary (size {self.vocab_size}).")


@strict
class MobileCLIPVisionConfig(PreTrainedConfig):
    r"""Image tower: a timm trunk (FastViT/MCi or ViT) followed by the projection of `MobileCLIPModel`.

    Args:
        backbone: "fastvit" (MCi0-4) or "vit" (ViT-B/16 with conv stem, ViT-L/14).
        image_size: Input resolution the tower was trained at (square).
        layers, embed_dims, mlp_ratios, token_mixers, downsamples, se_downsamples, pos_embs: FastViT stage settings,
            one entry per stage ("repmixer"/"attention" mixers; `pos_embs[i]` puts a RepCPE before stage i).
        norm: Norm of the FastViT attention blocks: "batchnorm" (MCi0-2) or "layernorm" (MCi3/4).
        stem_use_scale_branch: FastViT stem MobileOne blocks carry the 1x1 scale branch (False for MCi3/4).
        cls_ratio: FastViT final conv expands the last width by this factor.
        layer_scale_init_value: Initial value of the FastViT layer scales.
        inference_mode: Build the FastViT trunk already fused (set by `reparameterize()`).
        patch_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: ViT settings.
        stem: "conv" (MobileCLIP-B conv stem, stride 4-2-2) or "patch" (plain patchify conv).
        stem_padding: Padding of the first conv of the conv stem (Apple v1 MobileCLIP-B: 1, timm: 0).
        layer_norm_eps: ViT LayerNorm epsilon.
        pre_norm: LayerNorm after the patch embedding (CLIP ViTs).
        no_embed_class: The CLS token gets no positional embedding.
        projection_bias: The image projection has a bias (open_clip/timm heads) or not (Apple v1 `proj`).
        drop_path_rate: Stochastic depth rate.
        check_finite_inputs: Raise if `pixel_values` holds NaN or inf (a debugging aid, off by default: the check
            reads the whole batch and syncs with the device). Turn on for a loaded model with
            `model.config.vision_config.check_finite_inputs = True`.
    """

    model_type = "mobileclip_vision_model"
    base_config_key = "vision_config"

    backbone: str = "fastvit"
    image_size: int = 256
    num_channels: int = 3
    layers: list[int] | tuple[int, ...] = (2, 6, 10, 2)
    embed_dims: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    mlp_ratios: list[float] | tuple[float, ...] = (3.0, 3.0, 3.0, 3.0)
    token_mixers: list[str] | tuple[str, ...] = ("repmixer", "repmixer", "repmixer", "attention")
    downsamples: list[bool] | tuple[bool, ...] = (False, True, True, True)
    se_downsamples: list[bool] | tuple[bool, ...] = (False, False, True, True)
    pos_embs: list[bool] | tuple[bool, ...] = (False, False, False, True)
    norm: str = "batchnorm"
    stem_use_scale_branch: bool = True
    cls_ratio: float = 2.0
    layer_scale_init_value: float = 1e-5
    inference_mode: bool = False
    patch_size: int = 16
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    stem: str = "conv"
    stem_padding: int = 0
    layer_norm_eps: float = 1e-6
    pre_norm: bool = False
    no_embed_class: bool = False
    projection_bias: bool = False
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02
    check_finite_inputs: bool = False

    @property
    def num_features(self) -> int:
        """Width of the pooled trunk output that the projection consumes."""
        if self.backbone == "fastvit":
            return int(self.embed_dims[-1] * self.cls_ratio)
        return self.hidden_size

    def to_dict(self) -> dict:
        """Serialised fields; for a FastViT (MCi) tower without the ViT-only ones (`VIT_ONLY_FIELDS`), which it never
        reads (they reload at their defaults)."""
        output = super().to_dict()
        if self.backbone == "fastvit":
            for name in VIT_ONLY_FIELDS:
                output.pop(name, None)
        return output

    def validate_architecture(self):
        if self.backbone not in VISION_BACKBONES:
            raise ValueError(f"vision_config.backbone={self.backbone!r} is unknown; valid: {list(VISION_BACKBONES)}.")
        if self.backbone == "fastvit":
            per_stage = dict(embed_dims=self.embed_dims, mlp_ratios=self.mlp_ratios, token_mixers=self.token_mixers,
                             downsamples=self.downsamples, se_downsamples=self.se_downsamples, pos_embs=self.pos_embs)
            for name, value in per_stage.items():
                if len(value) != len(self.layers):
                    raise ValueError(f"vision_config.{name} has {len(value)} entries but layers has "
                                     f"{len(self.layers)} stages; give one entry per stage.")
            unknown = sorted(set(self.token_mixers) - set(FASTVIT_TOKEN_MIXERS))
            if unknown:
                raise ValueError(f"vision_config.token_mixers has unknown block type(s) {unknown}; "
                                 f"valid: {list(FASTVIT_TOKEN_MIXERS)}.")
            if self.norm not in FASTVIT_NORMS:
                raise ValueError(f"vision_config.norm={self.norm!r} is unknown; valid: {list(FASTVIT_NORMS)}.")
            for dim, mixer in zip(self.embed_dims, self.token_mixers):
                if mixer == "attention" and dim % 32 != 0:
                    raise ValueError(f"vision_config.embed_dims entry {dim} of an attention stage is not divisible "
                                     f"by the FastViT head dim 32.")
        else:
            if self.hidden_size % self.num_attention_heads != 0:
                raise ValueError(f"vision_config.hidden_size ({self.hidden_size}) is not divisible by "
                                 f"num_attention_heads ({self.num_attention_heads}).")
            if self.stem not in VIT_STEMS:
                raise ValueError(f"vision_config.stem={self.stem!r} is unknown; valid: {list(VIT_STEMS)}.")
            if self.stem == "conv" and self.patch_size != 16:
                raise ValueError(f"vision_config.stem='conv' downsamples by 16, but patch_size is {self.patch_size}.")
            if self.image_size % self.patch_size != 0:
                raise ValueError(f"vision_config.image_size ({self.image_size}) is not a multiple of "
                                 f"patch_size ({self.patch_size}).")


@strict
class MobileCLIPConfig(PreTrainedConfig):
    r"""MobileCLIP image-text model: `text_config`, `vision_config`, the shared embedding width and the logit scale.

    Build a preset with `MobileCLIPConfig.from_variant("mobileclip-s0")`.

    Args:
        text_config: `MobileCLIPTextConfig` or its dict.
        vision_config: `MobileCLIPVisionConfig` or its dict.
        projection_dim: Width of the joint embedding space.
        logit_scale_init_value: Initial log logit scale, ln(1/0.07) as in CLIP; `exp()` is clamped at 100.
        variant: Name of the preset this config was built from, if any.
    """

    model_type = "mobileclip"
    sub_configs_defaults = {"text_config": MobileCLIPTextConfig, "vision_config": MobileCLIPVisionConfig}

    text_config: dict | MobileCLIPTextConfig | None = None
    vision_config: dict | MobileCLIPVisionConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    variant: str | None = None
    initializer_range: float = 0.02

    @classmethod
    def from_variant(cls, name: str, **overrides) -> "MobileCLIPConfig":
        """Config of a named preset (`mobileclip-s0` ... `mobileclip2-l-14`); `overrides` set top-level fields."""
        key = resolve_variant(name)
        spec = MOBILECLIP_VARIANTS[key]
        return cls(text_config=MobileCLIPTextConfig(**spec["text"]),
                   vision_config=MobileCLIPVisionConfig(**spec["vision"]),
                   projection_dim=spec["projection_dim"], variant=key, **overrides)


__all__ = ["MobileCLIPConfig", "MobileCLIPTextConfig", "MobileCLIPVisionConfig", "MOBILECLIP_VARIANTS",
           "PRETRAINED_TAGS", "resolve_variant"]
