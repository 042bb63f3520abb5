"""transformers' own common processor and image-processor tests (ProcessorTesterMixin, ImageProcessingTestMixin
from the installed version's sdist) on MobileCLIPProcessor (the CLIP tokenizer with open_clip's cleaning and padding,
the torchvision image processor) and on both image-processor backends.

Every test the mixins would run either runs or is skipped below with the reason that makes it inapplicable.
"""

import unittest

import pytest
from transformers_common_tests import import_common

from modeling_mobileclip import (
    MobileCLIPImageProcessor,
    MobileCLIPImageProcessorPil,
    MobileCLIPProcessor,
    MobileCLIPTokenizer,
)

processing_common = import_common("test_processing_common")
image_processing_common = import_common("test_image_processing_common")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class MobileCLIPProcessorTest(processing_common.ProcessorTesterMixin, unittest.TestCase):
    processor_class = MobileCLIPProcessor

    @classmethod
    def _setup_tokenizer(cls):
        return MobileCLIPTokenizer.from_bpe_file()

    @classmethod
    def _setup_image_processor(cls):
        return MobileCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


class MobileCLIPImageProcessingTester(image_processing_common.ImageProcessingTester):
    def __init__(self, parent):
        super().__init__(parent, size={"shortest_edge": 20}, crop_size={"height": 18, "width": 18})

    def _get_image_processing_classes(self):
        # The mixin looks the classes up by the test file's folder name among transformers' models.
        return {"torchvision": MobileCLIPImageProcessor, "pil": MobileCLIPImageProcessorPil}


class MobileCLIPImageProcessingTest(image_processing_common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = MobileCLIPImageProcessingTester

    @unittest.skip(reason="Compares the backends on a COCO photo downloaded from the Hub, and the suite runs offline; "
                          "test_image_processing_fast.py compares them on photo-like images of many sizes and modes")
    def test_backends_equivalence(self):
        pass
