"""Reinforced training of CLIP-like students (`train_accelerate.py` is the entry point and the loop).

- `args`: the command line, `--config` files and value checks
- `students`: adapters for MobileCLIP, transformers CLIP / SigLIP and open_clip students
- `losses`, `optim`: the paper's loss (CLIP + multi-teacher distillation), AdamW groups, warmup + cosine
- `data_sources`: which shards, joins and teachers; the train split, streamed or prepared
- `views`: one training view of a sample (replayed augmentation + captions + teacher targets), and a batch
- `stream_batches`: streaming, exactly resumable batches over tar shards (the default for --train-data)
- `map_batches`: map-style batches as a pure function of (seed, micro-step) (small local sets)
- `run`: what a step can touch (`Run`), the train data, the run's length, the held-out set
- `heldout`: periodic zero-shot / retrieval evaluation
- `checkpoints`: checkpoint folders (JSON state, completion marker, rotation after completion) and resume
- `data_report`: the per-step uid log (--log-sample-uids) and the end-of-run counts (trained, skipped, dropped)
- `trackers`, `hub_upload`, `card`: logging, background Hub pushes, model cards of the trained student
"""
