"""Shared fixtures: tiny random MobileCLIP configs of every architecture family, built offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 max_position_embeddings=77)
TINY_FASTVIT = dict(backbone="fastvit", image_size=64, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                    mlp_ratios=(3.0,) * 4, token_mixers=("repmixer",) * 3 + ("attention",),
                    downsamples=(False, True, True, True), se_downsamples=(False, False, True, True),
                    pos_embs=(False, False, False, True), norm="batchnorm", stem_use_scale_branch=True)

# One tiny config per architecture family of MOBILECLIP_VARIANTS (the full presets are exercised on the meta device).
TINY_FAMILIES = {
    # MCi0-2 image tower + S0's hybrid Text-RepMixer text tower
    "mci-s0text": dict(vision=TINY_FASTVIT, text=dict(TINY_TEXT, num_hidden_layers=4,
                                                      block_types=("repmixer", "transformer", "transformer",
                                                                   "repmixer"))),
    # MCi3/4 (5 stages, LayerNorm attention blocks, no stem scale branch) + plain text tower
    "mci5stage": dict(vision=dict(TINY_FASTVIT, layers=(1,) * 5, embed_dims=(8, 16, 32, 64, 64),
                                  mlp_ratios=(4.0,) * 5, token_mixers=("repmixer",) * 3 + ("attention",) * 2,
                                  downsamples=(False, True, True, True, True), se_downsamples=(False,) * 5,
                                  pos_embs=(False, False, False, True, True), norm="layernorm",
                                  stem_use_scale_branch=False, projection_bias=True),
                      text=dict(TINY_TEXT, num_hidden_layers=2)),
    # Apple v1 MobileCLIP-B: ViT with conv stem (first conv padded by 1), bias-free projection, causal text
    "vit-convstem": dict(vision=dict(backbone="vit", image_size=64, patch_size=16, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, stem="conv",
                                     stem_padding=1, layer_norm_eps=1e-5, no_embed_class=True),
                         text=dict(TINY_TEXT, num_hidden_layers=2, causal=True)),
    # L-14 style: CLIP ViT with patchify stem and pre-norm
    "vit-patch": dict(vision=dict(backbone="vit", image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, stem="patch", layer_norm_eps=1e-5,
                                  pre_norm=True, projection_bias=True),
                      text=dict(TINY_TEXT, num_hidden_layers=2)),
}


def tiny_config(family: str, **overrides) -> MobileCLIPConfig:
    spec = TINY_FAMILIES[family]
    return MobileCLIPConfig(text_config=MobileCLIPTextConfig(**spec["text"]),
                            vision_config=MobileCLIPVisionConfig(**spec["vision"]),
                            **{"projection_dim": 24, **overrides})


@torch.no_grad()
def randomize_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BatchNorm statistics and layer scales far from their init, so fusing and conversion are really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.2)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    for name, param in model.named_parameters():
        if "layer_scale" in name or name.endswith("gamma"):
            param.copy_(torch.rand(param.shape, generator=gen) * 0.9 + 0.1)
    return model


def calibrated(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`randomize_statistics`' BatchNorm affine terms and layer scales, then BatchNorm statistics calibrated on a batch
    of random images and captions (`calibrate_batchnorm`), in eval mode. With random statistics eval-mode BN does not
    normalise and a tiny MCi tower's embeddings barely depend on the image (4e-4 max abs between unrelated images);
    calibrated, they differ by ~0.4, so equality and ranking checks on them mean something."""
    from fixtures.convert_checkpoints import calibrate_batchnorm

    from modeling_mobileclip.export.encoders import example_inputs

    model = randomize_statistics(model, seed).eval()
    inputs = example_inputs(model, batch=8, seed=seed)
    with torch.no_grad():
        calibrate_batchnorm(model, lambda: model(pixel_values=inputs["image"], input_ids=inputs["text"]), seed)
    return model


def save_tiny_s0(path, tokenizer) -> tuple:
    """A tiny calibrated MobileCLIP-S0-family model saved un-fused (as converted train-time checkpoints are) in `path`
    with its processor (64 px); returns (model, processor). Used by the export and embedding tests."""
    from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor

    torch.manual_seed(0)
    model = calibrated(MobileCLIPModel(tiny_config("mci-s0text")))
    model.save_pretrained(path)
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    processor.image_processor.size = {"shortest_edge": 64}
    processor.image_processor.crop_size = {"height": 64, "width": 64}
    processor.save_pretrained(path)
    return model, processor


@pytest.fixture(scope="session")
def tokenizer():
    from modeling_mobileclip import MobileCLIPTokenizer

    return MobileCLIPTokenizer.from_bpe_file()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a small shared CPU the threads wait on each other.

    Use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_in_process(argv: list[str]):
    """`train_accelerate.main(argv)` in this process, with accelerate's process-wide state reset before and after,
    so each run gets its own config: a run without the seconds of a fresh interpreter and its imports."""
    from accelerate.state import AcceleratorState, GradientState

    import train_accelerate

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        return train_accelerate.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
