"""MobileCLIPProcessor: the variant's image processor + the CLIP tokenizer with open_clip's padding (id 0, length 77).

Hub-facing remote code: imports only transformers and its flat sibling modules.
"""

from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import PILImageResampling

from .configuration_mobileclip import MOBILECLIP_VARIANTS, PRETRAINED_TAGS, resolve_variant
from .image_processing_mobileclip import MobileCLIPImageProcessor
from .tokenization_mobileclip import CONTEXT_LENGTH, MobileCLIPTokenizer

PAD_TOKEN_ID = 0  # open_clip pads with 0, not with <|endoftext|> as CLIPTokenizer does


class MobileCLIPProcessor(ProcessorMixin):
    r"""Wraps a `MobileCLIPImageProcessor` and a `MobileCLIPTokenizer`.

    Text defaults to the reference tokenisation: truncated to 77 tokens with `<|endoftext|>` kept last, padded to 77
    with id 0 (`padding=True` pads to the longest caption instead; the model gives the same embeddings either way).
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_variant(cls, name: str, tokenizer: MobileCLIPTokenizer | None = None) -> "MobileCLIPProcessor":
        """Processor with the exact preprocessing of a preset (`mobileclip-s0` ... `mobileclip2-l-14`)."""
        key = resolve_variant(name)
        tag, size = PRETRAINED_TAGS[key], MOBILECLIP_VARIANTS[key]["vision"]["image_size"]
        image_processor = MobileCLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size},
            resample=PILImageResampling[tag["resample"].upper()],
            image_mean=list(tag["image_mean"]), image_std=list(tag["image_std"]))
        return cls(image_processor, tokenizer if tokenizer is not None else MobileCLIPTokenizer.from_bpe_file())

    def __call__(self, images=None, text=None, return_tensors=None, padding="max_length", truncation=True,
                 max_length=CONTEXT_LENGTH, **kwargs) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("MobileCLIPProcessor needs `images`, `text` or both.")
        encoding = {}
        if text is not None:
            if isinstance(text, (list, tuple)) and len(text) == 0:
                raise ValueError("text is an empty list; pass at least one string (or text=None for images only).")
            tokens = self.tokenizer(text, padding=padding, truncation=truncation, max_length=max_length,
                                    return_attention_mask=True, return_tensors=return_tensors, **kwargs)
            encoding["input_ids"] = self._zero_pads(tokens["input_ids"], tokens["attention_mask"])
            encoding["attention_mask"] = tokens["attention_mask"]
        if images is not None:
            encoding.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(encoding, tensor_type=return_tensors)

    @staticmethod
    def _zero_pads(input_ids, attention_mask):
        if hasattr(input_ids, "masked_fill"):  # torch tensor
            return input_ids.masked_fill(attention_mask == 0, PAD_TOKEN_ID)
        if hasattr(input_ids, "dtype"):  # numpy array
            return input_ids * (attention_mask != 0)
        if input_ids and isinstance(input_ids[0], list):
            return [[i if m else PAD_TOKEN_ID for i, m in zip(ids, mask)] for ids, mask in zip(input_ids, attention_mask)]
        return [i if m else PAD_TOKEN_ID for i, m in zip(input_ids, attention_mask)]


__all__ = ["MobileCLIPProcessor"]
