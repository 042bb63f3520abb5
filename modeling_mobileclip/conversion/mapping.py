"""Mapping a checkpoint's keys onto `MobileCLIPModel`'s through the explicit tables of `keymaps.py`.

Every disagreement (unexpected, missing, mis-shaped, conflicting keys; a non-zero bias the preset has no slot for) is
collected and raised at once as a `KeyMismatchError` that also names the presets the checkpoint does match.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..configuration_mobileclip import MOBILECLIP_VARIANTS, MobileCLIPConfig
from ..modeling_mobileclip import MobileCLIPModel
from .checkpoint import LoadedCheckpoint
from .errors import ConversionError, KeyMismatchError
from .keymaps import COPY, RESHAPE, TRANSPOSE, ZERO_ONLY, KeyRule, KeyTableError, key_table

MAX_LISTED_KEYS = 30  # per category in error messages; the exception object keeps the complete lists

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
