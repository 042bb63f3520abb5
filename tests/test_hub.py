"""Hub cards, the fake Hub, and pushing: metadata for every variant, licence rules, widget outputs, the dataset card
loading with `load_dataset`, retries and permanent errors, and an end-to-end push loaded back as remote code."""

import ast
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from fake_hub import FakeHub, fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from PIL import Image
from transformers import AutoModel, pipeline

from hub_cards import generate_dataset_card, generate_model_card, validate_card
from hub_cards.generate import APPLE_TRAINING_DATASETS, MODEL_TAGS
from modeling_mobileclip import PRETRAINED_TAGS, MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.hub import HubPushError, push_folder_to_hub, push_model_to_hub

FAKE_HUB_PATH = Path(__file__).with_name("fake_hub.py")


def front_matter(text: str) -> dict:
    match = re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL)
    assert match is not None, text[:200]
    return yaml.safe_load(match.group(1))


def family(variant: str) -> str:
    return "mobileclip2" if variant.startswith("mobileclip2") else "mobileclip"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The models here are tiny: thread start-up and synchronisation would cost more than the maths (and much more on
    a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
def variant_cards(tiny_model, tokenizer):
    """One card per pretrained tag, from the tiny FastViT model run through that variant's real processor."""
    return {variant: generate_model_card(tiny_model, variant, repo_id=f"org/{variant}",
                                         processor=MobileCLIPProcessor.from_variant(variant, tokenizer=tokenizer))
            for variant in PRETRAINED_TAGS}


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
        assert example["src"].startswith("widget/") and example["src"] in card.assets
        assert Image.open(io.BytesIO(card.assets[example["src"]])).size == (64, 64)
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
    assert f"Copyright (C) {year} Apple Inc. All Rights Reserved." in body
    assert f"derivative of {tag['hub_id']}" in body and "**Modified:** converted" in body
    assert tag["license_link"] in body
    assert f"mean {[round(v, 8) for v in tag['image_mean']]}, std {[round(v, 8) for v in tag['image_std']]}" in body
    assert f'repo = "org/{variant}"' in body
    assert 'AutoModel.from_pretrained(repo, trust_remote_code=True)' in body
    assert 'pipeline("zero-shot-image-classification", model=repo, trust_remote_code=True)' in body
    assert "@inproceedings{vasu2024mobileclip," in body and "@article{faghri2025mobileclip2," in body


def test_widget_output_is_what_the_pipeline_returns(tiny_model, tiny_processor, tmp_path):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_processor.save_pretrained(model_dir)
    card = generate_model_card(model_dir, repo_id="org/tiny", converted_from_apple=False, license="apache-2.0")
    classifier = pipeline("zero-shot-image-classification", model=str(model_dir))
    for example in card.data.widget:
        image_path = model_dir / example["src"]  # written next to the model by the generator
        assert image_path.read_bytes() == card.assets[example["src"]]
        result = classifier(Image.open(image_path), candidate_labels=example["candidate_labels"].split(", "))
        assert [r["label"] for r in result] == [o["label"] for o in example["output"]]
        assert [r["score"] for r in result] == pytest.approx([o["score"] for o in example["output"]], abs=1e-4)


def test_custom_widget_images(tiny_model, tiny_processor):
    image = Image.new("RGB", (40, 30), (0, 200, 0))
    card = generate_model_card(tiny_model, processor=tiny_processor, repo_id="org/tiny", converted_from_apple=False,
                               license="mit", widget_images=[{"image": image, "candidate_labels": ["grass", "sky"],
                                                              "example_title": "Green field"}])
    (example,) = card.data.widget
    assert example["src"] == "widget/green-field.png" and example["candidate_labels"] == "grass, sky"
    assert Image.open(io.BytesIO(card.assets["widget/green-field.png"])).size == (40, 30)
    with pytest.raises(ValueError, match=r"widget_images\[0\]\['candidate_labels'\].*at least two"):
        generate_model_card(tiny_model, processor=tiny_processor, converted_from_apple=False, license="mit",
                            widget_images=[{"image": image, "candidate_labels": "grass", "example_title": "x"}])


def test_eval_results_become_model_index(tiny_model, tokenizer):
    row = {"key": "imagenet1k", "dataset": "ImageNet 1k", "metrics": {"acc1": 0.6712, "acc5": 0.9, "main_metric": 0.6712}}
    extra = EvalResult(task_type="zero-shot-image-classification", dataset_type="cifar10", dataset_name="CIFAR-10",
                       metric_type="acc1", metric_value=0.88, dataset_split="test")
    card = generate_model_card(tiny_model, "mobileclip-s0", repo_id="org/s0-run",
                               processor=MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer),
                               eval_results=[row, extra])
    (entry,) = front_matter(str(card))["model-index"]
    assert entry["name"] == "s0-run"
    parsed = ModelCardData(**front_matter(str(card))).eval_results
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in parsed] == [
        ("imagenet1k", "acc1", 0.6712), ("imagenet1k", "acc5", 0.9), ("cifar10", "acc1", 0.88)]
    assert "| ImageNet 1k | - | acc1 | 0.6712 |" in card.text and "| CIFAR-10 | test | acc1 | 0.8800 |" in card.text
    with pytest.raises(ValueError, match=r"eval_results\[0\] is \{'top1': 0.5\}; expected"):
        generate_model_card(tiny_model, "mobileclip-s0", eval_results=[{"top1": 0.5}],
                            processor=MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer))


# ---------------------------------------------------------------- licence rules


def test_fine_tune_of_apple_weights_keeps_the_apple_licence(tiny_model, tokenizer):
    processor = MobileCLIPProcessor.from_variant("mobileclip2-s0", tokenizer=tokenizer)
    card = generate_model_card(tiny_model, "mobileclip2-s0", processor=processor, repo_id="org/ft",
                               converted_from_apple=False, base_model="apple/MobileCLIP2-S0", datasets="org/my-data")
    meta = front_matter(str(card))
    assert meta["base_model"] == "apple/MobileCLIP2-S0" and meta["datasets"] == ["org/my-data"]
    assert (meta["license"], meta["license_name"]) == ("other", "apple-amlr")
    assert "Copyright (C) 2025 Apple Inc. All Rights Reserved." in card.text
    assert "**Modified:** fine-tuned from apple/MobileCLIP2-S0 on org/my-data." in card.text
    assert "**not** for this fine-tuned checkpoint" in card.text
    with pytest.raises(ValueError, match="derivatives stay under apple-amlr"):
        generate_model_card(tiny_model, "mobileclip2-s0", processor=processor, converted_from_apple=False,
                            base_model="apple/MobileCLIP2-S0", license="mit")


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
    card = generate_model_card(tiny_model, processor=tiny_processor, converted_from_apple=False, license="apache-2.0")
    meta = front_matter(str(card))
    assert meta["license"] == "apache-2.0" and "license_name" not in meta and "datasets" not in meta
    assert "Apple Inc." not in card.text and "Published results" not in card.text


def test_converted_card_rejects_a_processor_that_is_not_the_variants(tiny_model, tiny_processor):
    with pytest.raises(ValueError, match=r"crop_size is \(64, 64\), but PRETRAINED_TAGS\['mobileclip-s0'\] says "
                                         r"\(256, 256\).*from_variant\('mobileclip-s0'\)"):
        generate_model_card(tiny_model, "mobileclip-s0", processor=tiny_processor)


# ---------------------------------------------------------------- the fake hub itself


def test_fake_hub_install_restores_everything(tmp_path):
    import datasets.config
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    before = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_OFFLINE,
              constants.HF_HUB_CACHE, datasets.config.HF_ENDPOINT, datasets.config.HF_HUB_OFFLINE,
              huggingface_hub.hf_api.api.endpoint, _http._GLOBAL_CLIENT_FACTORY, os.environ.get("HF_TOKEN"),
              os.environ.get("HF_HUB_OFFLINE"))
    hub = FakeHub()
    with hub.install(cache_dir=tmp_path):
        assert (constants.ENDPOINT, constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (
            hub.endpoint, False, False)
        huggingface_hub.create_repo("org/module-level-api")  # the module-level HfApi is redirected as well
    assert hub.repo_exists("org/module-level-api")
    assert before == (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_OFFLINE,
                      constants.HF_HUB_CACHE, datasets.config.HF_ENDPOINT, datasets.config.HF_HUB_OFFLINE,
                      huggingface_hub.hf_api.api.endpoint, _http._GLOBAL_CLIENT_FACTORY, os.environ.get("HF_TOKEN"),
                      os.environ.get("HF_HUB_OFFLINE"))


def test_fake_hub_store_survives_dump_and_load(tmp_path):
    hub = FakeHub()
    hub.add_commit("org/m", {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}, message="first")
    hub.add_commit("org/d", {"data.tar": b"tar"}, repo_type="dataset")
    loaded = FakeHub.load(hub.dump(tmp_path / "store"))
    assert loaded.files("org/m") == {"config.json": b"{}", "sub/w.bin": b"\x00\x01"}
    assert loaded.files("org/d", "dataset") == {"data.tar": b"tar"} and loaded.commits("org/m")[0].message == "first"
    with pytest.raises(ValueError, match="unknown fake-hub route 'push'"):
        hub.fail("push")


# ---------------------------------------------------------------- validate-yaml against the fake hub


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


# ---------------------------------------------------------------- dataset card


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
        "input_licenses": {"DataComp url-text pairs": "CC-BY-4.0", "ViT-L-14 (openai)": "MIT"},
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
    assert "seed: 1234" in body and '"num_ops": 2' in body and "- DataComp url-text pairs: CC-BY-4.0" in body
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


def test_dataset_card_needs_a_licence_and_teachers():
    config = reinforced_config("npz")
    with pytest.raises(ValueError, match="No licence for the dataset: pass license= or set config\\['license'\\]"):
        generate_dataset_card(config)
    with pytest.raises(ValueError, match=r"config\['teachers'\]\[1\] is .*positive int 'embedding_dim'"):
        generate_dataset_card({**config, "teachers": [config["teachers"][0], {"model": "x"}]}, license="mit")
    with pytest.raises(ValueError, match=r"config\['embedding_format'\] is 'parquet'; expected 'npz' or 'pth.gz'"):
        generate_dataset_card({**config, "embedding_format": "parquet"}, license="mit")


def test_dataset_card_validates(fake_hub):
    card = generate_dataset_card(reinforced_config("npz"), repo_id="org/tiny-reinforced", license="cc-by-nc-4.0")
    validate_card(card)
    assert fake_hub.validated[-1]["repoType"] == "dataset"


# ---------------------------------------------------------------- pushing: retries, permanent errors


@pytest.fixture
def model_folder(tiny_model, tiny_processor, tmp_path):
    folder = tmp_path / "output"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


def local_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# huggingface_hub itself retries the commit POST of upload_folder on 5xx (sleeping 1, 2, 4, 8, 8 s); our retries cover
# the calls it does not retry (create_repo, the README check) and a commit that keeps failing after its own retries.
@pytest.mark.parametrize("route, status, times", [
    ("commit", 500, 2), ("create_repo", 500, 2), ("create_repo", 503, 3), ("create_repo", "connect", 1),
    ("validate_yaml", 502, 1),
])
def test_transient_errors_are_retried(fake_hub, model_folder, tiny_model, tiny_processor, route, status, times):
    card = generate_model_card(tiny_model, processor=tiny_processor, repo_id="org/retried", converted_from_apple=False,
                               license="apache-2.0")
    card.write(model_folder)
    fake_hub.fail(route, status=status, times=times)
    info = push_folder_to_hub(model_folder, "org/retried", commit_message="Add weights", retries=3, backoff=0)
    (commit,) = fake_hub.commits("org/retried")  # the failed attempts left nothing behind
    assert info.oid == commit.oid and commit.message == "Add weights"
    assert fake_hub.files("org/retried") == local_tree(model_folder)
    posts = [p.rsplit("/", 2)[-2] if p.endswith("/main") else p.rsplit("/", 1)[-1]
             for m, p in fake_hub.requests if m == "POST"]
    attempts = {"create_repo": "create", "validate_yaml": "validate-yaml", "commit": "commit"}
    assert posts.count(attempts[route]) == times + 1 and posts.count("commit") == (times + 1 if route == "commit" else 1)


def test_transient_errors_give_up_after_the_retries(fake_hub, model_folder):
    fake_hub.fail("create_repo", status=502)
    with pytest.raises(HubPushError, match=r"gave up after 3 attempts.*502") as raised:
        push_folder_to_hub(model_folder, "org/down", commit_message="Add weights", retries=2, backoff=0)
    assert raised.value.attempts == 3 and not fake_hub.repo_exists("org/down")
    assert f"The local output is intact at {model_folder}" in str(raised.value)


def test_permanent_403_is_a_clear_error_and_the_local_output_is_intact(fake_hub, tiny_model, tiny_processor):
    card = generate_model_card(tiny_model, processor=tiny_processor, repo_id="org/forbidden",
                               converted_from_apple=False, license="apache-2.0")
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
    assert sum(p.endswith("/commit/main") for _, p in fake_hub.requests) == 1 and fake_hub.commits("org/forbidden") == []
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
        push_folder_to_hub(model_folder, "org/x", commit_message="Add weights", token="hf_not_the_right_one", backoff=0)
    assert raised.value.attempts == 1 and not fake_hub.repo_exists("org/x")


def test_run_as_future(fake_hub, tiny_model, tiny_processor):
    card = generate_model_card(tiny_model, processor=tiny_processor, repo_id="org/bg", converted_from_apple=False,
                               license="apache-2.0")
    future = push_model_to_hub(tiny_model, tiny_processor, "org/bg", card, commit_message="Background push",
                               run_as_future=True, backoff=0)
    info = future.result(timeout=60)
    (commit,) = fake_hub.commits("org/bg")
    assert info.oid == commit.oid and "README.md" in commit.files and "widget/checkerboard.png" in commit.files
    fake_hub.fail("commit", status=403)
    failed = push_model_to_hub(tiny_model, tiny_processor, "org/bg", card, commit_message="Again", run_as_future=True)
    with pytest.raises(HubPushError, match="local output is intact"):
        failed.result(timeout=60)


def test_push_checks_the_card_against_the_target(fake_hub, tiny_model, tiny_processor, model_folder):
    card = generate_model_card(tiny_model, processor=tiny_processor, repo_id="org/a", converted_from_apple=False,
                               license="apache-2.0")
    with pytest.raises(ValueError, match="generated for repo_id='org/a'.*pushed to 'org/b'; regenerate"):
        push_model_to_hub(tiny_model, tiny_processor, "org/b", card, commit_message="x")
    card.save(model_folder / "README.md")  # the card without its widget images
    with pytest.raises(FileNotFoundError, match=r"widget\[0\].src is 'widget/solid-red.png'.*card.write\(folder\)"):
        push_folder_to_hub(model_folder, "org/a", commit_message="x")
    assert fake_hub.requests == []


# ---------------------------------------------------------------- end to end: push, then load as remote code


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


def test_end_to_end_push_then_load_as_remote_code(fake_hub, tiny_model, tiny_processor, tmp_path):
    repo = "org/mobileclip-tiny"
    card = generate_model_card(tiny_model, processor=tiny_processor, repo_id=repo, converted_from_apple=False,
                               license="apache-2.0")
    info = push_model_to_hub(tiny_model, tiny_processor, repo, card, commit_message="Add tiny MobileCLIP", backoff=0)
    (commit,) = fake_hub.commits(repo)  # model, processor and card in one commit
    assert info.oid == commit.oid and commit.message == "Add tiny MobileCLIP"
    assert {"config.json", "model.safetensors", "configuration_mobileclip.py", "modeling_mobileclip.py",
            "processing_mobileclip.py", "image_processing_mobileclip.py", "tokenization_mobileclip.py",
            "processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
            *card.assets} <= set(commit.files)
    readme = commit.files["README.md"].decode()
    assert front_matter(readme) == front_matter(str(card)) and readme.strip() == str(card).strip()
    assert [body["content"] for body in fake_hub.validated] == [readme]  # upload_folder had the Hub check the card

    # in this process (our classes registered), from_pretrained("org/name") downloads through the fake hub too
    reloaded = AutoModel.from_pretrained(repo)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), tiny_model.state_dict().values()))
    assert ("GET", f"/{repo}/resolve/{commit.oid}/model.safetensors") in fake_hub.requests
    assert list((tmp_path / "hub-cache").glob("models--org--mobileclip-tiny/snapshots/*/model.safetensors"))

    store = fake_hub.dump(tmp_path / "store")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, str(FAKE_HUB_PATH), str(store), repo],
                          check=False, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["model_module"].startswith("transformers_modules.") and result["processor"] == "MobileCLIPProcessor"

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    inputs = tiny_processor(text=["a cat", "a dog", "a red square"], images=image, return_tensors="pt")
    with torch.no_grad():
        expected = tiny_model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        probs = tiny_model(**tiny_processor(text=["This is a photo of cat.", "This is a photo of dog."], images=image,
                                            return_tensors="pt")).logits_per_image.softmax(-1)[0]
    assert {r["label"]: r["score"] for r in result["pipeline"]} == pytest.approx(
        dict(zip(["cat", "dog"], probs.tolist())), abs=1e-5)
    # the card's usage snippets ran as written; they print the first widget example's scores
    usage, pipeline_snippet = result["snippets"]
    first = card.data.widget[0]
    assert ast.literal_eval(usage.strip()) == pytest.approx({o["label"]: o["score"] for o in first["output"]},
                                                            abs=1e-4)
    printed = ast.literal_eval(pipeline_snippet.strip())
    assert [r["label"] for r in printed] == [o["label"] for o in first["output"]]
    assert [r["score"] for r in printed] == pytest.approx([o["score"] for o in first["output"]], abs=1e-4)
