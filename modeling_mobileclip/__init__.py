"""mobileclip-hf: Apple's MobileCLIP / MobileCLIP2 as transformers models.

Importing this package registers the classes with the transformers Auto API (AutoConfig, AutoModel,
AutoModelForZeroShotImageClassification, AutoProcessor, AutoTokenizer, AutoImageProcessor) and marks them for
`save_pretrained` to write remote code, so saved directories also load with `trust_remote_code=True` alone.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_mobileclip import (
    MOBILECLIP_VARIANTS,
    PRETRAINED_TAGS,
    MobileCLIPConfig,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
)
from .image_processing_mobileclip import MobileCLIPImageProcessor, MobileCLIPImageProcessorPil
from .modeling_mobileclip import (
    MobileCLIPModel,
    MobileCLIPOutput,
    MobileCLIPPreTrainedModel,
    MobileCLIPTextModel,
    MobileCLIPVisionModel,
)
from .processing_mobileclip import MobileCLIPProcessor
from .tokenization_mobileclip import MobileCLIPTokenizer

AutoConfig.register(MobileCLIPConfig.model_type, MobileCLIPConfig, exist_ok=True)
AutoConfig.register(MobileCLIPTextConfig.model_type, MobileCLIPTextConfig, exist_ok=True)
AutoConfig.register(MobileCLIPVisionConfig.model_type, MobileCLIPVisionConfig, exist_ok=True)
AutoModel.register(MobileCLIPConfig, MobileCLIPModel, exist_ok=True)
AutoModel.register(MobileCLIPTextConfig, MobileCLIPTextModel, exist_ok=True)
AutoModel.register(MobileCLIPVisionConfig, MobileCLIPVisionModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(MobileCLIPConfig, MobileCLIPModel, exist_ok=True)
AutoTokenizer.register(MobileCLIPConfig, tokenizer_class=MobileCLIPTokenizer, exist_ok=True)
AutoImageProcessor.register(MobileCLIPConfig, exist_ok=True, image_processor_classes={
    "torchvision": MobileCLIPImageProcessor, "pil": MobileCLIPImageProcessorPil})
AutoProcessor.register(MobileCLIPConfig, MobileCLIPProcessor, exist_ok=True)

# What `save_pretrained` writes into auto_map (and copies as remote-code modules).
MobileCLIPConfig.register_for_auto_class()
MobileCLIPModel.register_for_auto_class("AutoModel")
MobileCLIPTokenizer.register_for_auto_class("AutoTokenizer")
MobileCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")
MobileCLIPImageProcessorPil.register_for_auto_class("AutoImageProcessor")
MobileCLIPProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "MOBILECLIP_VARIANTS",
    "PRETRAINED_TAGS",
    "MobileCLIPConfig",
    "MobileCLIPImageProcessor",
    "MobileCLIPImageProcessorPil",
    "MobileCLIPModel",
    "MobileCLIPOutput",
    "MobileCLIPPreTrainedModel",
    "MobileCLIPProcessor",
    "MobileCLIPTextConfig",
    "MobileCLIPTextModel",
    "MobileCLIPTokenizer",
    "MobileCLIPVisionConfig",
    "MobileCLIPVisionModel",
]
