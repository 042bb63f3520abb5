"""train_accelerate.py and its embedded default (dataset_scripts/toy_data.py), on a small toy DataCompDR.

Real `accelerate launch` subprocesses for the main job, the exact resume after SIGKILL and the 2-process run; the
other runs call `train_accelerate.main` in this process (same code path, no launcher start-up).
"""

import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from conftest import train_in_process
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_accelerate  # noqa: E402
from dataset_scripts import toy_data  # noqa: E402
from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr  # noqa: E402
from modeling_mobileclip.training import args as training_args  # noqa: E402
from modeling_mobileclip.training import checkpoints, data_sources, students  # noqa: E402

SPEC = dict(num_train=64, samples_per_shard=32, num_augmentations=2, teacher_images=128, teacher_steps=30,
            teacher_batch_size=16)
TOY = ["--toy-spec", ",".join(f"{k}={v}" for k, v in SPEC.items())]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
           OMP_NUM_THREADS="1")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy_cache")
    build_toy_datacompdr(ToySpec(**SPEC), path, log=lambda *a: None)
    return path


@pytest.fixture(scope="session")
def toy_root(cache_dir):
    return build_toy_datacompdr(ToySpec(**SPEC), cache_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(cache_dir, out, *extra, processes=1):
    # accelerate 1.15's `launch --cpu --num_processes 2` silently starts ONE process; --multi_gpu on a CPU-only
    # machine starts N gloo processes (torchrun), which is what a user runs on a multi-core box.
    multi = ["--multi_gpu", "--main_process_port", str(free_port())] if processes > 1 else ["--cpu"]
    return [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(ROOT / "train_accelerate.py"), *TOY, "--cache-dir", str(cache_dir), "--output-dir", str(out),
            "--batch-size", "8", *extra]


def launch(cache_dir, out, *extra, processes=1):
    result = subprocess.run(command(cache_dir, out, *extra, processes=processes), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def run_in_process(cache_dir, out, *extra):
    """`train_accelerate.main` here (conftest.train_in_process: accelerate's state reset around the run)."""
    return train_in_process([*TOY, "--cache-dir", str(cache_dir), "--output-dir", str(out), "--batch-size", "8",
                             "--report-to", "jsonl", *extra])


def metrics(out):
    rows = [json.loads(line) for line in (Path(out) / "logs" / "mobileclip" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r], [r for r in rows if "eval/zeroshot_acc1" in r]


def run_config(out):
    return json.loads((Path(out) / "logs" / "mobileclip" / "config.json").read_text())


# ------------------------------------------------------------------------------------------------- embedded default


def test_procedural_captioner_reads_the_pixels():
    rng = random.Random(0)
    scenes = [toy_data.random_scene(rng) for _ in range(300)]
    images = [PIL.Image.open(io.BytesIO(toy_data.jpeg_bytes(toy_data.render(s)))) for s in scenes]
    for scene, image in zip(scenes, images):  # through JPEG, as the reinforcement tool sees them
        found = toy_data.measure(image)
        assert (found["colour"], found["shape"], found["background"], found["size"]) == \
            (scene.colour, scene.shape, scene.background, scene.size), scene
    captioner = toy_data.ProceduralCaptioner()
    first = captioner.caption(images[:4], [[1, 2]] * 4)
    assert first == captioner.caption(images[:4], [[1, 2]] * 4)  # a function of (picture, seed) only
    assert all(scene.colour in cap and scene.shape in cap for scene, caps in zip(scenes, first) for cap in caps)


def test_toy_dataset_is_built_through_the_reinforcement_tool(toy_root):
    import datasets

    import dataset_scripts  # noqa: F401

    toy = json.loads((toy_root / "toy.json").read_text())
    config = json.loads((toy_root / "train" / "config.json").read_text())
    assert [t["embedding_dim"] for t in config["teachers"]] == [32, 24]
    assert config["captioner"]["model"] == toy_data.ProceduralCaptioner.name and config["license"] == "apache-2.0"
    assert [t["logit_scale"] for t in config["teachers"]] == [t["logit_scale"] for t in toy["teachers"]]
    shards = sorted(str(p) for p in (toy_root / "train").glob("*.tar"))
    ds = datasets.load_dataset("datacompdr", data_files={"train": shards}, split="train", image_dir=shards,
                               captions=shards, cache_dir=str(toy_root.parent / "hf"))
    assert len(ds) == SPEC["num_train"]
    ex = ds[0]
    found = toy_data.measure(PIL.Image.open(io.BytesIO(ex["image"]["bytes"])))
    # the synthetic captions are the captioner's reading of the stored picture
    assert all(found["colour"] in c and found["shape"] in c for c in ex["syn_text"])
    emb = np.asarray(ex["image_emb"])
    assert emb.shape == (SPEC["num_augmentations"], 56)
    np.testing.assert_allclose(np.linalg.norm(emb[:, :32], axis=1), 1, atol=1e-5)  # each teacher's block unit-norm
    np.testing.assert_allclose(np.linalg.norm(emb[:, 32:], axis=1), 1, atol=1e-5)
    held_out = datasets.load_from_disk(str(toy_root / "eval"))
    assert len(held_out) == 144 and len(set(held_out["caption"])) == 144
    assert held_out.features["label"].names == toy["eval_classnames"]


def test_teachers_trained_side_by_side_equal_one_after_the_other(toy_root, tmp_path):
    # toy_root trained its two teachers in as many threads as the machine has cores (up to 2): build again the other way
    threads = 1 if min(2, os.cpu_count() or 1) > 1 else 2
    other = build_toy_datacompdr(ToySpec(**SPEC), tmp_path, log=lambda *a: None, teacher_threads=threads)
    for name in ("mci-32d", "mci-24d"):
        ours, theirs = (load_file(root / "teachers" / name / "model.safetensors") for root in (toy_root, other))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    untimed = [json.loads((root / "toy.json").read_text()) for root in (toy_root, other)]
    for record in untimed:
        del record["build_seconds"]
        for teacher in record["teachers"]:
            del teacher["seconds"]
    assert untimed[0] == untimed[1]


# --------------------------------------------------------------------------------------------------------- main job


def test_main_job_end_to_end(cache_dir, tmp_path):
    from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor

    out = tmp_path / "run"
    result = launch(cache_dir, out, "--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "2",
                    "--log-every", "1")
    train, evals = metrics(out)
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in evals] == [2, 4]
    assert {"train/distill_loss_gt", "train/distill_loss_syn", "train/grad_norm", "train/lr",
            "train/samples_per_s"} <= set(train[0])
    assert {"eval/zeroshot_acc1", "eval/image_retrieval_recall@1", "eval/text_retrieval_recall@1"} <= set(evals[0])
    assert "samples_s=" in result.stderr  # the progress bar shows the throughput
    assert "had defaults used instead" not in result.stderr  # issue 18.10: the README's flags (see command())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]
    assert list((out / "logs").rglob("events.out.tfevents*")), "tensorboard logs missing"
    model, processor = MobileCLIPModel.from_pretrained(out), MobileCLIPProcessor.from_pretrained(out)
    with torch.no_grad():
        embeds = model(**processor(text=["a red circle"], return_tensors="pt"),
                       pixel_values=torch.zeros(1, 3, 64, 64)).image_embeds
    assert torch.isfinite(embeds).all()
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "train_accelerate.py" in card


def train_and_check_learning(cache_dir, out, *extra, steps=60, decrease=1.0):
    """Batch 16 with weights (1, 1); the loss falls and the student beats uniform logits.

    Uniform logits (a collapsed student) give ln(16) = 2.77 per contrastive term; the distillation terms cannot go
    below the teachers' own entropy, near ln(16) for the 30-step teachers of the test toy set.
    """
    run_in_process(cache_dir, out, "--max-steps", str(steps), "--batch-size", "16", "--lr", "2e-3", "--loss-weights",
                   "1,1", "--log-every", "1", "--eval-every", str(steps), "--checkpoint-every", "1000", *extra)
    rows = metrics(out)[0]
    first, last = rows[:5], rows[-10:]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "train/loss") < decrease * mean(first, "train/loss"), [r["train/loss"] for r in rows]
    for key in ("train/contrastive_loss_gt", "train/contrastive_loss_syn"):
        assert mean(last, key) < 0.97 * np.log(16), (key, [r[key] for r in rows])


def test_loss_decreases(cache_dir, tmp_path):
    # MCi (BatchNorm, RepMixer layer scales starting at 1e-5) needs more steps than the ViT students below.
    train_and_check_learning(cache_dir, tmp_path / "run", steps=100, decrease=0.85)
    check_widgets_are_held_out_pictures(cache_dir, tmp_path / "run")


def check_widgets_are_held_out_pictures(cache_dir, out):
    """The card's widgets are held-out toy pictures with their true class among four class names, and each output
    is what the zero-shot pipeline (default prompt) returns for the saved model. Whether the top label is the true
    one depends on the model: the main job's is (docs/training.md); this 100-step test model's need not be."""
    import datasets
    from huggingface_hub import ModelCard
    from transformers import pipeline

    eval_ds = datasets.load_from_disk(str(build_toy_datacompdr(ToySpec(**SPEC), cache_dir) / "eval"))
    truth = {w["src"]: w for w in toy_data.widget_examples(eval_ds)}
    widgets = ModelCard.load(out / "README.md").data.widget
    assert sorted(w["src"] for w in widgets) == sorted(truth) and len(widgets) == 3
    classifier = pipeline("zero-shot-image-classification", model=str(out))
    for widget in widgets:
        expected, image = truth[widget["src"]], PIL.Image.open(out / widget["src"])
        labels = widget["candidate_labels"].split(", ")
        assert labels == expected["candidate_labels"] and expected["label"] in labels
        assert set(labels) <= set(eval_ds.features["label"].names)
        assert np.array_equal(np.asarray(image), np.asarray(expected["image"].convert("RGB")))  # PNG: lossless
        result = classifier(image, candidate_labels=labels)
        assert [r["label"] for r in result] == [o["label"] for o in widget["output"]]


def test_gradient_checkpointing_accumulation_and_bf16(cache_dir, tmp_path):
    common = ("--model", "tiny-clip", "--max-steps", "3", "--batch-size", "4", "--gradient-accumulation-steps", "2",
              "--log-every", "1", "--eval-every", "3", "--checkpoint-every", "100")
    run_in_process(cache_dir, tmp_path / "plain", *common)
    run_in_process(cache_dir, tmp_path / "ckpt", *common, "--gradient-checkpointing")
    run_in_process(cache_dir, tmp_path / "bf16", *common, "--mixed-precision", "bf16")
    plain, ckpt, bf16 = (metrics(tmp_path / name)[0] for name in ("plain", "ckpt", "bf16"))
    assert [r["step"] for r in plain] == [1, 2, 3]  # optimizer steps, each from 2 micro-batches of 4
    assert [r["train/lr"] for r in plain] == pytest.approx([7.5e-4, 2.5e-4, 0.0])  # stepped once per optimizer step
    for a, b in zip(plain, ckpt, strict=True):  # recomputing activations changes nothing but memory
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-6)
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-5)
    # bf16 autocast in the towers, float32 loss: close to the float32 run, not equal
    assert all(np.isfinite(r["train/loss"]) for r in bf16)
    assert bf16[0]["train/loss"] == pytest.approx(plain[0]["train/loss"], rel=0.05)
    assert bf16[0]["train/loss"] != plain[0]["train/loss"]


# ------------------------------------------------------------------------------------------------ other families


@pytest.mark.parametrize("model", ["tiny-clip", "tiny-siglip", "tiny-open-clip"])
def test_other_students_train_and_reload_in_their_library(cache_dir, tmp_path, model):
    out = tmp_path / model
    train_and_check_learning(cache_dir, out, "--model", model)
    card = (out / "README.md").read_text()
    pixels = torch.rand(2, 3, 32, 32)
    if model == "tiny-open-clip":
        import open_clip

        assert "library_name: open_clip" in card
        reloaded = open_clip.create_model("local-dir:" + str(out))
        weights = load_file(out / "open_clip_model.safetensors")
        assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in weights.items())
        with torch.no_grad():
            assert reloaded.encode_image(pixels).shape == (2, 32)
        return
    from transformers import AutoModel, AutoProcessor

    reloaded = AutoModel.from_pretrained(out)
    assert type(reloaded).__name__ == {"tiny-clip": "CLIPModel", "tiny-siglip": "SiglipModel"}[model]
    assert "library_name: transformers" in card
    processor = AutoProcessor.from_pretrained(out)
    ids = processor(text=["a red circle"], padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(reloaded(input_ids=ids, pixel_values=pixels).logits_per_image).all()
    # transformers' own tokenizer class, so a Hub user needs neither this package nor trust_remote_code
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "CLIPTokenizer" and "auto_map" not in tokenizer_config
    assert [p.name for p in out.glob("*.py")] == ["handler.py"]  # the Inference Endpoints handler, no remote code
    assert (out / "requirements.txt").read_text().split() == ["transformers>=5.23,<6"]
    if model == "tiny-clip":  # loaded where this project cannot be imported: the processor, then the endpoint
        from hub_fixtures import endpoint_replies

        PIL.Image.new("RGB", (40, 30), (200, 30, 30)).save(out / "red.png")
        (reply,), stdout = endpoint_replies(out, [{"kind": "json", "src": "red.png", "payload": {
            "parameters": {"candidate_labels": "a red circle, a blue square"}}}], before=(
            "from transformers import AutoProcessor\n"
            f"p = AutoProcessor.from_pretrained({str(out)!r})\n"
            "print('NAMES', type(p).__name__, type(p.tokenizer).__name__, p.tokenizer.pad_token_id)\n"
            "print('IDS', p(text=['a red circle'], padding='max_length', max_length=77)['input_ids'][0])\n"))
        lines = dict(line.split(" ", 1) for line in stdout.splitlines() if line.startswith(("NAMES", "IDS")))
        assert lines["NAMES"] == "CLIPProcessor CLIPTokenizer 49407"  # pads with <|endoftext|>: CLIP pools at it
        assert json.loads(lines["IDS"]) == ids[0].tolist()
        assert sorted(r["label"] for r in reply) == ["a blue square", "a red circle"]
        assert sum(r["score"] for r in reply) == pytest.approx(1.0) and reply[0]["score"] >= reply[1]["score"]


# ------------------------------------------------------------------------------------------------ multi-process


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(cache_dir, tmp_path):
    # A student without BatchNorm, whose per-device statistics would legitimately differ between 1 and 2 processes.
    args = ("--model", "tiny-clip", "--max-steps", "3", "--checkpoint-every", "100", "--eval-every", "3",
            "--log-every", "1", "--loss-weights", "0.5,0.5", "--report-to", "jsonl")
    run_in_process(cache_dir, tmp_path / "one", *args, "--batch-size", "8")  # 1 process: no launcher to start
    launch(cache_dir, tmp_path / "two", *args, "--batch-size", "4", processes=2)
    assert run_config(tmp_path / "one")["num_processes"] == 1 and run_config(tmp_path / "two")["num_processes"] == 2
    (one, one_eval), (two, two_eval) = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for a, b in zip(one, two, strict=True):  # loss and gradient norm of every optimizer step
        for key in ("train/loss", "train/grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
    assert one_eval[0] == pytest.approx(two_eval[0], abs=1e-6)  # the gathered, de-duplicated held-out set
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    # Attention key biases have an exactly-zero gradient (softmax ignores a constant added to every key score); Adam
    # scales the ~1e-9 rounding noise left in them to lr-sized steps of either sign, so they are not comparable.
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1 if not k.endswith("k_proj.bias"))
    print(f"1-proc vs 2-proc max abs weight diff after 3 AdamW steps (lr 1e-3): {diff:.2e}")
    assert diff < 2e-6


@pytest.mark.slow
def test_exact_resume_after_sigkill(cache_dir, tmp_path):
    args = ("--max-steps", "8", "--checkpoint-every", "2", "--eval-every", "100", "--report-to", "jsonl")
    run_in_process(cache_dir, tmp_path / "full", *args)  # the reference: no launcher and interpreter to start

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(cache_dir, killed, *args), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while checkpoints.latest_checkpoint(killed) is None and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its training process, no clean-up
    finally:
        proc.wait()
    path, _ = checkpoints.latest_checkpoint(killed)
    assert json.loads((path / checkpoints.COMPLETE_MARKER).read_text())["step"] < 8
    assert not (killed / "model.safetensors").exists()

    run_in_process(cache_dir, killed, *args, "--resume", str(killed))  # the kill above is the process that matters
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(resumed[name], full[name]), name


# ------------------------------------------------------------------------------------------------ the Hub


def test_push_to_hub_checkpoints_in_the_background_and_the_final_model(cache_dir, tmp_path):
    from fake_hub import FakeHub
    from transformers import AutoModel

    hub = FakeHub()
    with hub.install(cache_dir=tmp_path / "hub-cache"):
        out = run_in_process(cache_dir, tmp_path / "run", "--max-steps", "4", "--checkpoint-every", "2",
                             "--eval-every", "4", "--push-to-hub", "org/tiny-dr")
        commits = hub.commits("org/tiny-dr")
        assert [c.message for c in commits] == ["Checkpoint at step 2", "Checkpoint at step 4",
                                                "Final model (train_accelerate.py)"]
        assert {"last-checkpoint/model.safetensors", "last-checkpoint/optimizer.bin",
                "last-checkpoint/random_states_0.pkl"} <= set(commits[0].changed)
        files = hub.files("org/tiny-dr")
        assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= set(files)
        assert json.loads(files["last-checkpoint/checkpoint_complete.json"]) == {"step": 4}
        assert not any(name.startswith("checkpoints/") for name in files)
        assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
        assert "org/tiny-dr" in files["README.md"].decode()  # the card's snippets load from the repo
        reloaded = AutoModel.from_pretrained("org/tiny-dr")
        # the pre-flight check asked before anything was created, and the card's widget images resolve on the Hub
        first_create = hub.requests.index(("POST", "/api/repos/create"))
        assert {("GET", "/api/whoami-v2"), ("GET", "/api/models/org/tiny-dr/auth-check/write")} <= set(
            hub.requests[:first_create])
        from huggingface_hub.utils import get_session

        for example in yaml.safe_load(files["README.md"].decode().split("---\n")[1])["widget"]:
            assert example["src"].startswith(f"{hub.endpoint}/org/tiny-dr/resolve/main/widget/")
            assert get_session().get(example["src"]).content == files[example["src"].split("/resolve/main/")[1]]
    local = load_file(out / "model.safetensors")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in local.items())


def test_push_to_hub_whose_pushes_all_fail_leaves_no_copy_and_no_repo(cache_dir, tmp_path, monkeypatch, capsys):
    """Every commit is refused: the checkpoint pushes warn, the final one raises; no snapshot copy stays in the temp
    dir, the repo the first push created is gone, and the printed retry command publishes the model but not the
    training state."""
    import tempfile

    from fake_hub import FakeHub
    from test_hub_push import run_hf_cli

    from hub_cards.push import HubPushError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    hub = FakeHub()
    with hub.install(cache_dir=tmp_path / "hub-cache"):
        hub.fail("commit", status=403)
        with pytest.raises(HubPushError) as raised:
            run_in_process(cache_dir, tmp_path / "run", "--max-steps", "4", "--checkpoint-every", "2",
                           "--eval-every", "4", "--push-to-hub", "org/tiny-dr")
        assert capsys.readouterr().err.count("Warning: Pushing") == 2  # both checkpoint pushes failed
        assert not hub.repo_exists("org/tiny-dr") and list((tmp_path / "tmp").iterdir()) == []
        out = tmp_path / "run"
        assert raised.value.folder == out and (out / "checkpoints").is_dir()
        assert raised.value.retry_command.endswith("--exclude 'checkpoints/*'")
        hub.clear_failures()
        run_hf_cli(raised.value.retry_command)
        files = hub.files("org/tiny-dr")
        assert files["model.safetensors"] == (out / "model.safetensors").read_bytes() and "README.md" in files
        assert not any(name.startswith("checkpoints/") for name in files)


PREFLIGHT_FAILURES = {  # case: (extra flags, how the Hub or the token is set up, the one error line)
    "no licence": (["--train-data", "shards/{00000..00001}.tar", "--eval-data", "held-out"], None,
                   r"no --license given: .*Pass a Hub licence id, e\.g\. --license apache-2\.0, or the licence your "
                   r"data and teachers require\."),
    "card the Hub rejects": (["--license", "not-a-licence"], None,
                             r"the model card this run would write is invalid \(.*license: 'not-a-licence' is not a "
                             r"known license id.*\); fix --license"),
    "open_clip card the Hub rejects": (["--model", "tiny-open-clip", "--license", "not-a-licence"], None,
                                       r"the model card this run would write is invalid \(.*license: 'not-a-licence' "
                                       r"is not a known license id"),
    "offline": ([], "offline", r"HF_HUB_OFFLINE is set, but pushing needs the Hub: unset HF_HUB_OFFLINE"),
    "no token": ([], "no token", r"no Hugging Face token found\. Log in with `hf auth login`"),
    "rejected token": ([], "wrong token", r"the Hub rejects the token \(401\)\. Create a write token"),
    "read-only token": ([], "read-only token", r"the token is read-only\. Create a write token"),
    "namespace not the user's": (["--push-to-hub", "someone/tiny-dr"], None,
                                 r"the repo does not exist and 'me' cannot create repos under 'someone'\. Use a "
                                 r"namespace of yours \(me, org\), e\.g\. --push-to-hub me/tiny-dr\."),
    "Hub unreachable": ([], "unreachable", r"could not reach the Hub \(ConnectError: \[fake hub\] .*\); check the "
                                          r"connection and rerun\."),
    "existing repo not writable": (["--push-to-hub", "someone/existing"], "someone's repo",
                                   r"the token of 'me' has no write access to this existing repo .*--push-to-hub "
                                   r"me/existing"),
}


@pytest.mark.parametrize("case", list(PREFLIGHT_FAILURES))
def test_push_to_hub_preflight_fails_before_training(cache_dir, tmp_path, monkeypatch, capsys, case):
    from fake_hub import FakeHub
    from huggingface_hub import constants

    extra, setup, message = PREFLIGHT_FAILURES[case]
    flags = ["--push-to-hub", "org/tiny-dr", *extra]  # a later --push-to-hub wins
    hub = FakeHub()
    if setup == "someone's repo":
        hub.add_commit("someone/existing", {"README.md": b"theirs"})
    with hub.install(cache_dir=tmp_path / "hub-cache"):
        if setup == "no token":
            monkeypatch.delenv("HF_TOKEN")
            monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
        elif setup == "offline":
            monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        elif setup == "wrong token":
            monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
        elif setup == "read-only token":
            hub.role = "read"
        elif setup == "unreachable":
            hub.fail("*", status="connect")
        with pytest.raises(SystemExit) as raised:
            run_in_process(cache_dir, tmp_path / "run", "--max-steps", "2", *flags)
    assert raised.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    repo = flags[flags.index("--push-to-hub", 2) + 1] if "--push-to-hub" in extra else "org/tiny-dr"
    assert len(errors) == 1 and errors[0].startswith(f"train_accelerate.py: error: --push-to-hub {repo}: ")
    assert re.search(message, errors[0]), errors[0]
    # before any work: no data read, no step, nothing written, nothing created on the Hub
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model.safetensors").exists()
    assert [key for key in hub.history if key[1] != "someone/existing"] == []
    assert [r for r in hub.requests if r[0] != "GET" and r[1] != "/api/validate-yaml"] == []


def test_push_to_hub_without_a_token_exits_2_with_one_error_line(cache_dir, tmp_path):
    """The real process, as `mobileclip-train` / `python train_accelerate.py` run it: status 2, one line, no work."""
    env = {**ENV, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_TOKEN", None)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "train_accelerate.py"), *TOY, "--cache-dir", str(cache_dir),
                           "--output-dir", str(out), "--push-to-hub", "org/tiny-dr"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "train_accelerate.py: error: --push-to-hub org/tiny-dr: no Hugging Face token found. Log in with `hf auth "
        "login` (a token with write access) or set HF_TOKEN, then rerun.")
    assert "Traceback" not in done.stderr and not (out / "checkpoints").exists()


# ------------------------------------------------------------------------------------------------ failures, bad input


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cache_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"Non-finite loss nan at optimizer step 5 .*sample uids of the "
                                                 r"global batch: \['[0-9a-f]+'(, '[0-9a-f]+'){7}\]"):
        run_in_process(cache_dir, out, "--max-steps", "6", "--checkpoint-every", "2", "--eval-every", "100",
                       "--debug-nan-at-step", "5")
    path, _ = checkpoints.latest_checkpoint(out)
    assert json.loads((path / checkpoints.COMPLETE_MARKER).read_text())["step"] == 4
    assert not (out / "model.safetensors").exists()


def test_out_of_memory_names_the_fixes(monkeypatch):
    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_accelerate, "train_step", oom)
    args = training_args.parse_args(["--batch-size", "4096"])
    with pytest.raises(RuntimeError, match=r"Out of memory at --batch-size 4096 per device.*"
                                           r"--gradient-accumulation-steps.*--gradient-checkpointing"):
        train_accelerate.guarded_step({}, args, {})


def test_image_dir_with_gaps_is_counted_and_skipped(cache_dir, toy_root, tmp_path, capsys):
    import tarfile

    images = tmp_path / "images"
    images.mkdir()
    for shard in sorted((toy_root / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    (images / member.name).write_bytes(tar.extractfile(member).read())
    removed = sorted(images.iterdir())[:5]
    for path in removed:
        path.unlink()
    out = tmp_path / "run"
    run_in_process(cache_dir, out, "--image-dir", str(images), "--max-steps", "2", "--eval-every", "100",
                   "--checkpoint-every", "100")
    assert f"Skipped 5 training samples while preparing the data (missing_image: 5); training on the " \
           f"{SPEC['num_train'] - 5} complete ones" in capsys.readouterr().out
    assert run_config(out)["num_train_samples"] == SPEC["num_train"] - 5


def test_missing_columns_are_named(toy_root, tmp_path):
    import datasets

    import dataset_scripts  # noqa: F401

    shards = [str(p) for p in sorted((toy_root / "train").glob("*.tar"))]
    ds = datasets.load_dataset("datacompdr", data_files={"train": shards}, split="train",
                               cache_dir=str(tmp_path / "hf"))  # no image_dir= / captions= joins
    with pytest.raises(ValueError, match=r"no column\(s\) \['image', 'image_width', 'image_height', 'text'\]"):
        data_sources.check_columns(ds, "train")


def test_teacher_width_mismatch_is_a_clear_error(toy_root, tmp_path):
    import datasets

    import dataset_scripts  # noqa: F401

    shards = [str(p) for p in sorted((toy_root / "train").glob("*.tar"))]
    ds = datasets.load_dataset("datacompdr", data_files={"train": shards}, split="train",
                               cache_dir=str(tmp_path / "hf"))
    args = training_args.parse_args(["--teacher-dims", "32,16"])
    with pytest.raises(ValueError, match=r"--teacher-dims \[32, 16\] sum to 48, but the stored teacher embeddings "
                                         r"are 56 wide.*e.g. 32,24"):
        data_sources.resolve_teachers(args, ds)
    args = training_args.parse_args(["--teacher-logit-scales", "100,100,100"])
    with pytest.raises(ValueError, match="one value per teacher"):
        data_sources.resolve_teachers(args, ds)
    assert data_sources.resolve_teachers(training_args.parse_args([]), ds)[0] == [32, 24]


def test_existing_output_dir_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="--resume"):
        checkpoints.check_output_dir(training_args.parse_args(["--output-dir", str(tmp_path)]))


def test_model_names_pick_their_family(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    pick = students.student_class
    assert pick("ViT-B-16") is pick("open_clip:ViT-B-16/datacomp_xl_s13b_b90k") is students.OpenCLIPStudent
    assert pick("mobileclip-s0") is pick("MobileCLIP2-S4") is pick("tiny") is students.MobileCLIPStudent
    CLIPModel(CLIPConfig(text_config=students.TINY_TEXT, vision_config=students.TINY_VISION)
              ).save_pretrained(tmp_path / "clip")
    assert pick(str(tmp_path / "clip")) is students.CLIPStudent
    with pytest.raises(ValueError, match=r"--model 'no-such-model' is neither a preset \(tiny, tiny-clip"):
        pick("no-such-model")
