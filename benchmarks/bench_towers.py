"""Latency of our image and text towers against the same architecture in timm / open_clip / transformers, with the
same weights, side by side in one process (interleaved rounds, median), un-fused and fused; and the fused speed-up.

Peers (fp32, CPU, `--threads` threads, batch 1 and 16):
- image: timm's registered trunk + classifier Linear (`fastvit_mci0/1/2`, `vit_base_mci_224`) loaded with our image
  tower's weights; fused with timm's own `reparameterize_model`;
- text: open_clip's `MobileCLIP-S1` (12 layers, bidirectional; also the S2 / MobileCLIP2 text tower) and
  `MobileCLIP-B` (causal) text encoders, converted into our model by our converter; for S0's Text-RepMixer tower,
  transformers' 6-layer `sam3_lite_text`, loaded with our weights through the key map below. The text peers have no
  fused form, so the fused column times our fused tower against the peer's only one.
Every row prints the largest difference between our output and the peer's, relative to the output's scale: ~1e-7
shows that both compute the same function with the same weights.

    python benchmarks/bench_towers.py                      # the docs table
    python benchmarks/bench_towers.py --towers image --variants mobileclip-s0 --batches 1
    python benchmarks/bench_towers.py --quick              # CI smoke run: S0, batch 1, no claims

Writes benchmarks/results/bench_towers.md and .json (--results-dir to change; --quick writes to a temp dir).
"""

import copy
from pathlib import Path

import open_clip
import timm
import torch
from common import (Schedule, benchmark_parser, caption_ids, format_ratio, header_line, interleaved_times,
                    machine_header, median_ms, parse_benchmark_args, trained_magnitudes, write_results)
from timm.utils.model import reparameterize_model
from transformers import Sam3LiteTextConfig, Sam3LiteTextTextModel

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel
from modeling_mobileclip.conversion.checkpoint import LoadedCheckpoint, detect_format
from modeling_mobileclip.conversion.convert import build_model
from modeling_mobileclip.conversion.mapping import convert_state_dict

# Variant -> (timm model of the same image tower, our preset built). MobileCLIP-B's is timm's `vit_base_mci_224`, i.e.
# the MobileCLIP2-B tower (stem padding 0, LayerNorm eps 1e-6); Apple's v1 B differs only in those constants, not in
# speed.
IMAGE_PEERS = {"mobileclip-s0": ("fastvit_mci0", "mobileclip-s0"),
               "mobileclip-s1": ("fastvit_mci1", "mobileclip-s1"),
               "mobileclip-s2": ("fastvit_mci2", "mobileclip-s2"),
               "mobileclip-b": ("vit_base_mci_224", "mobileclip2-b")}
# Variant -> (peer text model, our preset its weights convert to).
TEXT_PEERS = {"mobileclip-s0": ("sam3_lite_text", "mobileclip-s0"),
              "mobileclip-s1": ("MobileCLIP-S1", "mobileclip-s1"),
              "mobileclip-b": ("MobileCLIP-B", "mobileclip2-b")}


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


# ------------------------------------------------------------------------------------------------------------------
# Peers with our weights
# ------------------------------------------------------------------------------------------------------------------

def timm_image_peer(model: MobileCLIPModel, timm_name: str) -> torch.nn.Module:
    """timm's registered trunk + classifier Linear carrying exactly our image tower's weights."""
    peer = timm.create_model(timm_name, num_classes=model.config.projection_dim).eval()
    state = {k.removeprefix("vision_model.trunk."): v for k, v in model.state_dict().items()
             if k.startswith("vision_model.trunk.")}
    head = "head.fc" if timm_name.startswith("fastvit") else "head"
    state[f"{head}.weight"] = model.visual_projection.weight
    bias = model.visual_projection.bias
    state[f"{head}.bias"] = bias if bias is not None else torch.zeros(model.config.projection_dim)
    peer.load_state_dict(state)
    return peer


def open_clip_pair(open_clip_name: str, preset: str) -> tuple[MobileCLIPModel, torch.nn.Module]:
    """An open_clip model and ours converted from its state dict by our converter (the user's path)."""
    config = MobileCLIPConfig.from_variant(preset)
    peer = trained_magnitudes(open_clip.create_model(open_clip_name, pretrained=None).eval())
    if not config.vision_config.projection_bias:
        # Apple v1 presets project without bias; open_clip's ports of v1 carry an all-zero one (the converter checks).
        torch.nn.init.zeros_(peer.visual.trunk.head.fc.bias)
    state = peer.state_dict()
    checkpoint = LoadedCheckpoint(Path(f"{open_clip_name} (open_clip, random weights)"), state, detect_format(state))
    ours, _ = convert_state_dict([checkpoint], config, preset)
    return build_model(config, ours), peer


def _sam3_text_key(ours: str) -> list[str]:
    """sam3_lite_text key(s) of one of our text-tower keys (qkv maps to three)."""
    renames = {  # RepMixer blocks
        "token_mixer.mixer_conv.": "token_mixer.mixer.conv.",
        "token_mixer.mixer_bn.": "token_mixer.mixer.batchnorm_conv.",
        "token_mixer.mixer_skip_bn.": "token_mixer.mixer.batchnorm_skip.",
        "token_mixer.norm_bn.": "token_mixer.reference_batchnorm.",
        "convffn.conv.": "conv_feed_forward.depthwise_conv.", "convffn.bn.": "conv_feed_forward.depthwise_batchnorm.",
        "convffn.fc1.": "conv_feed_forward.mlp.fc1.", "convffn.fc2.": "conv_feed_forward.mlp.fc2.",
    }
    if ours == "text_projection.weight":
        return ["projection.weight"]
    key = ours.removeprefix("text_model.").replace("embeddings.position_embedding",
                                                   "embeddings.position_embedding.position_embedding")
    for old, new in renames.items():
        if old in key:
            return [key.replace(old, new)]
    if ".self_attn.qkv." in key:
        return [key.replace(".qkv.", f".{name}.") for name in ("q_proj", "k_proj", "v_proj")]
    return [key]


def sam3_text_pair(model: MobileCLIPModel) -> torch.nn.Module:
    """transformers' `Sam3LiteTextTextModel` (6 layers: the MobileCLIP-S0 text architecture) with our text weights."""
    config = Sam3LiteTextConfig(text_config=dict(num_hidden_layers=6)).text_config
    peer = Sam3LiteTextTextModel(config).eval()
    target = peer.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("text_model.") or key == "text_projection.weight":
            names = _sam3_text_key(key)
            parts = value.chunk(3, dim=0) if len(names) == 3 else [value]  # q, k, v rows of the fused qkv
            for name, part in zip(names, parts, strict=True):
                state[name] = part.reshape(target[name].shape)  # Conv1d [C, 1, k] -> Conv2d [C, 1, 1, k] etc.
    peer.load_state_dict(state, strict=True)
    return peer


# ------------------------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------------------------

def _row(tower: str, peer_name: str, batch: int, times: dict, diff: float,
         fused_diff: float | None) -> tuple[str, dict]:
    """The table row and its raw numbers (seconds per call of each candidate in each round, the differences)."""
    raw = {"tower": tower, "peer": peer_name, "batch": batch, "seconds": times, "rel_diff": diff,
           "rel_diff_fused": fused_diff}
    fused_peer = times.get("peer_fused", times["peer"])
    fused_diff_text = f"{fused_diff:.0e}" if fused_diff is not None else "-"
    return (f"| {tower} | {peer_name} | {batch} | {median_ms(times['ours']):.1f} / {median_ms(times['peer']):.1f} | "
            f"{format_ratio(times['ours'], times['peer'])} | {median_ms(times['ours_fused']):.1f} / "
            f"{median_ms(fused_peer):.1f}{'' if 'peer_fused' in times else ' (un-fused)'} | "
            f"{format_ratio(times['ours_fused'], fused_peer)} | {format_ratio(times['ours'], times['ours_fused'])}x | "
            f"{diff:.0e} / {fused_diff_text} |"), raw


def image_rows(variant: str, batches: list[int], schedule: Schedule) -> list[tuple[str, dict]]:
    timm_name, preset = IMAGE_PEERS[variant]
    ours = trained_magnitudes(MobileCLIPModel(MobileCLIPConfig.from_variant(preset)).eval())
    peer = timm_image_peer(ours, timm_name)
    ours_fused, peer_fused = copy.deepcopy(ours).reparameterize(), reparameterize_model(peer)
    size = ours.config.vision_config.image_size
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, size, size)
        candidates = {"ours": lambda: ours.get_image_features(pixel_values=x).pooler_output, "peer": lambda: peer(x),
                      "ours_fused": lambda: ours_fused.get_image_features(pixel_values=x).pooler_output,
                      "peer_fused": lambda: peer_fused(x)}
        with torch.inference_mode():
            diff = relative_difference(candidates["ours"](), candidates["peer"]())
            fused_diff = relative_difference(candidates["ours_fused"](), candidates["peer_fused"]())
            times = interleaved_times(candidates, schedule)
        rows.append(_row(f"{variant} image", f"timm {timm_name}", batch, times, diff, fused_diff))
    return rows


def text_rows(variant: str, batches: list[int], schedule: Schedule) -> list[tuple[str, dict]]:
    peer_name, preset = TEXT_PEERS[variant]
    if peer_name == "sam3_lite_text":
        ours = trained_magnitudes(MobileCLIPModel(MobileCLIPConfig.from_variant(preset)).eval())
        peer_model = sam3_text_pair(ours)
        run_peer = lambda ids: peer_model(input_ids=ids).pooler_output  # noqa: E731
        label = "transformers sam3_lite_text (6 layers)"
    else:
        ours, peer_model = open_clip_pair(peer_name, preset)
        run_peer, label = peer_model.encode_text, f"open_clip {peer_name}"
    ours_fused = copy.deepcopy(ours).reparameterize()
    rows = []
    for batch in batches:
        ids = caption_ids(batch)
        candidates = {"ours": lambda: ours.get_text_features(input_ids=ids).pooler_output,
                      "peer": lambda: run_peer(ids),
                      "ours_fused": lambda: ours_fused.get_text_features(input_ids=ids).pooler_output}
        with torch.inference_mode():
            diff = relative_difference(candidates["ours"](), candidates["peer"]())
            fused_diff = relative_difference(candidates["ours_fused"](), candidates["peer"]())
            times = interleaved_times(candidates, schedule)
        rows.append(_row(f"{variant} text", label, batch, times, diff, fused_diff))
    return rows


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="S0, batch 1")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--towers", nargs="+", choices=["image", "text"], default=["image", "text"])
    parser.add_argument("--variants", nargs="+", choices=sorted(set(IMAGE_PEERS) | set(TEXT_PEERS)),
                        help="default: every variant with a peer")
    args = parse_benchmark_args(parser, argv)
    batches = [1] if args.quick else args.batches
    chosen = ["mobileclip-s0"] if args.quick else args.variants
    header = machine_header("fp32", args.threads)
    intro = (f"cpu, fp32, {args.threads} threads, {args.schedule.describe()}; ratio = ours / peer; torch "
             f"{torch.__version__}, timm {timm.__version__}, open_clip {open_clip.__version__}")
    table = [("| tower | peer | batch | ms ours / peer | ratio | fused ms ours / peer | fused ratio | fused speed-up "
              "(ours) | rel. diff un-fused / fused |"), "|---|---|---|---|---|---|---|---|---|"]
    print(header_line(header), intro, *table, sep="\n", flush=True)
    measured = []
    for kind, (peers, rows_of) in {"image": (IMAGE_PEERS, image_rows), "text": (TEXT_PEERS, text_rows)}.items():
        for variant in [v for v in peers if kind in args.towers and (chosen is None or v in chosen)]:
            measured += rows_of(variant, batches, args.schedule)
            print("\n".join(row for row, _ in measured[-len(batches):]), flush=True)
    write_results("bench_towers", args, header, intro, ["\n".join(table + [row for row, _ in measured])],
                  [raw for _, raw in measured])


if __name__ == "__main__":
    main()
