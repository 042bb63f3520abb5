"""`mobileclip-convert` / `python -m modeling_mobileclip.conversion`: convert a checkpoint, write the folder, push it.

    python -m modeling_mobileclip.conversion --variant mobileclip-s0 --checkpoint mobileclip_s0.pt \\
        --output ./mobileclip-s0 [--fuse] [--dtype bf16] [--push-to-hub org/mobileclip-s0] [--overwrite] \\
        [--text-checkpoint FILE] [--license-file LICENSE_MODELS]
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

from hub_cards.push import HubPushError, push_folder_to_hub

from ..configuration_mobileclip import MOBILECLIP_VARIANTS, resolve_variant
from .convert import DTYPES, convert
from .errors import ConversionError
from .output_folder import check_output_dir, save_converted
from .staging import check_parent_writable, recover_interrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_mobileclip.conversion",
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
        check_parent_writable(args.output)  # a ConversionError (a ValueError): before seconds of work
    except (ValueError, HFValidationError) as error:
        parser.error(str(error))
    for line in recover_interrupted(args.output):
        print(line)
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
