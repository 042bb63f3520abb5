"""The command line of `train_accelerate.py`: flags, their defaults, `--config` files and value checks."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hub_cards.remote_code import TRUST_REMOTE_CODE_HELP

CAPTION_MODES = ("gt+syn", "gt", "mix")
DATA_MODES = ("auto", "stream", "map")


def build_parser(description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_accelerate.py", description=description,
                                formatter_class=_HelpFormatter)
    model = p.add_argument_group("model")
    model.add_argument("--model", default="tiny", help="tiny | tiny-clip | tiny-siglip | tiny-open-clip | a MobileCLIP "
                       "preset (mobileclip-s0, ...; random init) |\na transformers CLIP/SigLIP/MobileCLIP checkpoint "
                       "(hub id or folder) | an open_clip name (ViT-B-16) or open_clip:<name>[/<pretrained tag>]")
    model.add_argument("--from-scratch", action="store_true", help="transformers checkpoints: use the config only")
    model.add_argument("--trust-remote-code", action="store_true", help=f"transformers checkpoints: "
                       f"{TRUST_REMOTE_CODE_HELP}")

    data = p.add_argument_group("data")
    data.add_argument("--train-data", default=None, help="DataCompDR shards (glob, brace range such as "
                      "'shards/{00000000..00012799}.tar') or datacompdr:<config> (e.g. datacompdr:12m);\n"
                      "default: the embedded toy DataCompDR")
    data.add_argument("--image-dir", default=None, help="images joined by uid, e.g. img2dataset shards "
                      "(default: the shards' own images)")
    data.add_argument("--captions", default=None, help="ground-truth captions by uid (default: the shards' own txt)")
    data.add_argument("--data-mode", default="auto", choices=DATA_MODES,
                      help="stream: read the tar shards as they train (no copy; any size); map: prepare an Arrow "
                      "copy first (small local sets); auto: map for the embedded toy set, else stream")
    data.add_argument("--shuffle-buffer", type=int, default=1000, help="stream: each DataLoader worker emits every "
                      "block of this many consecutive samples in a random order")
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per device")
    data.add_argument("--cache-dir", default=None, help="toy data, join indexes and datasets caches "
                      "(default ~/.cache/mobileclip_hf)")
    data.add_argument("--toy-spec", default="", help="size of the embedded default, e.g. num_train=64,teacher_steps=5 "
                      "(fields of dataset_scripts.toy_data.ToySpec)")
    data.add_argument("--caption-mode", default="gt+syn", choices=CAPTION_MODES,
                      help="gt+syn: each image's ground-truth and one synthetic caption; gt: original captions only; "
                      "mix: one of the two per image (--mix-ratio)")
    data.add_argument("--mix-ratio", type=float, default=0.5, help="--caption-mode mix: share of synthetic captions")
    data.add_argument("--teacher-dims", default=None, help="per-teacher widths, e.g. 768,768 (default: dataset "
                      "metadata)")
    data.add_argument("--teacher-logit-scales", default=None, help="one per teacher (default: dataset metadata)")

    length = p.add_argument_group("length (the first limit reached ends training)")
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: 1000 unless --epochs or "
                        "--samples is given)")
    length.add_argument("--epochs", type=int, default=None, help="passes over the training data")
    length.add_argument("--samples", type=int, default=None, help="training samples (rounded up to whole global "
                        "batches)")

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=32, help="per device and micro-step")
    optim.add_argument("--gradient-accumulation-steps", type=int, default=1)
    optim.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    optim.add_argument("--gradient-checkpointing", action="store_true")
    optim.add_argument("--lr", type=float, default=1e-3)
    optim.add_argument("--betas", default="0.9,0.95")
    optim.add_argument("--eps", type=float, default=None, help="default: open_clip's rule, 1e-6 if the model name "
                       "has 'vit' else 1e-8")
    optim.add_argument("--weight-decay", type=float, default=0.2)
    optim.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of the steps, at most 1000")
    optim.add_argument("--max-grad-norm", type=float, default=1.0)
    optim.add_argument("--loss-weights", default="0.0,1.0", help="w0,w1: contrastive and distillation weights")
    optim.add_argument("--seed", type=int, default=0)

    run = p.add_argument_group("evaluation, logging, checkpoints")
    run.add_argument("--eval-data", default=None, help="held-out set for the periodic evaluation (imagefolder, "
                     "save_to_disk folder, parquet, hub id):\nzero-shot accuracy if it has labels, image<->text "
                     "recall@1 if it has captions; default: the toy set's")
    run.add_argument("--eval-classnames", default=None, help="class names file for --eval-data labels that are not "
                     "a ClassLabel, or 'imagenet'")
    run.add_argument("--eval-templates", default=None, help="'openai-imagenet', 'photo' or a file (default: the toy "
                     "set's templates, else openai-imagenet)")
    run.add_argument("--eval-every", type=int, default=100, help="optimizer steps between held-out evaluations")
    run.add_argument("--log-every", type=int, default=10)
    run.add_argument("--report-to", default="tensorboard,jsonl", help="trackers: comma-separated accelerate names "
                     "(tensorboard, wandb, mlflow, trackio, ...) and jsonl, or 'all' (every installed one) or 'none'")
    run.add_argument("--log-sample-uids", action="store_true", help="write the uids of every optimizer step's global "
                     "batch to <output-dir>/sample_uids.jsonl (an audit of the data order)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--output-dir", default=None, help="default outputs/<model>-<date>-<time> (or the --resume "
                     "folder)")
    run.add_argument("--resume", default=None, help="output dir of an earlier run: continue from its latest "
                     "checkpoint")
    run.add_argument("--overwrite-output-dir", action="store_true")
    run.add_argument("--checkpoint-every", type=int, default=100, help="optimizer steps between checkpoints")
    run.add_argument("--checkpoints-total-limit", type=int, default=3)
    run.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload checkpoints in the background "
                     "and the final model at the end")
    run.add_argument("--hub-private", action="store_true")
    run.add_argument("--license", default=None, help="licence of the trained weights for the model card (a Hub "
                     "licence id); the toy default is apache-2.0")
    run.add_argument("--debug", action="store_true", help="on an error, show the full traceback instead of one line")
    run.add_argument("--debug-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests the NaN guard
    p.add_argument("--config", default=None, help="a YAML or JSON file of flags, keyed by flag name (max-steps: "
                   "30000, loss-weights: [0, 1], ...);\nflags given on the command line win")
    return p


class _HelpFormatter(argparse.RawTextHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Line breaks kept, and every flag's default shown."""


def parse_args(argv: list[str] | None = None, description: str = "") -> argparse.Namespace:
    parser = build_parser(description)
    config_file = parser.parse_known_args(argv)[0].config
    tokens = list(argv) if argv is not None else None
    if config_file:
        import sys

        # File values become command-line tokens placed first: the parser checks their types and choices exactly as
        # it checks typed flags, and a flag typed later on the command line overrides them.
        tokens = config_tokens(parser, config_file) + (tokens if tokens is not None else sys.argv[1:])
    args = parser.parse_args(tokens)
    return finish_args(parser, args)


def config_tokens(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """`--flag value` tokens from a YAML/JSON mapping of flag names to values (lists become comma-separated)."""
    import yaml  # a dependency of accelerate; YAML also reads JSON

    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        parser.error(f"--config {path}: cannot read it ({err})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values, e.g. `max-steps: 30000`")
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    unknown = sorted(str(key).replace("-", "_") for key in values if str(key).replace("-", "_") not in actions)
    if unknown:
        parser.error(f"--config {path}: unknown flag(s) {unknown}; see --help for the flag names")
    tokens = []
    for key, value in values.items():
        action = actions[str(key).replace("-", "_")]
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                parser.error(f"--config {path}: {key}: {value!r} is not true/false (a YAML boolean, unquoted)")
            tokens += [flag] if value else []
            continue
        if isinstance(value, (dict, bool)) or value is None:
            parser.error(f"--config {path}: {key}: {value!r} is not a value for {flag} (see --help)")
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if action.type is int and isinstance(value, float):
            parser.error(f"--config {path}: {key}: {value!r} is not a whole number")
        tokens += [flag, str(value)]
    return tokens


def finish_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Comma-separated lists parsed, defaults that depend on other flags filled in, ranges checked."""
    args.loss_weights = _floats(parser, "--loss-weights", args.loss_weights, count=2)
    args.betas = tuple(_floats(parser, "--betas", args.betas, count=2))
    args.teacher_dims = _ints(parser, "--teacher-dims", args.teacher_dims) if args.teacher_dims else None
    args.teacher_logit_scales = _floats(parser, "--teacher-logit-scales", args.teacher_logit_scales) \
        if args.teacher_logit_scales else None
    args.toy_spec = _toy_spec(parser, args.toy_spec)
    args.output_dir = args.output_dir or args.resume
    for flag in ("max_steps", "epochs", "samples", "batch_size", "gradient_accumulation_steps", "shuffle_buffer",
                 "checkpoint_every", "eval_every", "log_every", "checkpoints_total_limit"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} {value}: expected a positive number")
    if args.num_workers < 0:
        parser.error(f"--num-workers {args.num_workers}: expected 0 (load in the training process) or more")
    if args.max_steps is None and args.epochs is None and args.samples is None:
        args.max_steps = 1000
    if not 0 <= args.mix_ratio <= 1:
        parser.error(f"--mix-ratio {args.mix_ratio}: expected a share between 0 and 1")
    return args


def _floats(parser, flag: str, text: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        parser.error(f"{flag}={text!r}: expected comma-separated numbers, e.g. 100,100")
    if count is not None and len(values) != count:
        parser.error(f"{flag}={text!r}: expected {count} comma-separated numbers")
    return values


def _ints(parser, flag: str, text: str) -> list[int]:
    values = _floats(parser, flag, text)
    if any(v != int(v) or v <= 0 for v in values):
        parser.error(f"{flag}={text!r}: expected comma-separated positive integers, e.g. 768,768")
    return [int(v) for v in values]


def _toy_spec(parser, text: str) -> dict:
    from dataset_scripts.toy_data import ToySpec

    fields = {f.name: f.type for f in dataclasses.fields(ToySpec)}
    spec = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            parser.error(f"--toy-spec {text!r}: {item!r} is not <field>=<value> with a field of {sorted(fields)}")
        spec[key] = (float if fields[key] == "float" else int)(value)
    return spec
