"""Hub cards, the fake Hub, and pushing: metadata for every variant, licence rules, widget outputs, cards of trained
models, dataset cards that make `load_dataset(<repo>)` work (also on the reinforcement tool's real output), retries,
permanent errors, background checkpoint pushes, and a converted model pushed and loaded back as remote code."""

import ast
import copy
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import randomize_statistics, tiny_config
from fake_hub import FakeHub, fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from PIL import Image
from transformers import AutoModel, pipeline

from hub_cards import generate_dataset_card, generate_model_card, validate_card
from hub_cards.common import APPLE_ATTRIBUTION_NOTICE, CODE_LICENSE
from hub_cards.model_card import APPLE_TRAINING_DATASETS, MODEL_TAGS
from modeling_mobileclip import PRETRAINED_TAGS, MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.hub import CardRejectedError, HubPushError, push_folder_to_hub, push_model_to_hub

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_HUB_PATH = Path(__file__).with_name("fake_hub.py")
AGREEMENT = b"Placeholder for the licence agreement's text (tests only).\n"
AMLR_WARNING = "ignore:The weights are under Apple's AMLR licence"


def front_matter(text: str) -> dict:
    match = re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL)
    assert match is not None, text[:200]
    return yaml.safe_load(match.group(1))


def family(variant: str) -> str:
    return "mobileclip2" if variant.startswith("mobileclip2") else "mobileclip"


def local_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The models here are tiny: thread start-up and synchronisation would cost more than the maths (and much more on
    a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch):
    """The push helpers keep a temporary folder when a push fails (so nothing is lost): keep them in tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


@pytest.fixture
def instant_hub_retries(monkeypatch):
    """huggingface_hub retries a failed commit POST itself, sleeping 1, 2, 4... s: record the sleeps instead."""
    from huggingface_hub.utils import _http

    sleeps = []
    monkeypatch.setattr(_http.time, "sleep", sleeps.append)
    return sleeps


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MobileCLIPModel(tiny_config("mci-s0text")).eval()


@pytest.fixture(scope="module")
def tiny_processor(tokenizer):
    base = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    image_processor = base.image_processor.__class__(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    return MobileCLIPProcessor(image_processor, tokenizer)


@pytest.fixture(scope="module")
def agreement_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("licence") / "LICENSE_MODELS"
    path.write_bytes(AGREEMENT)
    return path


@pytest.fixture(scope="module")
def variant_cards(tiny_model, tokenizer, agreement_file):
    """One card per pretrained tag, from the tiny FastViT model run through that variant's real processor."""
    return {variant: generate_model_card(tiny_model, variant, repo_id=f"org/{variant}", license_file=agreement_file,
                                         processor=MobileCLIPProcessor.from_variant(variant, tokenizer=tokenizer))
            for variant in PRETRAINED_TAGS}


def own_card(model, processor, repo_id="org/tiny", **kwargs):
    """A card for weights that are not Apple's (so no AMLR terms)."""
    return generate_model_card(model, processor=processor, repo_id=repo_id, converted_from_apple=False,
                               license="apache-2.0", **kwargs)


# ---------------------------------------------------------------- model card metadata and body


@pytest.mark.parametrize("variant", list(PRETRAINED_TAGS))
def test_model_card_metadata_for_every_variant(variant_cards, variant):
    card, tag = variant_cards[variant], PRETRAINED_TAGS[variant]
    meta = front_matter(str(card))
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "zero-shot-image-classification"
    assert set(MODEL_TAGS) <= set(meta["tags"])
    assert (meta["license"], meta["license_name"], meta["license_link"]) == (
        "other", "apple-amlr", tag["license_link"])
    assert meta["datasets"] == APPLE_TRAINING_DATASETS[family(variant)]
    assert "base_model" not in meta and "model-index" not in meta
    assert len(meta["widget"]) == 3
    for example in meta["widget"]:
        assert set(example) == {"src", "candidate_labels", "example_title", "output"}
        labels = [label.strip() for label in example["candidate_labels"].split(",")]
        scores = [item["score"] for item in example["output"]]
        assert sorted(item["label"] for item in example["output"]) == sorted(labels)
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=5e-4)
        # the browser fetches src: the resolve URL of the image stored in the repo
        prefix = f"https://huggingface.co/org/{variant}/resolve/main/"
        assert example["src"].startswith(prefix + "widget/") and example["src"][len(prefix):] in card.assets
        assert Image.open(io.BytesIO(card.assets[example["src"][len(prefix):]])).size == (64, 64)
    assert card.assets["LICENSE"] == AGREEMENT
    # huggingface_hub reads back exactly what was written
    assert ModelCard(str(card)).data.to_dict() == meta


@pytest.mark.parametrize("variant", list(PRETRAINED_TAGS))
def test_model_card_body_renders_the_variant(variant_cards, variant):
    body, tag = variant_cards[variant].text, PRETRAINED_TAGS[variant]
    results = tag["results"]
    row = (f"| {results['seen_samples_billion']} | {' + '.join(f'{v:g}' for v in results['params_m_image_text'])} | "
           f"{' + '.join(f'{v:g}' for v in results['latency_ms_image_text'])} | "
           f"{results['imagenet_zeroshot_top1']:.1f} | {results['avg_38_datasets']:.1f} |")
    assert row in body
    assert {"mobileclip": "arXiv:2311.17049", "mobileclip2": "arXiv:2508.20691"}[family(variant)] in body
    assert "https://github.com/apple/ml-mobileclip" in body
    year = {"mobileclip": "2024", "mobileclip2": "2025"}[family(variant)]
    assert APPLE_ATTRIBUTION_NOTICE in body and f"Copyright (C) {year} Apple Inc. All Rights Reserved." in body
    assert f"Model Derivative of {tag['hub_id']}" in body and "**Modified:** converted" in body
    assert tag["license_link"] in body and "A copy of the agreement is in [`LICENSE`](LICENSE)." in body
    assert f"licensed under\n{CODE_LICENSE}" in body or f"licensed under {CODE_LICENSE}" in body
    assert f"mean {[round(v, 8) for v in tag['image_mean']]}, std {[round(v, 8) for v in tag['image_std']]}" in body
    assert f'repo = "org/{variant}"' in body
    assert 'AutoModel.from_pretrained(repo, trust_remote_code=True)' in body
    assert 'pipeline("zero-shot-image-classification", model=repo, trust_remote_code=True)' in body
    assert "@inproceedings{vasu2024mobileclip," in body and "@article{faghri2025mobileclip2," in body


def test_code_licence_is_the_projects():
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license"] == CODE_LICENSE


def test_widget_output_is_what_the_pipeline_returns(tiny_model, tiny_processor, tmp_path):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_processor.save_pretrained(model_dir)
    card = generate_model_card(model_dir, converted_from_apple=False, license="apache-2.0")  # repo not known yet
    classifier = pipeline("zero-shot-image-classification", model=str(model_dir))
    for example in card.data.widget:
        image_path = model_dir / example["src"]  # a repo-relative src, written next to the model by the generator
        assert image_path.read_bytes() == card.assets[example["src"]]
        result = classifier(Image.open(image_path), candidate_labels=example["candidate_labels"].split(", "))
        assert [r["label"] for r in result] == [o["label"] for o in example["output"]]
        assert [r["score"] for r in result] == pytest.approx([o["score"] for o in example["output"]], abs=1e-4)


def test_custom_widget_images(tiny_model, tiny_processor):
    image = Image.new("RGB", (40, 30), (0, 200, 0))
    card = own_card(tiny_model, tiny_processor, widget_images=[
        {"image": image, "candidate_labels": ["grass", "sky"], "example_title": "Green field"}])
    (example,) = card.data.widget
    assert example["src"].endswith("/org/tiny/resolve/main/widget/green-field.png")
    assert example["candidate_labels"] == "grass, sky"
    assert Image.open(io.BytesIO(card.assets["widget/green-field.png"])).size == (40, 30)
    with pytest.raises(ValueError, match=r"widget_images\[0\]\['candidate_labels'\].*at least two"):
        own_card(tiny_model, tiny_processor, widget_images=[{"image": image, "candidate_labels": "grass",
                                                             "example_title": "x"}])


def test_eval_results_become_model_index(tiny_model, tokenizer, agreement_file):
    row = {"key": "imagenet1k", "dataset": "ImageNet 1k",
           "metrics": {"acc1": 0.6712, "acc5": 0.9, "main_metric": 0.6712}}
    extra = EvalResult(task_type="zero-shot-image-classification", dataset_type="cifar10", dataset_name="CIFAR-10",
                       metric_type="acc1", metric_value=0.88, dataset_split="test")
    card = generate_model_card(tiny_model, "mobileclip-s0", repo_id="org/s0-run", license_file=agreement_file,
                               processor=MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer),
                               eval_results=[row, extra])
    (entry,) = front_matter(str(card))["model-index"]
    assert entry["name"] == "s0-run"
    parsed = ModelCardData(**front_matter(str(card))).eval_results
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in parsed] == [
        ("imagenet1k", "acc1", 0.6712), ("imagenet1k", "acc5", 0.9), ("cifar10", "acc1", 0.88)]
    assert "| ImageNet 1k | - | acc1 | 0.6712 |" in card.text and "| CIFAR-10 | test | acc1 | 0.8800 |" in card.text
    with pytest.raises(ValueError, match=r"eval_results\[0\] is \{'top1': 0.5\}; expected"):
        generate_model_card(tiny_model, "mobileclip-s0", eval_results=[{"top1": 0.5}], license_file=agreement_file,
                            processor=MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer))


# ---------------------------------------------------------------- trained models and licence rules


def test_card_of_a_fine_tune_trained_with_train_accelerate(tiny_model, tokenizer, agreement_file):
    """What train_accelerate.py has at the end of a run: the base model, its held-out `evaluate()` dict, the teachers
    from the reinforced data's config and its arguments."""
    processor = MobileCLIPProcessor.from_variant("mobileclip2-s0", tokenizer=tokenizer)
    teachers = [{"model": "ViT-L-14", "pretrained": "datacomp_xl_s13b_b90k", "embedding_dim": 768,
                 "logit_scale": 100.0},
                {"model": "ViT-L-14", "pretrained": "openai", "embedding_dim": 768, "logit_scale": 100.0}]
    card = generate_model_card(
        tiny_model, "mobileclip2-s0", processor=processor, repo_id="org/ft", converted_from_apple=False,
        base_model="apple/MobileCLIP2-S0", datasets="org/my-data", license_file=agreement_file,
        eval_results=[{"dataset": "org/my-data (held-out shards)", "split": "validation",
                       "metrics": {"eval/image_to_text_r1": 0.4375, "eval/text_to_image_r1": 0.5}}],
        training={"data": ["org/my-data"], "teachers": teachers,
                  "hyperparameters": {"max_steps": 3000, "learning_rate": 5e-4, "global_batch_size": 1024},
                  "command": "accelerate launch train_accelerate.py --model apple/MobileCLIP2-S0 ..."})
    meta = front_matter(str(card))
    assert meta["base_model"] == "apple/MobileCLIP2-S0" and meta["datasets"] == ["org/my-data"]
    assert (meta["license"], meta["license_name"]) == ("other", "apple-amlr")
    parsed = ModelCardData(**meta).eval_results
    assert [(r.task_type, r.dataset_type, r.dataset_split, r.metric_type, r.metric_value) for r in parsed] == [
        ("zero-shot-image-text-retrieval", "org-my-data-held-out-shards", "validation", "image_to_text_r1", 0.4375),
        ("zero-shot-image-text-retrieval", "org-my-data-held-out-shards", "validation", "text_to_image_r1", 0.5)]
    body = card.text
    assert "## Training" in body and "Training data: `org/my-data`." in body
    assert "| 0 | `ViT-L-14` | datacomp_xl_s13b_b90k | 768 | 0:768 | 100.0 |" in body
    assert "| 1 | `ViT-L-14` | openai | 768 | 768:1536 | 100.0 |" in body
    assert "| `learning_rate` | 0.0005 |" in body and "accelerate launch train_accelerate.py" in body
    assert "| org/my-data (held-out shards) | validation | image_to_text_r1 | 0.4375 |" in body
    assert "Copyright (C) 2025 Apple Inc. All Rights Reserved." in body and APPLE_ATTRIBUTION_NOTICE in body
    assert "**Modified:** fine-tuned from apple/MobileCLIP2-S0 on org/my-data." in body
    assert "**not** for this fine-tuned checkpoint" in body
    with pytest.raises(ValueError, match="derivatives stay under apple-amlr"):
        generate_model_card(tiny_model, "mobileclip2-s0", processor=processor, converted_from_apple=False,
                            base_model="apple/MobileCLIP2-S0", license="mit")
    with pytest.raises(ValueError, match=r"training=.*unknown keys: \['epochs'\]"):
        own_card(tiny_model, processor, training={"epochs": 3})
    with pytest.raises(ValueError, match=r"training\['teachers'\]\[0\] is .*positive int 'embedding_dim'"):
        own_card(tiny_model, processor, training={"teachers": [{"model": "ViT-L-14"}]})


def test_licence_is_never_defaulted(tiny_model, tiny_processor, tokenizer):
    with pytest.raises(ValueError, match=r"No licence for these weights.*Pass license="):
        generate_model_card(tiny_model, processor=tiny_processor, converted_from_apple=False)
    with pytest.raises(ValueError, match=r"No licence.*base_model='org/other'"):
        generate_model_card(tiny_model, processor=tiny_processor, converted_from_apple=False, base_model="org/other")
    with pytest.raises(ValueError, match="converted_from_apple=True needs the variant"):
        generate_model_card(tiny_model, processor=tiny_processor)
    with pytest.raises(ValueError, match="cannot be relicensed"):
        generate_model_card(tiny_model, "mobileclip-s0", license="apache-2.0",
                            processor=MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer))
    with pytest.raises(ValueError, match="'other' needs a name and a link"):
        generate_model_card(tiny_model, processor=tiny_processor, converted_from_apple=False, license="other")
    card = own_card(tiny_model, tiny_processor, repo_id=None)
    meta = front_matter(str(card))
    assert meta["license"] == "apache-2.0" and "license_name" not in meta and "datasets" not in meta
    assert "Apple Inc." not in card.text and "Published results" not in card.text


def test_apple_weights_without_the_agreement_text_warn(tiny_model, tokenizer, tmp_path):
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    with pytest.warns(UserWarning, match="AMLR licence, which asks every redistribution to include a copy"):
        card = generate_model_card(tiny_model, "mobileclip-s0", processor=processor)
    assert "LICENSE" not in card.assets and "Redistributions must include a copy of the agreement." in card.text
    assert APPLE_ATTRIBUTION_NOTICE in card.text
    with pytest.raises(FileNotFoundError, match="license_file=.*is not a non-empty file"):
        generate_model_card(tiny_model, "mobileclip-s0", processor=processor, license_file=tmp_path / "missing")


def test_converted_card_rejects_a_processor_that_is_not_the_variants(tiny_model, tiny_processor, agreement_file):
    with pytest.raises(ValueError, match=r"crop_size is \(64, 64\), but PRETRAINED_TAGS\['mobileclip-s0'\] says "
                                         r"\(256, 256\).*from_variant\('mobileclip-s0'\)"):
        generate_model_card(tiny_model, "mobileclip-s0", processor=tiny_processor, license_file=agreement_file)


def test_card_of_a_saved_folder_whose_processor_reloads_resample_as_an_int(tiny_model, tokenizer, agreement_file,
                                                                           tmp_path):
    """A processor reloaded from disk holds `resample` as the int 2, not PIL's enum: the tag check still passes."""
    folder = tmp_path / "mobileclip-s0"
    tiny_model.save_pretrained(folder)
    MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer).save_pretrained(folder)
    assert type(MobileCLIPProcessor.from_pretrained(folder).image_processor.resample) is int
    card = generate_model_card(folder, "mobileclip-s0", repo_id="org/mobileclip-s0", license_file=agreement_file)
    assert front_matter(str(card))["license_name"] == "apple-amlr" and "bilinear" in card.text
    assert (folder / "widget" / "solid-red.png").is_file()


# ---------------------------------------------------------------- the fake hub itself


def test_fake_hub_install_restores_everything(tmp_path):
    import datasets.config
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    def state():
        return (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_OFFLINE,
                constants.HF_HUB_CACHE, datasets.config.HF_ENDPOINT, datasets.config.HF_HUB_OFFLINE,
                huggingface_hub.hf_api.api.endpoint, _http._GLOBAL_CLIENT_FACTORY, os.environ.get("HF_TOKEN"),
                os.environ.get("HF_HUB_OFFLINE"))

    before = state()
    hub = FakeHub()
    with hub.install(cache_dir=tmp_path):
        assert (constants.ENDPOINT, constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (
            hub.endpoint, False, False)
        huggingface_hub.create_repo("org/module-level-api")  # the module-level HfApi is redirected as well
    assert hub.repo_exists("org/module-level-api") and state() == before


def test_fake_hub_store_survives_dump_and_load(tmp_path):
    hub = FakeHub()
    hub.add_commit("org/m", {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}, message="first")
    hub.add_commit("org/d", {"data.tar": b"tar"}, repo_type="dataset")
    loaded = FakeHub.load(hub.dump(tmp_path / "store"))
    assert loaded.files("org/m") == {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}
    assert loaded.files("org/d", "dataset") == {"data.tar": b"tar"} and loaded.commits("org/m")[0].message == "first"
    with pytest.raises(ValueError, match="unknown fake-hub route 'push'"):
        hub.fail("push")


def test_validate_card_against_the_fake_hub(fake_hub, variant_cards):
    card = variant_cards["mobileclip-s0"]
    validate_card(card)
    assert fake_hub.validated[-1] == {"repoType": "model", "content": str(card)}
    broken = ModelCard(str(card))
    broken.data.pipeline_tag = "zero-shot-everything"
    broken.data.license_link = None
    with pytest.raises(ValueError, match="The Hub rejected the model card metadata") as raised:
        validate_card(broken)
    assert "pipeline_tag: 'zero-shot-everything' is not a known task" in str(raised.value)
    assert "license: 'other' needs license_name and license_link" in str(raised.value)


# ---------------------------------------------------------------- dataset cards


def reinforced_config(embedding_format: str) -> dict:
    return {
        "teachers": [{"model": "ViT-L-14", "pretrained": "openai", "embedding_dim": 4, "logit_scale": 100.0},
                     {"model": "ViT-B-16", "pretrained": "datacomp_xl_s13b_b90k", "embedding_dim": 3,
                      "logit_scale": 70.0}],
        "captioner": {"model": "coca_ViT-L-14", "pretrained": "mscoco_finetuned_laion2B-s13B-b90k"},
        "num_augmentations": 2, "seed": 1234, "layout": "v1", "embedding_format": embedding_format,
        "syn_text_key_regex": "^syn_text$",
        "augmentation": {"random_resized_crop": {"size": 224, "scale": [0.08, 1.0]}, "rand_augment": {"num_ops": 2}},
        "shard_pattern": "shards/*.tar", "num_samples": 4, "source_dataset": "mlfoundations/datacomp_small",
        "input_licenses": {"mlfoundations/datacomp_small": "CC-BY-4.0", "ViT-L-14 (openai)": "MIT"},
    }


def write_shards(folder: Path, embedding_format: str, total_dim: int = 7) -> list[dict]:
    """Two tar shards of two samples each in the DataCompDR v1 layout; returns what was written."""
    rng, written = np.random.default_rng(0), []
    for shard in range(2):
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index in range(2):
                key = f"{shard:05d}{index:04d}"
                sample = {"syn_text": [f"caption {key} a", f"caption {key} b"],
                          "param_aug": [[[3, 5, 40, 41], [[0, 0.0], [6, 0.27]]], [[0, 1, 10, 12], []]],
                          "image_emb": rng.standard_normal((2, total_dim)).astype(np.float32),
                          "text_emb": rng.standard_normal((3, total_dim)).astype(np.float32), "key": key}
                members = {"url.txt": f"https://example.com/{key}.jpg".encode(),
                           "json": json.dumps({"uid": key * 2, "sha256": "0" * 64}).encode(),
                           "syn.json": json.dumps({"syn_text": sample["syn_text"]}).encode(),
                           "paug.json": json.dumps({"param_aug": sample["param_aug"]}).encode()}
                arrays = {"image_emb": sample["image_emb"], "text_emb": sample["text_emb"]}
                if embedding_format == "npz":
                    buffer = io.BytesIO()
                    np.savez(buffer, **arrays)
                    members["npz"] = buffer.getvalue()
                else:  # bf16 tensors, as DataCompDR-12M-bf16; the expected values are the bf16-rounded ones
                    tensors = {k: torch.from_numpy(v).bfloat16() for k, v in arrays.items()}
                    sample.update({k: t.float().numpy() for k, t in tensors.items()})
                    buffer = io.BytesIO()
                    torch.save(tensors, buffer)
                    members["pth.gz"] = gzip.compress(buffer.getvalue())
                for suffix, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                written.append(sample)
    return written


@pytest.mark.parametrize("embedding_format", ["npz", "pth.gz"])
def test_dataset_card_makes_load_dataset_work_on_the_hub_repo(fake_hub, tmp_path, embedding_format):
    from datasets import load_dataset

    config = reinforced_config(embedding_format)
    card = generate_dataset_card(config, repo_id="org/tiny-reinforced", license="cc-by-nc-4.0")
    meta = front_matter(str(card))
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.tar"}]}]
    assert meta["license"] == "cc-by-nc-4.0" and meta["source_datasets"] == ["mlfoundations/datacomp_small"]
    body = card.text
    assert "| 0 | `ViT-L-14` | openai | 4 | 0:4 | 100.0 |" in body
    assert "| 1 | `ViT-B-16` | datacomp_xl_s13b_b90k | 3 | 4:7 | 70.0 |" in body
    assert "Captioner: `coca_ViT-L-14` (mscoco_finetuned_laion2B-s13B-b90k)" in body
    assert "seed: 1234" in body and '"num_ops": 2' in body
    assert "| Source image-text pairs | mlfoundations/datacomp_small | CC-BY-4.0 |" in body
    assert "| Teacher | ViT-L-14 (openai) | MIT |" in body
    assert ("| Teacher | ViT-B-16 (datacomp_xl_s13b_b90k) | not recorded in the run's config: check it before use |"
            in body)
    assert "| Captioner | coca_ViT-L-14 (mscoco_finetuned_laion2B-s13B-b90k) | not recorded" in body
    assert 'load_dataset("org/tiny-reinforced", split="train", streaming=True)' in body

    written = write_shards(tmp_path / "repo" / "shards", embedding_format)
    card.save(tmp_path / "repo" / "README.md")
    push_folder_to_hub(tmp_path / "repo", "org/tiny-reinforced", repo_type="dataset", commit_message="Add shards")
    assert set(fake_hub.files("org/tiny-reinforced", "dataset")) == {"README.md", "shards/00000.tar",
                                                                      "shards/00001.tar"}
    dataset = load_dataset("org/tiny-reinforced", split="train", cache_dir=str(tmp_path / "cache"))
    assert any(p.startswith("/datasets/org/tiny-reinforced/resolve/") and p.endswith("shards/00001.tar")
               for _, p in fake_hub.requests)
    assert list(dataset.features) == ["url.txt", "json", "syn.json", "paug.json", embedding_format, "__key__",
                                      "__url__"]
    assert len(dataset) == len(written)
    for row, sample in zip(dataset, written):
        assert row["__key__"] == sample["key"] and row["syn.json"]["syn_text"] == sample["syn_text"]
        assert row["paug.json"]["param_aug"] == sample["param_aug"]  # mixed int/list nesting survives (Json type)
        embeddings = row[embedding_format]
        np.testing.assert_array_equal(np.asarray(embeddings["image_emb"], np.float32), sample["image_emb"])
        np.testing.assert_array_equal(np.asarray(embeddings["text_emb"], np.float32), sample["text_emb"])


def assert_same_param_aug(loaded: list, stored: list) -> None:
    """Crop boxes and op indices exact; magnitudes to the 10 decimals `datasets.Json` keeps (it serialises with
    pandas' ujson, double_precision=10), as the card says."""
    assert [(crop, [op for op, _ in ops]) for crop, ops in loaded] == [(crop, [op for op, _ in ops])
                                                                      for crop, ops in stored]
    np.testing.assert_allclose([m for _, ops in loaded for _, m in ops], [m for _, ops in stored for _, m in ops],
                               rtol=0, atol=5e-11)


def test_reinforcement_tool_output_pushed_and_loaded_with_load_dataset(fake_hub, tmp_path):
    """The reinforcement tool's real output (images of two formats, ground-truth captions, no captioner): the card
    reads the columns from the shards, and `load_dataset(<repo>)` returns every stored value."""
    from datasets import load_dataset

    from dataset_scripts.reinforce import reinforce
    from dataset_scripts.tiny_reinforce_models import tiny_open_clip_clip

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "00000.tar", "w") as tar:
        for key, fmt in (("a", "JPEG"), ("b", "PNG"), ("c", "JPEG")):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buffer, format=fmt)
            members = {f"{key}.{'png' if fmt == 'PNG' else 'jpg'}": buffer.getvalue(),
                       f"{key}.txt": f"a photo number {key}".encode(), f"{key}.json": json.dumps({"uid": key}).encode()}
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    teacher = tiny_open_clip_clip(str(tmp_path / "teacher"), image_size=32)
    out = tmp_path / "out"
    summary = reinforce(str(tmp_path / "data"), str(out), teachers=[teacher], teacher_logit_scales=[100.0],
                        num_augmentations=2, crop_size=32, seed=0, batch_size=4, progress=False, license="cc-by-4.0")
    card = generate_dataset_card(summary["config"], repo_id="org/reinforced", data_dir=out,
                                 license={"license": "cc-by-nc-4.0"})
    meta = front_matter(str(card))
    declared = [f["name"] for f in meta["dataset_info"]["features"]]
    assert declared == ["jpg", "png", "txt", "json", "syn.json", "paug.json", "npz", "__key__", "__url__"]
    assert "source_datasets" not in meta and meta["size_categories"] == "n<1K"  # a local folder is not a Hub id
    assert "local files (`data`)" in card.text and str(tmp_path) not in card.text
    assert "Captioner: none (no synthetic captions)" in card.text and "(stored in the shards)" in card.text
    card.save(out / "README.md")
    push_folder_to_hub(out, "org/reinforced", repo_type="dataset", ignore_patterns=["_manifest/*"])

    dataset = load_dataset("org/reinforced", split="train", cache_dir=str(tmp_path / "cache"))
    assert list(dataset.features) == declared and len(dataset) == 3
    (shard,) = sorted(out.glob("*.tar"))
    with tarfile.open(shard) as tar:
        stored = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for row in dataset:
        key = row["__key__"]
        image_column = "png" if key == "b" else "jpg"
        assert row["png" if image_column == "jpg" else "jpg"] is None
        expected_image = np.asarray(Image.open(io.BytesIO(stored[f"{key}.{image_column}"])))
        np.testing.assert_array_equal(np.asarray(row[image_column]), expected_image)
        assert row["txt"] == f"a photo number {key}" and row["json"]["uid"] == key
        assert_same_param_aug(row["paug.json"]["param_aug"], json.loads(stored[f"{key}.paug.json"])["param_aug"])
        arrays = np.load(io.BytesIO(stored[f"{key}.npz"]))
        np.testing.assert_array_equal(np.asarray(row["npz"]["image_emb"], np.float32), arrays["image_emb"])
        np.testing.assert_array_equal(np.asarray(row["npz"]["text_emb"], np.float32), arrays["text_emb"])
    # the card's loading snippet runs as written against the Hub repo (streaming)
    (snippet,) = re.findall(r"```python\n(.*?)```", card.text, re.DOTALL)
    namespace = {}
    exec(snippet, namespace)
    assert namespace["sample"]["__key__"] == "a" and namespace["sample"]["txt"] == "a photo number a"


def test_dataset_card_needs_a_licence_teachers_and_known_columns(tmp_path):
    config = reinforced_config("npz")
    with pytest.raises(ValueError, match="No licence for the dataset: pass license= or set config\\['license'\\]"):
        generate_dataset_card(config)
    with pytest.raises(ValueError, match=r"config\['teachers'\]\[1\] is .*positive int 'embedding_dim'"):
        generate_dataset_card({**config, "teachers": [config["teachers"][0], {"model": "x"}]}, license="mit")
    with pytest.raises(ValueError, match=r"config\['embedding_format'\] is 'parquet'; expected 'npz' or 'pth.gz'"):
        generate_dataset_card({**config, "embedding_format": "parquet"}, license="mit")
    with pytest.raises(FileNotFoundError, match="holds no shards matching 'shards/\\*.tar'"):
        generate_dataset_card(config, license="mit", data_dir=tmp_path)
    write_shards(tmp_path / "shards", "pth.gz")
    with pytest.raises(ValueError, match=r"config\['embedding_format'\] says 'npz' but the shards hold \['pth.gz'\]"):
        generate_dataset_card(config, license="mit", data_dir=tmp_path)


def test_dataset_card_validates(fake_hub):
    card = generate_dataset_card(reinforced_config("npz"), repo_id="org/tiny-reinforced", license="cc-by-nc-4.0")
    validate_card(card)
    assert fake_hub.validated[-1]["repoType"] == "dataset"


# ---------------------------------------------------------------- pushing: checks, retries, permanent errors


@pytest.fixture
def model_folder(tiny_model, tiny_processor, tmp_path):
    """A saved model with its card, ready to push to org/retried."""
    folder = tmp_path / "output"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    own_card(tiny_model, tiny_processor, repo_id="org/retried").write(folder)
    return folder


@pytest.mark.parametrize("route, status, times", [
    ("commit", 500, 2), ("create_repo", 503, 3), ("create_repo", "connect", 1), ("validate_yaml", 502, 1),
])
def test_transient_errors_are_retried(fake_hub, model_folder, instant_hub_retries, route, status, times):
    fake_hub.fail(route, status=status, times=times)
    info = push_folder_to_hub(model_folder, "org/retried", commit_message="Add weights", retries=3, backoff=0)
    (failure,) = fake_hub.failures
    assert failure.times == 0  # every injected failure was met and retried
    (commit,) = fake_hub.commits("org/retried")  # the failed attempts left nothing behind
    assert info.oid == commit.oid and commit.message == "Add weights"
    assert fake_hub.files("org/retried") == local_tree(model_folder)
    commits_posted = sum(m == "POST" and p.endswith("/commit/main") for m, p in fake_hub.requests)
    assert commits_posted == (times + 1 if route == "commit" else 1)
    if route == "commit":  # huggingface_hub retries its commit POST itself, with its own backoff
        assert instant_hub_retries[:times] == [1, 2]


def test_transient_errors_give_up_after_the_retries(fake_hub, model_folder):
    fake_hub.fail("create_repo", status=502)
    with pytest.raises(HubPushError, match=r"gave up after 3 attempts.*502") as raised:
        push_folder_to_hub(model_folder, "org/down", commit_message="Add weights", retries=2, backoff=0)
    assert raised.value.attempts == 3 and not fake_hub.repo_exists("org/down")
    assert f"The local output is intact at {model_folder}" in str(raised.value)


def test_permanent_403_is_a_clear_error_and_the_local_output_is_intact(fake_hub, tiny_model, tiny_processor):
    card = own_card(tiny_model, tiny_processor, repo_id="org/forbidden")
    fake_hub.fail("commit", status=403, message="You don't have the rights to create a model under this namespace")
    with pytest.raises(HubPushError) as raised:
        push_model_to_hub(tiny_model, tiny_processor, "org/forbidden", card, commit_message="Add weights",
                          backoff=0)
    error, folder = raised.value, raised.value.folder
    message = str(error)
    assert error.status_code == 403 and error.attempts == 1  # not retried
    assert "403" in message and "write access to 'org/forbidden'" in message
    assert f"The local output is intact at {folder}" in message
    assert f"hf upload org/forbidden {folder} . --repo-type model --commit-message 'Add weights'" in message
    assert sum(p.endswith("/commit/main") for _, p in fake_hub.requests) == 1
    assert fake_hub.commits("org/forbidden") == []
    # the kept folder is the complete output: weights, code, processor, card and its widget images
    files = local_tree(folder)
    assert {"config.json", "model.safetensors", "modeling_mobileclip.py", "processor_config.json", "tokenizer.json",
            "README.md", *card.assets} <= set(files)
    reloaded = AutoModel.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), tiny_model.state_dict().values()))
    # once the cause is fixed, the same folder pushes
    fake_hub.clear_failures()
    push_folder_to_hub(folder, "org/forbidden", commit_message="Add weights", backoff=0)
    assert fake_hub.files("org/forbidden") == files


def test_wrong_token_is_a_permanent_error(fake_hub, model_folder):
    with pytest.raises(HubPushError, match=r"401.*check that your token") as raised:
        push_folder_to_hub(model_folder, "org/retried", commit_message="Add weights", token="hf_not_the_right_one",
                           backoff=0)
    assert raised.value.attempts == 1 and not fake_hub.repo_exists("org/retried")


def test_a_card_the_hub_rejects_stops_the_push_before_the_repo_exists(fake_hub, model_folder):
    readme = model_folder / "README.md"
    readme.write_text(readme.read_text().replace("pipeline_tag: zero-shot-image-classification",
                                                 "pipeline_tag: zero-shot-everything"))
    with pytest.raises(HubPushError, match="the Hub rejected README.md's metadata \\(pipeline_tag: "
                                           "'zero-shot-everything' is not a known task\\)") as raised:
        push_folder_to_hub(model_folder, "org/retried", backoff=0)
    assert isinstance(raised.value.__cause__, CardRejectedError) and raised.value.attempts == 1
    assert not fake_hub.repo_exists("org/retried")


def test_a_model_folder_is_checked_before_anything_is_sent(fake_hub, tiny_model, tiny_processor, model_folder):
    card = own_card(tiny_model, tiny_processor, repo_id="org/a")
    with pytest.raises(ValueError, match="generated for repo_id='org/a'.*pushed to 'org/b'; regenerate"):
        push_model_to_hub(tiny_model, tiny_processor, "org/b", card, commit_message="x")
    (model_folder / "widget" / "solid-red.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"widget\[0\].src names 'widget/solid-red.png'.*card.write\(folder\)"):
        push_folder_to_hub(model_folder, "org/retried")
    (model_folder / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="has no README.md: a model repo needs its card"):
        push_folder_to_hub(model_folder, "org/retried")
    card.write(model_folder)
    saved_config = (model_folder / "config.json").read_text()
    config = json.loads(saved_config)
    del config["auto_map"]["AutoModelForZeroShotImageClassification"]
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lacks auto_map entries \['AutoModelForZeroShotImageClassification'\]"):
        push_folder_to_hub(model_folder, "org/a")
    (model_folder / "config.json").write_text(saved_config)
    own_card(tiny_model, tiny_processor, repo_id=None).write(model_folder)
    (model_folder / "processing_mobileclip.py").unlink()
    with pytest.warns(UserWarning, match=r"generated without repo_id: its widget images \['widget/solid-red.png'"), \
            pytest.raises(FileNotFoundError, match=r"auto_map\['AutoProcessor'\].*processing_mobileclip.py is missing"):
        push_folder_to_hub(model_folder, "org/a", allow_patterns=["*.json"])  # checked whatever is selected
    assert fake_hub.requests == []


def test_background_checkpoint_pushes_survive_checkpoint_rotation(fake_hub, tiny_model, tmp_path, private_tempdir):
    """accelerate's `save_state` with total_limit=1 deletes the previous checkpoint while its upload may still be
    queued: the push uploads the copy it took when called, and replaces the repo's last-checkpoint folder."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(
        project_dir=str(tmp_path / "run"), automatic_checkpoint_naming=True, total_limit=1))
    try:
        model = copy.deepcopy(tiny_model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model, optimizer = accelerator.prepare(model, optimizer)
        first = Path(accelerator.save_state())
        first_files = local_tree(first)
        future = push_folder_to_hub(first, "org/run", path_in_repo="last-checkpoint", delete_patterns="*",
                                    run_as_future=True, ignore_patterns=["random_states_*"],
                                    commit_message="Checkpoint 0")
        with torch.no_grad():  # training goes on; the next checkpoint rotates the first one away
            next(model.parameters()).add_(1.0)
        second = Path(accelerator.save_state())
        assert not first.exists() and future.result(timeout=120).oid == fake_hub.commits("org/run")[0].oid
        expected = {f"last-checkpoint/{p}": data for p, data in first_files.items() if "random_states" not in p}
        assert fake_hub.files("org/run") == expected and list(private_tempdir.iterdir()) == []  # copy removed

        fake_hub.fail("commit", status=403)
        with pytest.raises(HubPushError, match=f"a copy of {second} taken when the push was queued") as raised:
            push_folder_to_hub(second, "org/run", path_in_repo="last-checkpoint", delete_patterns="*",
                               run_as_future=True, backoff=0).result(timeout=120)
        assert local_tree(raised.value.folder) == local_tree(second)  # the copy is kept for the retry
        assert f"hf upload org/run {raised.value.folder} last-checkpoint" in str(raised.value)
        fake_hub.clear_failures()
        push_folder_to_hub(second, "org/run", path_in_repo="last-checkpoint", delete_patterns="*",
                           run_as_future=True, commit_message="Checkpoint 1").result(timeout=120)
        assert fake_hub.files("org/run") == {f"last-checkpoint/{p}": data for p, data in local_tree(second).items()}
        assert fake_hub.commits("org/run")[-1].message == "Checkpoint 1"
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_run_as_future_pushes_model_processor_and_card(fake_hub, tiny_model, tiny_processor):
    card = own_card(tiny_model, tiny_processor, repo_id="org/bg")
    future = push_model_to_hub(tiny_model, tiny_processor, "org/bg", card, commit_message="Background push",
                               run_as_future=True, backoff=0)
    info = future.result(timeout=60)
    (commit,) = fake_hub.commits("org/bg")
    assert info.oid == commit.oid and "README.md" in commit.files and "widget/checkerboard.png" in commit.files


# ---------------------------------------------------------------- end to end: convert, push, load as remote code


LOAD_FROM_HUB = textwrap.dedent("""
    import contextlib, importlib.abc, importlib.util, io, json, re, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_mobileclip", "dataset_scripts", "hub_cards"):
                raise ImportError(f"{name} is blocked: the Hub repo must work without this project installed")
    sys.meta_path.insert(0, Block())
    fake_hub_path, store, repo = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("fake_hub", fake_hub_path)
    fake_hub = sys.modules["fake_hub"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_hub)
    import numpy as np, torch
    from huggingface_hub import hf_hub_download
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    torch.set_num_threads(1)
    with fake_hub.FakeHub.load(store).install():
        model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
        image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
        inputs = processor(text=["a cat", "a dog", "a red square"], images=image, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits_per_image
        classifier = pipeline("zero-shot-image-classification", model=repo, trust_remote_code=True)
        result = classifier(image, candidate_labels=["cat", "dog"])
        readme = open(hf_hub_download(repo, "README.md"), encoding="utf-8").read()
        snippets = []
        for code in re.findall(r"```python\\n(.*?)```", readme, re.DOTALL):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(code, {"__name__": "__snippet__"})
            snippets.append(out.getvalue())
    print(json.dumps({"model_module": type(model).__module__, "processor": type(processor).__name__,
                      "logits": logits.tolist(), "pipeline": result, "snippets": snippets}))
""")


@pytest.mark.filterwarnings(AMLR_WARNING)  # the converter writes the card without the agreement's text
def test_end_to_end_convert_push_then_load_as_remote_code(fake_hub, tokenizer, tmp_path):
    """A tiny model saved in Apple's checkpoint layout is converted (card included), pushed, and loaded back in a
    fresh process that cannot import this project: same logits, pipeline scores and card snippets."""
    from test_convert import to_format

    from modeling_mobileclip.convert import convert, save_converted

    torch.manual_seed(3)
    original = randomize_statistics(MobileCLIPModel(tiny_config("mci-s0text")).eval())
    torch.save(to_format(original, "apple"), tmp_path / "mobileclip_s0.pt")
    converted, report = convert(tmp_path / "mobileclip_s0.pt", config=original.config)
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    repo = "org/mobileclip-s0-tiny"
    folder = save_converted(converted, tmp_path / "converted", variant="mobileclip-s0", report=report,
                            processor=processor, repo_id=repo)
    info = push_folder_to_hub(folder, repo, commit_message="Add converted MobileCLIP-S0", backoff=0)

    (commit,) = fake_hub.commits(repo)  # weights, processor, code and card in one commit
    assert info.oid == commit.oid and commit.files == local_tree(folder)
    assert {"config.json", "model.safetensors", "configuration_mobileclip.py", "modeling_mobileclip.py",
            "processing_mobileclip.py", "image_processing_mobileclip.py", "tokenization_mobileclip.py",
            "processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
            "widget/solid-red.png"} <= set(commit.files)
    auto_map = json.loads(commit.files["config.json"])["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_mobileclip.MobileCLIPConfig",
                        "AutoModel": "modeling_mobileclip.MobileCLIPModel",
                        "AutoModelForZeroShotImageClassification": "modeling_mobileclip.MobileCLIPModel"}
    assert json.loads(commit.files["processor_config.json"])["auto_map"] == {
        "AutoProcessor": "processing_mobileclip.MobileCLIPProcessor"}
    readme = commit.files["README.md"].decode()
    meta = front_matter(readme)
    assert (meta["license_name"], meta["pipeline_tag"], meta["library_name"]) == (
        "apple-amlr", "zero-shot-image-classification", "transformers")
    assert "| 13 | 11.4 + 42.4 | 1.5 + 1.6 | 67.8 | 58.1 |" in readme  # Apple's published S0 numbers
    assert [body["content"] for body in fake_hub.validated] == [readme, readme]  # ours, then upload_folder's

    store = fake_hub.dump(tmp_path / "store")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, str(FAKE_HUB_PATH), str(store), repo],
                          check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["model_module"].startswith("transformers_modules.") and result["processor"] == "MobileCLIPProcessor"

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    inputs = processor(text=["a cat", "a dog", "a red square"], images=image, return_tensors="pt")
    with torch.no_grad():
        expected = original(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        probs = original(**processor(text=["This is a photo of cat.", "This is a photo of dog."], images=image,
                                     return_tensors="pt")).logits_per_image.softmax(-1)[0]
    assert {r["label"]: r["score"] for r in result["pipeline"]} == pytest.approx(
        dict(zip(["cat", "dog"], probs.tolist())), abs=1e-5)
    # the card's usage snippets ran as written, against the Hub repo; they print the first widget example's scores
    usage, pipeline_snippet = result["snippets"]
    first = meta["widget"][0]
    assert ast.literal_eval(usage.strip()) == pytest.approx({o["label"]: o["score"] for o in first["output"]},
                                                            abs=1e-4)
    printed = ast.literal_eval(pipeline_snippet.strip())
    assert [r["label"] for r in printed] == [o["label"] for o in first["output"]]
    assert [r["score"] for r in printed] == pytest.approx([o["score"] for o in first["output"]], abs=1e-4)
