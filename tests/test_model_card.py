"""Model cards (`hub_cards.model_card`): metadata for every variant, the body, licence rules, widget outputs that
are what the pipeline returns, eval results, cards of models trained with train_accelerate, and the Hub's verdict on
them (`validate_card`, against the fake Hub)."""

import io
import tomllib
from pathlib import Path

import pytest
from fake_hub import fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from hub_fixtures import (  # noqa: F401  (fixtures; one_torch_thread and private_tempdir are autouse)
    front_matter,
    one_torch_thread,
    own_card,
    private_tempdir_fixture,
    tiny_model_fixture,
    tiny_processor_fixture,
)
from huggingface_hub import EvalResult, ModelCard, ModelCardData, RepoCard
from PIL import Image
from transformers import pipeline

from hub_cards import generate_model_card, validate_card
from hub_cards.common import APPLE_ATTRIBUTION_NOTICE, CODE_LICENSE
from hub_cards.model_card import APPLE_TRAINING_DATASETS, MODEL_TAGS
from modeling_mobileclip import PRETRAINED_TAGS, MobileCLIPProcessor

REPO_ROOT = Path(__file__).resolve().parents[1]
AGREEMENT = b"Placeholder for the licence agreement's text (tests only).\n"


def family(variant: str) -> str:
    return "mobileclip2" if variant.startswith("mobileclip2") else "mobileclip"


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


def test_licence_sentence_and_metric_tasks(tiny_model, tiny_processor):
    """A Hub licence id names the licence whose text applies (not "Its text: apache-2.0."); a link is given as one;
    mean per-class recall is a zero-shot classification metric, in both card kinds."""
    from hub_cards.model_card import HUB_LICENCES_URL
    from modeling_mobileclip.training.card import generic_card

    metrics = {"zeroshot_acc1": 0.5, "zeroshot_mean_per_class_recall": 0.4, "image_to_text_r1": 0.25,
               "mean_recall@1": 0.3}
    card = own_card(tiny_model, tiny_processor, eval_results=[{"dataset": "held-out", "metrics": metrics}])
    assert (f"The weights are licensed under `apache-2.0`. The licence's text is the standard text of `apache-2.0` "
            f"(see {HUB_LICENCES_URL}).") in card.text
    linked = generate_model_card(tiny_model, processor=tiny_processor, converted_from_apple=False,
                                 license={"license": "other", "license_name": "my-licence",
                                          "license_link": "https://example.com/LICENSE"})
    assert ("licensed under [my-licence](https://example.com/LICENSE). The licence's text is at "
            "https://example.com/LICENSE.") in linked.text
    trained = {"name": "tiny-clip", "license": "apache-2.0", "datasets": None, "base_model": None,
               "training": {"data": ["toy"], "command": "train", "teachers": [], "hyperparameters": {}},
               "eval_results": [{"key": "eval", "dataset": "held-out", "metrics": metrics}]}
    expected = {"zeroshot_acc1": "zero-shot-image-classification",
                "zeroshot_mean_per_class_recall": "zero-shot-image-classification",
                "image_to_text_r1": "zero-shot-image-text-retrieval", "mean_recall@1": "zero-shot-image-text-retrieval"}
    for made in (card, generic_card(trained, "transformers", "...")):
        parsed = ModelCardData(**front_matter(str(made))).eval_results
        assert {r.metric_type: r.task_type for r in parsed} == expected


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


def test_widget_images_resolve_on_the_hub_and_relative_paths_would_not(fake_hub, tiny_model, tiny_processor, tmp_path):
    """The Hub page shows a widget image by fetching `src` from the browser: a relative `widget/x.png` resolves
    against the page URL `<hub>/<repo>` to `<hub>/<namespace>/widget/x.png`, not a file of the repo. The card's
    resolve URLs serve exactly the PNG pushed with it."""
    from urllib.parse import urljoin

    from huggingface_hub.utils import get_session

    from hub_cards.push import push_folder_to_hub

    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    card = own_card(tiny_model, tiny_processor, repo_id="org/tiny")
    card.write(folder)
    push_folder_to_hub(folder, "org/tiny", commit_message="Add weights")
    page = f"{fake_hub.endpoint}/org/tiny"
    for example, relative in zip(card.data.widget, card.assets):
        assert example["src"] == f"{page}/resolve/main/{relative}"
        served = get_session().get(example["src"])
        assert served.status_code == 200 and served.content == (folder / relative).read_bytes()
        assert get_session().get(urljoin(page, relative)).status_code == 404  # what a relative src would fetch


def test_card_metadata_passes_huggingface_hubs_own_validation(fake_hub, variant_cards, tiny_model, tiny_processor):
    """Every card kind is read back strictly by huggingface_hub's `ModelCard` (its `ModelCardData` turns the
    model-index into `EvalResult`s) and round-trips unchanged; a model-index it cannot read is rejected before the
    Hub is asked."""
    from hub_cards.common import parse_card
    from modeling_mobileclip.training.card import generic_card

    trained = {"repo_id": "org/tiny-clip", "name": "tiny-clip", "license": "apache-2.0", "datasets": None,
               "base_model": "org/clip-base", "training": {"data": ["toy"], "command": "train", "teachers": [],
                                                           "hyperparameters": {"lr": 0.001}},
               "eval_results": [{"key": "eval", "dataset": "held-out evaluation",
                                 "metrics": {"zeroshot_acc1": 0.5, "image_to_text_r1": 0.25}}]}
    cards = [*variant_cards.values(), own_card(tiny_model, tiny_processor, eval_results=[
        {"dataset": "held-out", "metrics": {"eval/zeroshot_acc1": 0.5}}]),
        generic_card(trained, "transformers", "...")]
    for card in cards:
        text = str(card)
        meta = front_matter(text)
        parsed = parse_card(text)
        assert parsed.data.to_dict() == meta  # nothing dropped or rewritten by huggingface_hub's reading
        assert ModelCardData(**meta).to_dict() == meta
        metrics = [m for entry in meta.get("model-index", []) for r in entry["results"] for m in r["metrics"]]
        assert len(parsed.data.eval_results or []) == len(metrics)
        validate_card(card)
    assert len(fake_hub.validated) == len(cards)
    meta = front_matter(str(cards[-1]))
    broken = str(cards[-1]).replace("  results:\n", "  outcomes:\n", 1)
    assert "outcomes:" in broken and "model-index" in meta
    with pytest.raises(ValueError, match="Invalid `model_index` in metadata cannot be parsed"):
        validate_card(RepoCard(broken), "model")  # a plain RepoCard does not read the model-index itself
    assert len(fake_hub.validated) == len(cards)  # refused before the Hub was asked
