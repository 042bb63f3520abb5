"""`modeling_mobileclip.evaluation.zeroshot` called directly (the training loop's use), against the direct computation
of test_evaluation_cli.py, on its tiny CLIPModel."""

import test_evaluation_cli as cli_tests
import torch
from PIL import Image
from test_evaluation_cli import TEMPLATES, direct_classifier, direct_image_features
from transformers import CLIPModel, CLIPProcessor

from modeling_mobileclip.evaluation.zeroshot import encode_images, zeroshot_classifier

# The CLI tests' tiny CLIPModel folder and imagefolder, as fixtures of this module too.
tiny_clip = cli_tests.tiny_clip
image_folder = cli_tests.image_folder


def test_zeroshot_classifier_follows_the_openai_recipe_and_restores_train_mode(tiny_clip):
    model = CLIPModel.from_pretrained(tiny_clip).train()
    processor = CLIPProcessor.from_pretrained(tiny_clip)
    classifier = zeroshot_classifier(model, processor, ["cat", "dog"], TEMPLATES, batch_size=3)
    assert model.training  # the training loop can call it on the model it is training
    assert classifier.shape == (16, 2) and classifier.dtype == torch.float32
    torch.testing.assert_close(classifier.norm(dim=0), torch.ones(2))
    torch.testing.assert_close(classifier, direct_classifier(model.eval(), processor, ["cat", "dog"], TEMPLATES),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_encode_images_accepts_a_plain_list_of_images(tiny_clip, image_folder):
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)
    images = [Image.open(f) for f in sorted(image_folder.glob("*/*.png"))[:3]]  # RGB, L and RGBA
    features = encode_images(model, processor, images, batch_size=2)
    torch.testing.assert_close(features, direct_image_features(model, processor, images), atol=1e-5, rtol=1e-5)
