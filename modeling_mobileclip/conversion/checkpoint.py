"""Reading a checkpoint file safely as a flat state dict and detecting its layout (Apple v1, open_clip or timm).

Files are read with `torch.load(weights_only=True)` or safetensors: nothing in a checkpoint is executed.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ConversionError

# Key prefixes that identify a layout (after an optional `state_dict` wrapper and `module.` prefix are removed).
_FORMAT_MARKERS = {
    "apple": ("image_encoder.", "text_encoder."),
    "open_clip": ("visual.", "text."),
    "timm": ("stem.", "stages.", "final_conv.", "head.", "patch_embed.", "blocks.", "cls_token", "pos_embed",
             "norm.", "norm_pre."),
}
_SHARED_KEYS = ("logit_scale",)  # present in several layouts


@dataclass
class LoadedCheckpoint:
    """A checkpoint file read as a flat state dict, with its detected layout and what was done to read it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    format: str
    notes: list[str] = field(default_factory=list)


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:4] == b"PK\x03\x04":
        return "torch_zip"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then the JSON header
        return "safetensors"
    return "torch_legacy"


def _load_file(path: Path):
    kind = _sniff(path)
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        # weights_only=True: only tensors and plain containers are unpickled; any other object is refused, not run.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "torch_zip")
    except Exception as error:  # every reader failure becomes one actionable message
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(
            f"Cannot read checkpoint {path} ({kind.replace('_', ' ')} file): {type(error).__name__}: {reason}. "
            "The file may be truncated (re-download it) or not a PyTorch/safetensors state dict. Pickled files are "
            "read with torch.load(weights_only=True), so files that need arbitrary Python objects are refused."
        ) from error


def _strip_module_prefix(state_dict: dict, notes: list[str]) -> dict:
    if state_dict and all(key.startswith("module.") for key in state_dict):
        notes.append("removed the DDP prefix 'module.' from every key")
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def detect_format(state_dict: Mapping[str, torch.Tensor], path: Path | str = "checkpoint") -> str:
    """"apple", "open_clip" or "timm", from key prefixes; raises when the keys fit none or several layouts."""
    found: dict[str, str] = {}
    for key in state_dict:
        if key in _SHARED_KEYS:
            continue
        for fmt, prefixes in _FORMAT_MARKERS.items():
            if key.startswith(prefixes):
                found.setdefault(fmt, key)
                break
    if len(found) == 1:
        return next(iter(found))
    sample = ", ".join(list(state_dict)[:5])
    if not found:
        raise ConversionError(
            f"{path} is not a MobileCLIP checkpoint: none of its {len(state_dict)} keys (first: {sample}) is under "
            "image_encoder./text_encoder. (Apple v1), visual./text. (open_clip) or stem./stages./patch_embed./"
            "blocks. (timm image trunk).")
    examples = "; ".join(f"{fmt}: {key}" for fmt, key in found.items())
    raise ConversionError(f"{path} mixes checkpoint layouts ({examples}); pass one Apple, open_clip or timm "
                          "checkpoint (plus --text-checkpoint for a timm image trunk).")


def read_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Load a checkpoint safely, unwrap `{"state_dict": ...}`, drop a `module.` prefix and detect its layout."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint {path} does not exist or is not a file.")
    obj = _load_file(path)
    notes: list[str] = []
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        others = sorted(str(key) for key in obj if key != "state_dict")
        notes.append("read the weights from the 'state_dict' entry" +
                     (f" (other top-level entries, not weights: {', '.join(others)})" if others else ""))
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of parameter names "
                              "to tensors).")
    if not obj:
        raise ConversionError(f"{path} holds an empty state dict.")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path} is not a state dict: entry {key!r} holds a {type(value).__name__}, "
                                  "not a tensor.")
    state_dict = _strip_module_prefix(dict(obj), notes)
    return LoadedCheckpoint(path=path, state_dict=state_dict, format=detect_format(state_dict, path), notes=notes)
