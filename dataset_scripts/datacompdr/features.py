"""The builder's explicit ``Features``: D_total = sum of the teachers' widths, from metadata, never hard-coded.

* ``__key__``, ``__url__`` (shard path), ``uid``, ``url``, ``sha256``: strings (``url``/``sha256`` may be None).
* ``syn_text``: list of synthetic captions (all selected keys, in ``syn.json`` order); ``syn_key``: the key each
  caption came from.
* ``param_aug``: list of ``{"crop": [i, j, h, w] int32, "ops": [{"op": int32, "magnitude": float64}]}``, always
  parsed (never a JSON string). ``augment_replay.apply`` accepts these entries directly.
* ``image_emb``: float32 [n_aug, D_total]; row a is the teacher embedding of ``param_aug[a]``.
* ``text_emb``: float32 [num_gt_emb + n_syn, D_total]; rows ``[0, num_gt_emb)`` embed the ground-truth
  caption(s), row ``num_gt_emb + k`` embeds ``syn_text[k]`` (both layouts are normalised to this).
  bf16 sources are widened to float32 exactly.
* ``num_gt_emb``: int32 (1 in v1; raygen may store several ground-truth captions).
* with ``captions=``: ``text`` (ground-truth caption).
* with ``image_dir=``: ``image`` (``Image(decode=False)``: the original bytes, original size; decode with
  ``augment_replay.load_image``, which like Apple's generator does *not* apply EXIF rotation, unlike
  ``datasets.Image``), ``image_width``, ``image_height``, ``crop_rescaled`` (boxes were rescaled from the
  recorded original size).
"""

from __future__ import annotations

import datasets


def build_features(total_dim: int, with_text: bool, with_image: bool) -> datasets.Features:
    columns = {
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "uid": datasets.Value("string"),
        "url": datasets.Value("string"),
        "sha256": datasets.Value("string"),
    }
    if with_text:
        columns["text"] = datasets.Value("string")
    columns.update({
        "syn_text": datasets.List(datasets.Value("string")),
        "syn_key": datasets.List(datasets.Value("string")),
        "param_aug": datasets.List({
            "crop": datasets.List(datasets.Value("int32"), length=4),
            "ops": datasets.List({"op": datasets.Value("int32"), "magnitude": datasets.Value("float64")}),
        }),
        "image_emb": datasets.Array2D(shape=(None, total_dim), dtype="float32"),
        "text_emb": datasets.Array2D(shape=(None, total_dim), dtype="float32"),
        "num_gt_emb": datasets.Value("int32"),
    })
    if with_image:
        columns.update({
            "image": datasets.Image(decode=False),
            "image_width": datasets.Value("int32"),
            "image_height": datasets.Value("int32"),
            "crop_rescaled": datasets.Value("bool"),
        })
    return datasets.Features(columns)
