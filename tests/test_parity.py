"""Numerical parity of converted checkpoints with independent implementations that pip installs.

No real weights can be downloaded in CI, so every model here has random weights (layer scales, BatchNorm affine terms,
LayerNorms and biases moved far from their init, so a swapped or dropped key shows). BatchNorm statistics are those of
the activations on the test images, randomly moved by a fraction of their scale (`calibrate_batchnorm`): statistics
unrelated to the activations let deep MCi trunks map every image to nearly one embedding. References:

- open_clip 3.3 (`MobileCLIP-S1/S2/B`, `MobileCLIP2-S0/S2/B`, full size): saved in open_clip format, converted by our
  command, compared on the same images and captions, each side with its own preprocessing and tokenizer (which are
  asserted identical). S3/S4/L-14 (250-450 M parameters) use reduced-depth stand-ins of the same architecture (same
  timm trunk and widths, 1 block per stage or 2 ViT blocks, 2 text layers): same key names, same mapping code.
- Apple v1 files rebuilt from the recorded layout (tests/fixtures) with random values, loaded by open_clip's own Apple
  converter (S1, S2), by timm's own Apple key filters (`fastvit_mci0`, and `vit_base_mci_224` with Apple's stem padding
  1 and LayerNorm eps 1e-5 for MobileCLIP-B) and, for MobileCLIP-S0's text tower, by transformers'
  `sam3_lite_text` text model with 6 layers (an independent port of that encoder) through a key map written here.
  The BatchNorm statistics calibrated on the reference go back into the Apple file by value (`write_back`).
- A timm-format image trunk (`fastvit_mci3`, full size) with the text tower from a second file.

Each comparison is made un-fused and fused (`reparameterize()`, what `--fuse` writes).

Set MOBILECLIP_PARITY_REPORT=<file.md> to write the table of measured max abs differences.
"""

import copy
import itertools
import math
import os
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import open_clip
import PIL.Image
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import randomize_statistics
from fixtures.convert_checkpoints import (
    LOGIT_SCALE,
    calibrate_batchnorm,
    perturb_constant_tensors,
    random_apple_state_dict,
    write_back,
)
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_mobileclip import (
    MOBILECLIP_VARIANTS,
    MobileCLIPConfig,
    MobileCLIPProcessor,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
)
from modeling_mobileclip.conversion import output_folder
from modeling_mobileclip.conversion.cli import main
from modeling_mobileclip.conversion.convert import convert

pytestmark = pytest.mark.slow

TOLERANCE = {"unfused": 1e-5, "fused": 1e-4}  # max abs difference of L2-normalised embeddings, fp32
# Short, medium and over-long (truncated) captions: a bidirectional random tower's EOT feature is dominated by the pads
# it attends to, so two short captions of similar length look alike to it (max abs difference ~0.02).
CAPTIONS = ["a dog",
            "A diagram of a bicycle &amp; a RED car: ink on paper, 1890s, with notes in the margin about gears.",
            "Café crème — naïve façade " * 12]
ROWS: list[dict] = []
PIPELINE_ROWS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def parity_report():
    yield
    path = os.environ.get("MOBILECLIP_PARITY_REPORT")
    if not path or not ROWS:
        return
    lines = ["| family | preset | checkpoint | compared against | image | text | logits | image (fused) | "
             "text (fused) | logits (fused) | reference spread (image / text) |", "|" + "---|" * 11]
    for row in ROWS:
        cells = [f"{v:.1e}" for v in (*row["unfused"], *row["fused"])] + ["{:.2f} / {:.2f}".format(*row["spread"])]
        lines.append(f"| {row['family']} | {row['preset']} | {row['checkpoint']} | {row['reference']} | "
                     + " | ".join(cells) + " |")
    if PIPELINE_ROWS:
        lines.append("\nZero-shot pipeline logits vs open_clip's model(image, text), max abs: "
                     + "; ".join(PIPELINE_ROWS))
    Path(path).write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def stub_card(monkeypatch):
    """The model card runs widget inference; test_convert.py covers it, parity does not need it."""
    monkeypatch.setattr(output_folder, "_write_model_card", lambda folder, *a, **k: None)


def _images() -> list[PIL.Image.Image]:
    """A colour gradient and a checkerboard, with noise, at odd sizes (both the shortest-side resize and the centre
    crop act). They must differ in content: two i.i.d. noise images look alike to a random network."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:321]
    gradient = np.stack([x * 255 / 320, np.full_like(x, 40), y * 255 / 239], axis=-1)
    y, x = np.mgrid[0:300, 0:199]
    cells = ((y // 24 + x // 24) % 2).astype(bool)[..., None]
    checker = np.where(cells, [230, 210, 30], [20, 30, 120])
    return [PIL.Image.fromarray(np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8))
            for image in (gradient, checker)]


def open_clip_inputs(name: str, tag: str, images, captions=CAPTIONS):
    """open_clip's own eval transform (with the pretrained tag's preprocessing) and tokenizer."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    preprocess = image_transform_v2(PreprocessCfg(size=size, mean=cfg["mean"], std=cfg["std"],
                                                  interpolation=cfg["interpolation"],
                                                  resize_mode=cfg["resize_mode"]), is_train=False)
    return torch.stack([preprocess(image) for image in images]), open_clip.get_tokenizer(name)(captions)


def _normalised(image, text, logit_scale: float):
    image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
    return image, text, math.exp(logit_scale) * image @ text.T


def _fused(model):
    """A re-parameterised copy: what `--fuse` writes (the converter fuses the loaded model with this same method,
    before any dtype cast; tests/test_convert.py checks that the --fuse folder holds exactly these weights)."""
    return copy.deepcopy(model).reparameterize()


@torch.no_grad()
def _ours(model, inputs):
    out = model.eval()(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    return out.image_embeds, out.text_embeds, out.logits_per_image


def _check(family, preset, checkpoint, reference_name, reference, unfused, fused):
    """Record and assert: embeddings within TOLERANCE; logits within 2 * scale * TOLERANCE."""
    scale = math.exp(LOGIT_SCALE)
    image, text, _ = reference  # random weights must still give distinct embeddings, or equality proves nothing
    spread = tuple(min((e[i] - e[j]).abs().max().item() for i, j in itertools.combinations(range(len(e)), 2))
                   for e in (image, text))
    assert min(spread) > 1e-2, spread
    row = dict(family=family, preset=preset, checkpoint=checkpoint, reference=reference_name, spread=spread)
    for mode, got in (("unfused", unfused), ("fused", fused)):
        row[mode] = [(a.float() - b.float()).abs().max().item() for a, b in zip(got, reference)]
    ROWS.append(row)
    for mode in ("unfused", "fused"):
        image, text, logits = row[mode]
        tol = TOLERANCE[mode]
        assert image <= tol and text <= tol and logits <= 2 * scale * tol, (mode, row[mode])


def _convert_and_check(path: Path, preset: str, checkpoint: str, reference_name: str, reference, images, pixels,
                       tokens) -> Path:
    """Convert `path` with the CLI, load it with the Auto classes, check the processor reproduces the reference's
    inputs exactly, then `_check` the un-fused and fused outputs against `reference`. Returns the converted folder."""
    out = path.parent / preset
    assert main(["--variant", preset, "--checkpoint", str(path), "--output", str(out)]) == 0
    model, processor = AutoModel.from_pretrained(out), AutoProcessor.from_pretrained(out)
    inputs = processor(images=images, text=CAPTIONS, return_tensors="pt")
    assert torch.equal(inputs["pixel_values"], pixels) and torch.equal(inputs["input_ids"], tokens)
    _check(_family(preset), preset, checkpoint, reference_name, reference, _ours(model, inputs),
           _ours(_fused(model), inputs))
    return out


def _save(state_dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    elif path.name.startswith("ddp"):  # DDP training checkpoint: wrapped and prefixed
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    else:
        torch.save(state_dict, path)
    return path


def _randomised_open_clip(name: str, pixels: torch.Tensor, tokens: torch.Tensor, keep_zero_head_bias: bool,
                          seed: int = 0, **kwargs):
    """open_clip model with random weights, its BatchNorms calibrated on `pixels` (its own preprocessing). Returns the
    model and its (image embeddings, text embeddings, logits) for `pixels` and `tokens`, from open_clip's forward."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, **kwargs).eval()
    randomize_statistics(model, seed)  # BN affine terms and layer scales; the statistics are calibrated below
    head_bias = [k for k in model.state_dict() if k in ("visual.trunk.head.fc.bias", "visual.trunk.head.bias")]
    perturb_constant_tensors(model, seed, keep=head_bias if keep_zero_head_bias else ())
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
    image, text, scale = calibrate_batchnorm(model, lambda: model(pixels, tokens), seed)  # normalised, exp(scale)
    return model, (image, text, scale * image @ text.T)


def _calibrate_apple_file(state: dict, reference: nn.Module, run, path: Path):
    """Calibrate the BatchNorms of a reference loaded from `state` (by its own Apple key filter) while `run()` runs
    it, write the new statistics back into the Apple-layout `state` by value and save it to `path`. Returns what
    `run()` returned (the calibrated reference's output)."""
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    output = calibrate_batchnorm(reference, run)
    write_back(state, before, reference.state_dict())
    torch.save(state, path)
    return output


# ----------------------------------------------------------------------------------------------------------------
# open_clip-format checkpoints, full size, through the command
# ----------------------------------------------------------------------------------------------------------------

OPEN_CLIP_CASES = [
    # open_clip model, pretrained tag (its preprocessing), our preset, container, also check the pipeline
    # MobileCLIP-S1/S2 open_clip ports of Apple v1 weights carry an all-zero head bias; our v1 presets are bias-free.
    pytest.param("MobileCLIP-S1", "datacompdr", "mobileclip-s1", "open_clip_model.pt", True, id="MobileCLIP-S1"),
    pytest.param("MobileCLIP-S2", "datacompdr", "mobileclip-s2", "open_clip_model.safetensors", False,
                 id="MobileCLIP-S2"),
    # open_clip's MobileCLIP-B is timm's vit_base_mci_224 (stem padding 0, LN eps 1e-6) = our mobileclip2-b.
    pytest.param("MobileCLIP-B", "datacompdr", "mobileclip2-b", "open_clip_pytorch_model.bin", False,
                 id="MobileCLIP-B"),
    pytest.param("MobileCLIP2-S0", "dfndr2b", "mobileclip2-s0", "ddp_epoch_1.pt", False, id="MobileCLIP2-S0"),
    pytest.param("MobileCLIP2-S2", "dfndr2b", "mobileclip2-s2", "mobileclip2_s2.pt", False, id="MobileCLIP2-S2"),
    pytest.param("MobileCLIP2-B", "dfndr2b", "mobileclip2-b", "open_clip_model.safetensors", True,
                 id="MobileCLIP2-B"),
]


@pytest.mark.parametrize("name, tag, preset, container, check_pipeline", OPEN_CLIP_CASES)
def test_open_clip_checkpoint(name, tag, preset, container, check_pipeline, tmp_path):
    bias = MOBILECLIP_VARIANTS[preset]["vision"]["projection_bias"]
    images = _images()
    pixels, tokens = open_clip_inputs(name, tag, images)
    reference, expected = _randomised_open_clip(name, pixels, tokens, keep_zero_head_bias=not bias)
    path = _save(reference.state_dict(), tmp_path / container)
    out = _convert_and_check(path, preset, f"open_clip {name} ({container})", f"open_clip {name}", expected, images,
                             pixels, tokens)

    if check_pipeline:  # zero-shot logits of our pipeline (pads with <|endoftext|> to the longest label) = open_clip's
        labels = ["dog", "bicycle with a very long descriptive name", "car"]
        classifier = pipeline("zero-shot-image-classification", model=str(out))
        seen = []
        hook = classifier.model.register_forward_hook(lambda module, args, output: seen.append(output))
        scores = {r["label"]: r["score"] for r in classifier(images[0], candidate_labels=labels)}
        hook.remove()
        label_tokens = open_clip.get_tokenizer(name)([f"This is a photo of {x}." for x in labels])
        with torch.no_grad():  # open_clip's model(image, text) for images[0]; its image half was computed above
            _, text, scale = reference(None, label_tokens)
        expected_logits = scale * expected[0][0] @ text.T
        difference = (seen[0].logits_per_image[0] - expected_logits).abs().max().item()
        PIPELINE_ROWS.append(f"{preset} vs open_clip {name}: {difference:.1e}")
        assert difference <= 2 * scale.item() * TOLERANCE["unfused"]
        assert np.allclose([scores[x] for x in labels], expected_logits.softmax(-1).tolist(), atol=1e-5)


def _family(preset: str) -> str:
    vision, text = MOBILECLIP_VARIANTS[preset]["vision"], MOBILECLIP_VARIANTS[preset]["text"]
    if vision["backbone"] == "vit":
        image = "ViT-B/16 conv stem" if vision.get("stem") == "conv" else "ViT-L/14"
        if vision.get("stem") == "conv":
            image += f" (pad {vision['stem_padding']}, eps {vision['layer_norm_eps']:g})"
    else:
        image = "MCi3/4 (5-stage FastViT)" if len(vision["layers"]) == 5 else "MCi0-2 (FastViT)"
    return image + (" + Text-RepMixer" if text.get("block_types") else f" + {text['hidden_size']}-wide text")


# ----------------------------------------------------------------------------------------------------------------
# S3 / S4 / L-14: reduced-depth stand-ins (same trunk type, widths and key names), through the Python API
# ----------------------------------------------------------------------------------------------------------------

STANDINS = [
    pytest.param("MobileCLIP2-S3", "dfndr2b", "mobileclip2-s3", {"layers": (1,) * 5}, id="MobileCLIP2-S3"),
    pytest.param("MobileCLIP2-S4", "dfndr2b", "mobileclip2-s4", {"layers": (1,) * 5}, id="MobileCLIP2-S4"),
    pytest.param("MobileCLIP2-L-14", "dfndr2b", "mobileclip2-l-14", {"depth": 2}, id="MobileCLIP2-L-14"),
]


@pytest.mark.parametrize("name, tag, preset, trunk_overrides", STANDINS)
def test_open_clip_large_family_standin(name, tag, preset, trunk_overrides, tmp_path):
    create_model = timm.create_model

    def reduced(model_name, *args, **kwargs):  # open_clip builds its trunk with timm.create_model(name, ...)
        return create_model(model_name, *args, **{**kwargs, **trunk_overrides})

    text_cfg = {**open_clip.get_model_config(name)["text_cfg"], "layers": 2}
    images = _images()
    pixels, tokens = open_clip_inputs(name, tag, images)
    with mock.patch.object(timm, "create_model", reduced):
        reference, expected = _randomised_open_clip(name, pixels, tokens, keep_zero_head_bias=False, text_cfg=text_cfg)
    path = _save(reference.state_dict(), tmp_path / "standin.pt")

    spec = MOBILECLIP_VARIANTS[preset]
    vision = dict(spec["vision"], **({"layers": trunk_overrides["layers"]} if "layers" in trunk_overrides
                                     else {"num_hidden_layers": trunk_overrides["depth"]}))
    config = MobileCLIPConfig(text_config=MobileCLIPTextConfig(**dict(spec["text"], num_hidden_layers=2)),
                              vision_config=MobileCLIPVisionConfig(**vision), projection_dim=spec["projection_dim"])
    unfused, _ = convert(path, config=config)
    fused = _fused(unfused)

    inputs = MobileCLIPProcessor.from_variant(preset)(images=images, text=CAPTIONS, return_tensors="pt")
    assert torch.equal(inputs["pixel_values"], pixels) and torch.equal(inputs["input_ids"], tokens)
    depth = "1 block/stage" if "layers" in trunk_overrides else f"{trunk_overrides['depth']} blocks"
    _check(_family(preset), f"{preset} (stand-in: {depth}, 2 text layers)", f"open_clip {name} (.pt)",
           f"open_clip {name}, reduced depth", expected, _ours(unfused, inputs), _ours(fused, inputs))


# ----------------------------------------------------------------------------------------------------------------
# Apple v1 files (layout fixture + random values)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, preset, layout", [("MobileCLIP-S1", "mobileclip-s1", "mobileclip_s1"),
                                                  ("MobileCLIP-S2", "mobileclip-s2", "mobileclip_s2")])
def test_apple_v1_checkpoint_against_open_clips_converter(name, preset, layout, tmp_path):
    state, path = random_apple_state_dict(layout, seed=1), tmp_path / f"{layout}.pt"
    torch.save(state, path)
    reference = open_clip.create_model(name, pretrained=None).eval()
    open_clip.load_checkpoint(reference, str(path))  # open_clip's Apple converter (timm's FastViT filter inside)
    images = _images()
    pixels, tokens = open_clip_inputs(name, "datacompdr", images)
    image, text, scale = _calibrate_apple_file(state, reference, lambda: reference(pixels, tokens), path)
    _convert_and_check(path, preset, f"Apple v1 {layout}.pt", f"open_clip {name} via its Apple converter",
                       (image, text, scale * image @ text.T), images, pixels, tokens)


def test_apple_v1_b_against_timm_with_apples_stem_and_open_clip_text(tmp_path):
    """Apple's v1 B pads its first stem conv by 1 and uses LayerNorm eps 1e-5; open_clip/timm's port uses 0 and 1e-6.
    Image reference: timm `vit_base_mci_224` set to Apple's padding and eps, loaded by timm's Apple filter. Text and
    logit scale: open_clip MobileCLIP-B loaded by open_clip's Apple converter (its image tower is not compared)."""
    from timm.models.vision_transformer_hybrid import checkpoint_filter_fn

    state = random_apple_state_dict("mobileclip_b", seed=2)
    vit = timm.create_model("vit_base_mci_224", num_classes=512, norm_layer=partial(nn.LayerNorm, eps=1e-5)).eval()
    vit.patch_embed.backbone[0].conv.padding = (1, 1)
    vit.load_state_dict(checkpoint_filter_fn(state, vit))
    images = _images()
    pixels, tokens = open_clip_inputs("MobileCLIP-B", "datacompdr", images)
    path = tmp_path / "mobileclip_b.pt"
    image_features = _calibrate_apple_file(state, vit, lambda: vit(pixels), path)
    text_reference = open_clip.create_model("MobileCLIP-B", pretrained=None).eval()
    open_clip.load_checkpoint(text_reference, str(path))

    with torch.no_grad():
        expected = _normalised(image_features, text_reference.encode_text(tokens), text_reference.logit_scale.item())
    _convert_and_check(path, "mobileclip-b", "Apple v1 mobileclip_b.pt",
                       "timm vit_base_mci_224 (pad 1, eps 1e-5) via timm's Apple filter + open_clip MobileCLIP-B text",
                       expected, images, pixels, tokens)
    # For the record: open_clip's own (padding 0, eps 1e-6) image tower is measurably different from Apple's.
    with torch.no_grad():
        padding0 = F.normalize(text_reference.encode_image(pixels), dim=-1)
    assert (padding0 - expected[0]).abs().max().item() > 1e-3


def _apple_text_to_sam3(state: dict, num_layers: int = 6) -> dict:
    """Apple's S0 text keys -> transformers' Sam3LiteTextTextModel keys (hf-ecosystem notes section 9)."""
    src = {k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")}
    out = {"embeddings.token_embedding.weight": src["embedding_layer.weight"],
           "embeddings.position_embedding.position_embedding": src["positional_embedding.pos_embed.pos_embed"],
           "final_layer_norm.weight": src["final_layer_norm.weight"],
           "final_layer_norm.bias": src["final_layer_norm.bias"],
           "projection.weight": src["projection_layer"].T}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for i in range(num_layers):
        a, s = f"transformer.{i}", f"layers.{i}"
        if i in (0, num_layers - 1):  # RepMixer blocks
            plain = {"layer_scale": "layer_scale", "token_mixer.layer_scale": "token_mixer.layer_scale",
                     "token_mixer.mixer.conv.weight": "token_mixer.mixer.rbr_conv.0.conv.weight",
                     "conv_feed_forward.depthwise_conv.weight": "convffn.conv.conv.weight",
                     "conv_feed_forward.mlp.fc1.weight": "convffn.fc1.weight",
                     "conv_feed_forward.mlp.fc1.bias": "convffn.fc1.bias",
                     "conv_feed_forward.mlp.fc2.weight": "convffn.fc2.weight",
                     "conv_feed_forward.mlp.fc2.bias": "convffn.fc2.bias"}
            norms = {"token_mixer.reference_batchnorm": "token_mixer.norm.rbr_skip",
                     "token_mixer.mixer.batchnorm_skip": "token_mixer.mixer.rbr_skip",
                     "token_mixer.mixer.batchnorm_conv": "token_mixer.mixer.rbr_conv.0.bn",
                     "conv_feed_forward.depthwise_batchnorm": "convffn.conv.bn"}
            plain.update({f"{ours}.{leaf}": f"{theirs}.{leaf}" for ours, theirs in norms.items() for leaf in bn})
            out.update({f"{s}.{ours}": src[f"{a}.{theirs}"] for ours, theirs in plain.items()})
        else:
            for leaf in ("weight", "bias"):
                q, k, v = src[f"{a}.pre_norm_mha.1.qkv_proj.{leaf}"].chunk(3, dim=0)
                out.update({f"{s}.self_attn.q_proj.{leaf}": q, f"{s}.self_attn.k_proj.{leaf}": k,
                            f"{s}.self_attn.v_proj.{leaf}": v,
                            f"{s}.self_attn.out_proj.{leaf}": src[f"{a}.pre_norm_mha.1.out_proj.{leaf}"],
                            f"{s}.layer_norm1.{leaf}": src[f"{a}.pre_norm_mha.0.{leaf}"],
                            f"{s}.layer_norm2.{leaf}": src[f"{a}.pre_norm_ffn.0.{leaf}"],
                            f"{s}.mlp.fc1.{leaf}": src[f"{a}.pre_norm_ffn.1.{leaf}"],
                            f"{s}.mlp.fc2.{leaf}": src[f"{a}.pre_norm_ffn.4.{leaf}"]})
    return out


def test_apple_v1_s0_against_timm_image_and_sam3_lite_text(tmp_path):
    """MobileCLIP-S0 has no open_clip model. Image: timm `fastvit_mci0` loaded by timm's Apple filter. Text:
    transformers' `sam3_lite_text` text model (6 layers, RepMixer first and last), eager attention."""
    from timm.models.fastvit import checkpoint_filter_fn
    from transformers.models.sam3_lite_text.configuration_sam3_lite_text import Sam3LiteTextTextConfig
    from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextTextModel

    state = random_apple_state_dict("mobileclip_s0", seed=3)
    trunk = timm.create_model("fastvit_mci0", num_classes=512).eval()
    trunk.load_state_dict(checkpoint_filter_fn(state, trunk))
    images = _images()
    # Apple's tokenizer is open_clip's ViT-B-16 SimpleTokenizer; its preprocessing is S1's (256 px, [0, 1] pixels).
    pixels, _ = open_clip_inputs("MobileCLIP-S1", "datacompdr", images)
    tokens = open_clip.get_tokenizer("ViT-B-16")(CAPTIONS)
    path = tmp_path / "mobileclip_s0.pt"
    image_features = _calibrate_apple_file(state, trunk, lambda: trunk(pixels), path)
    text_config = Sam3LiteTextTextConfig(num_hidden_layers=6, projection_dim=512)
    text_config._attn_implementation = "eager"
    text_tower = Sam3LiteTextTextModel(text_config).eval()
    text_tower.load_state_dict(_apple_text_to_sam3(state), strict=True)

    with torch.no_grad():
        expected = _normalised(image_features, text_tower(input_ids=tokens).pooler_output, LOGIT_SCALE)
    _convert_and_check(path, "mobileclip-s0", "Apple v1 mobileclip_s0.pt",
                       "timm fastvit_mci0 via timm's Apple filter + transformers sam3_lite_text (6 layers)",
                       expected, images, pixels, tokens)


# ----------------------------------------------------------------------------------------------------------------
# timm image-only checkpoint (full-size fastvit_mci3) + text tower from a second file
# ----------------------------------------------------------------------------------------------------------------

def test_timm_image_checkpoint_fastvit_mci3_with_text_checkpoint(tmp_path):
    """open_clip MobileCLIP2-S3 with its full-size timm `fastvit_mci3` trunk and a small text tower: the trunk is saved
    as a timm image-only file (timm key names, classifier = projection), the text tower as a second file."""
    text_cfg = dict(open_clip.get_model_config("MobileCLIP2-S3")["text_cfg"], width=64, heads=2, layers=1)
    images = _images()
    pixels, tokens = open_clip_inputs("MobileCLIP2-S3", "dfndr2b", images)
    reference, expected = _randomised_open_clip("MobileCLIP2-S3", pixels, tokens, keep_zero_head_bias=False, seed=4,
                                                text_cfg=text_cfg)
    state = reference.state_dict()
    image_path = _save({k[len("visual.trunk."):]: v for k, v in state.items() if k.startswith("visual.trunk.")},
                       tmp_path / "fastvit_mci3.safetensors")
    text_path = _save({k: v for k, v in state.items() if k.startswith("text.") or k == "logit_scale"},
                      tmp_path / "text.pt")
    config = MobileCLIPConfig(
        text_config=MobileCLIPTextConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1,
                                         intermediate_size=256),
        vision_config=MobileCLIPVisionConfig(**MOBILECLIP_VARIANTS["mobileclip2-s3"]["vision"]), projection_dim=768)
    unfused, report = convert(image_path, config=config, text_checkpoint=text_path)
    assert [s.format for s in report.sources] == ["timm", "open_clip"]
    fused = _fused(unfused)

    inputs = MobileCLIPProcessor.from_variant("mobileclip2-s3")(images=images, text=CAPTIONS, return_tensors="pt")
    assert torch.equal(inputs["pixel_values"], pixels) and torch.equal(inputs["input_ids"], tokens)
    _check(_family("mobileclip2-s3"), "mobileclip2-s3 image (full size) + 64-wide text",
           "timm fastvit_mci3 image file + open_clip text file", "timm fastvit_mci3 (inside open_clip MobileCLIP2-S3)",
           expected, _ours(unfused, inputs), _ours(fused, inputs))
