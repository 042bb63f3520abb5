"""MobileCLIPProcessor: the variant's image processor + the CLIP tokenizer with open_clip's padding (id 0, length 77).

Hub-facing remote code: imports only transformers and its flat sibling modules.
"""

from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import PILImageResampling

from .configuration_mobileclip import MOBILECLIP_VARIANTS, PRETRAINED_TAGS, resolve_variant
from .image_processing_mobileclip import MobileCLIPImageProcessor, MobileCLIPImageProcessorPil
from .tokenization_mobileclip import CONTEXT_LENGTH, MobileCLIPTokenizer

IMAGE_PROCESSORS = {"torchvision": MobileCLIPImageProcessor, "pil": MobileCLIPImageProcessorPil}


class MobileCLIPProcessor(ProcessorMixin):
    r"""Wraps a `MobileCLIPImageProcessor` (or its PIL twin) and a `MobileCLIPTokenizer`.

    Text defaults to the reference tokenisation: truncated to 77 tokens with `<|endoftext|>` kept last, padded to 77
    with id 0 (`padding=True` pads to the longest caption instead; the model gives the same embeddings either way).
    """

    # The reference tokenisation by default; arguments of a call override it.
    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": CONTEXT_LENGTH}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_variant(cls, name: str, tokenizer: MobileCLIPTokenizer | None = None,
                     backend: str = "pil") -> "MobileCLIPProcessor":
        """Processor with the preprocessing of a preset (`mobileclip-s0` ... `mobileclip2-l-14`).

        `backend="pil"` (default) is the reference's pipeline for every input type. `"torchvision"`, what AutoProcessor
        loads by default, gives the same pixels for PIL images and resizes arrays and tensors with torchvision
        (within 1/255); it crops and normalises batches as torch ops.
        """
        key = resolve_variant(name)
        if backend not in IMAGE_PROCESSORS:
            raise ValueError(f"backend={backend!r} is unknown; valid: {sorted(IMAGE_PROCESSORS)}.")
        tag, size = PRETRAINED_TAGS[key], MOBILECLIP_VARIANTS[key]["vision"]["image_size"]
        image_processor = IMAGE_PROCESSORS[backend](
            size={"shortest_edge": size}, crop_size={"height": size, "width": size},
            resample=PILImageResampling[tag["resample"].upper()],
            image_mean=list(tag["image_mean"]), image_std=list(tag["image_std"]))
        return cls(image_processor, tokenizer if tokenizer is not None else MobileCLIPTokenizer.from_bpe_file())

    def __call__(self, images=None, text=None, **kwargs) -> BatchFeature:
        """`images` through the image processor, `text` through the tokenizer (keyword arguments go to whichever
        accepts them, e.g. `padding=True`, `do_rescale=False`, `return_tensors="pt"`); the tokenizer pads with id 0."""
        if images is None and text is None:
            raise ValueError("MobileCLIPProcessor needs `images`, `text` or both.")
        if isinstance(text, (list, tuple)) and len(text) == 0:
            raise ValueError("text is an empty list; pass at least one string (or text=None for images only).")
        return super().__call__(images=images, text=text, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Saving writes `auto_map` (remote code) into processor_config.json by setting it on the processor; a loaded
        # processor has none, so it is dropped again: to_dict() stays the same across save -> load.
        had_auto_map = "auto_map" in self.__dict__
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if not had_auto_map:
                self.__dict__.pop("auto_map", None)


__all__ = ["MobileCLIPProcessor"]
