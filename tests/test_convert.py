"""Converter behaviour: key tables, format detection, safe loading and bad input, through the Python API.

Numerical parity against independent implementations lives in test_parity.py, the command line and the output folder
in test_conversion_cli.py. Here, checkpoints of tiny configs are produced from our own model through the inverse of
the key tables (enough to test reading and I/O), and full-size Apple layouts come from the recorded fixture
(tests/fixtures/apple_v1_checkpoint_layout.json).
"""

import pickle
from pathlib import Path

import pytest
import torch
from conftest import randomize_statistics, tiny_config
from fixtures.convert_checkpoints import APPLE_LAYOUT_OF, meta_apple_state_dict
from safetensors.torch import save_file

from modeling_mobileclip import MOBILECLIP_VARIANTS, MobileCLIPConfig, MobileCLIPModel
from modeling_mobileclip.conversion.checkpoint import LoadedCheckpoint, read_checkpoint
from modeling_mobileclip.conversion.convert import convert
from modeling_mobileclip.conversion.errors import ConversionError, KeyMismatchError
from modeling_mobileclip.conversion.keymaps import RESHAPE, TRANSPOSE, KeyTableError, key_table
from modeling_mobileclip.conversion.mapping import convert_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------

def _meta_target(config):
    with torch.device("meta"):
        return MobileCLIPModel(config).state_dict()


def _to_source_shape(target_key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Inverse of RESHAPE: Apple stores position embeddings as [1, 1, N, D] and (1, k) text kernels 4-D."""
    if target_key.endswith(("position_embedding", "pos_embed")):
        return tensor.reshape(1, 1, *tensor.shape[-2:])
    return tensor.unsqueeze(2)


def to_format(model: MobileCLIPModel, fmt: str) -> dict[str, torch.Tensor]:
    """A checkpoint in `fmt` for this model, through the inverse of our key table (I/O tests only: parity against
    independent implementations is in test_parity.py)."""
    state = model.state_dict()
    out = {}
    for source_key, rule in key_table(model.config, fmt, state.keys()).items():
        if rule.target is None:  # the zero bias open_clip/timm carry for bias-free projections
            out[source_key] = torch.zeros(model.config.projection_dim)
            continue
        value = state[rule.target]
        if rule.transform == TRANSPOSE:
            value = value.t()
        elif rule.transform == RESHAPE:
            value = _to_source_shape(rule.target, value)
        out[source_key] = value.contiguous().clone()
    return out


@pytest.fixture(scope="module")
def tiny_s0():
    """Tiny MCi + Text-RepMixer model (the S0 family), randomised so every key matters."""
    torch.manual_seed(0)
    return randomize_statistics(MobileCLIPModel(tiny_config("mci-s0text")).eval())


@pytest.fixture(scope="module")
def tiny_mci5():
    torch.manual_seed(1)
    model = randomize_statistics(MobileCLIPModel(tiny_config("mci5stage")).eval())
    with torch.no_grad():
        model.visual_projection.bias.normal_()
    return model


def assert_same_weights(model_a, model_b):
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------------------------------------------
# key tables
# ----------------------------------------------------------------------------------------------------------------

V1_PRESETS = sorted(APPLE_LAYOUT_OF)
OPEN_CLIP_PRESETS = [name for name in MOBILECLIP_VARIANTS if name != "mobileclip-s0"]


@pytest.mark.parametrize("variant", V1_PRESETS)
def test_apple_v1_layout_maps_exactly_onto_preset(variant):
    """Every key and shape of Apple's released file lands on exactly one key of our model (full size, meta)."""
    config = MobileCLIPConfig.from_variant(variant)
    source = LoadedCheckpoint(Path(f"{variant}.pt"), meta_apple_state_dict(APPLE_LAYOUT_OF[variant]), "apple")
    converted, dropped = convert_state_dict([source], config, variant)
    target = _meta_target(config)
    assert converted.keys() == target.keys() and not dropped
    for key, value in converted.items():
        assert value.shape == target[key].shape and value.dtype == target[key].dtype, key


@pytest.mark.parametrize("variant", OPEN_CLIP_PRESETS)
def test_open_clip_and_timm_tables_cover_every_key(variant):
    config = MobileCLIPConfig.from_variant(variant)
    target = _meta_target(config)
    covered = {rule.target for rule in key_table(config, "open_clip", target).values()}
    assert covered - {None} == set(target)
    vision = {rule.target for rule in key_table(config, "timm", target).values()} - {None}
    assert vision == {key for key in target if key.startswith(("vision_model.", "visual_projection."))}


def test_formats_a_variant_cannot_have_are_refused():
    with pytest.raises(KeyTableError, match="Text-RepMixer"):
        key_table(MobileCLIPConfig.from_variant("mobileclip-s0"), "open_clip", [])
    with pytest.raises(KeyTableError, match="MCi3/4"):
        key_table(MobileCLIPConfig.from_variant("mobileclip2-s3"), "apple", [])


# ----------------------------------------------------------------------------------------------------------------
# mismatches: which keys disagree, and which variant the checkpoint is
# ----------------------------------------------------------------------------------------------------------------

def test_checkpoint_of_another_variant_names_the_keys_and_the_right_variant():
    source = LoadedCheckpoint(Path("mobileclip_s1.pt"), meta_apple_state_dict("mobileclip_s1"), "apple")
    with pytest.raises(KeyMismatchError) as info:
        convert_state_dict([source], MobileCLIPConfig.from_variant("mobileclip-s0"), "mobileclip-s0")
    error = info.value
    # S1's text tower is 12 transformer layers, S0's is RepMixer + 4 transformers + RepMixer; image depths differ.
    assert "text_encoder.transformer.11.pre_norm_mha.0.weight" in error.unexpected
    assert "text_model.layers.0.token_mixer.mixer_conv.weight" in error.missing
    assert "image_encoder.model.network.0.3.layer_scale" in error.unexpected
    assert error.matching_variants == ["mobileclip-s1"]
    message = str(error)
    assert "--variant mobileclip-s1" in message and f"{len(error.unexpected)} checkpoint key(s)" in message


def test_shape_disagreements_are_listed_with_both_shapes():
    source = LoadedCheckpoint(Path("mobileclip_s2.pt"), meta_apple_state_dict("mobileclip_s2"), "apple")
    with pytest.raises(KeyMismatchError) as info:
        convert_state_dict([source], MobileCLIPConfig.from_variant("mobileclip-s1"), "mobileclip-s1")
    assert any(line.startswith("image_encoder.model.patch_embed.0.rbr_conv.0.conv.weight [80, 3, 3, 3] -> "
                               "vision_model.trunk.stem.0.conv_kxk.0.conv.weight expects [64, 3, 3, 3]")
               for line in info.value.mismatched)
    assert info.value.matching_variants == ["mobileclip-s2"]


def test_extra_and_missing_keys_fail_with_a_list(tiny_s0, tmp_path):
    state = to_format(tiny_s0, "apple")
    state["image_encoder.model.extra_head.weight"] = torch.zeros(3)
    del state["text_encoder.final_layer_norm.bias"]
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(KeyMismatchError) as info:
        convert(tmp_path / "extra.pt", config=tiny_s0.config)
    assert info.value.unexpected == ["image_encoder.model.extra_head.weight"]
    assert info.value.missing == ["text_model.final_layer_norm.bias"]
    assert "image_encoder.model.extra_head.weight" in str(info.value)


def test_nonzero_projection_bias_is_refused_by_a_bias_free_preset_and_zero_bias_is_accounted(tmp_path):
    # Apple v1 projections are bias-free; open_clip/timm ports of them carry an all-zero head bias.
    model = randomize_statistics(MobileCLIPModel(tiny_config("vit-convstem")).eval())
    state = to_format(model, "open_clip")
    assert torch.count_nonzero(state["visual.trunk.head.bias"]) == 0
    torch.save(state, tmp_path / "zero.pt")
    converted, report = convert(tmp_path / "zero.pt", config=model.config)
    assert report.dropped_zero_keys == ["zero.pt: visual.trunk.head.bias"]
    assert_same_weights(converted, model)
    state["visual.trunk.head.bias"] = torch.full_like(state["visual.trunk.head.bias"], 0.1)
    torch.save(state, tmp_path / "nonzero.pt")
    with pytest.raises(KeyMismatchError, match="non-zero image-projection bias") as info:
        convert(tmp_path / "nonzero.pt", config=model.config)
    assert info.value.nonzero_dropped == ["visual.trunk.head.bias"]


# ----------------------------------------------------------------------------------------------------------------
# reading: formats, wrappers, prefixes, containers
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("container", ["plain.pt", "wrapped.bin", "ddp.pth", "weights.safetensors"])
def test_open_clip_checkpoint_containers_convert_identically(tiny_mci5, tmp_path, container):
    state = to_format(tiny_mci5, "open_clip")
    path = tmp_path / container
    if container.startswith("wrapped"):
        torch.save({"epoch": 7, "name": "run", "state_dict": state}, path)
    elif container.startswith("ddp"):
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif container.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    converted, report = convert(path, config=tiny_mci5.config)
    assert_same_weights(converted, tiny_mci5)
    assert report.sources[0].format == "open_clip"
    if container.startswith("wrapped"):
        assert "other top-level entries, not weights: epoch, name" in report.sources[0].notes[0]
    if container.startswith("ddp"):
        assert any("module." in note for note in report.sources[0].notes)


@pytest.mark.parametrize("family", ["mci-s0text", "vit-convstem"])
def test_apple_format_tiny_round_trip(family, tmp_path):
    torch.manual_seed(2)
    model = randomize_statistics(MobileCLIPModel(tiny_config(family)).eval())
    torch.save(to_format(model, "apple"), tmp_path / "apple.pt")
    converted, report = convert(tmp_path / "apple.pt", config=model.config)
    assert report.sources[0].format == "apple"
    assert_same_weights(converted, model)


def test_timm_image_checkpoint_needs_a_text_checkpoint(tiny_mci5, tmp_path):
    full = to_format(tiny_mci5, "open_clip")
    save_file(to_format(tiny_mci5, "timm"), str(tmp_path / "image.safetensors"))
    with pytest.raises(KeyMismatchError, match="--text-checkpoint") as info:
        convert(tmp_path / "image.safetensors", config=tiny_mci5.config)
    assert "logit_scale" in info.value.missing and "text_projection.weight" in info.value.missing
    torch.save({k: v for k, v in full.items() if k.startswith("text.") or k == "logit_scale"}, tmp_path / "text.pt")
    converted, report = convert(tmp_path / "image.safetensors", config=tiny_mci5.config,
                                text_checkpoint=tmp_path / "text.pt")
    assert [s.format for s in report.sources] == ["timm", "open_clip"]
    assert_same_weights(converted, tiny_mci5)
    # A "text" checkpoint that also carries the image tower: both files provide it, which is refused.
    torch.save(full, tmp_path / "full.pt")
    with pytest.raises(KeyMismatchError, match="provided by more than one file") as info:
        convert(tmp_path / "image.safetensors", config=tiny_mci5.config, text_checkpoint=tmp_path / "full.pt")
    assert any(item.startswith("visual_projection.weight (from image.safetensors and full.pt)")
               for item in info.value.conflicts)


def test_timm_image_checkpoint_with_an_apple_text_file(tiny_s0, tmp_path):
    """MobileCLIP-S0's text tower exists only in Apple's layout: a timm image file plus Apple text_encoder.* keys.
    A complete Apple file as --text-checkpoint duplicates the image tower: refused, with the way out."""
    save_file(to_format(tiny_s0, "timm"), str(tmp_path / "image.safetensors"))
    apple = to_format(tiny_s0, "apple")
    torch.save({k: v for k, v in apple.items() if k.startswith("text_encoder.") or k == "logit_scale"},
               tmp_path / "text.pt")
    converted, report = convert(tmp_path / "image.safetensors", config=tiny_s0.config,
                                text_checkpoint=tmp_path / "text.pt")
    assert [s.format for s in report.sources] == ["timm", "apple"]
    assert report.dropped_zero_keys == ["image.safetensors: head.fc.bias"]  # timm's zero bias, S0 has none
    assert_same_weights(converted, tiny_s0)
    torch.save(apple, tmp_path / "mobileclip_s0.pt")
    with pytest.raises(KeyMismatchError, match="mobileclip_s0.pt holds the whole .* model by itself: convert it alone"):
        convert(tmp_path / "image.safetensors", config=tiny_s0.config, text_checkpoint=tmp_path / "mobileclip_s0.pt")


def test_bad_files_are_refused_with_a_reason(tmp_path, tiny_s0):
    state = to_format(tiny_s0, "apple")
    torch.save(state, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        read_checkpoint(tmp_path / "truncated.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "good.safetensors"))
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ConversionError, match="safetensors"):
        read_checkpoint(tmp_path / "truncated.safetensors")
    with pytest.raises(ConversionError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ConversionError, match="holds a list, not a state dict"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save({"weight": torch.zeros(2), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ConversionError, match="entry 'step' holds a int"):
        read_checkpoint(tmp_path / "mixed.pt")
    torch.save({"conv1.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}, tmp_path / "resnet.pt")
    with pytest.raises(ConversionError, match="is not a MobileCLIP checkpoint"):
        read_checkpoint(tmp_path / "resnet.pt")
    torch.save({"visual.trunk.stem.0.w": torch.zeros(1), "text_encoder.x": torch.zeros(1)}, tmp_path / "mix.pt")
    with pytest.raises(ConversionError, match="mixes checkpoint layouts"):
        read_checkpoint(tmp_path / "mix.pt")


class _Payload:
    """Pickles to a call that would create a file: a checkpoint must never get to run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", ["torch.save", "pickle"])
def test_pickles_with_code_are_refused_without_running_it(tmp_path, protocol):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    payload = {"image_encoder.model.head.proj": _Payload(marker)}
    if protocol == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ConversionError, match="weights_only=True"):
        read_checkpoint(path)
    assert not marker.exists()
