"""Reinforce any image-text dataset into the DataCompDR layout (our issue #6; Apple's RayGen, with ``param_aug`` kept).

CLI (one process, or ``accelerate launch --num_processes N`` to share the shards among N processes / GPUs / nodes,
or the same command on several machines into one shared folder: each process claims the next unfinished shard; on a
CPU-only machine add ``--multi_gpu``, which starts N gloo processes: accelerate 1.15's ``--cpu`` starts one)::

    accelerate launch -m dataset_scripts.reinforce \\
        --dataset <hub id | folder of .tar | .parquet files | imagefolder> \\
        --captioner open_clip:coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k --num-captions 5 \\
        --teachers open_clip:ViT-L-14/openai,open_clip:ViT-L-14/datacomp_xl_s13b_b90k --teacher-logit-scales 100,100 \\
        --num-augmentations 10 --dtype bf16 --output out_dir [--license cc-by-nc-4.0] [--push-to-hub org/my-dr]

Python::

    from dataset_scripts.reinforce import reinforce
    summary = reinforce("images/", output="out_dir", teachers=["open_clip:ViT-L-14/openai"],
                        captioner="hf:Salesforce/blip-image-captioning-base", num_augmentations=10)

Teachers and the captioner can also be objects (``teachers=[...]`` may mix spec strings and objects; the order is
the embedding order). Spec strings: ``open_clip:<model>/<pretrained>``, ``open_clip:hf-hub:<repo>``,
``open_clip:local-dir:<folder>``, ``hf:<repo>`` or a bare repo id / local folder (e.g. a ``MobileCLIPModel``
``save_pretrained`` folder that also holds its processor). Objects:

* a teacher object has ``name`` (str, recorded in config.json), ``image_size`` (int or (height, width), at most the
  crop size), ``image_mean`` / ``image_std`` (3 floats), ``encode_image(pixel_values [B, 3, H, W] float32 CPU
  tensor) -> [B, D]`` and ``encode_text(list[str]) -> [B, D]``; optional float ``logit_scale``. The tool renders
  each view, resizes it to ``image_size`` (bicubic), normalises with the mean/std, and L2-normalises the outputs
  (``teachers.TeacherModel``). For a model in memory, ``teachers.teacher_from_transformers(model, processor,
  name)`` / ``teacher_from_open_clip(model, tokenizer, name)`` build one;
* a captioner object has ``name`` (str) and ``caption(images: list[PIL RGB image], seeds: list[list[int]]) ->
  list[list[str]]``: ``len(seeds[i])`` captions for image i, caption c drawn from ``seeds[i][c]`` alone (so the
  output does not depend on batching or processes); the tool post-processes them (first sentence, stripped)
  (``captioners.CaptionModel``). A transformers ``pipeline("image-text-to-text", ...)`` (e.g. BLIP) is accepted too.

Reading the result back needs no extra step (``config.json`` next to the shards carries the teachers)::

    import dataset_scripts, glob
    from datasets import load_dataset
    shards = sorted(glob.glob("out_dir/*.tar"))
    ds = load_dataset("datacompdr", data_files=shards, split="train",
                      image_dir=shards, captions=shards)   # optional joins: our shards also hold image + GT text

Modules: ``cli`` (the options), ``run`` (one run: models, config, claimed shards, manifest, card, push), ``claims``
(who writes which shard: exclusive claims with leases), ``schedule`` (the claim loop),
``config`` (settings, ``config.json``, compatibility check, storage estimate), ``inputs`` (tars / parquet /
imagefolder / Hub datasets as shards), ``images`` (input decoding), ``pipeline`` (per-shard work: captions,
augmentations, teacher embeddings), ``shards`` (deterministic encoding, ``.partial`` + rename, manifest, resume).
"""

from .cli import main, parse_args
from .config import ReinforceSettings, build_config, check_or_write_config, storage_message
from .images import prepare_image
from .inputs import BadSample, InputRecord, InputShard, discover_inputs
from .pipeline import Reinforcer, derive_seed
from .run import reinforce
from .shards import shard_done, write_manifest

__all__ = [
    "BadSample",
    "InputRecord",
    "InputShard",
    "ReinforceSettings",
    "Reinforcer",
    "build_config",
    "check_or_write_config",
    "derive_seed",
    "discover_inputs",
    "main",
    "parse_args",
    "prepare_image",
    "reinforce",
    "shard_done",
    "storage_message",
    "write_manifest",
]
