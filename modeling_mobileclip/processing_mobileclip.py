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

    # The reference tokenisation by default; arguments of a call override it.
    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": CONTEXT_LENGTH}

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

    def __call__(self, images=None, text=None, **kwargs) -> BatchFeature:
        """`images` through the image processor, `text` through the tokenizer (keyword arguments go to whichever
        accepts them, e.g. `padding=True`, `do_rescale=False`, `return_tensors="pt"`); pads are id 0."""
        if images is None and text is None:
            raise ValueError("MobileCLIPProcessor needs `images`, `text` or both.")
        if isinstance(text, (list, tuple)) and len(text) == 0:
            raise ValueError("text is an empty list; pass at least one string (or text=None for images only).")
        encoding = super().__call__(images=images, text=text, **kwargs)
        if "input_ids" in encoding:
            encoding["input_ids"] = self._zero_pads(encoding["input_ids"])
        return encoding

    def _zero_pads(self, input_ids):
        """Every id after the first `<|endoftext|>` becomes 0, as open_clip pads (the tokenizer pads with EOT)."""
        eot = self.tokenizer.eos_token_id
        if hasattr(input_ids, "cumsum"):  # torch tensor or numpy array, (batch, length)
            is_eot = (input_ids == eot) * 1  # integers: torch cannot subtract booleans
            after_first = (is_eot.cumsum(-1) - is_eot) > 0
            return input_ids * ~after_first
        if input_ids and isinstance(input_ids[0], list):
            return [self._zero_pads(ids) for ids in input_ids]
        first = input_ids.index(eot) if eot in input_ids else len(input_ids)
        return input_ids[: first + 1] + [PAD_TOKEN_ID] * (len(input_ids) - first - 1)


__all__ = ["MobileCLIPProcessor"]
