"""README.md and docs/*.md: short front page, links that resolve, benchmark tables equal to their results files, and
every code snippet run as written.

Snippets run offline against what the project builds, in a fresh working directory per page holding the files the
snippets name (the `assets` fixture lists them) and links to the repository's code folders, as in a clone's root.
Python blocks of one page share a namespace and run in order, like a notebook, with the in-process fake Hub
(tests/fake_hub.py) serving any repo id; bash blocks run one by one, each in a fresh directory. A block that cannot
run here is marked right before its fence with `<!-- snippet: not run — <reason> -->`; each becomes a skipped test
whose reason `pytest -rs` lists.
"""

import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGUAGES = {"python", "bash", "sh"}
DATA_LANGUAGES = {"text", "yaml", "json", "jsonl", "toml"}
NOT_RUN = re.compile(r"^<!-- snippet: not run — (?P<reason>.+) -->$")
README_MAX_LINES = 250
CODE_LINKS = ("modeling_mobileclip", "dataset_scripts", "hub_cards", "benchmarks", "train_accelerate.py")
TOY_SPEC = dict(num_train=64, samples_per_shard=32, num_augmentations=2, teacher_images=64, teacher_steps=4,
                teacher_batch_size=16)


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # line of the opening fence
    language: str
    code: str
    not_run: str | None  # the reason of a `snippet: not run` marker

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, dedented to its fence, with the not-run reason marked right before it."""
    lines, blocks, index = page.read_text().splitlines(), [], 0
    while index < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[index])
        if opening is None:
            index += 1
            continue
        indent, language, start = len(opening.group(1)), opening.group(2), index
        index += 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:] if lines[index][:indent].strip() == "" else lines[index])
            index += 1
        before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = NOT_RUN.match(before)
        blocks.append(Block(page.relative_to(ROOT).as_posix(), start + 1, language, "\n".join(body) + "\n",
                            marker.group("reason") if marker else None))
        index += 1
    return blocks


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
SNIPPETS = [b for b in BLOCKS if b.language in RUN_LANGUAGES]
PYTHON_PAGES = sorted({b.page for b in SNIPPETS if b.language == "python" and b.not_run is None})
SHELL_SNIPPETS = [b for b in SNIPPETS if b.language != "python" and b.not_run is None]
NOT_RUN_SNIPPETS = [b for b in SNIPPETS if b.not_run is not None]


def load_render_docs():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "benchmarks" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the pages themselves


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/ (limit " \
                                           f"{README_MAX_LINES})."
    assert "[docs/layout.md](docs/layout.md)" in "\n".join(lines[-5:]), "README's last section links docs/layout.md"


def test_readme_keeps_the_commands_ci_runs():
    """.ci/run installs as README says and runs README's test command."""
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert ('python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 && '
            'pip install -e ".[test]"') in readme
    assert "pip install -q torch==2.14.1 torchvision==0.29.1" in ci and 'pip install -q -e ".[test]"' in ci
    assert "HF_HUB_OFFLINE=1 python -m pytest -q" in readme and "HF_HUB_OFFLINE=1 python -m pytest -q" in ci


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (lower case, punctuation dropped, spaces to hyphens, -N for repeats)."""
    anchors, seen, in_fence = set(), {}, False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def relative_links(page: Path) -> list[str]:
    """Link targets outside code: fenced blocks and inline code are dropped first."""
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved})")
        elif anchor and (resolved.suffix != ".md" or anchor not in heading_anchors(resolved)):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{page.relative_to(ROOT)} has broken links: {broken}"


def test_every_fenced_block_names_its_language():
    unnamed = [b.id for b in BLOCKS if b.language not in RUN_LANGUAGES | DATA_LANGUAGES]
    assert not unnamed, (f"fenced blocks without a known language at {unnamed}: use ```python / ```bash (run by "
                         f"this test) or one of {sorted(DATA_LANGUAGES)} for data")


def test_not_run_markers_sit_right_before_a_snippet():
    for page in PAGES:
        text = page.read_text()
        markers = len(re.findall(r"<!-- snippet: not run", text))
        marked = sum(1 for b in BLOCKS if b.page == page.relative_to(ROOT).as_posix() and b.not_run)
        assert markers == marked, f"{page.relative_to(ROOT)}: a `snippet: not run` marker is not right before a fence"


# ---------------------------------------------------------------- benchmark tables


def test_benchmark_blocks_equal_their_results_files():
    stale = load_render_docs().stale_blocks(PAGES)
    assert not stale, f"docs blocks differ from benchmarks/results: {stale}; run `python -m benchmarks.render_docs`."


def test_rendering_is_idempotent():
    render = load_render_docs().render
    for page in PAGES:
        once = render(page.read_text())
        assert render(once) == once, page


def test_every_benchmark_has_results_and_a_docs_table():
    docs = "\n".join(page.read_text() for page in PAGES)
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        record = json.loads((ROOT / "benchmarks" / "results" / f"{script.stem}.json").read_text())
        assert record["benchmark"] == script.stem and record["tables"], script.stem
        assert {"cpu", "avx512", "avx512_bf16", "amx", "threads", "dtype", "torch", "date", "commit"} <= set(
            record["machine"]), script.stem
        assert (ROOT / "benchmarks" / "results" / f"{script.stem}.md").read_text().startswith("*Measured on ")
        assert f"<!-- benchmark: {script.stem} -->" in docs, f"no docs block shows {script.stem}'s table"
    for results in sorted((ROOT / "benchmarks" / "results").glob("*.md")):  # another machine's (--results-tag) too
        assert f"<!-- benchmark: {results.stem} -->" in docs, f"no docs block shows {results.name}"


def test_a_stale_block_is_reported(tmp_path):
    render_docs = load_render_docs()
    (tmp_path / "bench_x.md").write_text("*Measured on a test.*\n\n| a |\n|---|\n| 1 |\n")
    (tmp_path / "bench_x.json").write_text(json.dumps({"tables": [{"columns": ["a", "b"], "rows": [["1", "2"]]}]}))
    text = ('x\n<!-- benchmark: bench_x -->\nold\n<!-- /benchmark -->\n'
            'b is <!-- result: bench_x row "1" column "b" -->9<!-- /result -->.\n')
    rendered = render_docs.render(text, tmp_path)
    assert "| 1 |" in rendered and "old" not in rendered and '"b" -->2<!-- /result -->' in rendered
    assert render_docs.render(rendered, tmp_path) == rendered
    with pytest.raises(ValueError, match=r"no row starting with \['3'\]"):
        render_docs.render('<!-- result: bench_x row "3" column "b" -->9<!-- /result -->', tmp_path)


# ---------------------------------------------------------------- snippets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The files the snippets name, built once from what the project builds:

    mobileclip-s0/     a tiny MobileCLIP saved with MobileCLIP-S0's processor, as the converter writes a folder
    runs/s0/           the same model as a train_accelerate.py output folder, with one accelerate checkpoint folder
    reinforced/        the toy DataCompDR's training shards, written by the reinforcement tool (+ config.json, card)
    pairs/             webdataset shards of toy pictures and alt-text captions
    my-mobileclip/, my-clip/, my-captioner/   a toy MobileCLIP teacher, a tiny CLIP, a tiny image-to-text model
    imagenet-val/, flickr30k-test/            an imagefolder and a save_to_disk retrieval set of held-out pictures
    photo.jpg, LICENSE_MODELS                 a toy picture; a placeholder for Apple's licence agreement
    """
    import datasets
    import torch
    from conftest import tiny_config

    from dataset_scripts import toy_data
    from dataset_scripts.tiny_reinforce_models import tiny_clip, tiny_vision_encoder_decoder
    from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor

    root = tmp_path_factory.mktemp("docs-assets")
    toy = toy_data.build_toy_datacompdr(toy_data.ToySpec(**TOY_SPEC), root / ".toy", log=lambda *a: None)
    shutil.copytree(toy / "train", root / "reinforced")
    shutil.copytree(toy / "teachers" / "mci-32d", root / "my-mobileclip")
    toy_data.write_web_shards(root / "pairs", toy_data.ToySpec(num_train=16, samples_per_shard=8))
    tiny_clip(str(root / "my-clip"), image_size=40)
    tiny_vision_encoder_decoder(str(root / "my-captioner"))

    torch.manual_seed(0)
    model = MobileCLIPModel(tiny_config("mci-s0text", variant="mobileclip-s0")).eval()
    model.save_pretrained(root / "mobileclip-s0")
    MobileCLIPProcessor.from_variant("mobileclip-s0").save_pretrained(root / "mobileclip-s0")
    shutil.copytree(root / "mobileclip-s0", root / "runs" / "s0")
    (root / "runs" / "s0" / "checkpoints" / "checkpoint_0").mkdir(parents=True)
    shutil.copy(root / "mobileclip-s0" / "model.safetensors", root / "runs" / "s0" / "checkpoints" / "checkpoint_0")

    held_out = datasets.load_from_disk(str(toy / "eval"))
    names = held_out.features["label"].names
    for index, row in enumerate(held_out.select(range(48))):
        folder = root / "imagenet-val" / names[row["label"]].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{index:03d}.png")
    held_out.select(range(48)).map(lambda row: {"captions": [row["caption"]]}, remove_columns=["caption"]) \
        .save_to_disk(str(root / "flickr30k-test"))

    toy_data.render(toy_data.random_scene(random.Random(0))).save(root / "photo.jpg")
    (root / "LICENSE_MODELS").write_text("Placeholder for the licence agreement's text (tests only).\n")
    for name in CODE_LINKS:
        (root / name).symlink_to(ROOT / name)
    shutil.rmtree(root / ".toy")
    return root


@pytest.fixture
def workspace(assets, tmp_path):
    """A fresh copy of the assets (snippets write into them) as the working directory's content."""
    folder = tmp_path / "workspace"
    shutil.copytree(assets, folder, symlinks=True)
    return folder


@pytest.fixture
def isolated_caches(workspace, monkeypatch):
    """datasets' Arrow cache and the join indexes inside the workspace, not the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", workspace / ".cache" / "datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(workspace / ".cache" / "datasets"))
    return workspace


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_snippets_run(page, workspace, isolated_caches, monkeypatch):
    from fake_hub import FakeHub
    from huggingface_hub import HfFileSystem

    monkeypatch.chdir(workspace)
    namespace = {"__name__": "__snippets__"}
    with FakeHub().install(cache_dir=workspace / ".cache" / "hub"):
        try:
            for block in [b for b in SNIPPETS if b.page == page and b.language == "python" and b.not_run is None]:
                try:
                    exec(compile(block.code, block.id, "exec"), namespace)
                except Exception as err:
                    raise AssertionError(f"the snippet at {block.id} failed: {err!r}\n{block.code}") from err
        finally:  # fsspec caches HfFileSystem listings of the fake repos: later tests must not see them
            HfFileSystem.clear_instance_cache()


@pytest.mark.slow
@pytest.mark.parametrize("block", SHELL_SNIPPETS, ids=[b.id for b in SHELL_SNIPPETS])
def test_shell_snippet_runs(block, workspace):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_DATASETS_CACHE=str(workspace / ".cache" / "datasets"), HF_HOME=str(workspace / ".cache" / "hf"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"the snippet at {block.id} failed ({done.returncode}):\n{block.code}\n" \
                                 f"{done.stderr[-4000:]}"


@pytest.mark.parametrize("block", NOT_RUN_SNIPPETS, ids=[b.id for b in NOT_RUN_SNIPPETS])
def test_snippet_not_run(block):
    assert block.not_run.strip(), f"the not-run marker before {block.id} gives no reason"
    pytest.skip(f"{block.id}: not run — {block.not_run}")
