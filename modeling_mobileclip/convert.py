"""Convert Apple / open_clip / timm MobileCLIP checkpoints into a transformers `MobileCLIPModel` folder.

    python -m modeling_mobileclip.convert --variant mobileclip-s0 --checkpoint mobileclip_s0.pt --output ./mobileclip-s0 \
        [--fuse] [--dtype bf16] [--push-to-hub org/mobileclip-s0] [--overwrite] [--text-checkpoint FILE] \
        [--license-file LICENSE_MODELS]

(also installed as the `mobileclip-convert` console script). The checkpoint format is detected from its keys:
Apple v1 (`image_encoder.model.*`, `text_encoder.*`), open_clip (`visual.trunk.*`, `text.*`; optionally wrapped in
`state_dict` and/or prefixed `module.`), or a timm image trunk alone (then `--text-checkpoint` supplies the text
tower). Files are read with `torch.load(weights_only=True)` or safetensors: nothing in a checkpoint is executed.
Every source key is mapped through the explicit tables in `convert_keymaps.py`; an unexpected, missing or
mis-shaped key fails the conversion with the full picture. The output folder is written to a temporary directory
next to `--output` and moved into place only once complete and verified by reloading it.

Not Hub-facing: this module may import anything the package depends on, but never open_clip.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .configuration_mobileclip import MOBILECLIP_VARIANTS, MobileCLIPConfig, resolve_variant
from .convert_keymaps import COPY, RESHAPE, TRANSPOSE, ZERO_ONLY, KeyRule, KeyTableError, key_table
from .hub import HubPushError, push_folder_to_hub
from .modeling_mobileclip import MobileCLIPModel

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
MAX_LISTED_KEYS = 30  # per category in error messages; the exception object keeps the complete lists

# Key prefixes that identify a layout (after an optional `state_dict` wrapper and `module.` prefix are removed).
_FORMAT_MARKERS = {
    "apple": ("image_encoder.", "text_encoder."),
    "open_clip": ("visual.", "text."),
    "timm": ("stem.", "stages.", "final_conv.", "head.", "patch_embed.", "blocks.", "cls_token", "pos_embed",
             "norm.", "norm_pre."),
}
_SHARED_KEYS = ("logit_scale",)  # present in several layouts


class ConversionError(ValueError):
    """A checkpoint cannot be converted as asked; the message says what is wrong and how to fix it."""


class KeyMismatchError(ConversionError):
    """The checkpoint's keys or shapes disagree with the variant. Complete lists are kept as attributes."""

    def __init__(self, message, *, unexpected=(), missing=(), mismatched=(), nonzero_dropped=(), conflicts=(),
                 matching_variants=()):
        super().__init__(message)
        self.unexpected, self.missing, self.mismatched = list(unexpected), list(missing), list(mismatched)
        self.nonzero_dropped, self.conflicts = list(nonzero_dropped), list(conflicts)
        self.matching_variants = list(matching_variants)


@dataclass
class LoadedCheckpoint:
    """A checkpoint file read as a flat state dict, with its detected layout and what was done to read it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    format: str
    notes: list[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    variant: str | None
    sources: list[LoadedCheckpoint]
    dropped_zero_keys: list[str] = field(default_factory=list)  # "file: key" of checked all-zero biases
    num_parameters: int = 0
    fused: bool = False
    dtype: str = "fp32"


# ------------------------------------------------------------------------------------------------------------------
# Reading checkpoints
# ------------------------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------------------------
# Key mapping
# ------------------------------------------------------------------------------------------------------------------

_TARGET_LAYOUTS: dict[str, dict[str, torch.Tensor]] = {}


def _target_layout(config: MobileCLIPConfig) -> dict[str, torch.Tensor]:
    """Meta-device state dict of the target model: every key with its shape and dtype, no memory allocated."""
    cache_key = config.to_json_string(use_diff=False)
    if cache_key not in _TARGET_LAYOUTS:
        with torch.device("meta"):
            _TARGET_LAYOUTS[cache_key] = MobileCLIPModel(config).state_dict()
    return _TARGET_LAYOUTS[cache_key]


def _mapped_shape(rule: KeyRule, shape: torch.Size, expected: torch.Size) -> bool:
    if rule.transform == COPY:
        return shape == expected
    if rule.transform == TRANSPOSE:
        return len(shape) == 2 and (shape[1], shape[0]) == tuple(expected)
    if rule.transform == RESHAPE:
        return [d for d in shape if d != 1] == [d for d in expected if d != 1]
    raise RuntimeError(f"unknown transform {rule.transform!r}")


def _apply(rule: KeyRule, tensor: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    if rule.transform == TRANSPOSE:
        tensor = tensor.t()
    elif rule.transform == RESHAPE:
        tensor = tensor.reshape(expected.shape)
    return tensor.to(expected.dtype).contiguous()


@dataclass
class _Plan:
    assignments: dict[str, tuple[LoadedCheckpoint, KeyRule]] = field(default_factory=dict)
    zero_checked: list[tuple[LoadedCheckpoint, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    nonzero_dropped: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.mismatched or self.nonzero_dropped or self.conflicts)


def _plan(sources: Sequence[LoadedCheckpoint], config: MobileCLIPConfig, target: dict[str, torch.Tensor]) -> _Plan:
    """Match every source key against the tables; collects every disagreement instead of stopping at the first."""
    plan = _Plan()
    many = len(sources) > 1
    for source in sources:
        table = key_table(config, source.format, target.keys())
        where = f"{source.path.name}: " if many else ""
        for key, tensor in source.state_dict.items():
            rule = table.get(key)
            if rule is None:
                plan.unexpected.append(f"{where}{key}")
            elif rule.transform == ZERO_ONLY:
                if tensor.is_meta or torch.count_nonzero(tensor) == 0:
                    plan.zero_checked.append((source, key))
                else:
                    plan.nonzero_dropped.append(f"{where}{key}")
            elif rule.target in plan.assignments:
                plan.conflicts.append(f"{rule.target} (from {plan.assignments[rule.target][0].path.name} and "
                                      f"{source.path.name})")
            elif not _mapped_shape(rule, tensor.shape, target[rule.target].shape):
                plan.mismatched.append(f"{where}{key} {list(tensor.shape)} -> {rule.target} expects "
                                       f"{list(target[rule.target].shape)}" +
                                       (" (transposed)" if rule.transform == TRANSPOSE else ""))
            else:
                plan.assignments[rule.target] = (source, rule)
    # A key that is mis-shaped is reported once, as mis-shaped, not again as missing.
    mis_targets = {line.split(" -> ")[1].split(" expects")[0] for line in plan.mismatched}
    plan.missing = [key for key in target if key not in plan.assignments and key not in mis_targets]
    return plan


def matching_variants(sources: Sequence[LoadedCheckpoint], exclude: str | None = None) -> list[str]:
    """Presets whose key table accepts these checkpoints exactly (used to suggest the right --variant)."""
    matches = []
    for name in MOBILECLIP_VARIANTS:
        if name == exclude:
            continue
        config = MobileCLIPConfig.from_variant(name)
        try:
            if _plan(sources, config, _target_layout(config)).ok:
                matches.append(name)
        except KeyTableError:
            continue
    return matches


def _listing(title: str, items: Sequence[str]) -> str:
    shown = "\n".join(f"      {item}" for item in items[:MAX_LISTED_KEYS])
    more = f"\n      ... and {len(items) - MAX_LISTED_KEYS} more" if len(items) > MAX_LISTED_KEYS else ""
    return f"  - {len(items)} {title}:\n{shown}{more}"


def _mismatch_error(plan: _Plan, sources: Sequence[LoadedCheckpoint], variant: str, config: MobileCLIPConfig):
    files = ", ".join(f"{s.path} ({s.format} format)" for s in sources)
    parts = [f"The checkpoint does not match variant {variant!r} (checkpoint: {files}):"]
    if plan.unexpected:
        parts.append(_listing(f"checkpoint key(s) that {variant} has no place for", plan.unexpected))
    if plan.missing:
        parts.append(_listing(f"key(s) that {variant} needs and the checkpoint lacks", plan.missing))
    if plan.mismatched:
        parts.append(_listing("key(s) whose shapes disagree (checkpoint -> model)", plan.mismatched))
    if plan.nonzero_dropped:
        parts.append(_listing(f"non-zero image-projection bias(es) that {variant} (bias-free projection, Apple v1) "
                              "cannot hold; a MobileCLIP2 preset keeps the bias", plan.nonzero_dropped))
    if plan.conflicts:
        parts.append(_listing("key(s) provided by more than one file", plan.conflicts))
    formats = {s.format for s in sources}
    text_missing = plan.missing and all(k.startswith(("text_model.", "text_projection.", "logit_scale"))
                                        for k in plan.missing)
    complete = [s for s in sources if plan.conflicts and _plan([s], config, _target_layout(config)).ok]
    if complete:
        parts.append(f"{complete[0].path} holds the whole {variant} model by itself: convert it alone "
                     f"(--checkpoint {complete[0].path}, without --text-checkpoint).")
    if formats == {"timm"} and text_missing:
        parts.append("A timm checkpoint holds the image tower only: pass the text tower and logit_scale with "
                     "--text-checkpoint, a file of text.* (open_clip) or text_encoder.* (Apple) keys. A complete "
                     "Apple or open_clip checkpoint of the variant needs no timm file: convert it alone.")
    matches = matching_variants(sources, exclude=variant)
    if matches:
        parts.append(f"The checkpoint matches variant(s) {', '.join(matches)}: pass --variant {matches[0]}.")
    else:
        parts.append("No preset matches this checkpoint exactly. Valid variants: " + ", ".join(MOBILECLIP_VARIANTS))
    return KeyMismatchError("\n".join(parts), unexpected=plan.unexpected, missing=plan.missing,
                            mismatched=plan.mismatched, nonzero_dropped=plan.nonzero_dropped,
                            conflicts=plan.conflicts, matching_variants=matches)


def convert_state_dict(sources: Sequence[LoadedCheckpoint], config: MobileCLIPConfig,
                       variant: str | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map the sources onto `MobileCLIPModel(config)`'s keys. Returns (state dict, "file: key" of the all-zero
    biases that were checked and dropped). Raises `KeyMismatchError` listing every disagreement."""
    target = _target_layout(config)
    try:
        plan = _plan(sources, config, target)
    except KeyTableError as error:
        raise ConversionError(f"{error} (variant {variant or config.variant!r})") from error
    if not plan.ok:
        raise _mismatch_error(plan, sources, variant or config.variant or "the given config", config)
    state_dict = {}
    for target_key, (source, rule) in plan.assignments.items():
        state_dict[target_key] = _apply(rule, source.state_dict[rule.source], target[target_key])
    dropped = [f"{source.path.name}: {key}" for source, key in plan.zero_checked]
    return state_dict, dropped


# ------------------------------------------------------------------------------------------------------------------
# Building, saving, publishing
# ------------------------------------------------------------------------------------------------------------------

def build_model(config: MobileCLIPConfig, state_dict: dict[str, torch.Tensor], *, fuse: bool = False,
                dtype: torch.dtype = torch.float32) -> MobileCLIPModel:
    """Model with exactly these weights (built on the meta device, then the tensors are assigned, not copied);
    `fuse` re-parameterises in float32 before the cast to `dtype`."""
    with torch.device("meta"):
        model = MobileCLIPModel(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:  # a non-persistent buffer would have to be re-created here
        raise RuntimeError(f"Tensors not restored from the state dict: {left_on_meta[:10]}")
    model.eval()
    if fuse:
        model.reparameterize()
    if dtype != torch.float32:
        model.to(dtype)
    return model


def convert(checkpoint: str | os.PathLike, variant: str | None = None, *, config: MobileCLIPConfig | None = None,
            text_checkpoint: str | os.PathLike | None = None, fuse: bool = False,
            dtype: str = "fp32") -> tuple[MobileCLIPModel, ConversionReport]:
    """Python API of the converter: read, map, build (optionally fuse and cast). Give a preset `variant` or a
    `config` (tests use reduced-depth configs of a preset's family)."""
    if (variant is None) == (config is None):
        raise ValueError("Pass exactly one of variant= (a preset name) or config=.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; valid: {', '.join(DTYPES)}.")
    variant = resolve_variant(variant) if variant is not None else None
    config = MobileCLIPConfig.from_variant(variant) if variant is not None else config
    sources = [read_checkpoint(checkpoint)]
    if text_checkpoint is not None:
        sources.append(read_checkpoint(text_checkpoint))
    state_dict, dropped = convert_state_dict(sources, config, variant)
    model = build_model(config, state_dict, fuse=fuse, dtype=DTYPES[dtype])
    report = ConversionReport(variant=variant, sources=sources, dropped_zero_keys=dropped, fused=fuse,
                              dtype=str(DTYPES[dtype]).removeprefix("torch."),
                              num_parameters=sum(p.numel() for p in model.parameters()))
    return model, report


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
    from .processing_mobileclip import MobileCLIPProcessor

    output = check_output_dir(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        processor = processor or MobileCLIPProcessor.from_variant(variant)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        _write_model_card(staging, variant, report, model, processor, repo_id, license_file)
        _verify_saved(staging, model)
        _apply_umask(staging)  # mkdtemp creates 0700; give the folder the permissions a plain mkdir would
        check_output_dir(output, overwrite)  # it may have appeared meanwhile
        if output.exists():
            retired = output.with_name(f".{output.name}.replaced-{uuid.uuid4().hex[:8]}")
            os.rename(output, retired)
            try:
                os.rename(staging, output)
            except BaseException:
                os.rename(retired, output)
                raise
            shutil.rmtree(retired)
        else:
            os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


# ------------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_mobileclip.convert",
        description="Convert an Apple (v1 .pt), open_clip or timm MobileCLIP checkpoint into a transformers folder.")
    parser.add_argument("--variant", required=True, help=f"preset name: {', '.join(MOBILECLIP_VARIANTS)}")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt, .pth, .bin or .safetensors)")
    parser.add_argument("--text-checkpoint", help="text tower (and logit_scale) for an image-only timm checkpoint")
    parser.add_argument("--output", required=True, help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--fuse", action="store_true", help="re-parameterise (fold the train-time branches)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="dtype of the saved weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--license-file", help="text of the weights' licence agreement (Apple's LICENSE_MODELS), "
                                               "shipped as LICENSE: the AMLR asks redistributions to include it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        variant = resolve_variant(args.variant)
        if args.push_to_hub is not None:
            validate_repo_id(args.push_to_hub)
        if args.license_file is not None and not Path(args.license_file).is_file():
            raise ValueError(f"--license-file {args.license_file} is not a file.")
    except (ValueError, HFValidationError) as error:
        parser.error(str(error))
    try:
        check_output_dir(args.output, args.overwrite)  # fail before the slow part
        model, report = convert(args.checkpoint, variant, text_checkpoint=args.text_checkpoint, fuse=args.fuse,
                                dtype=args.dtype)
        for source in report.sources:
            print(f"read {source.path}: {source.format} format, {len(source.state_dict)} keys"
                  + "".join(f"; {note}" for note in source.notes))
        for key in report.dropped_zero_keys:
            print(f"checked and dropped all-zero projection bias {key} ({variant} projects without bias)")
        output = save_converted(model, args.output, variant=variant, report=report, overwrite=args.overwrite,
                                repo_id=args.push_to_hub, license_file=args.license_file)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {output} ({variant}, {report.num_parameters / 1e6:.2f} M parameters, "
          f"{'fused' if report.fused else 'un-fused'}, {report.dtype})")
    if args.push_to_hub:
        try:
            info = push_folder_to_hub(output, args.push_to_hub, private=args.private or None,
                                      commit_message=f"Convert {variant} from {Path(args.checkpoint).name}")
        except HubPushError as error:  # the converted folder is complete and stays where it is
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"pushed to {args.push_to_hub}: {info.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
