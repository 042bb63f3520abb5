"""Convert Apple / open_clip / timm MobileCLIP checkpoints into a transformers `MobileCLIPModel` folder.

    python -m modeling_mobileclip.conversion --variant mobileclip-s0 --checkpoint mobileclip_s0.pt \\
        --output ./mobileclip-s0 [--fuse] [--dtype bf16] [--push-to-hub org/mobileclip-s0] [--overwrite] \\
        [--text-checkpoint FILE] [--license-file LICENSE_MODELS]

(also installed as the `mobileclip-convert` console script). The checkpoint format is detected from its keys:
Apple v1 (`image_encoder.model.*`, `text_encoder.*`), open_clip (`visual.trunk.*`, `text.*`; optionally wrapped in
`state_dict` and/or prefixed `module.`), or a timm image trunk alone (then `--text-checkpoint` supplies the text
tower). Files are read with `torch.load(weights_only=True)` or safetensors: nothing in a checkpoint is executed.
Every source key is mapped through the explicit tables in `keymaps.py`; an unexpected, missing or mis-shaped key
fails the conversion with the full picture. The output's folder is checked writable before any work; the output is
written to a hidden folder next to `--output` and moved into place only once complete and verified by reloading it.
A run killed part-way is cleaned up (or its `--overwrite` swap finished) by the next run into the same output.

    checkpoint.py     reading a checkpoint safely, detecting its layout
    keymaps.py        the explicit source -> target key tables
    mapping.py        applying the tables; every disagreement in one `KeyMismatchError`
    convert.py        the Python API: `convert(checkpoint, variant)` -> (model, report)
    output_folder.py  `save_converted`: the complete Hub folder (weights, processor, code, card), swapped in atomically
    staging.py        the writable-parent check, staging folders named by writer pid, the swap, crash recovery
    cli.py            the command line (`main`), with `--push-to-hub` through `hub_cards.push`
    errors.py         `ConversionError`, `KeyMismatchError`

Not Hub-facing: this package may import anything the project depends on, but never open_clip.
"""
