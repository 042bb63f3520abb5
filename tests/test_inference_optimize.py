"""`optimize_for_inference`: parity of the fast path with the un-fused float32 model for every architecture family and
for full-size S0, float32 embeddings out, the zero-shot pipeline, saving, repeated calls, one compiled tiny model."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_FAMILIES, calibrated, randomize_statistics, tiny_config
from transformers import pipeline

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel, MobileCLIPVisionModel
from modeling_mobileclip.inference import optimize_for_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The bounds on the max abs difference of L2-normalised embeddings (un-fused float32 model = reference).
BOUNDS = {"float32": 1e-5, "bfloat16": 1e-2}


def inputs(config: MobileCLIPConfig, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    ids = torch.randint(1, 49000, (batch, 16), generator=gen)
    ids[:, 0], ids[:, 11], ids[:, 12:] = 49406, 49407, 0
    return torch.rand(batch, 3, size, size, generator=gen), ids


@torch.no_grad()
def embeddings(model: MobileCLIPModel, pixel_values: torch.Tensor, input_ids: torch.Tensor):
    image = model.get_image_features(pixel_values=pixel_values).pooler_output
    text = model.get_text_features(input_ids=input_ids).pooler_output
    return image, text, F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def assert_within(model, reference, dtype: str, pixel_values, input_ids) -> None:
    *_, ref_image, ref_text = embeddings(reference, pixel_values, input_ids)
    image, text, fast_image, fast_text = embeddings(model, pixel_values, input_ids)
    assert image.dtype == text.dtype == torch.float32  # whatever the towers computed in
    assert (fast_image - ref_image).abs().max() <= BOUNDS[dtype]
    assert (fast_text - ref_text).abs().max() <= BOUNDS[dtype]


@pytest.mark.parametrize("dtype", sorted(BOUNDS))
@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_every_family_stays_within_the_bound(family, dtype):
    # Width 512, the released models' embedding width: a max-abs bound on a unit vector depends on its width (24-d
    # unit vectors have ~5x larger entries, and bf16 rounding errors with them).
    reference = calibrated(MobileCLIPModel(tiny_config(family, projection_dim=512)))
    model = optimize_for_inference(copy.deepcopy(reference), dtype=dtype, compile=False)
    plan = model.inference_plan
    assert (plan.dtype, plan.compile, plan.fused) == (dtype, False, True)
    assert model.config.vision_config.inference_mode and model.config.text_config.inference_mode
    assert next(model.vision_model.parameters()).dtype == plan.torch_dtype
    assert_within(model, reference, dtype, *inputs(reference.config))


def test_full_size_s0_stays_within_the_bound():
    torch.manual_seed(0)
    reference = randomize_statistics(MobileCLIPModel(MobileCLIPConfig.from_variant("mobileclip-s0"))).eval()
    batch = inputs(reference.config, batch=1)
    for dtype in ("float32", "bfloat16"):
        model = optimize_for_inference(copy.deepcopy(reference), dtype=dtype, compile=False)
        assert model.inference_plan.memory_format == "channels_last"
        assert_within(model, reference, dtype, *batch)


def test_the_zero_shot_pipeline_runs_the_fast_path(tokenizer):
    from PIL import Image

    from modeling_mobileclip import MobileCLIPImageProcessor

    reference = calibrated(MobileCLIPModel(tiny_config("mci-s0text", projection_dim=512)))
    processor = MobileCLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    image = Image.fromarray((torch.rand(80, 70, 3) * 255).byte().numpy())
    labels = ["cat", "dog", "car"]
    expected = pipeline("zero-shot-image-classification", model=reference, tokenizer=tokenizer,
                        image_processor=processor)(image, candidate_labels=labels)
    fast = optimize_for_inference(copy.deepcopy(reference), dtype="bfloat16", compile=False)
    got = pipeline("zero-shot-image-classification", model=fast, tokenizer=tokenizer,
                   image_processor=processor)(image, candidate_labels=labels)
    assert {r["label"]: r["score"] for r in got} == pytest.approx({r["label"]: r["score"] for r in expected},
                                                                  abs=1e-2)


def test_saved_fast_model_reloads_fused_in_its_precision(tmp_path):
    reference = calibrated(MobileCLIPModel(tiny_config("mci5stage")))
    fast = optimize_for_inference(copy.deepcopy(reference), dtype="bfloat16", compile=False)
    fast.save_pretrained(tmp_path)
    reloaded = MobileCLIPModel.from_pretrained(tmp_path)
    assert reloaded.config.vision_config.inference_mode and reloaded.config.text_config.inference_mode
    again = optimize_for_inference(reloaded, dtype="bfloat16", compile=False)
    batch = inputs(reference.config)
    for ours, theirs in zip(embeddings(again, *batch), embeddings(fast, *batch), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_second_call_replaces_the_first():
    model = calibrated(MobileCLIPModel(tiny_config("vit-patch")))
    optimize_for_inference(model, dtype="bfloat16", compile=False)
    optimize_for_inference(model, dtype="float32", compile=False)
    assert model.inference_plan.dtype == "float32" and next(model.text_model.parameters()).dtype == torch.float32
    assert len(model.vision_model._forward_pre_hooks) == 1 and len(model.vision_model._forward_hooks) == 1


def test_only_the_joint_model_is_accepted():
    tower = MobileCLIPVisionModel(tiny_config("vit-patch").vision_config)
    with pytest.raises(TypeError, match="takes a MobileCLIPModel, got MobileCLIPVisionModel"):
        optimize_for_inference(tower)


@pytest.mark.slow
def test_the_compiled_fast_path_stays_within_the_bound():
    """torch.compile (inductor, frozen weights) on the machine's own plan: one tiny MCi model, compiling takes ~10 s."""
    reference = calibrated(MobileCLIPModel(tiny_config("mci-s0text", projection_dim=512)))
    model = optimize_for_inference(copy.deepcopy(reference))
    if not model.inference_plan.compile:
        pytest.skip(f"this machine cannot compile: {model.inference_plan}")
    assert_within(model, reference, model.inference_plan.dtype, *inputs(reference.config))
