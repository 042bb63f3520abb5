"""MobileCLIP models: presets, configs, forward, save/load, fusing, padding invariance, attention backends, dtypes."""

import copy
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import TINY_FAMILIES, randomize_statistics, tiny_config
from fixtures.convert_checkpoints import calibrate_batchnorm
from huggingface_hub.errors import StrictDataclassClassValidationError

from modeling_mobileclip import (
    MOBILECLIP_VARIANTS,
    MobileCLIPConfig,
    MobileCLIPModel,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
)
from modeling_mobileclip.modeling_mobileclip import MobileCLIPLayerNorm

BOS, EOT = 49406, 49407


def random_ids(batch: int, lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Token ids padded with 0 to 77, as open_clip returns them."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, 77, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0], ids[row, n + 1] = BOS, EOT
        ids[row, 1: n + 1] = torch.randint(1, 49000, (n,), generator=gen)
    return ids


def tiny_model(family: str, seed: int = 0, **config_overrides) -> MobileCLIPModel:
    torch.manual_seed(seed)
    return randomize_statistics(MobileCLIPModel(tiny_config(family, **config_overrides)), seed).eval()


def pixels(config: MobileCLIPConfig, batch: int = 2, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    size = config.vision_config.image_size
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- presets and configs

# Apple's README table (reference notes section 5): image + text parameters in M, one decimal. These are the counts
# after re-parameterisation (e.g. S0 image 11.36 fused vs 11.41 train-time). MobileCLIP2-S0's text tower follows
# Apple's and open_clip's configs (12 layers, 63.4 M), not the table's 42.4 (reference notes 0.8).
APPLE_TABLE_PARAMS_M = {
    "mobileclip-s0": (11.4, 42.4), "mobileclip-s1": (21.5, 63.4), "mobileclip-s2": (35.7, 63.4),
    "mobileclip-b": (86.3, 63.4), "mobileclip-b-lt": (86.3, 63.4), "mobileclip-s3": (125.1, 123.6),
    "mobileclip-s4": (321.6, 123.6), "mobileclip-l-14": (304.3, 123.6), "mobileclip2-s0": (11.4, 63.4),
    "mobileclip2-s2": (35.7, 63.4), "mobileclip2-b": (86.3, 63.4), "mobileclip2-s3": (125.1, 123.6),
    "mobileclip2-s4": (321.6, 123.6), "mobileclip2-l-14": (304.3, 123.6),
}
# The table's L-14 image count disagrees with open_clip's MobileCLIP2-L-14 (timm vit_large_patch14_clip_224 + 768
# head: 303.97 M, which ours equals exactly); that row is checked against open_clip only.
APPLE_TABLE_DISAGREES = {"mobileclip-l-14", "mobileclip2-l-14"}
# Train-time counts of Apple's v1 reference modules, instantiated from Apple's code (reference notes section 1.1).
APPLE_V1_TRAIN_TIME_PARAMS_M = {
    "mobileclip-s0": (11.41, 42.44), "mobileclip-s1": (21.54, 63.43), "mobileclip-s2": (35.81, 63.43),
    "mobileclip-b": (86.35, 63.43), "mobileclip-b-lt": (86.35, 63.43),
}
# The same architecture in open_clip 3.3 (MobileCLIP-S3/S4/L-14 have no open_clip config; their MobileCLIP2 twins do).
OPEN_CLIP_MODEL = {
    "mobileclip-s1": "MobileCLIP-S1", "mobileclip-s2": "MobileCLIP-S2", "mobileclip-b": "MobileCLIP-B",
    "mobileclip-b-lt": "MobileCLIP-B", "mobileclip-s3": "MobileCLIP2-S3", "mobileclip-s4": "MobileCLIP2-S4",
    "mobileclip-l-14": "MobileCLIP2-L-14", "mobileclip2-s0": "MobileCLIP2-S0", "mobileclip2-s2": "MobileCLIP2-S2",
    "mobileclip2-b": "MobileCLIP2-B", "mobileclip2-s3": "MobileCLIP2-S3", "mobileclip2-s4": "MobileCLIP2-S4",
    "mobileclip2-l-14": "MobileCLIP2-L-14",
}


def tower_parameters(variant: str, fused: bool = False) -> tuple[int, int]:
    """(image tower + projection, text tower + projection) parameter counts of a preset, built on the meta device."""
    config = MobileCLIPConfig.from_variant(variant)
    config.vision_config.inference_mode = config.text_config.inference_mode = fused
    with torch.device("meta"):
        model = MobileCLIPModel(config)
    image = sum(p.numel() for p in [*model.vision_model.parameters(), *model.visual_projection.parameters()])
    text = sum(p.numel() for p in [*model.text_model.parameters(), *model.text_projection.parameters()])
    return image, text


@pytest.mark.parametrize("variant", list(MOBILECLIP_VARIANTS))
def test_every_preset_has_the_reference_parameter_counts(variant):
    import open_clip

    config = MobileCLIPConfig.from_variant(variant)
    assert config.variant == variant
    image, text = tower_parameters(variant)
    fused_image, fused_text = tower_parameters(variant, fused=True)
    table_image, table_text = APPLE_TABLE_PARAMS_M[variant]
    if variant not in APPLE_TABLE_DISAGREES:
        assert fused_image / 1e6 == pytest.approx(table_image, abs=0.051)
    assert fused_text / 1e6 == pytest.approx(table_text, abs=0.051)
    if variant in APPLE_V1_TRAIN_TIME_PARAMS_M:
        ref_image, ref_text = APPLE_V1_TRAIN_TIME_PARAMS_M[variant]
        assert (image / 1e6, text / 1e6) == pytest.approx((ref_image, ref_text), abs=0.006)
    if variant in OPEN_CLIP_MODEL:  # exact, un-fused (open_clip keeps the train-time graph too)
        with torch.device("meta"):  # shapes only: no memory, no init
            reference = open_clip.create_model(OPEN_CLIP_MODEL[variant], pretrained=None, device="meta")
        ref_image = sum(p.numel() for p in reference.visual.parameters())
        ref_text = sum(p.numel() for n, p in reference.named_parameters() if n.startswith("text."))
        # open_clip ports of Apple's v1 weights carry an all-zero image-projection bias that v1 presets do not have.
        zero_bias = 0 if config.vision_config.projection_bias else config.projection_dim
        assert (image, text) == (ref_image - zero_bias, ref_text)


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match="mobileclip-s0, mobileclip-s1") as err:
        MobileCLIPConfig.from_variant("mobileclip-s9")
    assert "mobileclip-s9" in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=100, num_attention_heads=8), "not divisible by num_attention_heads"),
    (dict(num_hidden_layers=2, block_types=("repmixer", "mamba")), "unknown block type"),
    (dict(num_hidden_layers=3, block_types=("repmixer", "transformer")), "one block type per layer"),
    (dict(repmixer_kernel_size=4), "must be odd"),
    (dict(vocab_size=100), "outside the vocabulary"),
])
def test_text_config_validation(kwargs, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        MobileCLIPTextConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(backbone="resnet"), "backbone='resnet' is unknown"),
    (dict(token_mixers=("repmixer", "repmixer", "conv", "attention")), "unknown block type"),
    (dict(embed_dims=(8, 16, 32)), "one entry per stage"),
    (dict(norm="groupnorm"), "norm='groupnorm' is unknown"),
    (dict(backbone="vit", hidden_size=100, num_attention_heads=12), "not divisible"),
    (dict(backbone="vit", stem="conv", patch_size=14), "downsamples by 16"),
])
def test_vision_config_validation(kwargs, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        MobileCLIPVisionConfig(**kwargs)


def test_config_types_are_strict():
    with pytest.raises(Exception, match="inference_mode"):
        MobileCLIPVisionConfig(inference_mode="yes")


def test_config_round_trip(tmp_path):
    config = MobileCLIPConfig.from_variant("mobileclip-s0")
    config.save_pretrained(tmp_path)
    loaded = MobileCLIPConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.text_config.layer_block_types == ("repmixer",) + ("transformer",) * 4 + ("repmixer",)


def test_mci_config_json_has_no_vit_fields(tmp_path):
    """A FastViT (MCi) tower never reads the ViT settings, so its config.json leaves them out; a ViT keeps them."""
    import json

    from modeling_mobileclip.configuration_mobileclip import VIT_ONLY_FIELDS

    for variant, backbone in (("mobileclip-s0", "fastvit"), ("mobileclip-b", "vit")):
        MobileCLIPConfig.from_variant(variant).save_pretrained(tmp_path / variant)
        vision = json.loads((tmp_path / variant / "config.json").read_text())["vision_config"]
        assert vision["backbone"] == backbone
        present = {name for name in VIT_ONLY_FIELDS if name in vision}
        assert present == (set() if backbone == "fastvit" else set(VIT_ONLY_FIELDS)), (variant, present)
    assert "embed_dims" in json.loads((tmp_path / "mobileclip-s0" / "config.json").read_text())["vision_config"]


# ---------------------------------------------------------------- forward, save/load

@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_forward_shapes_and_finite(family):
    model = tiny_model(family)
    config = model.config
    ids = random_ids(3, [3, 10, 0])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels(config))
        loss = model(input_ids=ids[:2], pixel_values=pixels(config), return_loss=True).loss
        image = model.get_image_features(pixel_values=pixels(config))
        text = model.get_text_features(input_ids=ids)
    assert out.logits_per_image.shape == (2, 3) and out.logits_per_text.shape == (3, 2)
    assert out.image_embeds.shape == (2, 24) and out.text_embeds.shape == (3, 24)
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(2))
    assert torch.isfinite(out.logits_per_image).all() and torch.isfinite(loss) and out.loss is None
    # transformers 5.x convention: projected, un-normalised embedding in pooler_output
    assert torch.allclose(F.normalize(image.pooler_output, dim=-1), out.image_embeds, atol=1e-6)
    assert torch.allclose(F.normalize(text.pooler_output, dim=-1), out.text_embeds, atol=1e-6)
    assert torch.allclose(out.logits_per_image, out.logit_scale * out.image_embeds @ out.text_embeds.T)


def test_logit_scale_is_clamped_at_100():
    model = tiny_model("vit-patch")
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # exp(6) = 403
        out = model(input_ids=random_ids(1, [4]), pixel_values=pixels(model.config, 1))
    assert out.logit_scale.item() == 100.0


@pytest.mark.parametrize("family", ["mci-s0text", "vit-convstem"])
def test_save_and_reload_is_exact(tmp_path, family):
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    loaded = MobileCLIPModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    model.config._attn_implementation = "eager"
    reference, restored = model.state_dict(), loaded.state_dict()
    assert reference.keys() == restored.keys()
    assert all(torch.equal(reference[k], restored[k]) for k in reference)
    inputs = dict(input_ids=random_ids(2, [5, 9]), pixel_values=pixels(model.config))
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_image, loaded(**inputs).logits_per_image)


def test_missing_keys_are_initialised_not_garbage(tmp_path):
    """transformers builds on the meta device; keys absent from a checkpoint must get real init values."""
    from safetensors.torch import load_file, save_file

    model = tiny_model("mci-s0text")
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = [k for k in state if k.endswith("layer_scale") or k.endswith(".gamma")][:3] + ["logit_scale"]
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    loaded = MobileCLIPModel.from_pretrained(tmp_path)
    restored = loaded.state_dict()
    for key in dropped:
        expected = 2.6592 if key == "logit_scale" else 1e-5
        assert torch.allclose(restored[key], torch.full_like(restored[key], expected)), key


# ---------------------------------------------------------------- fusing

# Keys of the train-time branches that `reparameterize()` folds away (timm FastViT names and our text RepMixer), and
# the fused convolution each kind of re-parameterisable module leaves behind. ConvFFN and attention-block norms stay.
TRAIN_TIME_BRANCH = re.compile(r"conv_kxk|conv_scale|\.identity\.|large_conv|small_conv|pos_enc|mixer_conv|mixer_bn|"
                               r"mixer_skip_bn|norm_bn|token_mixer\.layer_scale")
FUSED_BRANCHES = {
    "MobileOne (stem, downsample 1x1, final conv)": r"trunk\.(stem\.\d+|downsample\.proj\.1|final_conv)\.reparam_conv",
    "large-kernel downsample": r"downsample\.proj\.0\.reparam_conv",
    "RepMixer": r"trunk\.stages\.\d+\.blocks\.\d+\.token_mixer\.reparam_conv",
    "RepCPE": r"pos_emb\.reparam_conv",
    "text RepMixer": r"text_model\.layers\.\d+\.token_mixer\.reparam_conv",
}


@pytest.mark.parametrize("family", ["mci-s0text", "mci5stage"])
def test_reparameterize_matches_in_float64(family):
    model = tiny_model(family).double()
    inputs = dict(input_ids=random_ids(3, [2, 12, 30]), pixel_values=pixels(model.config, 3, dtype=torch.float64))
    with torch.no_grad():
        before = model(**inputs)
        fused = copy.deepcopy(model).reparameterize()
        after = fused(**inputs)
    assert fused.config.vision_config.inference_mode and fused.config.text_config.inference_mode
    keys = list(fused.state_dict())
    assert not [key for key in keys if TRAIN_TIME_BRANCH.search(key)]
    kinds = {kind for kind, pattern in FUSED_BRANCHES.items() if any(re.search(pattern, key) for key in keys)}
    assert kinds == set(FUSED_BRANCHES) - ({"text RepMixer"} if family == "mci5stage" else set())
    assert (before.image_embeds - after.image_embeds).abs().max() <= 1e-10
    assert (before.text_embeds - after.text_embeds).abs().max() <= 1e-10
    assert (before.logits_per_image - after.logits_per_image).abs().max() <= 1e-10


def test_reparameterize_fp32_and_idempotent():
    model = tiny_model("mci-s0text")
    inputs = dict(input_ids=random_ids(2, [4, 20]), pixel_values=pixels(model.config))
    with torch.no_grad():
        before = model(**inputs)
        model.reparameterize()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.reparameterize()  # a second call does nothing
        after = model(**inputs)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert (before.image_embeds - after.image_embeds).abs().max() <= 1e-5
    assert (before.text_embeds - after.text_embeds).abs().max() <= 1e-5


def test_fused_model_saves_and_reloads_fused(tmp_path):
    model = tiny_model("mci-s0text").reparameterize()
    model.save_pretrained(tmp_path)
    loaded = MobileCLIPModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    model.config._attn_implementation = "eager"
    assert loaded.config.vision_config.inference_mode and loaded.config.text_config.inference_mode
    assert loaded.state_dict().keys() == model.state_dict().keys()
    inputs = dict(input_ids=random_ids(2, [4, 20]), pixel_values=pixels(model.config))
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_image, loaded(**inputs).logits_per_image)


# ---------------------------------------------------------------- text tower: padding, attention, pooling

@pytest.mark.parametrize("family", ["mci-s0text", "vit-patch", "vit-convstem"])
def test_text_embedding_is_independent_of_padding(family):
    """open_clip pads to 77 with 0; the pipeline pads to the longest label with <|endoftext|>."""
    model = tiny_model(family)
    reference = random_ids(2, [3, 7])
    longest = reference[:, :9].clone()
    eot_padded = longest.masked_fill(longest == 0, EOT)
    with torch.no_grad():
        expected = model.get_text_features(input_ids=reference).pooler_output
        for ids in (longest, eot_padded):
            assert torch.allclose(model.get_text_features(input_ids=ids).pooler_output, expected, atol=1e-6)


def test_non_causal_tower_attends_to_pads_like_the_reference():
    """Pads change a bidirectional tower's EOT feature; the id must therefore be 0 as in the reference."""
    model = tiny_model("vit-patch")
    ids = random_ids(1, [3])
    other_pad = ids.clone()
    other_pad[0, 5:] = 7
    other_pad[0, 4] = EOT
    text = model.text_model
    with torch.no_grad():
        direct = text.final_layer_norm(_run_layers(text, ids))[0, 4]
        changed = text.final_layer_norm(_run_layers(text, other_pad))[0, 4]
    assert not torch.allclose(direct, changed, atol=1e-4)


def _run_layers(text_model, ids):
    hidden = text_model.embeddings(ids)
    for layer in text_model.layers:
        hidden = layer(hidden)
    return hidden


def test_causal_tower_ignores_tokens_after_eot():
    model = tiny_model("vit-convstem")
    ids = random_ids(1, [3])
    noisy = ids.clone()
    noisy[0, 5:] = torch.randint(1, 1000, (72,))
    with torch.no_grad():
        hidden = _run_layers(model.text_model, ids)[0, 4]
        noisy_hidden = _run_layers(model.text_model, noisy)[0, 4]
    assert torch.allclose(hidden, noisy_hidden, atol=1e-6)


def test_input_ids_longer_than_context_is_a_clear_error():
    model = tiny_model("vit-patch")
    with pytest.raises(ValueError, match="max_length=77"):
        model.get_text_features(input_ids=torch.ones(1, 78, dtype=torch.long))


@pytest.mark.parametrize("family", ["mci-s0text", "vit-convstem"])
@pytest.mark.parametrize("shape", [(0, 77), (2, 0)])
def test_empty_input_ids_is_a_clear_error(family, shape):
    model = tiny_model(family)  # was a reshape error (empty batch) or a silent embedding of padding (empty captions)
    with pytest.raises(ValueError, match=re.escape(f"input_ids has shape {shape}: an empty batch or empty sequences")):
        model.get_text_features(input_ids=torch.zeros(shape, dtype=torch.long))


def test_empty_pixel_batch_is_a_clear_error():
    model = tiny_model("mci-s0text")  # was a reshape error deep in the trunk
    with pytest.raises(ValueError, match=r"pixel_values has shape \(0, 3, 64, 64\): no image to encode"):
        model.get_image_features(pixel_values=pixels(model.config, batch=0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_raise_when_the_check_is_on(bad):
    model = tiny_model("mci-s0text")
    poisoned = pixels(model.config, batch=2)
    poisoned[1, 0, 3, 4] = bad
    # Off by default (the forward stays fast): the embedding is silently non-finite.
    assert not model.config.vision_config.check_finite_inputs
    assert not torch.isfinite(model.get_image_features(pixel_values=poisoned).pooler_output).all()
    model.config.vision_config.check_finite_inputs = True  # the loaded model's config object, shared by the tower
    with pytest.raises(ValueError, match=r"pixel_values of shape \(2, 3, 64, 64\) holds 1 NaN/inf value"):
        model(input_ids=random_ids(2, [2, 3]), pixel_values=poisoned)
    assert torch.isfinite(model.get_image_features(pixel_values=pixels(model.config)).pooler_output).all()


@pytest.mark.parametrize("family", ["mci-s0text", "vit-convstem"])
def test_eager_and_sdpa_attention_agree(family):
    eager = tiny_model(family)
    sdpa = copy.deepcopy(eager)
    eager.config._attn_implementation = eager.text_model.config._attn_implementation = "eager"
    sdpa.config._attn_implementation = sdpa.text_model.config._attn_implementation = "sdpa"
    ids = random_ids(3, [1, 9, 40])
    with torch.no_grad():
        a = eager.get_text_features(input_ids=ids).pooler_output
        b = sdpa.get_text_features(input_ids=ids).pooler_output
    assert (a - b).abs().max() <= 1e-5


# ---------------------------------------------------------------- image tower

# Our presets' image towers and timm's registered MobileCLIP trunks (timm's classifier Linear = our projection).
# fastvit_mci3 is compared at full size in test_parity.py (timm image-only checkpoint).
TIMM_TOWERS = [
    ("mobileclip-s0", "fastvit_mci0"), ("mobileclip-s1", "fastvit_mci1"), ("mobileclip-s2", "fastvit_mci2"),
    pytest.param("mobileclip2-s4", "fastvit_mci4", marks=pytest.mark.slow),
    ("mobileclip2-b", "vit_base_mci_224"),
    pytest.param("mobileclip2-l-14", "vit_large_patch14_clip_224", marks=pytest.mark.slow),
]


@torch.no_grad()
def timm_tower_difference(variant: str, timm_name: str, fastvit_size: int = 128) -> float:
    """Max abs difference between timm's full-size trunk and our preset's image tower holding the same weights.

    timm's model is built with its own init and its BatchNorms calibrated on the input; its tensors are assigned into
    our tower (built on the meta device, so nothing is allocated twice). FastViT towers run at `fastvit_size` pixels
    (any size works; 128 keeps 4x4 / 2x2 tokens in the attention stages), ViTs at their fixed size."""
    config = MobileCLIPConfig.from_variant(variant)
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, pretrained=False, num_classes=config.projection_dim).eval()
    vision = config.vision_config
    size = fastvit_size if vision.backbone == "fastvit" else vision.image_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = calibrate_batchnorm(reference, lambda: reference(images))
    head = "head.fc." if vision.backbone == "fastvit" else "head."
    state = {}
    for key, value in reference.state_dict().items():
        if not key.startswith(head):
            state[f"vision_model.trunk.{key}"] = value
        elif key.endswith("weight") or vision.projection_bias:
            state[f"visual_projection.{key[len(head):]}"] = value
        else:  # timm's head bias is initialised to zero; Apple v1 projections have none
            assert torch.count_nonzero(value) == 0
    with torch.device("meta"):
        ours = MobileCLIPModel(config)
    result = ours.load_state_dict(state, strict=False, assign=True)
    assert not result.unexpected_keys
    assert all(key.startswith(("text_model.", "text_projection.", "logit_scale")) for key in result.missing_keys)
    got = ours.eval().get_image_features(pixel_values=images).pooler_output
    return (got - expected).abs().max().item()


@pytest.mark.parametrize("variant, timm_name", TIMM_TOWERS)
def test_image_tower_equals_timms_registered_trunk_with_same_weights(variant, timm_name):
    assert timm_tower_difference(variant, timm_name) <= 1e-6


def test_full_size_s0_forward_fused_and_unfused():
    config = MobileCLIPConfig.from_variant("mobileclip-s0")
    torch.manual_seed(0)
    model = randomize_statistics(MobileCLIPModel(config)).eval()
    inputs = dict(input_ids=random_ids(2, [5, 20]), pixel_values=pixels(config))
    with torch.no_grad():
        unfused = model(**inputs)
        fused = model.reparameterize()(**inputs)
    assert unfused.image_embeds.shape == (2, 512) and unfused.text_embeds.shape == (2, 512)
    assert (unfused.image_embeds - fused.image_embeds).abs().max() <= 1e-4
    assert (unfused.text_embeds - fused.text_embeds).abs().max() <= 1e-4


def test_wrong_pixel_shape_is_a_clear_error():
    model = tiny_model("vit-convstem")
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        model.get_image_features(pixel_values=torch.rand(2, 64, 64))
    with pytest.raises(ValueError, match="takes \\(64, 64\\)"):
        model.get_image_features(pixel_values=torch.rand(1, 3, 80, 80))
    with pytest.raises(ValueError, match="needs both input_ids and pixel_values"):
        model(input_ids=random_ids(1, [2]))
    with pytest.raises(ValueError, match="one caption per image"):
        model(input_ids=random_ids(3, [2, 2, 2]), pixel_values=pixels(model.config, 2), return_loss=True)


# ---------------------------------------------------------------- dtypes, compile, training utilities

@pytest.mark.parametrize("family", ["mci-s0text", "vit-convstem"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_is_close_to_fp32(family, dtype):
    model = tiny_model(family)
    inputs = dict(input_ids=random_ids(2, [4, 11]), pixel_values=pixels(model.config))
    with torch.no_grad():
        reference = model(**inputs)
        low = copy.deepcopy(model).to(dtype)(input_ids=inputs["input_ids"],
                                              pixel_values=inputs["pixel_values"].to(dtype))
        with torch.autocast("cpu", dtype=dtype):
            autocast = model(**inputs)
    assert low.image_embeds.dtype == dtype
    for out in (low, autocast):
        assert (out.image_embeds.float() - reference.image_embeds).abs().max() < 0.05
        assert (out.text_embeds.float() - reference.text_embeds).abs().max() < 0.05


def test_layer_norm_runs_in_float32_under_low_precision():
    """Apple's LayerNormFP32: normalise in float32, return the input dtype (autocast or a bf16/fp16 model alike)."""
    norm = MobileCLIPLayerNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    hidden = (torch.randn(2, 5, 64) * 30 + 100).to(torch.bfloat16)  # large mean: bf16 statistics would be off

    def float32_layer_norm(weight, bias):
        return F.layer_norm(hidden.float(), (64,), weight.float(), bias.float(), 1e-5).to(torch.bfloat16)

    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(norm(hidden), float32_layer_norm(norm.weight, norm.bias))
        norm.to(torch.bfloat16)
        assert torch.equal(norm(hidden), float32_layer_norm(norm.weight, norm.bias))


@pytest.mark.slow
def test_torch_compile_of_fused_model():
    model = tiny_model("mci-s0text").reparameterize()
    inputs = dict(input_ids=random_ids(2, [4, 11]), pixel_values=pixels(model.config))
    compiled = torch.compile(model)
    with torch.no_grad():
        eager_out, compiled_out = model(**inputs), compiled(**inputs)
    assert (eager_out.logits_per_image - compiled_out.logits_per_image).abs().max() <= 1e-4


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = dict(input_ids=random_ids(2, [4, 11]), return_loss=True)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("mci-s0text").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            # MCi stages checkpoint through transformers (GradientCheckpointingLayer), not timm's own flag
            assert all(stage.gradient_checkpointing for stage in model.vision_model.trunk.stages)
        model(pixel_values=pixels(model.config), **inputs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
