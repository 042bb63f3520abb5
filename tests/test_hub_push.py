"""Pushing to the Hub (`hub_cards.push`) against the fake Hub: checks before anything is sent, retries, permanent
errors, background checkpoint pushes, and a converted model pushed and loaded back as remote code."""

import ast
import copy
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_statistics, tiny_config
from fake_hub import fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from hub_fixtures import (  # noqa: F401  (fixtures; one_torch_thread and private_tempdir are autouse)
    front_matter,
    one_torch_thread,
    own_card,
    private_tempdir_fixture,
    tiny_model_fixture,
    tiny_processor_fixture,
)
from PIL import Image
from transformers import AutoModel

from hub_cards.push import CardRejectedError, HubPushError, push_folder_to_hub, push_model_to_hub
from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor

FAKE_HUB_PATH = Path(__file__).with_name("fake_hub.py")
AMLR_WARNING = "ignore:The weights are under Apple's AMLR licence"


def local_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_hf_cli(command: str) -> None:
    """Run an `hf ...` command line (a HubPushError's retry command) with huggingface_hub's own CLI, in this process
    so that it talks to the installed fake Hub."""
    from huggingface_hub.cli.hf import app

    argv = shlex.split(command)
    assert argv[0] == "hf", command
    app(argv[1:], standalone_mode=False)


@pytest.fixture
def instant_hub_retries(monkeypatch):
    """huggingface_hub retries a failed commit POST itself, sleeping 1, 2, 4... s: record the sleeps instead."""
    from huggingface_hub.utils import _http

    sleeps = []
    monkeypatch.setattr(_http.time, "sleep", sleeps.append)
    return sleeps


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
        with pytest.raises(HubPushError, match=f"Its files are at {second} \\(the copy taken when the push was "
                                               "queued was removed\\)") as raised:
            push_folder_to_hub(second, "org/run", path_in_repo="last-checkpoint", delete_patterns="*",
                               run_as_future=True, backoff=0, commit_message="Checkpoint 1").result(timeout=120)
        assert raised.value.folder == second and list(private_tempdir.iterdir()) == []  # no copy left behind
        assert raised.value.retry_command == (f"hf upload org/run {second} last-checkpoint --repo-type model "
                                              "--commit-message 'Checkpoint 1' --delete '*'")
        fake_hub.clear_failures()
        run_hf_cli(raised.value.retry_command)  # the printed command does what the push would have done
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


# ---------------------------------------------------------------- a failed push loses nothing and leaves nothing


@pytest.mark.parametrize("failure", ["permanent", "retries-exhausted"])
def test_a_failed_first_push_deletes_the_repo_it_created(fake_hub, model_folder, instant_hub_retries, failure):
    if failure == "permanent":
        fake_hub.fail("commit", status=403)
    else:  # huggingface_hub's own commit retries, then ours, all answered 500
        fake_hub.fail("commit", status=500)
    with pytest.raises(HubPushError, match="The model repo 'org/retried' this push had created was deleted again "
                                           r"\(it stayed empty\)") as raised:
        push_folder_to_hub(model_folder, "org/retried", commit_message="Add weights", retries=1, backoff=0)
    assert not fake_hub.repo_exists("org/retried") and ("DELETE", "/api/repos/delete") in fake_hub.requests
    assert raised.value.attempts == (1 if failure == "permanent" else 2)
    assert local_tree(raised.value.folder) == local_tree(model_folder)  # the output itself is untouched


def test_a_failed_push_never_deletes_a_repo_it_did_not_create(fake_hub, model_folder):
    fake_hub.add_commit("org/retried", {"notes.txt": b"kept"})
    fake_hub.create_repo("org/empty-but-not-ours")
    fake_hub.fail("commit", status=403)
    for repo in ("org/retried", "org/empty-but-not-ours"):
        with pytest.raises(HubPushError) as raised:
            push_folder_to_hub(model_folder, repo, backoff=0)
        assert "deleted" not in str(raised.value) and fake_hub.repo_exists(repo)
    assert fake_hub.files("org/retried") == {"notes.txt": b"kept"}
    assert ("DELETE", "/api/repos/delete") not in fake_hub.requests


@pytest.mark.parametrize("outcome", ["success", "permanent failure", "retries exhausted"])
def test_a_background_push_removes_its_snapshot_however_it_ends(fake_hub, model_folder, private_tempdir, outcome):
    if outcome == "permanent failure":
        fake_hub.fail("commit", status=403)
    elif outcome == "retries exhausted":
        fake_hub.fail("create_repo", status="connect")
    future = push_folder_to_hub(model_folder, "org/retried", run_as_future=True, retries=2, backoff=0,
                                commit_message="Background")
    (copy,) = private_tempdir.iterdir()  # the copy the push uploads from
    assert copy.name.startswith("mobileclip-push-output-")
    if outcome == "success":
        future.result(timeout=120)
    else:
        with pytest.raises(HubPushError, match=f"Its files are at {model_folder} ") as raised:
            future.result(timeout=120)
        assert raised.value.folder == model_folder and str(copy) not in str(raised.value)
        assert raised.value.attempts == (1 if outcome == "permanent failure" else 3)
    assert list(private_tempdir.iterdir()) == []


def test_the_retry_command_publishes_what_the_push_would_have(fake_hub, model_folder):
    """A training output folder: the final push leaves out `checkpoints/` (optimizer, RNG state); so does the `hf
    upload` command a failure prints, and running it publishes exactly what a successful push does."""
    state = model_folder / "checkpoints" / "checkpoint_0"
    state.mkdir(parents=True)
    (state / "optimizer.bin").write_bytes(b"optimizer state")
    (state / "random_states_0.pkl").write_bytes(b"rng state")
    patterns = ["checkpoints/*"]  # one list for both pushes, as training's final push has: never changed by a push
    push_folder_to_hub(model_folder, "org/reference", ignore_patterns=patterns, commit_message="Final")
    published = fake_hub.files("org/reference")
    assert published and not any(name.startswith("checkpoints/") for name in published)

    fake_hub.fail("commit", status=403)
    with pytest.raises(HubPushError) as raised:
        push_folder_to_hub(model_folder, "org/retried", ignore_patterns=patterns, commit_message="Final", backoff=0)
    assert patterns == ["checkpoints/*"]
    command = raised.value.retry_command
    assert command == f"hf upload org/retried {model_folder} . --repo-type model --commit-message Final " \
                      "--exclude 'checkpoints/*'"
    assert command in str(raised.value)
    fake_hub.clear_failures()
    run_hf_cli(command)
    assert fake_hub.files("org/retried") == published


EXIT_WHILE_PUSHING = textwrap.dedent("""
    import importlib.util, os, signal, sys, tempfile, threading, time
    fake_hub_path, folder = sys.argv[1:3]
    spec = importlib.util.spec_from_file_location("fake_hub", fake_hub_path)
    fake_hub = sys.modules["fake_hub"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_hub)
    hub, uploading = fake_hub.FakeHub(), threading.Event()
    serve = hub.handle
    def slow_commits(request):  # the second push's commit hangs, as an upload of a large file does
        if request.url.path.endswith("/commit/main") and b"Checkpoint 2" in request.content:
            print("copies while uploading:", sorted(os.listdir(tempfile.gettempdir())), flush=True)
            uploading.set()
            time.sleep(60)
        return serve(request)
    hub.handle = slow_commits
    installed = hub.install()  # kept (a collected generator would uninstall it): the pushes run at exit
    installed.__enter__()
    hub.fail("commit", status=403, times=1)  # the first push fails
    from hub_cards.push import push_folder_to_hub
    for step in (1, 2):
        push_folder_to_hub(folder, "org/exit", path_in_repo="last-checkpoint", run_as_future=True, backoff=0,
                           commit_message=f"Checkpoint {step}")
    def interrupt():  # Ctrl-C while the interpreter waits at exit for the queued push
        uploading.wait(120)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    print("exiting without waiting for the futures", flush=True)
""")


def test_interpreter_exit_leaves_no_snapshot_copy(model_folder, tmp_path):
    """The first queued push fails (its copy goes at once), the interpreter exits without `.result()`, and Ctrl-C
    interrupts its wait for the second push in mid-upload: no copy is left in the temp dir."""
    temp = tmp_path / "process-tmp"
    temp.mkdir()
    done = subprocess.run([sys.executable, "-c", EXIT_WHILE_PUSHING, str(FAKE_HUB_PATH), str(model_folder)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(temp)})
    assert "exiting without waiting for the futures" in done.stdout, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("copies while uploading:")]
    copies = [name for name in ast.literal_eval(line.split(":", 1)[1].strip()) if name.startswith("mobileclip-push")]
    assert len(copies) == 1 and copies[0].startswith("mobileclip-push-output-")  # the failed push's copy is gone
    assert "KeyboardInterrupt" in done.stderr  # the wait at exit was interrupted in mid-upload
    assert [p.name for p in temp.iterdir() if p.name.startswith("mobileclip-push")] == []


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
    from modeling_mobileclip.conversion.convert import convert
    from modeling_mobileclip.conversion.output_folder import save_converted
    from test_convert import to_format

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


def test_pushed_repo_ships_an_endpoint_handler_that_serves_the_widget(fake_hub, tiny_model, tiny_processor,
                                                                      tmp_path):
    """handler.py + requirements.txt are in the pushed repo; from the repo's files alone (remote code) the handler
    answers the widget's zero-shot requests with the card's widget outputs, and embeds images and texts."""
    import tomllib

    from hub_cards.endpoint import TIMM_REQUIREMENT, TRANSFORMERS_REQUIREMENT
    from hub_fixtures import endpoint_replies

    card = own_card(tiny_model, tiny_processor, repo_id="org/served")
    push_model_to_hub(tiny_model, tiny_processor, "org/served", card, commit_message="Add weights")
    files = fake_hub.files("org/served")
    assert files["requirements.txt"].decode().split() == [TRANSFORMERS_REQUIREMENT, TIMM_REQUIREMENT]
    pins = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert {TRANSFORMERS_REQUIREMENT, TIMM_REQUIREMENT} <= set(pins["dependencies"])
    repo = tmp_path / "endpoint" / "repo"
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    widget = front_matter(files["README.md"].decode())["widget"]
    src = widget[0]["src"].split("/resolve/main/", 1)[-1]
    labels = widget[0]["candidate_labels"]
    requests = [{"kind": "json", "src": src, "payload": {"parameters": {"candidate_labels": labels}}},
                {"kind": "json", "src": src, "payload": {"parameters": {
                    "candidate_labels": [x.strip() for x in labels.split(",")]}}},
                {"kind": "image-body", "src": src},
                {"kind": "json", "payload": {"inputs": {"text": ["a dog", "a cat"]}}},
                {"kind": "json", "payload": {"inputs": "a dog", "parameters": {"task": "text-embedding"}}}]
    comma, listed, image_embedding, texts, text = endpoint_replies(repo, requests)[0]
    assert comma == listed
    assert [r["label"] for r in comma] == [r["label"] for r in widget[0]["output"]]
    assert [r["score"] for r in comma] == pytest.approx([r["score"] for r in widget[0]["output"]], abs=1e-4)
    image = Image.open(repo / src).convert("RGB")
    with torch.no_grad():
        expected_image = tiny_model.get_image_features(**tiny_processor(images=[image], return_tensors="pt"))
        expected_text = tiny_model.get_text_features(**tiny_processor(text=["a dog", "a cat"], return_tensors="pt"))
    normalise = torch.nn.functional.normalize
    assert np.allclose(image_embedding["embeddings"], normalise(expected_image.pooler_output, dim=-1), atol=1e-5)
    assert np.allclose(texts["embeddings"], normalise(expected_text.pooler_output, dim=-1), atol=1e-5)
    assert np.allclose(text["embeddings"], texts["embeddings"][:1], atol=1e-6)
