"""The reinforcement tool (issue #6): real inputs in, DataCompDR shards out, read back with the DataCompDR loader.

Tiny random teachers / captioners are saved to local folders and loaded through the same path as Hub models.
"""

import glob
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import PIL.Image
import pytest
import torch

import dataset_scripts  # noqa: F401  (registers "datacompdr")
from dataset_scripts import augment_replay
from dataset_scripts.captioners import postprocess_caption
from dataset_scripts.reinforce import derive_seed, main, prepare_image, reinforce
from dataset_scripts.teachers import load_teacher
from dataset_scripts.tiny_reinforce_models import build_tiny_models

CROP = 48
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(str(tmp_path_factory.mktemp("models")), crop_size=CROP)


def _image_bytes(seed: int, mode: str = "RGB", fmt: str = "JPEG", size=(61, 45)) -> bytes:
    rng = np.random.default_rng(seed)
    base = PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        img = PIL.Image.fromarray((rng.integers(0, 65536, (size[1], size[0]))).astype(np.uint16))
    elif mode != "RGB":
        img = base.convert(mode)
    else:
        img = base
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


# (uid, image bytes or None, caption or None, extension) - the awkward cases the issue lists are mixed in.
def _samples():
    return [
        ("a0", _image_bytes(0), "a red car on the street.", "jpg"),
        ("a1", _image_bytes(1, "L", "PNG"), "a grey picture", "png"),
        ("a2", _image_bytes(2, "CMYK", "JPEG"), "a cmyk photo", "jpg"),
        ("a3", _image_bytes(3, "RGBA", "PNG", size=(30, 80)), "a transparent image", "png"),
        ("a4", _image_bytes(4, "I;16", "PNG"), "a 16-bit image", "png"),
        ("a5", b"", "zero bytes", "jpg"),
        ("a6", b"not an image at all", "garbage", "jpg"),
        ("a7", _image_bytes(7, "P", "PNG"), None, "png"),  # missing caption
        ("a8", _image_bytes(8, fmt="WEBP"), "a webp image", "webp"),
        ("a9", _image_bytes(9), "another photo", "jpg"),
    ]


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar_dataset(root, per_shard=5):
    os.makedirs(root, exist_ok=True)
    samples = _samples()
    for shard, start in enumerate(range(0, len(samples), per_shard)):
        with tarfile.open(os.path.join(root, f"{shard:05d}.tar"), "w") as tar:
            for key, data, text, ext in samples[start:start + per_shard]:
                _add(tar, f"{key}.{ext}", data)
                if text is not None:
                    _add(tar, f"{key}.txt", text.encode())
                _add(tar, f"{key}.json", json.dumps({"uid": f"uid{key}"}).encode())
                _add(tar, f"{key}.url.txt", f"https://example.com/{key}.{ext}".encode())
    return root


def _common(models, **overrides):
    kwargs = dict(teachers=[models["open_clip_at_crop"], models["open_clip_small"], models["mobileclip"]],
                  teacher_logit_scales=[100.0, 70.0, 50.0], captioner=models["ved"], num_captions=3,
                  num_augmentations=4, crop_size=CROP, seed=11, batch_size=3, teacher_batch_size=5,
                  max_caption_tokens=12, progress=False, license="cc-by-4.0")
    kwargs.update(overrides)
    return kwargs


def _load(out, joins=True):
    from datasets import load_dataset

    shards = sorted(glob.glob(os.path.join(out, "*.tar")))
    extra = dict(image_dir=shards, captions=shards) if joins else {}
    return load_dataset("datacompdr", data_files=shards, split="train", cache_dir=os.path.join(out, "..", "hf"),
                        **extra)


def _shard_bytes(out):
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(out, "*.tar")))}


@pytest.fixture(scope="module")
def tar_run(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("tar_run")
    data = write_tar_dataset(str(root / "data"))
    out = str(root / "out")
    summary = reinforce(data, out, **_common(models))
    return out, summary


def test_replayed_augmentation_through_each_teacher_matches_stored_block(tar_run, models):
    out, _ = tar_run
    ds = _load(out)
    assert len(ds) == 7  # 10 inputs - zero-byte - garbage - missing caption (see test_bad_inputs_are_counted...)
    config = json.load(open(os.path.join(out, "config.json")))
    teachers = [load_teacher(spec) for spec in (models["open_clip_at_crop"], models["open_clip_small"],
                                                models["mobileclip"])]
    bounds = np.cumsum([0] + [t["embedding_dim"] for t in config["teachers"]])
    worst = 0.0
    for example in ds:
        image = augment_replay.load_image(example["image"])
        assert example["image_emb"].__len__() == 4 and len(example["param_aug"]) == 4
        for k, teacher in enumerate(teachers):
            size = config["teacher_details"][k]["image_size"]
            views = []
            for entry in example["param_aug"]:
                view = augment_replay.replay_pil(image, entry, CROP, "bicubic")
                if view.size != (size[1], size[0]):
                    view = view.resize((size[1], size[0]), PIL.Image.Resampling.BICUBIC)
                views.append(augment_replay.to_normalized_tensor(view, teacher.mean, teacher.std))
            expected = teacher.encode_image(torch.stack(views)).numpy()
            stored = np.asarray(example["image_emb"], dtype=np.float32)[:, bounds[k]:bounds[k + 1]]
            worst = max(worst, float(np.abs(stored - expected).max()))
            np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
            # Text rows: GT caption then the synthetic captions, same teacher.
            texts = [example["text"]] + example["syn_text"]
            np.testing.assert_allclose(np.asarray(example["text_emb"])[:, bounds[k]:bounds[k + 1]],
                                       teacher.encode_text(texts).numpy(), atol=1e-5)
    # Same pixels, same weights: only float rounding from a different batch composition may differ.
    print(f"max |stored - replayed| = {worst:.3g}")
    assert worst < 1e-5, worst


def test_captions_count_and_postprocessing(tar_run):
    out, _ = tar_run
    with tarfile.open(os.path.join(out, "00000000.tar")) as tar:
        syn = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".syn.json")]
    assert syn and all(len(s["syn_text"]) == 3 for s in syn)
    for s in syn:
        for caption in s["syn_text"]:
            assert "." not in caption and caption == caption.strip()
    assert postprocess_caption("<start_of_text>a dog on grass. second sentence<end_of_text>junk") == "a dog on grass"
    assert postprocess_caption("  a cat sitting  ") == "a cat sitting"


def test_config_records_teachers_captioner_augmentation_and_seed(tar_run, models):
    out, summary = tar_run
    config = json.load(open(os.path.join(out, "config.json")))
    assert [t["logit_scale"] for t in config["teachers"]] == [100.0, 70.0, 50.0]
    assert [t["embedding_dim"] for t in config["teachers"]] == [16, 16, 24]
    assert [d["spec"] for d in config["teacher_details"]] == [models["open_clip_at_crop"], models["open_clip_small"],
                                                             models["mobileclip"]]
    assert [d["image_size"] for d in config["teacher_details"]] == [[48, 48], [32, 32], [28, 28]]
    assert config["captioner"]["spec"] == models["ved"] and config["captioner"]["top_p"] == 0.9
    assert config["num_augmentations"] == 4 and config["seed"] == 11
    assert augment_replay.AugmentationSampler.from_config(config["augmentation"]).size == CROP
    assert config["storage_bytes_per_sample"] == (4 + 1 + 3) * 56 * 4
    from dataset_scripts import get_metadata

    meta = get_metadata(_load(out, joins=False))
    assert meta.embedding_dims == [16, 16, 24] and meta.logit_scales == [100.0, 70.0, 50.0]
    assert os.path.exists(os.path.join(out, "README.md")) and "cc-by-4.0" in open(os.path.join(out, "README.md")).read()
    lines = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    assert [r["shard"] for r in lines] == ["00000000.tar", "00000001.tar"]


def test_bad_inputs_are_counted_and_modes_converted(tar_run):
    out, summary = tar_run
    assert summary["skipped"] == {"empty_image": 1, "unreadable_image": 1, "missing_caption": 1}
    ds = _load(out)
    by_uid = {e["uid"]: e for e in ds}
    assert sorted(by_uid) == ["uida0", "uida1", "uida2", "uida3", "uida4", "uida8", "uida9"]
    # the 16-bit PNG is stored as an 8-bit RGB PNG (PIL's RGBA path would clip it), the others keep their bytes
    assert by_uid["uida4"]["image"]["path"].endswith(".png")
    assert augment_replay.load_image(by_uid["uida4"]["image"]).mode == "RGB"
    rgb = np.asarray(augment_replay.load_image(by_uid["uida4"]["image"]))
    assert rgb.std() > 10  # not clipped to white
    for uid, data in (("uida0", _image_bytes(0)), ("uida2", _image_bytes(2, "CMYK", "JPEG"))):
        assert by_uid[uid]["image"]["bytes"] == data
    assert by_uid["uida0"]["url"] == "https://example.com/a0.jpg"
    assert by_uid["uida0"]["text"] == "a red car on the street."


def test_prepare_image_modes():
    for mode, fmt in (("L", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("I;16", "PNG"), ("P", "GIF"), ("LA", "PNG")):
        prepared = prepare_image(_image_bytes(5, mode, fmt))
        assert prepared.rgb.mode == "RGB"
        # what the loader's replay will decode from the stored bytes is exactly what the teachers saw
        assert np.array_equal(np.asarray(augment_replay.load_image(prepared.stored)), np.asarray(prepared.rgb))


def test_seeds_are_per_sample():
    assert derive_seed(0, "abc", "augment") == derive_seed(0, "abc", "augment")
    assert len({derive_seed(0, "abc", "augment"), derive_seed(1, "abc", "augment"), derive_seed(0, "abd", "augment"),
                derive_seed(0, "abc", "caption/0")}) == 4


def test_parquet_and_imagefolder_inputs(models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [s for s in _samples() if s[0] in ("a0", "a1", "a8", "a5")]
    table = pa.table({"image": [{"bytes": d, "path": f"{k}.{e}"} for k, d, _, e in rows],
                      "caption": [t for _, _, t, _ in rows]})
    pq.write_table(table, tmp_path / "data.parquet")
    out = str(tmp_path / "out_parquet")
    summary = reinforce(str(tmp_path / "data.parquet"), out, samples_per_shard=2,
                        **_common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None,
                                  captioner=models["coca"], num_captions=2, license=None))
    assert summary["skipped"] == {"empty_image": 1}
    ds = _load(out, joins=False)
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
    reinforce(str(folder), out2, **_common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None,
                                           captioner=None, embedding_format="pth.gz"))
    ds2 = _load(out2, joins=False)
    assert len(ds2) == 3 and all(e["syn_text"] == [] for e in ds2)
    assert np.asarray(ds2[0]["text_emb"]).shape == (1, 16)


def test_refuses_teacher_larger_than_crop(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"))
    with pytest.raises(ValueError, match="larger than the augmentation crop size"):
        reinforce(data, str(tmp_path / "out"), **_common(models, teachers=[models["open_clip_large"]],
                                                         teacher_logit_scales=None))


def test_refuses_to_mix_configs(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    kwargs = _common(models, teachers=[models["open_clip_small"]], teacher_logit_scales=None, captioner=None,
                     max_samples=2)
    reinforce(data, out, **kwargs)
    before = _shard_bytes(out)
    reinforce(data, out, **dict(kwargs, batch_size=1))  # run-only knob: allowed, nothing to redo
    assert _shard_bytes(out) == before
    with pytest.raises(ValueError, match="different configuration.*seed"):
        reinforce(data, out, **dict(kwargs, seed=12))


def _cli(data, out, models, *extra):
    return [sys.executable, "-m", "dataset_scripts.reinforce", "--dataset", data, "--output", out,
            "--teachers", f"{models['open_clip_at_crop']},{models['open_clip_small']}",
            "--teacher-logit-scales", "100,100", "--captioner", models["ved"], "--num-captions", "2",
            "--num-augmentations", "3", "--crop-size", str(CROP), "--seed", "3", "--batch-size", "2",
            "--max-caption-tokens", "10", "--no-progress", "--device", "cpu", *extra]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO, OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_resume_after_kill_and_two_processes_match_one(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"), per_shard=2)  # 5 shards
    reference = str(tmp_path / "ref")
    subprocess.run(_cli(data, reference, models), check=True, env=_env(), cwd=REPO, capture_output=True)
    expected = _shard_bytes(reference)
    assert len(expected) == 5

    # Kill a run once it has finished at least one shard (a real SIGKILL, mid-shard most likely), then resume.
    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(_cli(data, killed, models), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not glob.glob(os.path.join(killed, "_manifest", "*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(glob.glob(os.path.join(killed, "_manifest", "*.json")))
    assert 1 <= done_before < 5
    result = subprocess.run(_cli(data, killed, models), check=True, env=_env(), cwd=REPO, capture_output=True,
                            text=True)
    summary = json.loads(result.stdout.strip().splitlines()[-1][len("reinforce: "):])
    assert summary["done_before"] == done_before and len(summary["processed_shards"]) == 5 - done_before
    assert _shard_bytes(killed) == expected
    assert not glob.glob(os.path.join(killed, "*.partial"))

    two = str(tmp_path / "two")
    cmd = _cli(data, two, models)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
              "dataset_scripts.reinforce"] + cmd[3:]
    subprocess.run(launch, check=True, env=_env(), cwd=REPO, capture_output=True)
    assert _shard_bytes(two) == expected
    assert open(os.path.join(two, "manifest.jsonl")).read() == open(os.path.join(reference, "manifest.jsonl")).read()


def test_cli_smoke(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"))
    summary = main(_cli(data, str(tmp_path / "out"), models, "--max-samples", "3", "--embedding-format",
                        "pth.gz")[3:])
    assert summary["complete"] and summary["total_uids"] == 3
    ds = _load(str(tmp_path / "out"), joins=False)
    assert len(ds) == 3 and np.asarray(ds[0]["image_emb"]).shape == (3, 32)
    digest = hashlib.sha256(open(os.path.join(str(tmp_path / "out"), "00000000.tar"), "rb").read()).hexdigest()
    assert json.loads(open(os.path.join(str(tmp_path / "out"), "manifest.jsonl")).readline())["sha256"] == digest
