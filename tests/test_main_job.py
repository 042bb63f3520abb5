"""README's main job exactly as written, from an empty home directory, and the quality of the model it saves.

It takes about 5 minutes on 2 idle cores (the one-time toy build included), more than the suite's budget allows, so
it runs only on request:

    MOBILECLIP_MAIN_JOB=1 HF_HUB_OFFLINE=1 python -m pytest -q -s tests/test_main_job.py

tests/test_train.py runs the same command on a smaller toy set in every suite run.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_docs import fenced_blocks

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_PROMPT_GOAL = 0.60  # issue 18.5: held-out top-1 with the zero-shot pipeline's default prompt

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("MOBILECLIP_MAIN_JOB") != "1",
    reason="README's main job (about 5 minutes on 2 cores); run with MOBILECLIP_MAIN_JOB=1")]


def main_job_command() -> str:
    readme = ROOT / "README.md"
    section = readme.read_text().split("## The main job", 1)[1].split("\n## ", 1)[0]
    commands = [b.code.strip() for b in fenced_blocks(readme) if b.language == "bash" and b.code.strip() in section]
    assert len(commands) == 1 and "train_accelerate.py" in commands[0], commands
    return commands[0]


def test_readme_main_job_saves_a_model_that_is_right_on_its_domain(tmp_path):
    import datasets
    from transformers import pipeline

    from dataset_scripts import toy_data

    # A workspace with the entry point, an empty home (so the toy set is built as on a first run) and no caches.
    (tmp_path / "train_accelerate.py").symlink_to(ROOT / "train_accelerate.py")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "OMP_", "MKL_"))}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    start = time.perf_counter()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", main_job_command()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-4000:]
    (out,) = (tmp_path / "outputs").iterdir()

    eval_ds = datasets.load_from_disk(str(next((home / ".cache" / "mobileclip_hf").glob("toy-v*/eval"))))
    names = eval_ds.features["label"].names
    classifier = pipeline("zero-shot-image-classification", model=str(out))  # its default hypothesis_template
    right = sum(classifier(row["image"], candidate_labels=names)[0]["label"] == names[row["label"]] for row in eval_ds)
    top1 = right / len(eval_ds)
    print(f"\nmain job: {seconds:.0f} s from an empty home; held-out top-1 with the pipeline's default prompt "
          f"{right}/{len(eval_ds)} = {top1:.1%}")
    assert top1 >= PIPELINE_PROMPT_GOAL

    # The card's widgets: held-out pictures whose shown output names the true class first.
    truth = {w["src"]: w["label"] for w in toy_data.widget_examples(eval_ds)}
    widgets = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])["widget"]
    assert sorted(w["src"] for w in widgets) == sorted(truth)
    for widget in widgets:
        assert widget["output"][0]["label"] == truth[widget["src"]], widget
