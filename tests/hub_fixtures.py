"""Fixtures and helpers shared by the Hub tests (test_model_card.py, test_dataset_card.py, test_hub_push.py,
test_fake_hub.py): a tiny model with its processor and a card for it, one torch thread and a private temporary folder
for every test, front-matter parsing, and `run_without_this_project` (what a Hub user without this package runs).
Fixtures a test requests by name are registered with `name=` (as fake_hub.py's
`fake_hub_fixture`); a test module imports the ones it uses, and the autouse ones."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config

from hub_cards import generate_model_card
from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor


def front_matter(text: str) -> dict:
    match = re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL)
    assert match is not None, text[:200]
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The models here are tiny: thread start-up and synchronisation would cost more than the maths (and much more on
    a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, name="private_tempdir")
def private_tempdir_fixture(tmp_path, monkeypatch):
    """Temporary folders of the push helpers (snapshot copies, push_model_to_hub's save, kept when its push fails so
    nothing is lost) go to tmp_path, where a test can check what is left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


@pytest.fixture(scope="module", name="tiny_model")
def tiny_model_fixture():
    torch.manual_seed(0)
    return MobileCLIPModel(tiny_config("mci-s0text")).eval()


@pytest.fixture(scope="module", name="tiny_processor")
def tiny_processor_fixture(tokenizer):
    base = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    image_processor = base.image_processor.__class__(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    return MobileCLIPProcessor(image_processor, tokenizer)


def own_card(model, processor, repo_id="org/tiny", **kwargs):
    """A card for weights that are not Apple's (so no AMLR terms)."""
    return generate_model_card(model, processor=processor, repo_id=repo_id, converted_from_apple=False,
                               license="apache-2.0", **kwargs)


# Prepended to the code `run_without_this_project` runs: this project's packages cannot be imported (whether installed
# editable, on PYTHONPATH or in the cwd), so what loads there loads from the folder's files alone.
_BLOCK_PROJECT = """
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ImportError(f"{{name}} is this project's package: not importable here")
sys.meta_path.insert(0, _Blocked())
"""
PROJECT_PACKAGES = ("modeling_mobileclip", "dataset_scripts", "hub_cards", "train_accelerate", "benchmarks")


def run_without_this_project(code: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh `python -I` (no PYTHONPATH, no user site) in `cwd`, with this project's packages
    unimportable; `sys.path[0]` is `cwd`. Fails the test with the child's output if it exits non-zero."""
    prelude = _BLOCK_PROJECT.format(names=PROJECT_PACKAGES) + f"sys.path.insert(0, {str(cwd)!r})\n"
    done = subprocess.run([sys.executable, "-I", "-c", prelude + code], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=timeout, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                "HOME": str(cwd), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# What huggingface-inference-toolkit does with a repo folder that has a handler.py (its `utils.
# check_and_register_custom_pipeline_from_directory`, then the web service per request): import the file as module
# "handler" with the folder first on sys.path, build `EndpointHandler(<folder>)`, and call it with the JSON-decoded
# body, or with {"inputs": <RGB PIL image>} for an image body. The toolkit is not installable here; this mirrors it.
TOOLKIT_CALLS = """
import base64, importlib.util, io, json, pathlib
from PIL import Image
folder = pathlib.Path(FOLDER)
spec = importlib.util.spec_from_file_location("handler", folder / "handler.py")
sys.path.insert(0, str(folder))
module = importlib.util.module_from_spec(spec)
sys.modules["handler"] = module
spec.loader.exec_module(module)
handler = module.EndpointHandler(str(folder))
requests = json.loads(REQUESTS)
replies = []
for request in requests:
    if request["kind"] == "image-body":
        body = {"inputs": Image.open(io.BytesIO((folder / request["src"]).read_bytes())).convert("RGB")}
    else:
        payload = request["payload"]
        if "src" in request:
            payload["inputs"] = base64.b64encode((folder / request["src"]).read_bytes()).decode()
        body = json.loads(json.dumps(payload))  # what the toolkit's JSON deserializer hands over
    replies.append(handler(body))
print("REPLIES " + json.dumps(replies))
"""


def endpoint_replies(folder, requests: list[dict], before: str = "") -> tuple[list, str]:
    """Serve `requests` with `folder`'s handler.py as the toolkit would, in a process that cannot import this
    project (only the repo folder's own files); `before` runs first there. Returns (replies, the child's stdout)."""
    setup = f"FOLDER = {str(folder)!r}\nREQUESTS = {json.dumps(json.dumps(requests))}\n"
    done = run_without_this_project(setup + before + TOOLKIT_CALLS, Path(folder).parent)
    return json.loads(done.stdout.rsplit("REPLIES ", 1)[1]), done.stdout
