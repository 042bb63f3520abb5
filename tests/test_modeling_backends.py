"""What the towers promise accelerate and the attention backends: device_map units that are never split, and
`config._attn_implementation` being the attention that actually runs (also in the timm image trunks)."""

from unittest import mock

import pytest
import torch
from accelerate import infer_auto_device_map
from accelerate.utils import compute_module_sizes
from conftest import TINY_FASTVIT, tiny_config

from modeling_mobileclip import MobileCLIPTextModel, MobileCLIPVisionConfig, MobileCLIPVisionModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def towers():
    """A text tower (S0 hybrid), a ViT tower and an MCi tower, with units of similar size (so placement has choices):
    a 1000-token vocabulary, MCi stages of one width."""
    torch.manual_seed(0)
    text = tiny_config("mci-s0text").text_config
    text.vocab_size, text.bos_token_id, text.eos_token_id = 1000, 998, 999
    mci = MobileCLIPVisionConfig(**dict(TINY_FASTVIT, layers=(2, 2, 2, 2), embed_dims=(32, 32, 32, 32), cls_ratio=1.0))
    return {"text": MobileCLIPTextModel(text),
            "vit": MobileCLIPVisionModel(tiny_config("vit-convstem").vision_config),
            "mci": MobileCLIPVisionModel(mci)}


@pytest.mark.parametrize("name", ["text", "vit", "mci"])
def test_device_map_places_whole_blocks(name):
    model = towers()[name]
    units = [module_name for module_name, module in model.named_modules()
             if type(module).__name__ in model._no_split_modules]
    total = compute_module_sizes(model)[""]
    placed_on = set()
    for share in (0.3, 0.5, 0.7, 0.9):
        device_map = infer_auto_device_map(model, max_memory={"cpu": int(total * share), "disk": 10 * total},
                                           no_split_module_classes=model._no_split_modules)
        inside = [key for key in device_map if any(key.startswith(f"{unit}.") for unit in units)]
        assert not inside, f"{name}: device_map splits {inside}"
        placed_on.add(len(set(device_map.values())))
    assert 2 in placed_on  # some budget did split the tower across devices, at unit boundaries


def _run(model, inputs, implementation):
    model.set_attn_implementation(implementation)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as spy, torch.no_grad():
        outputs = model(**inputs, output_attentions=True)
    return outputs, spy.call_count


@pytest.mark.parametrize("name", ["text", "vit", "mci"])
def test_the_configured_attention_is_the_one_that_runs(name):
    model = towers()[name].eval()
    if name == "text":
        inputs = {"input_ids": torch.randint(1, 990, (2, 9))}
    else:
        size = model.config.image_size
        inputs = {"pixel_values": torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))}
    eager, eager_sdpa_calls = _run(model, inputs, "eager")
    sdpa, sdpa_calls = _run(model, inputs, "sdpa")
    attention_layers = len(eager.attentions)
    assert attention_layers > 0 and eager_sdpa_calls == 0
    assert model.config._attn_implementation == "sdpa" and sdpa_calls == attention_layers and sdpa.attentions == ()
    assert torch.allclose(eager.last_hidden_state, sdpa.last_hidden_state, atol=1e-5)
