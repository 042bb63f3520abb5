"""Writing a converted model as a complete Hub folder: weights, processor, remote code and card, swapped in atomically.

The folder is written to a hidden sibling of the output, verified by reloading it, and only then moved into place
(staging.py: the names, the swap, and recovery after a killed run).
"""

import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch

from ..modeling_mobileclip import MobileCLIPModel
from .convert import ConversionReport
from .errors import ConversionError
from .staging import new_staging_folder, recover_interrupted, swap_into_place

logger = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_model_card(folder: Path, variant: str | None, report: ConversionReport, model: MobileCLIPModel,
                      processor, repo_id: str | None = None, license_file: str | os.PathLike | None = None) -> None:
    """README.md from `hub_cards.generate_model_card` (Apple's licence and attribution, provenance, preprocessing,
    widget examples with outputs computed by this model), plus the files it references (widget images, LICENSE)."""
    if variant is None:
        return
    from hub_cards import generate_model_card

    sources = ", ".join(f"`{s.path.name}` ({s.format} format, sha256 {_sha256(s.path)})" for s in report.sources)
    changes = [f"converted from {sources} to the transformers format by mobileclip-hf (parameter names and layout "
               "changed)"]
    if report.fused:
        changes.append("re-parameterised (train-time branches and BatchNorms folded into single convolutions)")
    if report.dtype != "float32":
        changes.append(f"stored in {report.dtype}")
    card = generate_model_card(model, variant, processor=processor, repo_id=repo_id, license_file=license_file,
                               modification="; ".join(changes) + "; the weight values were not retrained.")
    card.write(folder)


def _verify_saved(folder: Path, model: MobileCLIPModel) -> None:
    reloaded = MobileCLIPModel.from_pretrained(folder)
    expected, found = model.state_dict(), reloaded.state_dict()
    if expected.keys() != found.keys():
        raise RuntimeError(f"Saved model reloads with different keys: {sorted(expected.keys() ^ found.keys())[:10]}")
    differing = [key for key in expected if not torch.equal(expected[key], found[key])]
    if differing:
        raise RuntimeError(f"Saved model reloads with different values for {differing[:10]}")


def _apply_umask(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def check_output_dir(output: str | os.PathLike, overwrite: bool) -> Path:
    output = Path(output)
    if output.exists() or output.is_symlink():
        if not output.is_dir():
            raise ConversionError(f"--output {output} exists and is not a directory; choose another path.")
        if not overwrite:
            raise ConversionError(f"Output directory {output} already exists; pass --overwrite to replace it "
                                  "(the new folder is written next to it and swapped in only when complete).")
    return output


def save_converted(model: MobileCLIPModel, output: str | os.PathLike, *, variant: str, report: ConversionReport,
                   overwrite: bool = False, processor=None, repo_id: str | None = None,
                   license_file: str | os.PathLike | None = None) -> Path:
    """Write config.json (auto_map incl. AutoModelForZeroShotImageClassification), model.safetensors, tokenizer and
    processor files, the remote-code modules and README.md (+ LICENSE from `license_file`) into a temporary sibling
    directory, reload it to verify, then move it into place (replacing `output` only with `overwrite`)."""
    from ..processing_mobileclip import MobileCLIPProcessor

    for line in recover_interrupted(output):  # the CLI has done (and printed) this already
        logger.warning(line)
    output = check_output_dir(output, overwrite)
    staging = new_staging_folder(output)
    try:
        processor = processor or MobileCLIPProcessor.from_variant(variant)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        _write_model_card(staging, variant, report, model, processor, repo_id, license_file)
        _verify_saved(staging, model)
        _apply_umask(staging)  # copied remote-code modules keep their source's mode: use what a plain write gives
        check_output_dir(output, overwrite)  # it may have appeared meanwhile
        swap_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
