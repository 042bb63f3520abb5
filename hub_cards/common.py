"""What the model and dataset cards share: citations, licence handling, the code's licence and card validation."""

from __future__ import annotations

import re
from collections.abc import Mapping

from huggingface_hub import DatasetCard, ModelCard, RepoCard

# The licence of this project's code (pyproject.toml `license`); the `*.py` files of a pushed repo are under it.
CODE_LICENSE = "Apache-2.0"
APPLE_LICENSE_NAME = "apple-amlr"
# The notice the Apple Machine Learning Research Model License asks every redistribution to carry, word for word.
APPLE_ATTRIBUTION_NOTICE = ("Apple Machine Learning Research Model is licensed under the Apple Machine Learning "
                            "Research Model License Agreement.")
PAPERS = {
    "mobileclip": "MobileCLIP (Vasu et al., CVPR 2024, [arXiv:2311.17049](https://arxiv.org/abs/2311.17049))",
    "mobileclip2": "MobileCLIP2 (Faghri et al., TMLR 2025, [arXiv:2508.20691](https://arxiv.org/abs/2508.20691))",
}
BIBTEX = """@inproceedings{vasu2024mobileclip,
  title     = {MobileCLIP: Fast Image-Text Models through Multi-Modal Reinforced Training},
  author    = {Vasu, Pavan Kumar Anasosalu and Pouransari, Hadi and Faghri, Fartash and Vemulapalli, Raviteja and
               Tuzel, Oncel},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}

@article{faghri2025mobileclip2,
  title   = {MobileCLIP2: Improving Multi-Modal Reinforced Training},
  author  = {Faghri, Fartash and Vasu, Pavan Kumar Anasosalu and Koc, Cem and Shankar, Vaishaal and
             Toshev, Alexander T and Tuzel, Oncel and Pouransari, Hadi},
  journal = {Transactions on Machine Learning Research},
  year    = {2025},
  note    = {arXiv:2508.20691}
}"""
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_repo_id(name: str, value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and REPO_ID.match(value)):
        raise ValueError(f"{name}={value!r} is not a Hub repo id; use 'namespace/name'.")


def normalise_licence(license: str | Mapping) -> dict:
    """`{"license", "license_name"?, "license_link"?}` from a Hub licence id or such a dict."""
    if isinstance(license, str):
        if license == "other":
            raise ValueError("license='other' needs a name and a link: pass license={'license': 'other', "
                             "'license_name': ..., 'license_link': ...}.")
        return {"license": license}
    if isinstance(license, Mapping) and license.get("license"):
        unknown = set(license) - {"license", "license_name", "license_link"}
        if unknown:
            raise ValueError(f"license dict has unknown keys {sorted(unknown)}; use 'license', 'license_name', "
                             "'license_link'.")
        if license["license"] == "other" and not (license.get("license_name") and license.get("license_link")):
            raise ValueError(f"license={dict(license)!r}: 'other' needs both 'license_name' and 'license_link'.")
        return {k: license[k] for k in ("license", "license_name", "license_link") if license.get(k)}
    raise ValueError(f"license={license!r}; pass a Hub licence id such as 'apache-2.0' or a dict with 'license' "
                     "(and 'license_name'/'license_link' for 'other').")


def licence_line(licence: dict) -> str:
    """Markdown naming a licence: its link for 'other', else its Hub id."""
    if licence.get("license_name"):
        return f"[{licence['license_name']}]({licence['license_link']})"
    return f"`{licence['license']}`"


def parse_card(text: str, repo_type: str = "model") -> RepoCard:
    """huggingface_hub's own reading of a README: its `ModelCard` / `DatasetCard` classes, strict (metadata that is
    not a mapping or a `model-index` it cannot turn into `EvalResult`s raises ValueError)."""
    card_class = {"model": ModelCard, "dataset": DatasetCard}.get(repo_type, RepoCard)
    return card_class(text, ignore_metadata_errors=False)


def validate_card(card: ModelCard | DatasetCard, repo_type: str | None = None) -> None:
    """Check the card's metadata with huggingface_hub's own parsing (`parse_card`), then with the Hub
    (`POST {HF_ENDPOINT}/api/validate-yaml`); raise ValueError with the reasons when it is rejected."""
    repo_type = repo_type or card.repo_type
    try:
        parse_card(str(card), repo_type).validate(repo_type=repo_type)
    except ValueError as err:
        raise ValueError(f"The Hub rejected the {repo_type} card metadata: {err}") from err


def public_name(name) -> str:
    """A model name as a public card shows it: an absolute local path in it (e.g. open_clip's
    "local-dir:/home/me/teacher") is cut to its last component, which names the model without the machine's layout."""
    return re.sub(r"(^|:)/(?:[^/\s]+/)*([^/\s]+)", r"\1\2", str(name))


def teacher_rows(teachers, where: str) -> list[dict]:
    """Validated teacher entries (`{"model", "pretrained"?, "embedding_dim", "logit_scale"?}`, in embedding order)
    with the embedding columns each one occupies."""
    if not isinstance(teachers, list) or not teachers:
        raise ValueError(f"{where} is {teachers!r}; give the teachers in embedding order: [{{'model', 'pretrained', "
                         "'embedding_dim', 'logit_scale'}, ...] (the reinforcement tool's config.json 'teachers').")
    start, rows = 0, []
    for i, teacher in enumerate(teachers):
        dim = teacher.get("embedding_dim") if isinstance(teacher, Mapping) else None
        if not isinstance(teacher, Mapping) or not teacher.get("model") or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"{where}[{i}] is {teacher!r}; each teacher needs 'model' and a positive int "
                             "'embedding_dim' (optional 'pretrained', 'logit_scale').")
        rows.append(dict(model=public_name(teacher["model"]), pretrained=teacher.get("pretrained") or "-",
                         embedding_dim=dim, columns=f"{start}:{start + dim}",
                         logit_scale=teacher.get("logit_scale", "-")))
        start += dim
    return rows
