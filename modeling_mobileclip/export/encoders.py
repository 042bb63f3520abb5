"""What is exported: one module per tower (L2-normalised embeddings), example inputs, the fused model, parity."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel

from hub_cards.remote_code import explain_remote_code_refusal

from .. import MobileCLIPModel  # noqa: F401  (registers the Auto classes)

PARITY_TOLERANCE = 1e-4


# One class per tower, not one class parameterised by tower: `forward`'s argument name becomes the input name of the
# torch.export graph and so of the CoreML model.
class ImageEncoder(torch.nn.Module):
    """pixel_values -> L2-normalised image embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return F.normalize(self.model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)


class TextEncoder(torch.nn.Module):
    """input_ids -> L2-normalised text embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return F.normalize(self.model.get_text_features(input_ids=input_ids).pooler_output, dim=-1)


def is_fused(model) -> bool:
    configs = [getattr(model.config, name, None) for name in ("vision_config", "text_config")]
    return all(getattr(config, "inference_mode", True) for config in configs)


def load_fused_model(model_id: str, trust_remote_code: bool = False,
                     attn_implementation: str = "eager") -> torch.nn.Module:
    """The model in float32 eval mode with eager attention (a plain graph to export; `mobileclip-embed` asks for
    "sdpa"), fused if it was not; the folder's own code runs only with `trust_remote_code`."""
    local = Path(model_id)
    if local.exists() and not (local / "config.json").is_file():
        raise ValueError(f"--model {model_id!r} has no config.json; pass a directory written by "
                         f"`model.save_pretrained(...)` or a hub id.")
    with explain_remote_code_refusal(model_id):
        model = AutoModel.from_pretrained(model_id, dtype=torch.float32, attn_implementation=attn_implementation,
                                          trust_remote_code=trust_remote_code).eval()
    missing = [name for name in ("get_image_features", "get_text_features") if not hasattr(model, name)]
    if missing:
        raise ValueError(f"--model {model_id!r} loaded as {type(model).__name__}, which lacks {missing}; pass a "
                         f"MobileCLIP (or other CLIP-style dual encoder) checkpoint.")
    model.requires_grad_(False)
    if not is_fused(model):
        print(f"{model_id} is not fused: fusing it first with model.reparameterize() (the exported graphs are the "
              f"fused inference graphs; save it fused with `model.reparameterize().save_pretrained(...)` to skip "
              f"this step).", file=sys.stderr)
        model.reparameterize()
    return model


def example_inputs(model, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images and captions of different lengths (`<start> tokens <end>`, 0-padded to the context length)."""
    gen = torch.Generator().manual_seed(seed)
    size, text_config = model.config.vision_config.image_size, model.config.text_config
    context, eos = text_config.max_position_embeddings, text_config.eos_token_id
    input_ids = torch.zeros(batch, context, dtype=torch.long)
    for row in range(batch):
        length = int(torch.randint(1, context - 1, (1,), generator=gen))
        input_ids[row, 0] = eos - 1  # <|startoftext|>
        input_ids[row, 1 : length + 1] = torch.randint(1, eos - 1, (length,), generator=gen)
        input_ids[row, length + 1] = eos
    return {"image": torch.rand(batch, 3, size, size, generator=gen), "text": input_ids}


def encoders(model) -> dict[str, tuple[torch.nn.Module, str, str]]:
    return {"image": (ImageEncoder(model), "pixel_values", "image_embeds"),
            "text": (TextEncoder(model), "input_ids", "text_embeds")}


def check_parity(diffs: dict[str, float], runtime: str) -> None:
    bad = {kind: diff for kind, diff in diffs.items() if diff > PARITY_TOLERANCE}
    if bad:
        raise RuntimeError(f"The {runtime} encoders differ from PyTorch by {bad} (tolerance {PARITY_TOLERANCE}); "
                           f"nothing was written. Please report this with the model id and versions.")
