"""Replay of stored DataCompDR augmentations against torchvision's own ops, and the parameter sampler.

The independent reference is torchvision itself: `transforms.functional.resized_crop` for the crop and
`transforms.autoaugment._apply_op` (the function RandAugment calls) for each op, applied with the same parameters.
"""

import io
import json
import random

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.functional as F
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode, RandAugment
from torchvision.transforms.autoaugment import _apply_op

from dataset_scripts import augment_replay
from dataset_scripts.augment_replay import (
    OPS,
    AugmentationSampler,
    CropOutsideImageError,
    ReplayTransform,
    apply,
    parse_entry,
    replay_pil,
    sample_params,
)


def textured_image(width=300, height=200, seed=0):
    """Gradients + edges + noise: every op (shear, equalize, sharpness...) changes such an image visibly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([(x * 255 // width), (y * 255 // height), ((x // 17 + y // 13) % 2) * 200], axis=-1)
    arr = np.clip(arr + rng.integers(-30, 30, arr.shape), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(arr, "RGB")


def torchvision_reference(img, entry, size, interpolation):
    (top, left, height, width), ops = entry
    view = F.resized_crop(img, top, left, height, width, [size, size], interpolation)
    for op, magnitude in ops or []:
        view = _apply_op(view, OPS[op], magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
    return view


def pixels(img):
    return np.asarray(img)


@pytest.mark.parametrize("op", range(len(OPS)))
def test_every_op_is_pixel_identical_to_torchvision(op):
    img = textured_image()
    rng = random.Random(op)
    table = augment_replay.magnitude_table(31, (224, 224))
    values, signed = table[OPS[op]]
    magnitudes = [0.0] if values is None else [values[9], values[30]] + ([-values[9], -values[17]] if signed else [])
    for magnitude in magnitudes:
        for _ in range(3):
            box = augment_replay.sample_crop_box(rng, img.size)
            entry = [box, [[op, magnitude]]]
            got = replay_pil(img, entry, 224, "bicubic")
            want = torchvision_reference(img, entry, 224, InterpolationMode.BICUBIC)
            assert np.array_equal(pixels(got), pixels(want)), (OPS[op], magnitude, box)
            if op != 0 and magnitude != 0.0:  # the op really did something
                plain = replay_pil(img, [box, []], 224, "bicubic")
                assert not np.array_equal(pixels(got), pixels(plain)), (OPS[op], magnitude)


def test_replay_reproduces_the_torchvision_transform_modules(monkeypatch):
    """torchvision's own RandomResizedCrop(224, bicubic) + RandAugment() modules (the generator's configuration) draw
    their parameters from torch's RNG; the parameters they draw, stored as a JSON entry, replay to the same pixels."""
    import torchvision.transforms.autoaugment as autoaugment

    drawn_ops = []
    real_apply_op = autoaugment._apply_op

    def recording_apply_op(img, op_name, magnitude, interpolation, fill):  # RandAugment.forward calls this per op
        drawn_ops.append([OPS.index(op_name), magnitude])
        return real_apply_op(img, op_name, magnitude, interpolation=interpolation, fill=fill)

    monkeypatch.setattr(autoaugment, "_apply_op", recording_apply_op)
    drawn_boxes = []

    def recording_get_params(img, scale, ratio):  # RandomResizedCrop.forward calls self.get_params
        drawn_boxes.append(T.RandomResizedCrop.get_params(img, scale, ratio))
        return drawn_boxes[-1]

    rrc = T.RandomResizedCrop(224, interpolation=InterpolationMode.BICUBIC)
    rrc.get_params = recording_get_params
    randaugment = RandAugment()  # num_ops=2, magnitude=9, 31 bins, NEAREST, fill None
    img = textured_image(333, 251, seed=2)
    torch.manual_seed(0)
    seen_ops = set()
    for _ in range(80):
        drawn_ops.clear()
        output = randaugment(rrc(img))
        entry = json.loads(json.dumps([list(drawn_boxes[-1]), drawn_ops]))  # as stored in paug.json
        assert np.array_equal(pixels(replay_pil(img, entry, 224, "bicubic")), pixels(output)), entry
        seen_ops.update(op for op, _ in drawn_ops)
    assert seen_ops == set(range(len(OPS)))


def test_sampled_entries_replay_identically_at_student_sizes():
    """Two ops per view as stored, replayed for a 256-px bilinear student and the 224-px bicubic teacher."""
    img = textured_image(333, 251, seed=1)
    rng = random.Random(0)
    for _ in range(40):
        entry = sample_params(rng, img.size)
        for size, mode in ((224, InterpolationMode.BICUBIC), (256, InterpolationMode.BILINEAR)):
            got = replay_pil(img, entry, size, mode)
            assert np.array_equal(pixels(got), pixels(torchvision_reference(img, entry, size, mode)))


def test_apply_is_to_tensor_then_student_normalisation():
    img = textured_image()
    entry = [[10, 20, 150, 180], [[1, -0.09], [11, 178.5]]]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    tensor = apply(img, entry, 64, "bilinear", mean, std)
    want = F.normalize(F.to_tensor(torchvision_reference(img, entry, 64, InterpolationMode.BILINEAR)), mean, std)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 64, 64)
    assert torch.equal(tensor, want)
    assert torch.equal(ReplayTransform(64, "bilinear", mean, std)(img, entry), want)
    for seed in range(10):  # the numpy to_tensor + normalise is bit-identical to torchvision's, image after image
        noise = PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (50, 70, 3), dtype=np.uint8))
        assert torch.equal(apply(noise, [[0, 0, 50, 70], []], (50, 70), "bicubic", mean, std),
                           F.normalize(F.to_tensor(noise), mean, std))
    # the builder's typed form replays the same way as the stored nested list
    typed = parse_entry(entry).to_features()
    assert torch.equal(apply(img, typed, 64, "bilinear", mean, std), want)


def test_magnitude_table_matches_torchvision_randaugment():
    for num_bins, hw in ((31, (224, 224)), (31, (256, 192)), (11, (64, 96))):
        space = RandAugment()._augmentation_space(num_bins, hw)
        table = augment_replay.magnitude_table(num_bins, hw)
        assert list(table) == list(space) == list(OPS)
        for name, (magnitudes, signed) in space.items():
            values, our_signed = table[name]
            assert our_signed == signed, name
            if magnitudes.ndim == 0:
                assert values is None, name
            else:
                assert list(values) == [float(v) for v in magnitudes.tolist()], name


def test_stored_magnitudes_of_the_published_config():
    """Bin 9 of 31 on a 224-px crop: the values seen in the DataCompDR viewer (e.g. translate -30.45317)."""
    table = augment_replay.magnitude_table(31, (224, 224))
    at_bin_9 = {name: values[9] for name, (values, _) in table.items() if values is not None}
    assert at_bin_9["TranslateX"] == pytest.approx(30.45317, abs=1e-5)
    assert at_bin_9["TranslateX"] == pytest.approx(150 / 331 * 224 * 9 / 30, abs=1e-5)
    assert at_bin_9["ShearX"] == pytest.approx(0.09) and at_bin_9["Rotate"] == pytest.approx(9.0)
    assert at_bin_9["Brightness"] == pytest.approx(0.27) and at_bin_9["Posterize"] == 7.0
    assert at_bin_9["Solarize"] == 178.5


def test_sampler_is_reproducible_json_safe_and_in_the_published_encoding():
    sampler = AugmentationSampler()
    table = augment_replay.magnitude_table(31, (224, 224))
    draws = [sampler.sample(random.Random(5), (640, 480)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(11)
    seen_ops = set()
    for _ in range(400):
        width, height = rng.choice([(640, 480), (300, 900), (1024, 1024)])
        entry = sampler.sample(rng, (width, height))
        assert json.loads(json.dumps(entry)) == entry
        (top, left, h, w), ops = entry
        assert all(isinstance(v, int) for v in (top, left, h, w))
        assert 0 <= top and 0 <= left and top + h <= height and left + w <= width
        assert 0.07 <= h * w / (width * height) <= 1.0
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02 or (h, w) in ((height, width),)
        assert len(ops) == 2
        for op, magnitude in ops:
            values, signed = table[OPS[op]]
            allowed = {0.0} if values is None else {values[9], -values[9]} if signed else {values[9]}
            assert magnitude in allowed, (OPS[op], magnitude)
            seen_ops.add(op)
    assert seen_ops == set(range(len(OPS)))


def test_crop_sampler_falls_back_to_a_centred_box_like_torchvision():
    # a 1000x10 strip: no random box with ratio in [3/4, 4/3] and area >= 8% fits, so the fallback applies
    entry = augment_replay.sample_crop_box(random.Random(0), (1000, 10))
    assert entry == [0, (1000 - 13) // 2, 10, 13]


def test_rng_must_be_passed_explicitly():
    with pytest.raises(TypeError, match="random.Random"):
        sample_params(random, (100, 100))
    with pytest.raises(TypeError, match="random.Random"):
        sample_params(np.random.default_rng(0), (100, 100))


@pytest.mark.parametrize("bad, message", [
    ([[0, 0, 10, 10], [[14, 1.0]]], "op 0 index is 14"),
    ([[0, 0, 10], []], r"crop box must be \[top, left, height, width\]"),
    ([[0, -1, 10, 10], []], "top, left >= 0"),
    ([[0, 0, 10.5, 10], []], "crop box h must be an integer"),
    ([[4294967296, 0, 10, 10], []], "reaches past 2147483647 pixels"),  # would overflow the int32 column
    ([[0, 2**31 - 10, 10, 10], []], "reaches past 2147483647 pixels"),
    ([[0, 0, 10, 10], [[1, 10**400]]], "finite number"),
    ([[0, 0, 10, 10], [[1, True]]], "finite number"),
    ([[0, 0, 10, 10], [[1, float("nan")]]], "finite number"),
    ([[0, 0, 10, 10], [], [1]], "got 3 parts"),
    ("[[0, 0", "not valid JSON"),
])
def test_malformed_entries_are_rejected_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_entry(bad)


def test_entry_forms_and_null_rand_augment():
    listed = [[14, 347, 370, 427], [[0, 0.0], [6, 0.27]]]
    assert parse_entry(listed) == parse_entry(json.dumps(listed)) == parse_entry(parse_entry(listed).to_features())
    assert parse_entry([[1, 2, 3, 4], None]).ops == ()
    assert augment_replay.parse_param_aug(json.dumps([listed, listed])) == [parse_entry(listed)] * 2


def test_crop_outside_the_image_is_an_error_not_padding():
    img = textured_image(100, 80)
    with pytest.raises(CropOutsideImageError, match=r"does not fit in the 100x80"):
        apply(img, [[10, 10, 80, 50], []])
    with pytest.raises(CropOutsideImageError):
        apply(img, [[0, 60, 20, 41], []])
    assert apply(img, [[0, 50, 80, 50], []], 32).shape == (3, 32, 32)  # touching the border is fine


def test_load_image_keeps_the_stored_pixel_grid():
    """No EXIF rotation (the boxes refer to the stored grid); RGBA/P/L go through RGBA -> RGB like the generator."""
    arr = np.zeros((40, 100, 3), np.uint8)
    arr[:, :50] = 255
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    PIL.Image.fromarray(arr).save(buffer, format="JPEG", exif=exif)
    loaded = augment_replay.load_image(buffer.getvalue())
    assert loaded.size == (100, 40) and loaded.mode == "RGB"
    rgba = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA")
    for img in (rgba, rgba.convert("P"), rgba.convert("L")):
        assert np.array_equal(pixels(augment_replay.load_image(img)), pixels(img.convert("RGBA").convert("RGB")))


def test_view_uses_the_teacher_row_of_the_replayed_augmentation():
    img = textured_image()
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    rng = random.Random(3)
    param_aug = [parse_entry(sample_params(rng, img.size)).to_features() for _ in range(5)]
    image_emb = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    example = {"__key__": "k", "image": {"bytes": buffer.getvalue(), "path": "k.png"}, "param_aug": param_aug,
               "image_emb": image_emb}
    transform = ReplayTransform(size=48)
    for epoch in range(7):
        view = transform.view(example, epoch=epoch)
        assert view["aug_idx"] == epoch % 5
        assert torch.equal(view["image_emb"], torch.from_numpy(image_emb[epoch % 5]))
        assert torch.equal(view["pixel_values"], apply(img, param_aug[epoch % 5], 48))
    picks = {transform.view(example, rng=random.Random(seed))["aug_idx"] for seed in range(40)}
    assert picks == set(range(5))
    with pytest.raises(ValueError, match="out of range for 5 stored augmentations"):
        transform.view(example, aug_idx=5)
    with pytest.raises(ValueError, match="has no 'image'"):
        transform.view({"__key__": "k", "param_aug": param_aug, "image_emb": image_emb}, aug_idx=0)


def test_sampler_config_round_trip_and_teacher_view():
    sampler = AugmentationSampler(size=(192, 256), interpolation="bilinear", magnitude=5)
    assert AugmentationSampler.from_config(json.loads(json.dumps(sampler.to_config()))) == sampler
    apple = {"normalize": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
             "rand_augment": {"enable": True, "p": 1.0}, "random_resized_crop": {"interpolation": "bicubic",
                                                                               "size": 224},
             "to_rgb": {"enable": True}, "to_tensor": {"enable": True}}
    assert AugmentationSampler.from_config(apple) == AugmentationSampler()
    with pytest.raises(ValueError, match="random_horizontal_flip"):
        AugmentationSampler.from_config({"random_horizontal_flip": {"p": 0.5}})
    img = textured_image()
    entry = sampler.sample(random.Random(0), img.size)
    # non-square output: translations are drawn on the (192, 256) crop
    assert sampler.apply(img, entry).shape == (3, 192, 256)
    translate_x = augment_replay.magnitude_table(31, (192, 256))["TranslateX"][0][5]
    assert translate_x == pytest.approx(150 / 331 * 256 * 5 / 30, abs=1e-4)
