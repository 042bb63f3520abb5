"""One :class:`~.members.RawSample` of a shard -> one example with the builder's columns, or a counted skip.

Each member is decoded and checked (counts, widths, finite values, uid); both key layouts (v1 and raygen) are
normalised to ``text_emb`` rows ``[0, num_gt_emb)`` for the ground-truth caption(s), then one row per synthetic
caption. Anything wrong raises :class:`~.skips.DataCompDRSampleError` naming the reason, field, key and shard.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from ..augment_replay import parse_param_aug
from .decoders import EMBEDDING_DECODERS, MemberTooLargeError, decode_json, decode_text
from .joins import SampleJoins
from .members import HEX_UID, RawSample
from .metadata import DataCompDRMetadata
from .skips import DataCompDRSampleError


class SampleAssembler:
    """Turns one :class:`RawSample` into an example dict, or raises :class:`DataCompDRSampleError`."""

    def __init__(self, settings: DataCompDRMetadata, image_emb_key: str, total_dim: Optional[int]):
        self.layout = settings.layout
        self.embedding_format = settings.embedding_format
        self.syn_regex = re.compile(settings.syn_text_key_regex)
        self.captions_declared_absent = settings.num_captions == 0  # config.json: reinforced with --captioner none
        self.image_emb_key = image_emb_key
        self.total_dim = total_dim

    def fail(self, reason, field_name, raw, shard, detail):
        raise DataCompDRSampleError(reason, field_name, raw.key, shard, detail)

    def decoded(self, raw, shard, field_name, decoder):
        if field_name not in raw.fields:
            self.fail("missing_member", field_name, raw, shard, f"no {raw.key}.{field_name} member")
        try:
            return decoder(raw.fields[field_name])
        except MemberTooLargeError as err:
            self.fail("oversized_member", field_name, raw, shard, str(err))
        except Exception as err:  # one undecodable member drops one sample (module docstring)
            self.fail("undecodable_member", field_name, raw, shard, f"{type(err).__name__}: {err}")

    def embeddings(self, raw, shard) -> tuple[str, dict[str, np.ndarray]]:
        fmt = self.embedding_format
        if fmt == "auto":
            fmt = "npz" if "npz" in raw.fields else "pth.gz"
        return fmt, self.decoded(raw, shard, fmt, EMBEDDING_DECODERS[fmt])

    def matrix(self, raw, shard, fmt, arrays, name, rows: Optional[int]) -> np.ndarray:
        field_name = f"{fmt}:{name}"
        if name not in arrays:
            self.fail("missing_member", field_name, raw, shard, f"arrays present: {sorted(arrays)}")
        array = arrays[name]
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            self.fail("bad_embedding", field_name, raw, shard,
                      f"expected a 2-D float array, got shape {array.shape} dtype {array.dtype}")
        if self.total_dim is not None and array.shape[1] != self.total_dim:
            self.fail("bad_embedding", field_name, raw, shard,
                      f"width {array.shape[1]} != {self.total_dim} (sum of the teachers' embedding_dim)")
        if rows is not None and array.shape[0] != rows:
            self.fail("count_mismatch", field_name, raw, shard, f"{array.shape[0]} rows, expected {rows}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            self.fail("bad_embedding", field_name, raw, shard, "contains NaN or inf")
        return array

    def synthetic_captions(self, raw, shard) -> tuple[list[tuple[str, list[str]]], int]:
        syn = self.decoded(raw, shard, "syn.json", decode_json)
        if not isinstance(syn, dict):
            self.fail("bad_syn_text", "syn.json", raw, shard, f"expected an object, got {type(syn).__name__}")
        selected = [(k, v) for k, v in syn.items() if self.syn_regex.match(k)]
        if not selected:
            self.fail("bad_syn_text", "syn.json", raw, shard,
                      f"no key matches syn_text_key_regex {self.syn_regex.pattern!r}; keys: {sorted(syn)}")
        for k, captions in selected:
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                self.fail("bad_syn_text", f"syn.json:{k}", raw, shard, "expected a list of strings")
        if not self.captions_declared_absent and not any(captions for _, captions in selected):
            self.fail("bad_syn_text", "syn.json", raw, shard, f"no synthetic caption under {[k for k, _ in selected]} "
                      f"(shards made without captions need 'num_captions': 0 in their config.json)")
        return selected, len(syn)

    def param_aug(self, raw, shard) -> list[dict]:
        paug = self.decoded(raw, shard, "paug.json", decode_json)
        if not isinstance(paug, dict) or "param_aug" not in paug:
            self.fail("bad_param_aug", "paug.json", raw, shard, "expected an object with the key 'param_aug'")
        try:
            return [p.to_features() for p in parse_param_aug(paug["param_aug"])]
        except ValueError as err:
            self.fail("bad_param_aug", "paug.json", raw, shard, str(err))

    def text_rows(self, raw, shard, fmt, arrays, selected, num_syn_keys):
        layout = self.layout
        if layout == "auto":
            layout = "raygen" if any(f"{k}_emb" in arrays for k, _ in selected) else "v1"
        if layout == "raygen":
            gt = self.matrix(raw, shard, fmt, arrays, "text_emb", None)
            if gt.shape[0] < 1:
                self.fail("count_mismatch", f"{fmt}:text_emb", raw, shard, "no ground-truth caption row")
            syn = [self.matrix(raw, shard, fmt, arrays, f"{k}_emb", len(captions)) for k, captions in selected]
            return np.concatenate([gt] + syn, axis=0), gt.shape[0]
        if num_syn_keys != 1:
            self.fail("count_mismatch", "syn.json", raw, shard,
                      f"layout v1 stores the synthetic rows in text_emb for exactly one key, found {num_syn_keys} "
                      f"keys and no <key>_emb arrays")
        # v1 (Apple's generator): row 0 embeds the ground-truth caption, row 1 + k embeds syn_text[k]. Any other count
        # means the captions and rows no longer line up, so the sample cannot be trusted.
        text = self.matrix(raw, shard, fmt, arrays, "text_emb", None)
        if text.shape[0] != 1 + len(selected[0][1]):
            self.fail("count_mismatch", f"{fmt}:text_emb", raw, shard,
                      f"{text.shape[0]} rows, expected 1 ground-truth row + {len(selected[0][1])} synthetic rows")
        return text, 1

    def __call__(self, raw: RawSample, shard: str, joins: SampleJoins) -> dict:
        if raw.problem is not None:
            self.fail(raw.problem[0], raw.problem[1], raw, shard, raw.problem[2])
        param_aug = self.param_aug(raw, shard)
        selected, num_syn_keys = self.synthetic_captions(raw, shard)
        fmt, arrays = self.embeddings(raw, shard)
        image_emb = self.matrix(raw, shard, fmt, arrays, self.image_emb_key, len(param_aug))
        text_emb, num_gt = self.text_rows(raw, shard, fmt, arrays, selected, num_syn_keys)
        meta = self.decoded(raw, shard, "json", decode_json) if "json" in raw.fields else {}
        if not isinstance(meta, dict):
            self.fail("undecodable_member", "json", raw, shard, f"expected an object, got {type(meta).__name__}")
        key_base = raw.key.rpartition("/")[2].lower()
        uid = meta.get("uid") if isinstance(meta.get("uid"), str) else key_base
        if HEX_UID.match(key_base) and uid.lower() != key_base:
            self.fail("uid_mismatch", "json", raw, shard, f"json uid {uid!r} != __key__")
        if not isinstance(meta.get("sha256", ""), (str, type(None))):
            self.fail("undecodable_member", "json", raw, shard, f"sha256 {meta['sha256']!r} is not a string")
        url = self.decoded(raw, shard, "url.txt", decode_text) if "url.txt" in raw.fields else None
        example = {
            "__key__": raw.key,
            "__url__": shard,
            "uid": uid,
            "url": url,
            "sha256": meta.get("sha256"),
            "syn_text": [c for _, captions in selected for c in captions],
            "syn_key": [k for k, captions in selected for _ in captions],
            "param_aug": param_aug,
            "image_emb": image_emb,
            "text_emb": text_emb,
            "num_gt_emb": num_gt,
        }
        joins.apply(example, raw, shard, self)
        return example
