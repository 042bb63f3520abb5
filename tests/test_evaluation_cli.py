"""`python -m modeling_mobileclip.evaluation` (`evaluation/cli.py`) on tiny random models.

The CLI works on any model with the CLIPModel API (`get_image_features` / `get_text_features` / `logit_scale`): the
row tests run on a tiny MobileCLIP-S0-family model with its MobileCLIPProcessor and on a transformers CLIPModel with
a real CLIP tokenizer (built offline from open_clip's BPE file); the other tests use the CLIPModel. Every metric the
CLI reports is recomputed here without `modeling_mobileclip.evaluation.zeroshot`.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from open_clip.tokenizer import bytes_to_unicode, default_bpe
from PIL import Image
from conftest import calibrated, tiny_config
from fixtures.remote_code_model import assert_refused_without_running, copied_model_code, save_marker_clip
from transformers import (AutoModel, AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                          CLIPTokenizer)

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.evaluation.cli import main, run as run_command


REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "golden_retriever"]  # folder names; the prompts must read "golden retriever"
TEMPLATES = ["a photo of a {}.", "a drawing of the {}."]
# Captions per image, including an image with a single caption.
CAPTIONS = [["a red square", "something red"], ["a green field"], ["blue sky", "the sky", "clouds"], ["noise", "grey"]]


def clip_tokenizer() -> CLIPTokenizer:
    # Vocabulary and merges built exactly as open_clip's SimpleTokenizer builds them (49408 tokens).
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=clip_tokenizer(),
    )
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_mobileclip(tmp_path_factory, tokenizer) -> Path:
    """A tiny MobileCLIP-S0-family model (MCi tower, Text-RepMixer tower), un-fused, with its processor."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_mobileclip")
    calibrated(MobileCLIPModel(tiny_config("mci-s0text"))).save_pretrained(path)
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    processor.image_processor.size = {"shortest_edge": 64}
    processor.image_processor.crop_size = {"height": 64, "width": 64}
    processor.save_pretrained(path)
    return path


@pytest.fixture(params=["tiny_mobileclip", "tiny_clip"])
def any_model(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def model_without_processor(tiny_clip, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("no_processor")
    CLIPModel.from_pretrained(tiny_clip).save_pretrained(path)
    return path


def _random_image(rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    # A colour and a brightness ramp of its own: pure noise images all pool to the same MCi features.
    height, width = rng.integers(36, 60, size=2)
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(-80, 80, size=3)
    noise = rng.normal(0, 20, (height, width, 3))
    pixels = np.clip(rng.uniform(40, 215, size=3) + ramp + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """imagefolder layout: one sub-folder per class, 3 images each (one grayscale, one RGBA)."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir()
        for i, mode in enumerate(["RGB", "L", "RGBA"]):
            _random_image(rng, mode).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory) -> Path:
    """imagefolder with a metadata.jsonl giving each image a list of captions (Flickr30k/COCO style)."""
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(1)
    with open(root / "metadata.jsonl", "w") as f:
        for i, captions in enumerate(CAPTIONS):
            _random_image(rng).save(root / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "captions": captions}) + "\n")
    return root


@pytest.fixture(scope="module")
def templates_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("templates") / "templates.json"
    path.write_text(json.dumps(TEMPLATES))
    return path


def run(*args: str | Path, tmp_path: Path) -> dict:
    fixed = ["--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--no-progress"]
    return main([str(a) for a in args] + fixed)


# ----------------------------------------------------------------------------------------------------------
# Direct computation (no modeling_mobileclip.evaluation.zeroshot)
# ----------------------------------------------------------------------------------------------------------


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@torch.no_grad()
def direct_image_features(model, processor, images):
    pixel_values = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    return _unit(model.get_image_features(pixel_values=pixel_values).pooler_output)


@torch.no_grad()
def direct_text_features(model, processor, texts):
    batch = processor(text=texts, padding=True, return_tensors="pt")
    output = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return _unit(output.pooler_output)


def direct_classifier(model, processor, classnames, templates):
    # Per class: normalise each template embedding, average, renormalise.
    columns = [direct_text_features(model, processor, [t.format(c) for t in templates]).mean(0) for c in classnames]
    return _unit(torch.stack(columns)).T


def brute_force_recall(similarity: np.ndarray, text_to_image: np.ndarray, k: int) -> tuple[float, float]:
    """(text->image, image->text) recall@k by sorting every row/column."""
    image_hits = [text_to_image[t] in np.argsort(-similarity[t])[:k] for t in range(len(similarity))]
    text_hits = []
    for i in range(similarity.shape[1]):
        top = np.argsort(-similarity[:, i])[:k]
        text_hits.append(any(text_to_image[t] == i for t in top))
    return float(np.mean(image_hits)), float(np.mean(text_hits))


# ----------------------------------------------------------------------------------------------------------
# Zero-shot classification
# ----------------------------------------------------------------------------------------------------------


def test_zeroshot_row_format_and_values_match_direct_computation(any_model, image_folder, templates_file, tmp_path):
    output = tmp_path / "results" / "results.jsonl"
    row = run(
        "--model", any_model, "--task", "zeroshot-classification", "--dataset", image_folder,
        "--templates", templates_file, "--output", output, "--key", "toy3", "--dataset-name", "Toy 3",
        tmp_path=tmp_path,
    )  # fmt: skip
    # Apple's results/*.jsonl row layout; acc5 is null with fewer than 5 classes, as in datacomp.
    assert list(row) == ["key", "dataset", "metrics"]
    assert (row["key"], row["dataset"]) == ("toy3", "Toy 3")
    assert list(row["metrics"]) == ["acc1", "acc5", "mean_per_class_recall", "main_metric"]
    assert row["metrics"]["acc5"] is None
    assert row["metrics"]["main_metric"] == row["metrics"]["acc1"]
    assert [json.loads(line) for line in output.read_text().splitlines()] == [row]

    model = AutoModel.from_pretrained(any_model).eval()
    processor = AutoProcessor.from_pretrained(any_model)
    classnames = [c.replace("_", " ") for c in CLASSES]
    classifier = direct_classifier(model, processor, classnames, TEMPLATES)
    files = sorted(image_folder.glob("*/*.png"))
    labels = np.array([CLASSES.index(f.parent.name) for f in files])
    image_features = direct_image_features(model, processor, [Image.open(f) for f in files])
    predictions = (image_features @ classifier).argmax(1).numpy()
    correct = predictions == labels
    assert 0.0 <= row["metrics"]["acc1"] <= 1.0
    assert row["metrics"]["acc1"] == pytest.approx(correct.mean(), abs=1e-12)
    per_class = np.mean([correct[labels == c].mean() for c in range(len(CLASSES))])
    assert row["metrics"]["mean_per_class_recall"] == pytest.approx(per_class, abs=1e-12)

    # A second run appends a second row (one file collects many datasets).
    run("--model", any_model, "--task", "zeroshot-classification", "--dataset", image_folder,
        "--templates", templates_file, "--output", output, tmp_path=tmp_path)  # fmt: skip
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["key"] for r in rows] == ["toy3", image_folder.name]
    assert rows[1]["metrics"] == row["metrics"]


def test_zeroshot_default_templates_bf16_limit_and_main_metric(tiny_mobileclip, image_folder, tmp_path):
    row = run(
        "--model", tiny_mobileclip, "--task", "zeroshot-classification", "--dataset", image_folder, "--dtype", "bf16",
        "--limit", "4", "--batch-size", "32", "--main-metric", "mean_per_class_recall", tmp_path=tmp_path,
    )  # fmt: skip
    acc1 = row["metrics"]["acc1"]
    assert 0.0 <= acc1 <= 1.0 and (acc1 * 4) == pytest.approx(round(acc1 * 4))  # 4 images were scored
    assert row["metrics"]["main_metric"] == row["metrics"]["mean_per_class_recall"]


def test_a_model_with_its_own_templates_is_evaluated_with_them_by_default(tiny_clip, image_folder, templates_file,
                                                                         tmp_path, capsys):
    from modeling_mobileclip.evaluation import prompts

    model = tmp_path / "model"
    shutil.copytree(tiny_clip, model)
    common = ("--model", model, "--task", "zeroshot-classification", "--dataset", image_folder, "--limit", "3")
    run(*common, tmp_path=tmp_path)
    assert "x 80 templates" in capsys.readouterr().err  # no file: the 80 CLIP prompts
    assert prompts.save_model_templates(model, TEMPLATES) == model / prompts.MODEL_TEMPLATES_FILE
    own = run(*common, tmp_path=tmp_path)
    assert f"x {len(TEMPLATES)} templates" in capsys.readouterr().err
    assert own["metrics"] == run(*common, "--templates", templates_file, tmp_path=tmp_path)["metrics"]
    run(*common, "--templates", "photo", tmp_path=tmp_path)  # --templates wins over the model's own
    assert "x 1 templates" in capsys.readouterr().err


def test_saved_dataset_and_parquet_give_the_same_row(tiny_clip, tmp_path):
    rng = np.random.default_rng(2)
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["ant", "bee"])})
    data = datasets.Dataset.from_dict(
        {"img": [_random_image(rng) for _ in range(6)], "fine_label": [0, 1, 0, 1, 1, 0]}, features=features
    )
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(tmp_path / "saved")
    data.to_parquet(tmp_path / "data.parquet")
    common = ("--model", tiny_clip, "--task", "zeroshot-classification", "--templates", "photo")
    saved = run(*common, "--dataset", tmp_path / "saved", tmp_path=tmp_path)  # picks the "test" split
    parquet = run(*common, "--dataset", tmp_path / "data.parquet", tmp_path=tmp_path)
    assert saved["metrics"] == parquet["metrics"]
    assert (saved["key"], parquet["key"]) == ("saved", "data")


# ----------------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------------


def test_retrieval_row_matches_brute_force_recall(any_model, caption_folder, tmp_path):
    row = run("--model", any_model, "--task", "retrieval", "--dataset", caption_folder, "--batch-size", "3",
              tmp_path=tmp_path)  # fmt: skip
    metrics = row["metrics"]
    assert list(metrics)[:7] == [
        "image_retrieval_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@5",
        "text_retrieval_recall@5", "image_retrieval_recall@10", "text_retrieval_recall@10", "mean_recall@1",
    ]  # fmt: skip
    assert metrics["main_metric"] == metrics["mean_recall@1"]
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

    model = AutoModel.from_pretrained(any_model).eval()
    processor = AutoProcessor.from_pretrained(any_model)
    images = [Image.open(caption_folder / f"{i}.png") for i in range(len(CAPTIONS))]
    texts = [c for captions in CAPTIONS for c in captions]
    text_to_image = np.array([i for i, captions in enumerate(CAPTIONS) for _ in captions])
    image_features = direct_image_features(model, processor, images)
    similarity = (direct_text_features(model, processor, texts) @ image_features.T).numpy()
    for k in (1, 5, 10):
        image_recall, text_recall = brute_force_recall(similarity, text_to_image, k)
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(image_recall, abs=1e-12)
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(text_recall, abs=1e-12)
    both_at_1 = (metrics["image_retrieval_recall@1"], metrics["text_retrieval_recall@1"])
    assert metrics["mean_recall@1"] == pytest.approx(sum(both_at_1) / 2)


# ----------------------------------------------------------------------------------------------------------
# `python -m` and bad input
# ----------------------------------------------------------------------------------------------------------


def _module_run(*args, cwd=REPO_ROOT, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "modeling_mobileclip.evaluation", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_python_dash_m_run_prints_the_same_row(tiny_clip, image_folder, templates_file, tmp_path):
    args = ("--model", tiny_clip, "--task", "zeroshot-classification", "--dataset", image_folder,
            "--templates", templates_file, "--cache-dir", tmp_path / "cache", "--num-workers", "0",
            "--no-progress")  # fmt: skip
    # The package's __main__ (what the `mobileclip-eval` console script runs too), in a fresh interpreter.
    completed = _module_run(*args)
    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert printed == main([str(a) for a in args])


def test_python_dash_m_bad_input_exits_with_the_message(model_without_processor, image_folder, tmp_path):
    completed = _module_run("--model", model_without_processor, "--task", "zeroshot-classification",
                            "--dataset", image_folder, "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert completed.returncode == 2
    assert "error: --model" in completed.stderr and "no processor could be loaded" in completed.stderr
    assert "Traceback" not in completed.stderr



def test_a_model_with_its_own_code_is_evaluated_only_with_trust_remote_code(tiny_clip, image_folder, templates_file,
                                                                            tmp_path):
    """Issue 15.1: the folder's auto_map names marker_clip.py, which writes `marker` when imported."""
    marker = tmp_path / "marker"
    folder = save_marker_clip(tmp_path / "marker_clip", marker)
    CLIPProcessor.from_pretrained(tiny_clip).save_pretrained(folder)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    args = ("--model", folder, "--task", "zeroshot-classification", "--dataset", image_folder,
            "--templates", templates_file, "--cache-dir", tmp_path / "cache", "--num-workers", "0",
            "--no-progress")  # fmt: skip
    refused = _module_run(*args, env=env)
    assert_refused_without_running(refused, folder, marker, tmp_path / "modules", returncode=2)

    trusted = _module_run(*args, "--trust-remote-code", env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert marker.exists() and "marker_clip.py" in copied_model_code(tmp_path / "modules")
    assert 0.0 <= json.loads(trusted.stdout.strip().splitlines()[-1])["metrics"]["acc1"] <= 1.0


def test_a_mobileclip_folder_is_evaluated_without_the_flag_and_without_its_copied_code(tiny_mobileclip, image_folder,
                                                                                      templates_file, tmp_path):
    """The installed classes load it: the folder's auto_map and modules (written by save_pretrained) stay unused."""
    assert "auto_map" in json.loads((tiny_mobileclip / "config.json").read_text())
    completed = _module_run("--model", tiny_mobileclip, "--task", "zeroshot-classification", "--dataset", image_folder,
                            "--templates", templates_file, "--cache-dir", tmp_path / "cache", "--num-workers", "0",
                            "--no-progress", env={"HF_MODULES_CACHE": str(tmp_path / "modules")})  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert copied_model_code(tmp_path / "modules") == []


@pytest.mark.parametrize("where", ["parent_is_a_file", "parent_unwritable", "output_is_a_folder"])
def test_an_unwritable_output_fails_before_any_work(where, tiny_clip, image_folder, tmp_path, capsys):
    """Issue 15.3c: the row is appended at the end; a bad --output must not cost the evaluation first."""
    (tmp_path / "file").write_text("not a folder")
    output = {"parent_is_a_file": tmp_path / "file" / "results.jsonl",
              "parent_unwritable": Path("/proc/mobileclip-results/results.jsonl"),  # mkdir fails there, even as root
              "output_is_a_folder": tmp_path}[where]  # fmt: skip
    code = run_command(["--model", str(tiny_clip), "--task", "zeroshot-classification", "--dataset", str(image_folder),
                        "--templates", "photo", "--output", str(output), "--cache-dir", str(tmp_path / "cache")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: --output {output}"), errors
    assert not (tmp_path / "cache").exists()  # the dataset was not even read


@pytest.fixture()
def bad_templates(tmp_path) -> Path:
    path = tmp_path / "bad_templates.json"
    path.write_text(json.dumps(["a photo of a {}.", "a photo"]))
    return path


BAD_INPUT = [
    ("template_without_placeholder", r"1 of 2 templates have no '\{\}' placeholder .*#1: 'a photo'.*of a \{\}\.'"),
    ("unknown_template_set", r"templates 'imagenet-80' is neither a shipped set \(\['openai-imagenet', 'photo'\]\)"),
    ("no_label_column", r"has no label column \(image: Image, captions: List\).*--label-column NAME"),
    ("no_caption_column", r"has no caption columns \(image: Image, label: ClassLabel\).*--caption-column NAME"),
    ("model_without_processor", r"--model '.*no_processor.*': no processor could be loaded .*save_pretrained"),
    ("unknown_split", r"--split 'validation' is not in --dataset .*; available splits: \['train'\]"),
    ("classnames_count", r"--classnames 'imagenet' has 1000 names but the label column 'label' .* has 3 classes"),
    ("main_metric", r"--main-metric 'acc10' is not a metric of --task zeroshot-classification; choose one of \['acc1'"),
]


@pytest.mark.parametrize(("case", "message"), BAD_INPUT, ids=[case for case, _ in BAD_INPUT])
def test_bad_input_is_named_with_the_fix(
    case, message, tiny_clip, model_without_processor, image_folder, caption_folder, bad_templates, tmp_path
):
    classify = ["--model", tiny_clip, "--task", "zeroshot-classification", "--dataset", image_folder,
                "--templates", "photo"]  # fmt: skip
    args = {
        "template_without_placeholder": [*classify, "--templates", bad_templates],
        "unknown_template_set": [*classify, "--templates", "imagenet-80"],
        "no_label_column": [*classify, "--dataset", caption_folder],
        "no_caption_column": ["--model", tiny_clip, "--task", "retrieval", "--dataset", image_folder],
        "model_without_processor": [*classify, "--model", model_without_processor],
        "unknown_split": [*classify, "--split", "validation"],
        "classnames_count": [*classify, "--classnames", "imagenet"],
        "main_metric": [*classify, "--main-metric", "acc10"],
    }[case]
    with pytest.raises(ValueError, match=message):
        run(*args, tmp_path=tmp_path)
