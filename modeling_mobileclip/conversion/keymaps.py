"""Explicit source -> target key tables for the converter (`mapping.py`; not Hub-facing; no open_clip import).

Every table maps one whole source key to one whole key of `MobileCLIPModel.state_dict()` (or to `None` for a key
that is checked and then dropped), with the tensor transform it needs. Tables are written per module type as
(source module, target module, leaves) and expanded to full keys; the position of each module (stage, block, layer)
comes from the model config. Nothing is renamed by substring replacement.

Source layouts (see docs/mobileclip-reference.md section 2):
- "apple": Apple's v1 train-time state dicts (`image_encoder.model.*`, `text_encoder.*`, `logit_scale`), MCi0-2 or
  the v1 ViT-B/16 image tower, the "base" or S0 "mct" text tower.
- "open_clip": open_clip CustomTextCLIP (`visual.trunk.*` in timm names, `text.*`, `logit_scale`); the timm
  classifier Linear (`head.fc` for FastViT, `head` for ViT) is the image projection.
- "timm": a timm image trunk alone (`stem.*`/`stages.*` or `patch_embed.*`/`blocks.*`, classifier = projection).
"""

from dataclasses import dataclass

from ..configuration_mobileclip import MobileCLIPConfig

COPY = "copy"  # same shape
TRANSPOSE = "transpose"  # Apple/open_clip [in, out] projection matrices -> nn.Linear [out, in]
RESHAPE = "reshape"  # only size-1 dims differ (Apple's [1, 1, L, W] position embeddings, (1, k) text conv kernels)
ZERO_ONLY = "zero_only"  # a synthesised all-zero bias that the target has no slot for: checked, then dropped

FORMATS = ("apple", "open_clip", "timm")

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_WB = ("weight", "bias")
_W = ("weight",)

VISION_PREFIX = "vision_model.trunk."
TEXT_PREFIX = "text_model."


@dataclass(frozen=True)
class KeyRule:
    source: str
    target: str | None
    transform: str = COPY


def _module(src: str, dst: str, leaves: tuple[str, ...], transform: str = COPY) -> list[KeyRule]:
    return [KeyRule(f"{src}.{leaf}", f"{dst}.{leaf}", transform) for leaf in leaves]


# ----------------------------------------------------------------------------------------------------------------
# Apple v1 image towers -> timm names (the layout timm's own `fastvit.checkpoint_filter_fn` reads too)
# ----------------------------------------------------------------------------------------------------------------

def _apple_mobileone(src: str, dst: str, se: tuple[str, str] = ("fc1", "fc2")) -> list[KeyRule]:
    """MobileOne block: kxk conv+BN branch, 1x1 conv+BN scale branch, BN-only identity, optional SE."""
    return [
        *_module(f"{src}.rbr_conv.0.conv", f"{dst}.conv_kxk.0.conv", _W),
        *_module(f"{src}.rbr_conv.0.bn", f"{dst}.conv_kxk.0.bn", _BN),
        *_module(f"{src}.rbr_scale.conv", f"{dst}.conv_scale.conv", _W),
        *_module(f"{src}.rbr_scale.bn", f"{dst}.conv_scale.bn", _BN),
        *_module(f"{src}.rbr_skip", f"{dst}.identity", _BN),
        *_module(f"{src}.se.{se[0]}", f"{dst}.se.fc1", _WB),
        *_module(f"{src}.se.{se[1]}", f"{dst}.se.fc2", _WB),
    ]


def _apple_convffn(src: str, dst: str) -> list[KeyRule]:
    return [
        *_module(f"{src}.convffn.conv.conv", f"{dst}.mlp.conv.conv", _W),
        *_module(f"{src}.convffn.conv.bn", f"{dst}.mlp.conv.bn", _BN),
        *_module(f"{src}.convffn.fc1", f"{dst}.mlp.fc1", _WB),
        *_module(f"{src}.convffn.fc2", f"{dst}.mlp.fc2", _WB),
    ]


def _apple_repmixer_block(src: str, dst: str) -> list[KeyRule]:
    return [
        *_module(f"{src}.token_mixer.norm.rbr_skip", f"{dst}.token_mixer.norm.identity", _BN),
        *_apple_mobileone(f"{src}.token_mixer.mixer", f"{dst}.token_mixer.mixer"),
        KeyRule(f"{src}.token_mixer.layer_scale", f"{dst}.token_mixer.layer_scale.gamma"),
        *_apple_convffn(src, dst),
        KeyRule(f"{src}.layer_scale", f"{dst}.layer_scale.gamma"),
    ]


def _apple_attention_block(src: str, dst: str) -> list[KeyRule]:
    return [
        *_module(f"{src}.norm", f"{dst}.norm", _BN),  # BatchNorm in MCi0-2 (LayerNorm2d targets keep weight/bias)
        *_module(f"{src}.token_mixer.qkv", f"{dst}.token_mixer.qkv", _WB),
        *_module(f"{src}.token_mixer.proj", f"{dst}.token_mixer.proj", _WB),
        *_apple_convffn(src, dst),
        KeyRule(f"{src}.layer_scale_1", f"{dst}.layer_scale_1.gamma"),
        KeyRule(f"{src}.layer_scale_2", f"{dst}.layer_scale_2.gamma"),
    ]


def _apple_downsample(src: str, dst: str) -> list[KeyRule]:
    """Apple `PatchEmbed`: large-kernel conv (7x7 + 3x3 branches, optional SE), then a 1x1 MobileOne block."""
    return [
        *_module(f"{src}.proj.0.lkb_origin.conv", f"{dst}.proj.0.large_conv.conv", _W),
        *_module(f"{src}.proj.0.lkb_origin.bn", f"{dst}.proj.0.large_conv.bn", _BN),
        *_module(f"{src}.proj.0.small_conv.conv", f"{dst}.proj.0.small_conv.conv", _W),
        *_module(f"{src}.proj.0.small_conv.bn", f"{dst}.proj.0.small_conv.bn", _BN),
        *_module(f"{src}.proj.0.se.fc1", f"{dst}.proj.0.se.fc1", _WB),
        *_module(f"{src}.proj.0.se.fc2", f"{dst}.proj.0.se.fc2", _WB),
        *_apple_mobileone(f"{src}.proj.1", f"{dst}.proj.1"),
    ]


def fastvit_network_layout(vision_config) -> list[tuple[int, str, int]]:
    """Apple's flat `network.N` list as (N, kind, timm stage): per stage a downsample ("downsample"), a conditional
    positional encoding ("pos_emb") and the block list ("blocks"), in that order, each present only when the
    stage has it (MCi0: 0 blocks, 1 downsample, 2 blocks, 3 downsample, 4 blocks, 5 downsample, 6 pos_emb, 7 blocks).
    """
    layout, index = [], 0
    dims = list(vision_config.embed_dims)
    for stage in range(len(vision_config.layers)):
        # timm FastVit: a stage downsamples when asked to or when the width changes.
        if vision_config.downsamples[stage] or (stage > 0 and dims[stage - 1] != dims[stage]):
            layout.append((index, "downsample", stage))
            index += 1
        if vision_config.pos_embs[stage]:
            layout.append((index, "pos_emb", stage))
            index += 1
        layout.append((index, "blocks", stage))
        index += 1
    return layout


def _apple_fastvit_rules(vision_config) -> list[KeyRule]:
    src, dst = "image_encoder.model", VISION_PREFIX.rstrip(".")
    rules = []
    for i in range(3):
        rules += _apple_mobileone(f"{src}.patch_embed.{i}", f"{dst}.stem.{i}")
    for index, kind, stage in fastvit_network_layout(vision_config):
        net, out = f"{src}.network.{index}", f"{dst}.stages.{stage}"
        if kind == "downsample":
            rules += _apple_downsample(net, f"{out}.downsample")
        elif kind == "pos_emb":
            rules += _module(f"{net}.pe", f"{out}.pos_emb.pos_enc", _WB)
        else:
            block = (_apple_attention_block if vision_config.token_mixers[stage] == "attention"
                     else _apple_repmixer_block)
            for b in range(vision_config.layers[stage]):
                rules += block(f"{net}.{b}", f"{out}.blocks.{b}")
    # Apple's `conv_exp` SE block names its 1x1 convs reduce/expand; timm's `final_conv.se` uses fc1/fc2.
    rules += _apple_mobileone(f"{src}.conv_exp", f"{dst}.final_conv", se=("reduce", "expand"))
    rules.append(KeyRule(f"{src}.head.proj", "visual_projection.weight", TRANSPOSE))
    return rules


def _apple_transformer_block(src: str, dst: str, norms: tuple[str, str], attention: str, out_proj: str
                             ) -> list[KeyRule]:
    """An ml-cvnets pre-norm transformer block (image ViT and text tower alike); only the target names differ. Its qkv
    rows are q, k, v with heads contiguous in each: the order of our fused `qkv` and of timm's."""
    return [
        *_module(f"{src}.pre_norm_mha.0", f"{dst}.{norms[0]}", _WB),
        *_module(f"{src}.pre_norm_mha.1.qkv_proj", f"{dst}.{attention}.qkv", _WB),
        *_module(f"{src}.pre_norm_mha.1.out_proj", f"{dst}.{attention}.{out_proj}", _WB),
        *_module(f"{src}.pre_norm_ffn.0", f"{dst}.{norms[1]}", _WB),
        *_module(f"{src}.pre_norm_ffn.1", f"{dst}.mlp.fc1", _WB),
        *_module(f"{src}.pre_norm_ffn.4", f"{dst}.mlp.fc2", _WB),
    ]


def _apple_vit_rules(vision_config) -> list[KeyRule]:
    """Apple/ml-cvnets ViT-B/16 with conv stem (MobileCLIP-B, B-LT)."""
    src, dst = "image_encoder.model", VISION_PREFIX.rstrip(".")
    rules = []
    for i in range(2):  # conv + BN (+ GELU) stem stages
        rules += _module(f"{src}.patch_emb.{i}.block.conv", f"{dst}.patch_embed.backbone.{i}.conv", _W)
        rules += _module(f"{src}.patch_emb.{i}.block.norm", f"{dst}.patch_embed.backbone.{i}.bn", _BN)
    rules += _module(f"{src}.patch_emb.2.block.conv", f"{dst}.patch_embed.backbone.2.conv", _WB)
    rules.append(KeyRule(f"{src}.cls_token", f"{dst}.cls_token"))
    rules.append(KeyRule(f"{src}.pos_embed.pos_embed.pos_embed", f"{dst}.pos_embed", RESHAPE))  # [1,1,N,D]->[1,N,D]
    for i in range(vision_config.num_hidden_layers):
        rules += _apple_transformer_block(f"{src}.transformer.{i}", f"{dst}.blocks.{i}",
                                          norms=("norm1", "norm2"), attention="attn", out_proj="proj")
    rules += _module(f"{src}.post_transformer_norm", f"{dst}.norm", _WB)
    rules.append(KeyRule(f"{src}.classifier.proj", "visual_projection.weight", TRANSPOSE))
    return rules


# ----------------------------------------------------------------------------------------------------------------
# Text towers
# ----------------------------------------------------------------------------------------------------------------

def _apple_text_rules(text_config) -> list[KeyRule]:
    src, dst = "text_encoder", TEXT_PREFIX.rstrip(".")
    rules = [
        KeyRule(f"{src}.embedding_layer.weight", f"{dst}.embeddings.token_embedding.weight"),
        KeyRule(f"{src}.positional_embedding.pos_embed.pos_embed", f"{dst}.embeddings.position_embedding", RESHAPE),
    ]
    for i, kind in enumerate(text_config.layer_block_types):
        s, d = f"{src}.transformer.{i}", f"{dst}.layers.{i}"
        if kind == "repmixer":
            # Apple's (1, k) Conv2d kernels are stored here as Conv1d kernels [D, 1, k] (run as (1, k) convs).
            rules += [
                KeyRule(f"{s}.token_mixer.mixer.rbr_conv.0.conv.weight", f"{d}.token_mixer.mixer_conv.weight",
                        RESHAPE),
                *_module(f"{s}.token_mixer.mixer.rbr_conv.0.bn", f"{d}.token_mixer.mixer_bn", _BN),
                *_module(f"{s}.token_mixer.mixer.rbr_skip", f"{d}.token_mixer.mixer_skip_bn", _BN),
                *_module(f"{s}.token_mixer.norm.rbr_skip", f"{d}.token_mixer.norm_bn", _BN),
                KeyRule(f"{s}.token_mixer.layer_scale", f"{d}.token_mixer.layer_scale", RESHAPE),
                KeyRule(f"{s}.convffn.conv.conv.weight", f"{d}.convffn.conv.weight", RESHAPE),
                *_module(f"{s}.convffn.conv.bn", f"{d}.convffn.bn", _BN),
                KeyRule(f"{s}.convffn.fc1.weight", f"{d}.convffn.fc1.weight", RESHAPE),
                KeyRule(f"{s}.convffn.fc1.bias", f"{d}.convffn.fc1.bias"),
                KeyRule(f"{s}.convffn.fc2.weight", f"{d}.convffn.fc2.weight", RESHAPE),
                KeyRule(f"{s}.convffn.fc2.bias", f"{d}.convffn.fc2.bias"),
                KeyRule(f"{s}.layer_scale", f"{d}.layer_scale", RESHAPE),
            ]
        else:
            rules += _apple_transformer_block(s, d, norms=("layer_norm1", "layer_norm2"), attention="self_attn",
                                              out_proj="out_proj")
    rules += _module(f"{src}.final_layer_norm", f"{dst}.final_layer_norm", _WB)
    rules.append(KeyRule(f"{src}.projection_layer", "text_projection.weight", TRANSPOSE))
    return rules


def _open_clip_text_rules(text_config) -> list[KeyRule]:
    src, dst = "text", TEXT_PREFIX.rstrip(".")
    rules = [
        KeyRule(f"{src}.token_embedding.weight", f"{dst}.embeddings.token_embedding.weight"),
        KeyRule(f"{src}.positional_embedding", f"{dst}.embeddings.position_embedding"),
    ]
    for i in range(text_config.num_hidden_layers):
        s, d = f"{src}.transformer.resblocks.{i}", f"{dst}.layers.{i}"
        rules += [
            *_module(f"{s}.ln_1", f"{d}.layer_norm1", _WB),
            KeyRule(f"{s}.attn.in_proj_weight", f"{d}.self_attn.qkv.weight"),
            KeyRule(f"{s}.attn.in_proj_bias", f"{d}.self_attn.qkv.bias"),
            *_module(f"{s}.attn.out_proj", f"{d}.self_attn.out_proj", _WB),
            *_module(f"{s}.ln_2", f"{d}.layer_norm2", _WB),
            *_module(f"{s}.mlp.c_fc", f"{d}.mlp.fc1", _WB),
            *_module(f"{s}.mlp.c_proj", f"{d}.mlp.fc2", _WB),
        ]
    rules += _module(f"{src}.ln_final", f"{dst}.final_layer_norm", _WB)
    rules.append(KeyRule(f"{src}.text_projection", "text_projection.weight", TRANSPOSE))
    return rules


# ----------------------------------------------------------------------------------------------------------------
# timm trunks (open_clip `visual.trunk.*`, timm image-only files): names already equal ours
# ----------------------------------------------------------------------------------------------------------------

def _timm_trunk_rules(config: MobileCLIPConfig, target_keys, prefix: str) -> list[KeyRule]:
    """The trunk keys are timm's own (our trunk *is* a timm FastVit/VisionTransformer built with num_classes=0);
    timm's classifier Linear (`head.fc` in FastViT, `head` in ViT) is our `visual_projection`."""
    rules = [KeyRule(prefix + key[len(VISION_PREFIX):], key)
             for key in sorted(target_keys) if key.startswith(VISION_PREFIX)]
    head = "head.fc" if config.vision_config.backbone == "fastvit" else "head"
    rules.append(KeyRule(f"{prefix}{head}.weight", "visual_projection.weight"))
    if config.vision_config.projection_bias:
        rules.append(KeyRule(f"{prefix}{head}.bias", "visual_projection.bias"))
    else:
        # Apple v1 projections have no bias; open_clip/timm ports of v1 weights carry a synthesised zero bias.
        rules.append(KeyRule(f"{prefix}{head}.bias", None, ZERO_ONLY))
    return rules


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------

class KeyTableError(ValueError):
    """The requested (variant, format) pair has no key table (e.g. S0's Text-RepMixer in open_clip format)."""


def key_rules(config: MobileCLIPConfig, fmt: str, target_keys) -> list[KeyRule]:
    """All rules for `fmt`, before dropping rules whose target this model does not have (optional branches)."""
    text_config, vision_config = config.text_config, config.vision_config
    if fmt == "apple":
        if vision_config.backbone == "vit" and vision_config.stem != "conv":
            raise KeyTableError("Apple v1 checkpoints hold MCi0-2 or ViT-B/16 (conv stem) image towers only; this "
                                f"config has a {vision_config.stem!r}-stem ViT. Use its open_clip checkpoint.")
        if vision_config.backbone == "fastvit" and len(vision_config.layers) != 4:
            raise KeyTableError("Apple v1 checkpoints hold 4-stage MCi0-2 image towers; this config has "
                                f"{len(vision_config.layers)} stages (MCi3/4 ship in open_clip format).")
        vision = _apple_fastvit_rules(vision_config) if vision_config.backbone == "fastvit" else \
            _apple_vit_rules(vision_config)
        return [*vision, *_apple_text_rules(text_config), KeyRule("logit_scale", "logit_scale")]
    if fmt == "open_clip":
        if "repmixer" in text_config.layer_block_types:
            raise KeyTableError("open_clip has no layout for MobileCLIP-S0's Text-RepMixer text tower (open_clip ships "
                                "no MobileCLIP-S0); convert Apple's mobileclip_s0.pt instead.")
        return [*_timm_trunk_rules(config, target_keys, "visual.trunk."), *_open_clip_text_rules(text_config),
                KeyRule("logit_scale", "logit_scale")]
    if fmt == "timm":
        return _timm_trunk_rules(config, target_keys, "")
    raise KeyTableError(f"Unknown checkpoint format {fmt!r}; valid: {list(FORMATS)}.")


def key_table(config: MobileCLIPConfig, fmt: str, target_keys) -> dict[str, KeyRule]:
    """source key -> rule, for the rules whose target this model has. Target keys a format has no source for
    (e.g. a projection bias that Apple v1 files lack) are left out and reported as missing by the converter.
    Raises RuntimeError if two rules share a source or a target key (a bug in the tables above)."""
    target_keys = set(target_keys)
    table: dict[str, KeyRule] = {}
    seen_targets: set[str] = set()
    for rule in key_rules(config, fmt, target_keys):
        if rule.target is not None and rule.target not in target_keys:
            continue  # optional branch this model does not have (e.g. no 1x1 scale branch in 1x1 MobileOne blocks)
        if rule.source in table or (rule.target is not None and rule.target in seen_targets):
            raise RuntimeError(f"Key table for format {fmt!r} maps {rule.source!r} -> {rule.target!r} twice.")
        table[rule.source] = rule
        if rule.target is not None:
            seen_targets.add(rule.target)
    return table


__all__ = ["COPY", "FORMATS", "RESHAPE", "TRANSPOSE", "ZERO_ONLY", "KeyRule", "KeyTableError",
           "fastvit_network_layout", "key_rules", "key_table"]
