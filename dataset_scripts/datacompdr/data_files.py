"""``data_files`` with webdataset-style brace ranges (``shards/{00000..00015}.tar``), which datasets' globs lack."""

from __future__ import annotations

import re
from itertools import product
from typing import Any

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{00000..00015}`` (zero-padded ranges) and ``{a,b}`` alternatives, as webdataset URLs do."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    range_match = _RANGE.match(body)
    if range_match:
        first, last = range_match.groups()
        width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
        start, stop = int(first), int(last)
        step = 1 if stop >= start else -1
        choices = [str(n).zfill(width) for n in range(start, stop + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        choices = ["{" + body + "}"]  # not a brace expression: keep literally
        head, tail = pattern[: match.end()], pattern[match.end():]
        return [head + rest for rest in expand_braces(tail)]
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [head + choice + rest for choice, rest in product(choices, expand_braces(tail))]


def expand_data_files(data_files: Any) -> Any:
    """Apply :func:`expand_braces` to every pattern of a ``data_files`` str / list / dict."""
    if isinstance(data_files, str):
        expanded = expand_braces(data_files)
        return expanded if len(expanded) > 1 else data_files
    if isinstance(data_files, (list, tuple)):
        return [p for item in data_files for p in (expand_braces(item) if isinstance(item, str) else [item])]
    if isinstance(data_files, dict):
        return {split: expand_data_files(patterns) for split, patterns in data_files.items()}
    return data_files
