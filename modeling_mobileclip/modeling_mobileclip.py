"""MobileCLIP / MobileCLIP2 image-text models for transformers.

Image towers are timm trunks (FastViT MCi0-4, ViT-B/16 with conv stem, ViT-L/14) that own their re-parameterisation;
text towers (the 12-layer transformer and MobileCLIP-S0's "Text-RepMixer" hybrid) are written here.
This file is Hub-facing remote code: it imports only torch, transformers, timm and its flat sibling modules.
"""

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.layers import Attention as TimmAttention
from timm.models.fastvit import Attention as FastVitAttention
from timm.models.fastvit import AttentionBlock as FastVitAttentionBlock
from timm.models.fastvit import FastVit, FastVitStage, LayerScale2d, RepConditionalPosEnc
from timm.models.vision_transformer import Block as VitBlock
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import ConvStem, HybridEmbed
from timm.utils.model import reparameterize_model
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

LOGIT_SCALE_MAX = 100.0


@dataclass
class MobileCLIPOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            Symmetric contrastive (CLIP) loss.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            `logit_scale * image_embeds @ text_embeds.T`.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            Transpose of `logits_per_image`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalised projected text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalised projected image embeddings.
        logit_scale (`torch.FloatTensor` of shape `()`):
            `exp(model.logit_scale)` clamped at 100, as used for the logits (the training loss reads it here).
        text_model_output (`BaseModelOutputWithPooling`): output of the text tower.
        vision_model_output (`BaseModelOutputWithPooling`): output of the image tower.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self):
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


class MobileCLIPLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, as Apple's `LayerNormFP32` (matters under fp16/bf16)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(hidden_states.float(), self.normalized_shape, weight, bias, self.eps).to(dtype)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Reference attention; softmax in float32 as Apple's text encoder does."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MobileCLIPAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (rows q, k, v, as Apple's `qkv_proj`)."""

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        # Only MobileCLIP-B / B-LT / MobileCLIP2-B are causal; the other text towers attend bidirectionally.
        self.is_causal = config.causal
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward)
        mask = None
        if self.is_causal and attention_interface is eager_attention_forward:
            mask = torch.full((length, length), float("-inf"), device=hidden_states.device,
                              dtype=query.dtype).triu(1)
        attn_output, attn_weights = attention_interface(
            self, query, key, value, mask, scaling=self.scale,
            dropout=self.config.attention_dropout if self.training else 0.0, is_causal=self.is_causal, **kwargs)
        return self.out_proj(attn_output.reshape(batch, length, width)), attn_weights


class MobileCLIPMLP(nn.Module):
    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class MobileCLIPTextLayer(GradientCheckpointingLayer):
    """A block of the text tower (transformer or RepMixer): checkpointed as one unit, its output is one hidden state."""


class MobileCLIPEncoderLayer(MobileCLIPTextLayer):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.layer_norm1 = MobileCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MobileCLIPAttention(config)
        self.layer_norm2 = MobileCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MobileCLIPMLP(config)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states), **kwargs)[0]
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


def _fold_batchnorm(kernel: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the conv before it (RepVGG, Ding et al. 2021): returns (kernel, bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, *([1] * (kernel.dim() - 1))), bn.bias - bn.running_mean * scale


def _token_conv(conv: nn.Conv1d, hidden_states: torch.Tensor) -> torch.Tensor:
    """`conv` applied along the tokens of [batch, width, 1, tokens], as a 2-D conv with a (1, k) view of its kernel.

    The block's input is [batch, tokens, width] transposed, i.e. channels-last in 4-D: oneDNN convolves it in place
    and keeps that layout for the pointwise convs. A Conv1d on the 3-D transpose first copies it to channels-first:
    the S0 text RepMixer block took 1.2x as long at batch 16 (benchmarks/bench_towers.py)."""
    padding = (0, conv.padding[0])
    return F.conv2d(hidden_states, conv.weight.unsqueeze(2), conv.bias, padding=padding, groups=conv.groups)


def _identity_kernel(channels: int, kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    """Depthwise Conv1d kernel that returns its input (a one at the centre tap)."""
    kernel = torch.zeros(channels, 1, kernel_size, dtype=like.dtype, device=like.device)
    kernel[:, 0, kernel_size // 2] = 1.0
    return kernel


class MobileCLIPTextRepMixer(nn.Module):
    """Token mixer of MobileCLIP-S0's text RepMixer block, on [batch, width, 1, tokens].

    Train-time: x + layer_scale * (BN(dwconv(x)) + BN_skip(x) - BN_norm(x)); Apple builds it as a 2-D net with
    (1, k) kernels on [B, D, 1, L], which is what this depthwise Conv1d computes (`_token_conv`). `reparameterize()`
    folds the three branches, the residual and the layer scale into one depthwise conv (MobileCLIP paper, Sec. 3.2).
    """

    def __init__(self, dim: int, kernel_size: int, layer_scale_init_value: float, inference_mode: bool = False):
        super().__init__()
        self.dim, self.kernel_size, self.layer_scale_init_value = dim, kernel_size, layer_scale_init_value
        conv = partial(nn.Conv1d, dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        if inference_mode:
            self.reparam_conv = conv(bias=True)
            self.mixer_conv = self.mixer_bn = self.mixer_skip_bn = self.norm_bn = self.layer_scale = None
        else:
            self.reparam_conv = None
            self.mixer_conv = conv(bias=False)
            self.mixer_bn = nn.BatchNorm2d(dim)
            self.mixer_skip_bn = nn.BatchNorm2d(dim)
            self.norm_bn = nn.BatchNorm2d(dim)
            self.layer_scale = nn.Parameter(torch.full((dim, 1), layer_scale_init_value))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return _token_conv(self.reparam_conv, hidden_states)
        mixed = self.mixer_bn(_token_conv(self.mixer_conv, hidden_states)) + self.mixer_skip_bn(hidden_states)
        return hidden_states + self.layer_scale.unsqueeze(-1) * (mixed - self.norm_bn(hidden_states))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:  # already fused
            return
        identity = _identity_kernel(self.dim, self.kernel_size, self.mixer_conv.weight)
        conv_kernel, conv_bias = _fold_batchnorm(self.mixer_conv.weight, self.mixer_bn)
        skip_kernel, skip_bias = _fold_batchnorm(identity, self.mixer_skip_bn)
        norm_kernel, norm_bias = _fold_batchnorm(identity, self.norm_bn)
        scale = self.layer_scale.reshape(-1, 1, 1)
        self.reparam_conv = nn.Conv1d(self.dim, self.dim, self.kernel_size, padding=self.kernel_size // 2,
                                      groups=self.dim, bias=True, device=identity.device, dtype=identity.dtype)
        self.reparam_conv.weight.copy_(identity + scale * (conv_kernel + skip_kernel - norm_kernel))
        self.reparam_conv.bias.copy_(self.layer_scale.reshape(-1) * (conv_bias + skip_bias - norm_bias))
        self.mixer_conv = self.mixer_bn = self.mixer_skip_bn = self.norm_bn = self.layer_scale = None


class MobileCLIPTextConvFFN(nn.Module):
    """ConvFFN: depthwise conv + BN, then a 1x1-conv MLP (never fused: the BN is followed by a non-linearity path)."""

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        dim, k = config.hidden_size, config.repmixer_kernel_size
        self.conv = nn.Conv1d(dim, dim, k, padding=k // 2, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv1d(dim, config.intermediate_size, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv1d(config.intermediate_size, dim, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # On [batch, width, 1, tokens] (see `_token_conv`).
        hidden_states = _token_conv(self.fc1, self.bn(_token_conv(self.conv, hidden_states)))
        return _token_conv(self.fc2, self.act(hidden_states))


class MobileCLIPTextRepMixerBlock(MobileCLIPTextLayer):
    """MobileCLIP-S0 "Text-RepMixer" block on [batch, tokens, width]: token mixer, then x + ls * ConvFFN(x)."""

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.token_mixer = MobileCLIPTextRepMixer(config.hidden_size, config.repmixer_kernel_size,
                                                  config.layer_scale_init_value, config.inference_mode)
        self.convffn = MobileCLIPTextConvFFN(config)
        self.layer_scale_init_value = config.layer_scale_init_value
        self.layer_scale = nn.Parameter(torch.full((config.hidden_size, 1), config.layer_scale_init_value))

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        hidden_states = self.token_mixer(hidden_states.transpose(1, 2).unsqueeze(2))  # [batch, width, 1, tokens]
        hidden_states = hidden_states + self.layer_scale.unsqueeze(-1) * self.convffn(hidden_states)
        return hidden_states.squeeze(2).transpose(1, 2)


class MobileCLIPTextEmbeddings(nn.Module):
    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        # A plain parameter (Apple and open_clip store it so): no position_ids buffer to re-create on load.
        self.position_embedding = nn.Parameter(torch.empty(config.max_position_embeddings, config.hidden_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # No embedding scaling: Apple computes `embed_scale` but never applies it.
        return self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]


class MobileCLIPPreTrainedModel(PreTrainedModel):
    config: MobileCLIPConfig
    base_model_prefix = "mobileclip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    # device_map="auto" places whole units: text blocks and embeddings, ViT blocks, MCi stages, and the timm
    # embeddings (ViT patch embedding / conv stem, MCi stem and final MobileOne conv), never parts of a timm block.
    _no_split_modules = ["MobileCLIPTextEmbeddings", "MobileCLIPEncoderLayer", "MobileCLIPTextRepMixerBlock",
                         "MobileCLIPViTBlock", "MobileCLIPFastViTStage", "PatchEmbed", "HybridEmbed", "MobileOneBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Parameters the generic initialiser does not know, then the generic Linear/Conv/Norm/Embedding rules.
        std = self.config.initializer_range
        if isinstance(module, MobileCLIPTextEmbeddings):
            init.normal_(module.token_embedding.weight, std=std)
            init.normal_(module.position_embedding, std=0.01)
        elif isinstance(module, (MobileCLIPTextRepMixer, MobileCLIPTextRepMixerBlock)):
            if module.layer_scale is not None:
                init.constant_(module.layer_scale, module.layer_scale_init_value)
        elif isinstance(module, LayerScale2d):  # FastViT layer scales live only in the image tower
            vision_config = getattr(self.config, "vision_config", self.config)
            init.constant_(module.gamma, vision_config.layer_scale_init_value)
        elif isinstance(module, VisionTransformer):
            if module.cls_token is not None:
                init.normal_(module.cls_token, std=1e-6)
            if module.pos_embed is not None:
                init.trunc_normal_(module.pos_embed, std=0.02)
        elif isinstance(module, MobileCLIPModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            # PyTorch's (and timm's) fan-in init. The generic N(0, initializer_range) would make a 3x3 depthwise
            # kernel ~15x too small: after the ~50 convs of an MCi trunk a fresh tower's output is ~1e-11 and all
            # but independent of the image, which stalls training from scratch.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        else:
            super()._init_weights(module)



# ---- image towers: timm trunks whose layers we subclass (same parameters, same state-dict names) so that they
# checkpoint through transformers, record hidden states, and attend through `config._attn_implementation`.

class MobileCLIPImageAttention(nn.Module):
    """Mixin for timm's attention modules: q/k/v go through transformers' attention interface, so
    `config._attn_implementation` ("eager", which also returns the weights, or "sdpa") is what runs. (timm's ViT q/k
    and output norms are identities unless `qk_norm` / `scale_attn_norm`, which `_build_vit_trunk` never sets.)"""

    config: MobileCLIPVisionConfig

    def attend(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention over [batch, tokens, width] with timm's fused qkv and output projection."""
        batch, length, _ = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        attn_output, attn_weights = interface(self, *qkv.unbind(0), None, scaling=self.scale, is_causal=False,
                                              dropout=self.attn_drop.p if self.training else 0.0)
        attn_output = self.proj(attn_output.reshape(batch, length, self.num_heads * self.head_dim))
        return self.proj_drop(attn_output), attn_weights


class MobileCLIPViTAttention(MobileCLIPImageAttention, TimmAttention):
    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.attend(hidden_states)


class MobileCLIPFastViTAttention(MobileCLIPImageAttention, FastVitAttention):
    """timm's FastViT attention on a [batch, channels, height, width] map (heads of width 32)."""

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, channels, height, width = hidden_states.shape
        attn_output, attn_weights = self.attend(hidden_states.flatten(2).transpose(-2, -1))
        return attn_output.transpose(-2, -1).reshape(batch, channels, height, width), attn_weights


class MobileCLIPVisionLayer(GradientCheckpointingLayer):
    """A unit of an image tower (a ViT block or an MCi stage): checkpointed as one, its output is one hidden state."""


class MobileCLIPViTBlock(MobileCLIPVisionLayer, VitBlock):
    """timm's ViT block with `MobileCLIPViTAttention`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path1(self.ls1(self.attn(self.norm1(hidden_states))[0]))
        return hidden_states + self.drop_path2(self.ls2(self.mlp(self.norm2(hidden_states))))


class MobileCLIPFastViTAttentionBlock(FastVitAttentionBlock):
    """timm's FastViT attention block with `MobileCLIPFastViTAttention`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mixed = self.token_mixer(self.norm(hidden_states))[0]
        hidden_states = hidden_states + self.drop_path1(self.layer_scale_1(mixed))
        return hidden_states + self.drop_path2(self.layer_scale_2(self.mlp(hidden_states)))


class MobileCLIPFastViTStage(MobileCLIPVisionLayer, FastVitStage):
    """timm's FastViT stage (downsample, optional RepCPE, blocks); its feature map is one hidden state."""

    forward = FastVitStage.forward  # timm's, not MobileCLIPVisionLayer's abstract one (first in the MRO)


# timm builds FastViT's stages and blocks itself (it takes no block or attention factory, as its ViT does).
_FASTVIT_SUBCLASSES = {FastVitStage: MobileCLIPFastViTStage, FastVitAttentionBlock: MobileCLIPFastViTAttentionBlock,
                       FastVitAttention: MobileCLIPFastViTAttention}


def _build_fastvit_trunk(config: MobileCLIPVisionConfig) -> FastVit:
    norm_layer = nn.BatchNorm2d if config.norm == "batchnorm" else partial(LayerNorm2d, eps=1e-5)
    pos_embs = tuple(partial(RepConditionalPosEnc, spatial_shape=(7, 7)) if use else None for use in config.pos_embs)
    trunk = FastVit(
        in_chans=config.num_channels, layers=tuple(config.layers), embed_dims=tuple(config.embed_dims),
        mlp_ratios=tuple(config.mlp_ratios), token_mixers=tuple(config.token_mixers),
        downsamples=tuple(config.downsamples), se_downsamples=tuple(config.se_downsamples), pos_embs=pos_embs,
        norm_layer=norm_layer, stem_use_scale_branch=config.stem_use_scale_branch, cls_ratio=config.cls_ratio,
        layer_scale_init_value=config.layer_scale_init_value, drop_path_rate=config.drop_path_rate,
        lkc_use_act=True,  # every MCi tower applies GELU after the large-kernel downsample (timm fastvit_mci*)
        inference_mode=config.inference_mode, num_classes=0,  # pooled features; the projection lives in the model
    )
    # Our subclasses add no parameters or state: re-class timm's modules in place rather than rebuild them.
    for module in trunk.modules():
        module.__class__ = _FASTVIT_SUBCLASSES.get(type(module), type(module))
    return trunk


def _build_vit_trunk(config: MobileCLIPVisionConfig) -> VisionTransformer:
    width = config.hidden_size
    vit_args = dict(
        img_size=config.image_size, in_chans=config.num_channels, embed_dim=width, depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads, mlp_ratio=config.intermediate_size / width,
        no_embed_class=config.no_embed_class, pre_norm=config.pre_norm, num_classes=0, global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps), drop_path_rate=config.drop_path_rate,
        block_fn=MobileCLIPViTBlock, attn_layer=MobileCLIPViTAttention,
    )
    if config.stem == "patch":
        return VisionTransformer(patch_size=config.patch_size, **vit_args)
    # MobileCLIP-B conv stem (stride 4, 2, 2 = 16): conv+BN+GELU, conv+BN+GELU, conv with bias, as timm's
    # vit_base_mci_224; Apple's v1 first conv pads by 1 (`stem_padding`), timm's by 0.
    stem = ConvStem(in_chans=config.num_channels, channels=(width // 4, width // 4, width), stride=(4, 2, 2),
                    kernel_size=(4, 2, 2), padding=(config.stem_padding, 0, 0), act_layer=nn.GELU)
    return VisionTransformer(patch_size=1, embed_layer=partial(HybridEmbed, backbone=stem, proj=False), **vit_args)


class MobileCLIPVisionModel(MobileCLIPPreTrainedModel):
    """Image tower: a timm trunk returning pooled features (`pooler_output`, width `config.num_features`)."""

    config: MobileCLIPVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _can_record_outputs = {"hidden_states": MobileCLIPVisionLayer, "attentions": MobileCLIPImageAttention}

    def __init__(self, config: MobileCLIPVisionConfig):
        super().__init__(config)
        self.trunk = _build_fastvit_trunk(config) if config.backbone == "fastvit" else _build_vit_trunk(config)
        for module in self.trunk.modules():  # timm constructs them, so they get the config (attention backend) here
            if isinstance(module, MobileCLIPImageAttention):
                module.config = config
        self.post_init()

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        cfg = self.config
        if pixel_values.dim() != 4 or pixel_values.shape[1] != cfg.num_channels:
            raise ValueError(f"pixel_values must have shape (batch, {cfg.num_channels}, height, width), got "
                             f"{tuple(pixel_values.shape)}; preprocess images with MobileCLIPProcessor.")
        if pixel_values.numel() == 0:
            raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}: no image to encode; pass at least "
                             f"one image of non-zero height and width.")
        if cfg.backbone == "vit" and tuple(pixel_values.shape[-2:]) != (cfg.image_size, cfg.image_size):
            raise ValueError(f"pixel_values has spatial size {tuple(pixel_values.shape[-2:])}, but this ViT tower "
                             f"takes ({cfg.image_size}, {cfg.image_size}); resize/crop with MobileCLIPProcessor.")
        if cfg.check_finite_inputs and not torch.isfinite(pixel_values).all():
            bad = (~torch.isfinite(pixel_values)).sum().item()
            raise ValueError(f"pixel_values of shape {tuple(pixel_values.shape)} holds {bad} NaN/inf value(s); "
                             f"check the images and their preprocessing (check_finite_inputs=True found them).")

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding (ViT: conv stem or patchify conv) or the MCi stem, as for CLIP's vision tower."""
        return self.trunk.patch_embed if self.config.backbone == "vit" else self.trunk.stem

    # hidden_states[-1] is the last block/stage output, before the ViT's final norm / MCi's final conv (as CLIP's).
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutputWithPooling:
        r"""`last_hidden_state`: ViT [batch, 1 + patches, hidden_size] after the final norm, MCi [batch, num_features,
        height / 32, width / 32] after the final conv. `hidden_states`: the embeddings and every ViT block's tokens /
        the stem's and every MCi stage's map. `attentions` (eager): [batch, heads, tokens, tokens] per attention block.
        """
        self._check_pixel_values(pixel_values)
        features = self.trunk.forward_features(pixel_values)
        pooled = self.trunk.forward_head(features, pre_logits=True)
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=pooled)


class MobileCLIPTextModel(MobileCLIPPreTrainedModel):
    """Text tower: token + position embeddings, transformer / RepMixer blocks, final LayerNorm, EOT pooling."""

    config: MobileCLIPTextConfig
    input_modalities = ("text",)
    _can_record_outputs = {"hidden_states": MobileCLIPTextLayer, "attentions": MobileCLIPAttention}

    def __init__(self, config: MobileCLIPTextConfig):
        super().__init__(config)
        self.embeddings = MobileCLIPTextEmbeddings(config)
        block = {"transformer": MobileCLIPEncoderLayer, "repmixer": MobileCLIPTextRepMixerBlock}
        self.layers = nn.ModuleList(block[kind](config) for kind in config.layer_block_types)
        self.final_layer_norm = MobileCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.token_embedding = value

    def canonical_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The ids the reference encoder sees, whatever padding the caller used.

        The reference pads with id 0 to the context length and attends to the pads (no key-padding mask); a
        non-causal tower (and S0's token convs) lets pads change the EOT feature. The zero-shot pipeline pads to the
        longest label with `<|endoftext|>`. So every id after the first EOT becomes `pad_token_id`, and non-causal
        towers are re-padded to the full context length. Causal towers need neither: nothing after EOT reaches it.
        """
        cfg = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, sequence_length), got {tuple(input_ids.shape)}.")
        if input_ids.numel() == 0:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}: an empty batch or empty sequences; pass "
                             f"at least one tokenized caption (MobileCLIPProcessor(text=[...])).")
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(f"input_ids has length {length}, but text_config.max_position_embeddings is "
                             f"{cfg.max_position_embeddings}; tokenize with truncation=True, "
                             f"max_length={cfg.max_position_embeddings}.")
        if cfg.causal:
            return input_ids
        is_eot = (input_ids == cfg.eos_token_id).long()  # integer cumsum: ONNX has no CumSum over booleans
        after_first_eot = (is_eot.cumsum(-1) - is_eot) > 0
        input_ids = input_ids.masked_fill(after_first_eot, cfg.pad_token_id)
        return F.pad(input_ids, (0, cfg.max_position_embeddings - length), value=cfg.pad_token_id)

    @can_return_tuple
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutputWithPooling:
        r"""`last_hidden_state` after the final LayerNorm, `pooler_output` at the EOT token, `hidden_states` (the
        embeddings and every block's output) and `attentions` (eager; transformer blocks), all at the caller's
        sequence length: a non-causal tower computes on the full context (`canonical_input_ids`) and returns the
        caller's positions, whose attention keys are the whole context (the reference attends to the padding).
        """
        # attention_mask is accepted for API compatibility and ignored: the reference attends to pad tokens.
        length = input_ids.shape[1]
        context_ids = self.canonical_input_ids(input_ids)
        outputs = self._encode(context_ids, return_dict=True, **kwargs)
        if context_ids.shape[1] == length:
            return outputs
        outputs.last_hidden_state = outputs.last_hidden_state[:, :length]
        outputs.hidden_states = _first_positions(outputs.hidden_states, length, dim=1)
        outputs.attentions = _first_positions(outputs.attentions, length, dim=2)
        return outputs

    # hidden_states[-1] is the last block's output, before the final LayerNorm (as CLIP's).
    @capture_outputs(tie_last_hidden_states=False)
    def _encode(self, input_ids: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutputWithPooling:
        hidden_states = self.embeddings(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        hidden_states = self.final_layer_norm(hidden_states)
        # EOT pooling: the EOT id is the largest in the vocabulary, so argmax finds the first EOT.
        pooled = hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device),
                               input_ids.argmax(dim=-1)]
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)


def _first_positions(states: tuple | None, length: int, dim: int) -> tuple | None:
    """The first `length` positions along `dim` of each captured tensor (None entries: unselected hidden states)."""
    if states is None:
        return None
    return tuple(None if state is None else state.narrow(dim, 0, length) for state in states)


class MobileCLIPModel(MobileCLIPPreTrainedModel):
    """MobileCLIP image-text model (CLIP-style API): `get_image_features`, `get_text_features`, `forward`."""

    config: MobileCLIPConfig

    def __init__(self, config: MobileCLIPConfig):
        super().__init__(config)
        self.text_model = MobileCLIPTextModel._from_config(config.text_config)
        self.vision_model = MobileCLIPVisionModel._from_config(config.vision_config)
        # Apple v1 projects both towers with bias-free matrices; open_clip-format image heads carry a bias.
        self.visual_projection = nn.Linear(config.vision_config.num_features, config.projection_dim,
                                           bias=config.vision_config.projection_bias)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    @can_return_tuple
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutputWithPooling:
        """Text tower output with the projected, un-normalised embedding in `pooler_output`."""
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_image_features(self, pixel_values: torch.Tensor,
                           **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutputWithPooling:
        """Image tower output with the projected, un-normalised embedding in `pooler_output`."""
        outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_loss: bool = False,
                **kwargs: Unpack[TransformersKwargs]) -> MobileCLIPOutput:
        r"""`output_hidden_states` / `output_attentions` reach both towers (see their `forward`); `return_dict=False`
        (or `config.return_dict=False`) returns `MobileCLIPOutput.to_tuple()`."""
        if input_ids is None or pixel_values is None:
            raise ValueError("MobileCLIPModel.forward needs both input_ids and pixel_values; use get_text_features "
                             "or get_image_features to embed one modality.")
        text_outputs = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask, return_dict=True,
                                              **kwargs)
        vision_outputs = self.get_image_features(pixel_values=pixel_values, return_dict=True, **kwargs)
        text_embeds = F.normalize(text_outputs.pooler_output, dim=-1)
        image_embeds = F.normalize(vision_outputs.pooler_output, dim=-1)
        logit_scale = self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)
        logits_per_image = logit_scale * image_embeds @ text_embeds.t()
        loss = None
        if return_loss:
            if logits_per_image.shape[0] != logits_per_image.shape[1]:
                raise ValueError(f"return_loss=True pairs image i with caption i, but got {logits_per_image.shape[0]} "
                                 f"images and {logits_per_image.shape[1]} captions; pass one caption per image.")
            loss = (contrastive_loss(logits_per_image) + contrastive_loss(logits_per_image.t())) / 2
        return MobileCLIPOutput(loss=loss, logits_per_image=logits_per_image, logits_per_text=logits_per_image.t(),
                                text_embeds=text_embeds, image_embeds=image_embeds, logit_scale=logit_scale,
                                text_model_output=text_outputs, vision_model_output=vision_outputs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # The zero-shot pipeline loads through AutoModelForZeroShotImageClassification, but `register_for_auto_class`
        # records one Auto class only: put this one in auto_map first, transformers merges the others in on save.
        module = type(self).__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {"AutoModelForZeroShotImageClassification": f"{module}.{type(self).__name__}",
                                **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def reparameterize(self) -> "MobileCLIPModel":
        """Fuse every re-parameterisable branch in place (MobileOne, large-kernel downsample, RepMixer, RepCPE, text
        RepMixer) and record it in the config, so `save_pretrained` -> `from_pretrained` rebuilds the fused graph.
        Idempotent. BatchNorms must hold their final statistics: call on a trained model (eval mode is set)."""
        self.eval()
        if not self.config.vision_config.inference_mode:
            reparameterize_model(self.vision_model.trunk, inplace=True)
            self.config.vision_config.inference_mode = True
        if not self.config.text_config.inference_mode:
            for module in self.text_model.modules():
                if isinstance(module, MobileCLIPTextRepMixer):
                    module.reparameterize()
            self.config.text_config.inference_mode = True
        # The towers hold their own config objects: keep them in step with the composite config.
        self.vision_model.config.inference_mode = self.text_model.config.inference_mode = True
        return self


__all__ = ["MobileCLIPModel", "MobileCLIPOutput", "MobileCLIPPreTrainedModel", "MobileCLIPTextModel",
           "MobileCLIPVisionModel"]
