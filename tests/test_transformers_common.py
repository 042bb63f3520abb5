"""transformers' own common model and config tests (ModelTesterMixin, ConfigTester from the installed version's sdist)
on every MobileCLIP model class, for a tiny config of each architecture family:

- "mci": MCi image tower (3 RepMixer stages + 1 attention stage) + S0's hybrid Text-RepMixer text tower, non-causal;
- "vit": ViT image tower with the MobileCLIP-B conv stem + a causal transformer text tower.

MobileCLIPModel is also the zero-shot head (AutoModelForZeroShotImageClassification), as CLIPModel is. Every test
the mixins would run either runs or is skipped below with the reason the architecture makes it inapplicable.
"""

import copy
import unittest

import pytest
import torch
from torch import nn
from transformers_common_tests import import_common

from modeling_mobileclip import (
    MobileCLIPConfig,
    MobileCLIPModel,
    MobileCLIPTextConfig,
    MobileCLIPTextModel,
    MobileCLIPVisionConfig,
    MobileCLIPVisionModel,
)

modeling_common = import_common("test_modeling_common")
configuration_common = import_common("test_configuration_common")
ModelTesterMixin, ConfigTester = modeling_common.ModelTesterMixin, configuration_common.ConfigTester
floats_tensor, ids_tensor, random_attention_mask = (modeling_common.floats_tensor, modeling_common.ids_tensor,
                                                    modeling_common.random_attention_mask)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The CLIP vocabulary size, so that the config defaults (BOS 49406, EOT 49407) are valid ids when a test drops the
# tester's; the tester's own special ids are small so that ConfigTester's reload with vocab_size=20 keeps them valid.
VOCAB, CONTEXT, BOS, EOS = 49408, 16, 17, 18
TEXT_FAMILIES = {
    # S0's hybrid: a RepMixer block and a transformer block (one of each keeps the mixin's 2-layer limit).
    "mci": dict(block_types=("repmixer", "transformer"), causal=False),
    "vit": dict(block_types=("transformer", "transformer"), causal=True),
}
VISION_FAMILIES = {
    "mci": dict(backbone="fastvit", image_size=64, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                mlp_ratios=(3.0,) * 4, token_mixers=("repmixer",) * 3 + ("attention",),
                downsamples=(False, True, True, True), se_downsamples=(False, False, True, True),
                pos_embs=(False, False, False, True), norm="batchnorm"),
    "vit": dict(backbone="vit", image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=37, stem="conv", stem_padding=1, layer_norm_eps=1e-5,
                no_embed_class=True),
}


class TextTester:
    batch_size, seq_length, hidden_size, num_attention_heads = 4, 7, 16, 4
    # A tower is a base model without a loss: transformers skips the training tests of base models (they are in its
    # MODEL_MAPPING, ours only in the registered one); MobileCLIPModel's training tests train both towers.
    is_training = False

    def __init__(self, parent, family):
        self.parent, self.family = parent, family
        self.vocab_size = VOCAB
        types = TEXT_FAMILIES[family]["block_types"]
        # hidden states: the embeddings and every block; attentions: the transformer blocks only
        self.expected_num_hidden_layers = len(types) + 1
        self.num_hidden_layers = types.count("transformer")
        # A non-causal tower attends over the full context it re-pads to (as the reference does); a causal one only
        # up to each query.
        self.key_length = self.seq_length if TEXT_FAMILIES[family]["causal"] else CONTEXT

    def get_config(self):
        spec = TEXT_FAMILIES[self.family]
        return MobileCLIPTextConfig(vocab_size=VOCAB, hidden_size=self.hidden_size, intermediate_size=37,
                                    num_hidden_layers=len(spec["block_types"]),
                                    num_attention_heads=self.num_attention_heads, max_position_embeddings=CONTEXT,
                                    block_types=spec["block_types"], causal=spec["causal"], repmixer_kernel_size=3,
                                    bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], VOCAB)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class VisionTester:
    batch_size, num_channels = 4, 3
    is_training = False  # see TextTester

    def __init__(self, parent, family):
        self.parent, self.family = parent, family
        spec = VISION_FAMILIES[family]
        self.image_size = spec["image_size"]
        if spec["backbone"] == "fastvit":
            # hidden states: the stem and every stage (feature maps); attentions: the attention stage's blocks, over
            # the (image / 32)^2 tokens of its map, heads of width 32
            self.expected_num_hidden_layers = len(spec["layers"]) + 1
            self.num_hidden_layers = sum(n for n, mixer in zip(spec["layers"], spec["token_mixers"])
                                         if mixer == "attention")
            self.hidden_size = spec["embed_dims"][-1]
            self.num_attention_heads = spec["embed_dims"][-1] // 32
            self.seq_length = (self.image_size // 32) ** 2
        else:
            self.num_hidden_layers = spec["num_hidden_layers"]
            self.hidden_size = spec["hidden_size"]
            self.num_attention_heads = spec["num_attention_heads"]
            self.seq_length = (self.image_size // spec["patch_size"]) ** 2 + 1  # patches + CLS

    def get_config(self):
        return MobileCLIPVisionConfig(**VISION_FAMILIES[self.family])

    def prepare_config_and_inputs_for_common(self):
        size = self.image_size
        return self.get_config(), {"pixel_values": floats_tensor([self.batch_size, self.num_channels, size, size])}


class ModelTester:
    def __init__(self, parent, family):
        self.parent, self.family = parent, family
        self.text_model_tester = TextTester(parent, family)
        self.vision_model_tester = VisionTester(parent, family)
        self.batch_size = self.text_model_tester.batch_size
        self.is_training = True

    def get_config(self):
        return MobileCLIPConfig(text_config=self.text_model_tester.get_config(),
                                vision_config=self.vision_model_tester.get_config(), projection_dim=24)

    def prepare_config_and_inputs_for_common(self):
        _, text_inputs = self.text_model_tester.prepare_config_and_inputs_for_common()
        _, vision_inputs = self.vision_model_tester.prepare_config_and_inputs_for_common()
        # with the contrastive loss, which the training tests backpropagate
        return self.get_config(), {**text_inputs, **vision_inputs, "return_loss": True}


class _Common(ModelTesterMixin):
    family = None
    model_tester_class = None
    # The mixin runs it only on models whose config file carries a 2023-or-later copyright line; ours has none.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = self.model_tester_class(self, self.family)

class _VisionTests(_Common):
    all_model_classes = (MobileCLIPVisionModel,)
    model_tester_class = VisionTester
    test_resize_embeddings = False  # an image tower has no token embedding

    def test_model_get_set_embeddings(self):
        # Replaces the mixin's token-embedding check, as transformers' own vision models do: the input embedding of an
        # image tower is its patch embedding (ViT) or stem (MCi), a module, not an nn.Embedding.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            self.assertIsNone(model.get_output_embeddings())


class _TextTests(_Common):
    all_model_classes = (MobileCLIPTextModel,)
    model_tester_class = TextTester


class _ModelTests(_Common):
    all_model_classes = (MobileCLIPModel,)
    model_tester_class = ModelTester
    _is_composite = True
    additional_model_inputs = ["pixel_values"]  # forward needs both modalities (eager-vs-SDPA test)
    # The shape check reads the width from the first of `embed_dim_per_stage, embed_dim, embed_dims, ...` that the
    # vision config has: MobileCLIPVisionConfig always has FastViT's `embed_dims`, also for a ViT tower, and an MCi
    # tower's last_hidden_state is a [batch, channels, height, width] map. The towers' tests check the shapes.
    skip_test_image_features_output_shape = True

    @unittest.skip(reason="MobileCLIPOutput nests the towers' outputs (no top-level hidden_states/attentions); "
                          "tested on each tower")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="MobileCLIPModel's output nests both towers' hidden states; tested on each tower")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="MobileCLIPModel's output nests both towers' attentions; tested on each tower")
    def test_attention_outputs(self):
        pass


class MCiVisionModelTest(_VisionTests, unittest.TestCase):
    family = "mci"

    def test_hidden_states_output(self):
        # Replaces the mixin's [sequence, hidden_size] token check, as transformers' own conv models (ConvNext) do:
        # MCi's hidden states are the stem's and every stage's [batch, channels, height, width] maps.
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        spec = VISION_FAMILIES[self.family]
        size = spec["image_size"] // 4  # the stem downsamples by 4, every downsampling stage by 2
        expected = [(spec["embed_dims"][0], size)]
        for dim, downsample in zip(spec["embed_dims"], spec["downsamples"]):
            size //= 2 if downsample else 1
            expected.append((dim, size))
        for from_config in (False, True):
            config.output_hidden_states = from_config
            model = MobileCLIPVisionModel(copy.deepcopy(config)).eval()
            with torch.no_grad():
                outputs = model(**inputs, **({} if from_config else {"output_hidden_states": True}))
            shapes = [tuple(state.shape) for state in outputs.hidden_states]
            self.assertEqual(shapes, [(self.model_tester.batch_size, dim, side, side) for dim, side in expected])


class ViTVisionModelTest(_VisionTests, unittest.TestCase):
    family = "vit"


class RepMixerTextModelTest(_TextTests, unittest.TestCase):
    family = "mci"

    @unittest.skip(reason="A non-causal tower computes on the full context it re-pads to (the reference attends to "
                          "the padding) and returns the caller's positions, slices that no later layer reads, so they "
                          "get no .grad; CausalTextModelTest runs this test")
    def test_retain_grad_hidden_states_attentions(self):
        pass


class CausalTextModelTest(_TextTests, unittest.TestCase):
    family = "vit"


class MCiModelTest(_ModelTests, unittest.TestCase):
    family = "mci"

    # Replace the mixin's counts (one attention map per hidden state but the first): both towers of this family are
    # hybrids. MCi attends in its last stage only (5 hidden states: the stem and 4 stages; 1 attention map), S0's
    # text tower in its transformer blocks only (3 hidden states: the embeddings and 2 blocks; 1 attention map).
    def test_get_image_features_attentions(self):
        config, inputs = self._image_features_prepare_config_and_inputs()
        self._check_attention_count("get_image_features", config, "vision_config", inputs,
                                    self.model_tester.vision_model_tester.num_hidden_layers)

    def test_get_text_features_attentions(self):
        config, inputs = self._text_features_prepare_config_and_inputs()
        self._check_attention_count("get_text_features", config, "text_config", inputs,
                                    self.model_tester.text_model_tester.num_hidden_layers)

    def _check_attention_count(self, method, config, sub_config, inputs, expected):
        for from_config in (False, True):
            getattr(config, sub_config).output_attentions = from_config
            model = MobileCLIPModel(copy.deepcopy(config)).eval()
            model.set_attn_implementation("eager")
            with torch.no_grad():
                outputs = getattr(model, method)(**inputs, **({} if from_config else {"output_attentions": True}))
            self.assertEqual(len(outputs.attentions), expected)


class ViTModelTest(_ModelTests, unittest.TestCase):
    family = "vit"


class MobileCLIPConfigTest(unittest.TestCase):
    """ConfigTester on the composite config and on each tower config (transformers runs it on CLIP's three)."""

    def setUp(self):
        self.model_tester = ModelTester(self, "mci")

    def test_config(self):
        ConfigTester(self, config_class=MobileCLIPConfig, has_text_modality=False,
                     common_properties=["projection_dim", "logit_scale_init_value"]).run_common_tests()

    def test_text_config(self):
        ConfigTester(self, config_class=MobileCLIPTextConfig, hidden_size=64).run_common_tests()

    def test_vision_config(self):
        # hidden_size is a ViT field (a FastViT config does not serialise it), so the ViT backbone carries it here.
        ConfigTester(self, config_class=MobileCLIPVisionConfig, has_text_modality=False, backbone="vit",
                     hidden_size=36).run_common_tests()

    def test_fastvit_vision_config(self):
        ConfigTester(self, config_class=MobileCLIPVisionConfig, has_text_modality=False, cls_ratio=3.0,
                     common_properties=["embed_dims", "num_features"]).run_common_tests()
