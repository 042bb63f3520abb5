"""Prompt templates and class names for zero-shot classification: the shipped sets (`data/`), a user's file, or the
model's own templates (`zero_shot_templates.json` saved next to its weights, e.g. by `train_accelerate.py`).

A template holds `{}` where the class name goes; `zeroshot.zeroshot_classifier` fills it.
"""

import json
from collections.abc import Sequence
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

# Where the class name goes in a template. `str.replace` (not `str.format`) fills it, so class names
# containing braces are safe.
PLACEHOLDER = "{}"

TEMPLATE_SETS = {
    # The 80 prompts of the CLIP paper, used by open_clip, clip_benchmark and Apple for ImageNet.
    "openai-imagenet": DATA_DIR / "openai_imagenet_templates.json",
    "photo": ["a photo of a {}."],
}
# The prompts a model was trained and evaluated with, saved in its folder (a JSON list); `mobileclip-eval` uses them
# when no --templates is given.
MODEL_TEMPLATES_FILE = "zero_shot_templates.json"
CLASSNAME_SETS = {
    # OpenAI's curated ImageNet-1k names, in class-index (sorted WordNet id) order.
    "imagenet": DATA_DIR / "imagenet_classnames.json",
}


def _read_string_list(path: Path, what: str) -> list[str]:
    """A JSON list of strings, or a text file with one entry per non-empty line."""
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{what} file {path} must hold a JSON list of strings; got {type(values).__name__}.")
        return values
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_templates(templates: Sequence[str]) -> list[str]:
    """Return `templates` as a list, or raise if one cannot carry a class name."""
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError(
            f"templates={templates!r}; expected a non-empty list of prompts such as ['a photo of a {{}}.']."
        )
    missing = [(i, t) for i, t in enumerate(templates) if not isinstance(t, str) or PLACEHOLDER not in t]
    if missing:
        shown = ", ".join(f"#{i}: {t!r}" for i, t in missing[:5])
        raise ValueError(
            f"{len(missing)} of {len(templates)} templates have no '{PLACEHOLDER}' placeholder for the class name "
            f"({shown}); every class would get the same prompt. Write '{PLACEHOLDER}' where the name goes, "
            f"e.g. 'a photo of a {PLACEHOLDER}.'."
        )
    return list(templates)


def check_classnames(classnames: Sequence[str]) -> list[str]:
    """Return `classnames` as a list, or raise if it is empty or holds non-strings."""
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError(f"classnames={classnames!r}; expected a non-empty list of class names.")
    bad = [(i, c) for i, c in enumerate(classnames) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"classnames hold {len(bad)} empty or non-string entries, e.g. {bad[:5]}.")
    return list(classnames)


def _load_shipped_or_file(name_or_path: str | Path, shipped: dict, what: str, fix: str) -> list[str]:
    """A shipped list in `shipped` by name (a data file or the list itself), or a `.json` list / `.txt` file."""
    if isinstance(name_or_path, str) and name_or_path in shipped:
        source = shipped[name_or_path]
        return _read_string_list(source, what) if isinstance(source, Path) else list(source)
    if Path(name_or_path).is_file():
        return _read_string_list(Path(name_or_path), what)
    raise ValueError(f"{what} {str(name_or_path)!r} is neither a shipped set ({sorted(shipped)}) nor an existing file; "
                     f"pass a set name or a .json list / .txt file {fix}.")


def load_templates(name_or_path: str | Path) -> list[str]:
    """A shipped template set (`TEMPLATE_SETS`) by name, or a `.json` list / `.txt` file (one per line)."""
    fix = f"of prompts with '{PLACEHOLDER}' for the class"
    return check_templates(_load_shipped_or_file(name_or_path, TEMPLATE_SETS, "templates", fix))


def load_classnames(name_or_path: str | Path) -> list[str]:
    """A shipped class-name list (`CLASSNAME_SETS`) by name, or a `.json` list / `.txt` file (one per line)."""
    fix = "with one class name per label index"
    return check_classnames(_load_shipped_or_file(name_or_path, CLASSNAME_SETS, "classnames", fix))


def save_model_templates(folder: str | Path, templates: Sequence[str]) -> Path:
    """Write a model's own prompt templates next to its weights (`MODEL_TEMPLATES_FILE`)."""
    path = Path(folder) / MODEL_TEMPLATES_FILE
    path.write_text(json.dumps(check_templates(templates), indent=1) + "\n", encoding="utf-8")
    return path


def model_templates(model_name_or_path: str | Path) -> list[str] | None:
    """A model's own prompt templates (`MODEL_TEMPLATES_FILE` in its folder or Hub repo), or None if it has none."""
    local = Path(model_name_or_path)
    if local.is_dir():
        path = local / MODEL_TEMPLATES_FILE
        return check_templates(_read_string_list(path, "model templates")) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:  # a Hub id: the file is optional (offline and not cached, or not in the repo: no templates)
        path = hf_hub_download(str(model_name_or_path), MODEL_TEMPLATES_FILE)
    except EntryNotFoundError:
        return None
    return check_templates(_read_string_list(Path(path), "model templates"))
