"""MobileCLIPTokenizer pads as open_clip does (id 0 after <|endoftext|>), in every padding path, as the processor."""

import open_clip

from modeling_mobileclip import MobileCLIPProcessor

CAPTIONS = ["a cat!", "a very small grey cat on a mat!!"]


def test_tokenizer_pads_with_zero_like_open_clip_and_the_processor(tokenizer):
    reference = open_clip.get_tokenizer("MobileCLIP-S1")(CAPTIONS).tolist()
    ours = tokenizer(CAPTIONS, padding="max_length", max_length=77, truncation=True)["input_ids"]
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    assert ours == reference == processor(text=CAPTIONS)["input_ids"]
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 0


def test_collator_padding_uses_the_same_id(tokenizer):
    # tokenizer.pad (DataCollatorWithPadding) reads pad_token_id, not the Rust tokenizer's padding
    padded = tokenizer.pad({"input_ids": [[49406, 320, 49407], [49406, 320, 2368, 49407]]})["input_ids"]
    assert padded[0] == [49406, 320, 49407, 0]


def test_another_pad_token_pads_with_its_own_id():
    tokenizer = MobileCLIPProcessor.from_variant("mobileclip-s0").tokenizer
    tokenizer.pad_token = "<|startoftext|>"
    assert tokenizer.pad_token_id == 49406
    assert tokenizer(["a cat", "a grey cat"], padding=True)["input_ids"][0][-1] == 49406
