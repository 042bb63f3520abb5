"""The reinforcement tool (issue #6): real inputs in, DataCompDR shards out, read back with the DataCompDR loader.

Tiny random teachers / captioners are saved to local folders and loaded through the same path as Hub models
(open_clip CLIP and CoCa, transformers CLIP / SigLIP / MobileCLIP, VisionEncoderDecoder and BLIP captioners).
"""

import io
import json
import os
import tarfile

import numpy as np
import PIL.Image
import pytest
import torch
import transformers

import dataset_scripts  # registers "datacompdr"
from dataset_scripts import augment_replay
from dataset_scripts.captioners import SeededNucleusSampler, load_captioner, postprocess_caption
from dataset_scripts.reinforce import derive_seed, prepare_image, reinforce
from dataset_scripts.teachers import load_teacher, teacher_from_transformers
from fake_hub import fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from reinforce_inputs import (
    CROP,
    add_member,
    awkward_samples,
    image_bytes,
    load_reinforced,
    shard_bytes,
    tiny_models_fixture,  # noqa: F401  (provides the module-scoped models fixture)
    write_tar_dataset,
)

TEACHERS = ("open_clip_at_crop", "open_clip_small", "mobileclip", "clip", "siglip")
SCALES = [100.0, 70.0, 50.0, 60.0, 40.0]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _common(models, **overrides):
    kwargs = dict(teachers=[models[name] for name in TEACHERS], teacher_logit_scales=SCALES, captioner=models["ved"],
                  num_captions=3, num_augmentations=4, crop_size=CROP, seed=11, batch_size=3, teacher_batch_size=5,
                  max_caption_tokens=12, progress=False, license="cc-by-4.0")
    kwargs.update(overrides)
    return kwargs


def _max_block_error(ds, config, teachers, norm_atol=1e-5) -> float:
    """Replay every stored augmentation, pass it through every teacher as the tool does (resize to the teacher's
    size, its own mean/std), and compare with the stored block; also the text rows (GT caption, then syn_text).
    Every block of every row must be unit-norm."""
    bounds = np.cumsum([0] + [t["embedding_dim"] for t in config["teachers"]])
    worst = 0.0
    for example in ds:
        image = augment_replay.load_image(example["image"])
        image_emb, text_emb = np.asarray(example["image_emb"]), np.asarray(example["text_emb"])
        assert len(example["param_aug"]) == image_emb.shape[0] == config["num_augmentations"]
        assert text_emb.shape[0] == 1 + config["num_captions"] == 1 + len(example["syn_text"])
        for k, teacher in enumerate(teachers):
            height, width = config["teacher_details"][k]["image_size"]
            views = []
            for entry in example["param_aug"]:
                view = augment_replay.replay_pil(image, entry, CROP, "bicubic")
                if view.size != (width, height):
                    view = view.resize((width, height), PIL.Image.Resampling.BICUBIC)
                views.append(augment_replay.to_normalized_tensor(view, teacher.image_mean, teacher.image_std))
            block = slice(bounds[k], bounds[k + 1])
            np.testing.assert_allclose(np.linalg.norm(image_emb[:, block], axis=1), 1.0, atol=norm_atol)
            np.testing.assert_allclose(np.linalg.norm(text_emb[:, block], axis=1), 1.0, atol=norm_atol)
            expected_images = teacher.encode_image(torch.stack(views)).numpy()
            expected_texts = teacher.encode_text([example["text"]] + example["syn_text"]).numpy()
            worst = max(worst, float(np.abs(image_emb[:, block] - expected_images).max()),
                        float(np.abs(text_emb[:, block] - expected_texts).max()))
    return worst


@pytest.fixture(scope="module")
def tar_run(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("tar_run")
    data = write_tar_dataset(str(root / "data"))
    out = str(root / "out")
    summary = reinforce(data, out, **_common(models))
    return out, summary


def test_replayed_augmentation_through_each_teacher_matches_stored_block(tar_run, models):
    out, _ = tar_run
    ds = load_reinforced(out)
    assert len(ds) == 7  # 10 inputs - zero-byte - garbage - missing caption (see test_bad_inputs_are_counted...)
    config = json.load(open(os.path.join(out, "config.json")))
    teachers = [load_teacher(models[name]) for name in TEACHERS]
    worst = _max_block_error(ds, config, teachers)
    # Same pixels, same weights: only float rounding from a different batch composition may differ.
    print(f"max |stored - replayed| over 5 teachers = {worst:.3g}")
    assert worst < 1e-5, worst


def test_captions_count_and_postprocessing(tar_run):
    out, _ = tar_run
    with tarfile.open(os.path.join(out, "00000000.tar")) as tar:
        syn = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".syn.json")]
    assert syn and all(len(s["syn_text"]) == 3 for s in syn)
    for s in syn:
        for caption in s["syn_text"]:
            assert "." not in caption and caption == caption.strip()
    assert len({c for s in syn for c in s["syn_text"]}) > 3  # sampled, not one greedy caption repeated
    assert postprocess_caption("<start_of_text>a dog on grass. second sentence<end_of_text>junk") == "a dog on grass"
    assert postprocess_caption("  a cat sitting  ") == "a cat sitting"


def test_seeded_nucleus_sampling_is_top_p_and_independent_of_the_batch(models):
    torch.manual_seed(0)
    scores = torch.randn(1, 50) * 3
    kept = torch.isfinite(transformers.TopPLogitsWarper(0.9)(None, scores.clone()))[0]
    # 20000 rows of the same scores with evenly spread uniforms: the draws trace the renormalised distribution.
    rows = 20000
    uniforms = ((torch.arange(rows, dtype=torch.float64) + 0.5) / rows).unsqueeze(1)
    drawn = SeededNucleusSampler(uniforms, top_p=0.9).draw(scores.expand(rows, -1), step=0)
    frequency = torch.bincount(drawn, minlength=50).double() / rows
    target = scores[0].masked_fill(~kept, float("-inf")).softmax(-1).double()
    assert set(drawn.unique().tolist()) == set(kept.nonzero().flatten().tolist())
    assert (frequency - target).abs().max() < 2.0 / rows

    captioner = load_captioner(models["ved"], max_tokens=12)
    images = [PIL.Image.open(io.BytesIO(image_bytes(i))) for i in range(3)]
    seeds = [[derive_seed(0, f"u{i}", f"caption/{c}") for c in range(4)] for i in range(3)]
    together = captioner.caption(images, seeds)
    assert [captioner.caption([images[i]], [seeds[i]])[0] for i in range(3)] == together


def test_config_records_teachers_captioner_augmentation_and_seed(tar_run, models):
    out, summary = tar_run
    config = json.load(open(os.path.join(out, "config.json")))
    assert [t["logit_scale"] for t in config["teachers"]] == SCALES
    assert [t["embedding_dim"] for t in config["teachers"]] == [16, 16, 24, 20, 32]
    assert [d["spec"] for d in config["teacher_details"]] == [models[name] for name in TEACHERS]
    assert [d["library"] for d in config["teacher_details"]] == ["open_clip"] * 2 + ["transformers"] * 3
    assert [d["image_size"] for d in config["teacher_details"]] == [[48, 48], [32, 32], [28, 28], [40, 40], [32, 32]]
    assert config["teacher_details"][4]["mean"] == [0.5, 0.5, 0.5]  # SigLIP's own normalisation
    assert config["captioner"]["spec"] == models["ved"] and config["captioner"]["top_p"] == 0.9
    assert config["num_captions"] == 3 and config["num_augmentations"] == 4 and config["seed"] == 11
    assert augment_replay.AugmentationSampler.from_config(config["augmentation"]).size == CROP
    assert config["storage_bytes_per_sample"] == (4 + 1 + 3) * 108 * 4
    assert config["num_samples"] == 7 and config["input"]["kind"] == "webdataset"  # written when complete
    from dataset_scripts import get_metadata

    meta = get_metadata(load_reinforced(out, joins=False))
    assert meta.embedding_dims == [16, 16, 24, 20, 32] and meta.logit_scales == SCALES
    card = open(os.path.join(out, "README.md")).read()
    assert "license: cc-by-4.0" in card and "| 3 | `" in card  # one row per teacher
    lines = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    assert [(r["shard"], r["num_uids"]) for r in lines] == [("00000000.tar", 5), ("00000001.tar", 2)]


def test_bad_inputs_are_counted_and_modes_converted(tar_run):
    out, summary = tar_run
    assert summary["skipped"] == {"empty_image": 1, "unreadable_image": 1, "missing_caption": 1}
    ds = load_reinforced(out)
    by_uid = {e["uid"]: e for e in ds}
    assert sorted(by_uid) == ["uida0", "uida1", "uida2", "uida3", "uida4", "uida8", "uida9"]
    # the 16-bit PNG is stored as an 8-bit RGB PNG (PIL's RGBA path would clip it), the others keep their bytes
    assert by_uid["uida4"]["image"]["path"].endswith(".png")
    assert augment_replay.load_image(by_uid["uida4"]["image"]).mode == "RGB"
    rgb = np.asarray(augment_replay.load_image(by_uid["uida4"]["image"]))
    assert rgb.std() > 10  # not clipped to white
    for uid, data in (("uida0", image_bytes(0)), ("uida2", image_bytes(2, "CMYK", "JPEG"))):
        assert by_uid[uid]["image"]["bytes"] == data
    assert by_uid["uida0"]["url"] == "https://example.com/a0.jpg"
    assert by_uid["uida0"]["text"] == "a red car on the street."


def test_prepare_image_modes():
    for mode, fmt in (("L", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("I;16", "PNG"), ("P", "GIF"), ("LA", "PNG")):
        prepared = prepare_image(image_bytes(5, mode, fmt))
        assert prepared.rgb.mode == "RGB"
        # what the loader's replay will decode from the stored bytes is exactly what the teachers saw
        assert np.array_equal(np.asarray(augment_replay.load_image(prepared.stored)), np.asarray(prepared.rgb))


def test_seeds_are_per_sample():
    assert derive_seed(0, "abc", "augment") == derive_seed(0, "abc", "augment")
    assert len({derive_seed(0, "abc", "augment"), derive_seed(1, "abc", "augment"), derive_seed(0, "abd", "augment"),
                derive_seed(0, "abc", "caption/0")}) == 4


class LinearTeacher:
    """A user teacher object (the TeacherModel interface): its own size and mean/std, outputs not normalised."""

    name, image_size, image_mean, image_std, logit_scale = "linear-20px", 20, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 30.0

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(3 * 20 * 20, 8, generator=generator)
        self.words = torch.randn(64, 8, generator=generator)

    def encode_image(self, pixel_values):
        return 3.0 * pixel_values.flatten(1) @ self.weight

    def encode_text(self, texts):
        return torch.stack([self.words[sum(map(ord, t)) % 64] for t in texts])


class RecordingCaptioner:
    """A user captioner object (the CaptionModel interface) that keeps the images it was shown."""

    name = "template-captioner"

    def __init__(self):
        self.seen = []

    def caption(self, images, seeds):
        self.seen += images
        return [[f" a picture of {s % 7}. with more words" for s in per_image] for per_image in seeds]


def test_teacher_and_captioner_objects(models, tmp_path):
    """The Python API takes objects: a model in memory, a TeacherModel object, a CaptionModel object; a damaged
    tar member drops its sample."""
    data = write_tar_dataset(str(tmp_path / "data"))
    damaged = os.path.join(data, "00002.tar")  # a shard cut short inside the image of its last sample
    with tarfile.open(damaged, "w") as tar:
        for i in range(3):
            add_member(tar, f"b{i}.png", image_bytes(20 + i, fmt="PNG"))
            add_member(tar, f"b{i}.txt", b"a damaged shard")
    with tarfile.open(damaged) as tar:
        cut = next(m for m in tar.getmembers() if m.name == "b2.png").offset_data + 100
    os.truncate(damaged, cut)
    folder = models["mobileclip"]
    in_memory = teacher_from_transformers(transformers.AutoModel.from_pretrained(folder),
                                          transformers.AutoProcessor.from_pretrained(folder), "mobileclip-in-memory")
    captioner = RecordingCaptioner()
    out = str(tmp_path / "out")
    summary = reinforce(data, out, [in_memory, LinearTeacher()], captioner, num_captions=2, num_augmentations=3,
                        crop_size=CROP, seed=5, progress=False, license="cc-by-4.0")
    assert summary["skipped"]["corrupt_tar"] == 1 and summary["total_uids"] == 9

    config = json.load(open(os.path.join(out, "config.json")))
    assert [(t["model"], t["embedding_dim"], t["logit_scale"]) for t in config["teachers"]] == [
        ("mobileclip-in-memory", 24, None), ("linear-20px", 8, 30.0)]
    assert [d["library"] for d in config["teacher_details"]] == ["transformers", "object"]
    assert config["captioner"]["model"] == "template-captioner" and config["captioner"]["library"] == "object"
    ds = load_reinforced(out)
    assert all(e["syn_text"] == [f"a picture of {derive_seed(5, e['uid'], f'caption/{c}') % 7}" for c in range(2)]
               for e in ds)
    # The captioner saw each un-augmented image, exactly as stored (no crop, no resize).
    stored = sorted(np.asarray(augment_replay.load_image(e["image"])).tobytes() for e in ds)
    assert sorted(np.asarray(img).tobytes() for img in captioner.seen) == stored
    worst = _max_block_error(ds, config, [load_teacher(in_memory), load_teacher(LinearTeacher())])
    assert worst < 1e-5, worst


def _write_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [s for s in awkward_samples() if s[0] in ("a0", "a1", "a8", "a5")]
    table = pa.table({"image": [{"bytes": d, "path": f"{k}.{e}"} for k, d, _, e in rows],
                      "caption": [t for _, _, t, _ in rows]})
    pq.write_table(table, path)
    return rows


def test_parquet_imagefolder_bf16_and_pipeline_captioner(models, tmp_path):
    rows = _write_parquet(tmp_path / "data.parquet")
    out = str(tmp_path / "out_parquet")
    summary = reinforce(str(tmp_path / "data.parquet"), out, samples_per_shard=2,
                        **_common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None,
                                  captioner=models["coca"], num_captions=2, license=None))
    assert summary["skipped"] == {"empty_image": 1}
    ds = load_reinforced(out, joins=False)
    assert len(ds) == 3 and all(len(e["syn_text"]) == 2 for e in ds)
    assert "card_note" in summary and not os.path.exists(os.path.join(out, "README.md"))

    folder = tmp_path / "imagefolder"
    folder.mkdir()
    meta = []
    for key, data, text, ext in rows:
        if data:
            (folder / f"{key}.{ext}").write_bytes(data)
            meta.append({"file_name": f"{key}.{ext}", "text": text})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    out2 = str(tmp_path / "out_folder")
    blip = transformers.pipeline("image-text-to-text", model=models["blip"])
    reinforce(str(folder), out2, **_common(models, teachers=[models["open_clip_small"], models["siglip"]],
                                           teacher_logit_scales=None, captioner=blip, num_captions=2,
                                           embedding_format="pth.gz", dtype="bf16"))
    config = json.load(open(os.path.join(out2, "config.json")))
    assert config["captioner"]["model"] == models["blip"] and config["compute_dtype"] == "bf16"
    ds2 = load_reinforced(out2)
    assert len(ds2) == 3 and all(len(e["syn_text"]) == 2 for e in ds2)
    assert np.asarray(ds2[0]["text_emb"]).shape == (3, 48)
    # bf16 forwards and bf16 storage (8-bit mantissa): within bf16 rounding of the fp32 teachers
    teachers = [load_teacher(models["open_clip_small"]), load_teacher(models["siglip"])]
    worst = _max_block_error(ds2, config, teachers, norm_atol=1e-2)
    print(f"bf16: max |stored - fp32 replayed| = {worst:.3g}")
    assert worst < 3e-2, worst


def test_refuses_bad_teachers(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"))
    with pytest.raises(ValueError, match="larger than the augmentation crop size 48x48.*--crop-size 64"):
        reinforce(data, str(tmp_path / "out"), **_common(models, teachers=[models["open_clip_large"]],
                                                         teacher_logit_scales=None))
    bare = str(tmp_path / "model_only")  # save_pretrained of the model without its processor
    transformers.AutoModel.from_pretrained(models["mobileclip"]).save_pretrained(bare)
    with pytest.raises(ValueError, match="no processor found.*processor.save_pretrained"):
        load_teacher(bare)
    with pytest.raises(ValueError, match="2 values for 1 teachers"):
        reinforce(data, str(tmp_path / "out"), **_common(models, teachers=[models["open_clip_small"]],
                                                         teacher_logit_scales=[1.0, 2.0]))


def test_refuses_to_mix_configs(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    kwargs = _common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None, captioner=None,
                     max_samples=7)
    reinforce(data, out, **kwargs)
    before = shard_bytes(out)
    assert len(before) == 2  # max_samples reaches into the second tar
    again = reinforce(data, out, **dict(kwargs, batch_size=1))  # run-only knob: allowed, nothing to redo
    assert again["done_before"] == 2 and again["processed_shards"] == [] and shard_bytes(out) == before
    with pytest.raises(ValueError, match=r"different configuration \(seed: 11 -> 12\)"):
        reinforce(data, out, **dict(kwargs, seed=12))
    with pytest.raises(ValueError, match="teachers: .*refusing to mix"):
        reinforce(data, out, **dict(kwargs, teacher_logit_scales=[50.0]))
    os.remove(os.path.join(out, "config.json"))
    with pytest.raises(ValueError, match="no config.json.*refusing to mix"):
        reinforce(data, out, **kwargs)


def _write_tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for key, data, text in samples:
            add_member(tar, f"{key}.jpg", data)
            add_member(tar, f"{key}.txt", text.encode())
            add_member(tar, f"{key}.json", json.dumps({"uid": f"uid{key}"}).encode())


def test_refuses_a_changed_input_set_naming_the_inputs(models, tmp_path):
    """A tar removed and another added keeps the shard count: the removed input's shard must not be kept, nor the
    new input left unread. The rerun is refused; with the named shards deleted it resumes like a fresh run."""
    data = write_tar_dataset(str(tmp_path / "data"))  # 00000.tar (a0..a4), 00001.tar (a5..a9)
    out = str(tmp_path / "out")
    kwargs = _common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None, captioner=None)
    reinforce(data, out, **kwargs)
    before = shard_bytes(out)
    os.remove(os.path.join(data, "00001.tar"))
    _write_tar(os.path.join(data, "00002.tar"), [(f"b{k}", image_bytes(20 + k), f"new photo {k}") for k in range(3)])
    with pytest.raises(ValueError, match=r"inputs of 1 finished shard\(s\) changed.* 00000001\.tar was made from "
                                         r"\{\"bytes\": \d+, \"path\": \"00001\.tar\".*is now \{\"bytes\": \d+, "
                                         r"\"path\": \"00002\.tar\".*delete those shards"):
        reinforce(data, out, **kwargs)
    assert shard_bytes(out) == before
    # The same file name with other content (same count of samples) is a changed input too.
    first = os.path.join(data, "00000.tar")
    original = open(first, "rb").read()
    _write_tar(first, [(f"c{k}", image_bytes(30 + k), f"other photo {k}") for k in range(5)])
    with pytest.raises(ValueError, match=r"inputs of 2 finished shard\(s\) changed.* 00000000\.tar was made from "):
        reinforce(data, out, **kwargs)
    open(first, "wb").write(original)

    os.remove(os.path.join(out, "00000001.tar"))
    os.remove(os.path.join(out, "_manifest", "00000001.json"))
    resumed = reinforce(data, out, **kwargs)
    assert resumed["processed_shards"] == ["00000001.tar"] and resumed["done_before"] == 1
    fresh = str(tmp_path / "fresh")
    reinforce(data, fresh, **kwargs)
    assert shard_bytes(out) == shard_bytes(fresh) and shard_bytes(out)["00000001.tar"] != before["00000001.tar"]
    lines = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    assert [r["input"]["path"] for r in lines] == ["00000.tar", "00002.tar"]
    assert open(os.path.join(out, "manifest.jsonl")).read() == open(os.path.join(fresh, "manifest.jsonl")).read()


def test_hub_dataset_in_hub_dataset_out(models, fake_hub, tmp_path):
    from huggingface_hub import HfApi

    (tmp_path / "src").mkdir()
    _write_parquet(tmp_path / "src" / "train.parquet")
    HfApi().create_repo("org/pairs", repo_type="dataset")
    HfApi().upload_folder(repo_id="org/pairs", repo_type="dataset", folder_path=str(tmp_path / "src"))
    out = str(tmp_path / "out")
    summary = reinforce("org/pairs", out, **_common(models, teachers=[models["open_clip_small"]],
                                                    teacher_logit_scales=None, push_to_hub="org/my-dr",
                                                    cache_dir=str(tmp_path / "cache")))
    assert summary["complete"] and summary["total_uids"] == 3
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["source_dataset"] == "org/pairs" and config["input"]["kind"] == "hub"
    assert set(fake_hub.files("org/my-dr", "dataset")) == {"README.md", "config.json", "manifest.jsonl",
                                                          "00000000.tar"}


def test_captioner_none_output_loads_streaming_and_map_style(models, tmp_path):
    """--captioner none: empty syn_text lists, declared by config.json's num_captions 0; both loaders yield every
    written sample, and the training views take the ground-truth caption (other caption modes refuse clearly)."""
    import random
    import re
    from argparse import Namespace

    from datasets import load_dataset

    from modeling_mobileclip.training.data_sources import check_caption_mode
    from modeling_mobileclip.training.views import collate_views, training_view

    data = write_tar_dataset(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    reinforce(data, out, **_common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None,
                                   captioner=None))
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["captioner"] is None and config["num_captions"] == 0
    with open(os.path.join(out, "README.md")) as f:
        assert "- Captioner: none" in f.read()
    shards = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
    expected = ["uida0", "uida1", "uida2", "uida3", "uida4", "uida8", "uida9"]
    dataset_scripts.reset_datacompdr_stats()
    streamed = load_dataset("datacompdr", data_files=shards, split="train", streaming=True, image_dir=shards,
                            captions=shards)
    assert sorted(e["uid"] for e in streamed) == expected
    mapped = load_dataset("datacompdr", data_files=shards, split="train", cache_dir=str(tmp_path / "hf"),
                          image_dir=shards, captions=shards)
    assert sorted(mapped["uid"]) == expected and dataset_scripts.datacompdr_stats()["skipped"] == {}
    assert all(e["syn_text"] == [] and np.asarray(e["text_emb"]).shape[0] == 1 for e in mapped)
    assert dataset_scripts.get_metadata(mapped).num_captions == 0

    for mode in ("gt+syn", "mix"):
        needs = rf"--caption-mode {re.escape(mode)} needs synthetic captions.*--caption-mode gt"
        with pytest.raises(ValueError, match=needs):
            check_caption_mode(Namespace(caption_mode=mode), mapped)
    check_caption_mode(Namespace(caption_mode="gt"), streamed)
    transform = augment_replay.ReplayTransform(size=CROP)
    views = [training_view(mapped[i], transform, random.Random(i)) for i in range(2)]
    batch = collate_views(views, lambda texts: texts, "gt", 0.5)
    assert batch["input_ids"] == [mapped[0]["text"], mapped[1]["text"]]
    np.testing.assert_array_equal(batch["teacher_text_emb"][0].numpy(), np.asarray(mapped[0]["text_emb"][0]))
    with pytest.raises(ValueError, match="empty syn_text; pass --caption-mode gt"):
        collate_views(views, lambda texts: texts, "gt+syn", 0.5)
