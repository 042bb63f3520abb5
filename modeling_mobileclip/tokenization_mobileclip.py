"""CLIP BPE tokenizer with open_clip's text cleaning, so ids equal the reference tokenizer's.

Hub-facing remote code: imports only transformers (ftfy is optional, as for the reference it is recommended).
"""

import gzip
import html
import importlib.util
import re
from pathlib import Path

from transformers import CLIPTokenizer

try:  # optional: mojibake repair done by the reference tokenizer; plain text is unaffected without it
    import ftfy
except ImportError:
    ftfy = None

_WHITESPACE = re.compile(r"\s+")
CONTEXT_LENGTH = 77
PAD_TOKEN_ID = 0  # open_clip pads with id 0 after <|endoftext|>, not with <|endoftext|> as CLIPTokenizer does
# open_clip ships OpenAI's CLIP BPE merges; the vocabulary is 256 bytes, their "</w>" forms, 48894 merges, 2 specials.
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-level alphabet in vocabulary order: printable bytes as themselves first, then the other bytes
    as the code points 256, 257, ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def default_bpe_path() -> Path:
    """Location of the BPE file inside the installed open_clip package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"Building the MobileCLIP tokenizer needs OpenAI's CLIP BPE file {_BPE_FILE}, which "
                                "open_clip ships: pip install open_clip_torch, pass bpe_path=, or load a saved "
                                "tokenizer with AutoTokenizer.from_pretrained(<model dir>).")
    return Path(spec.origin).parent / _BPE_FILE


def clip_bpe_vocab(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI's CLIP BPE from its gzip'd merges file (default: the copy open_clip ships)."""
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1: _NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    alphabet = _byte_alphabet()
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clean_caption(text: str) -> str:
    """open_clip's cleaning: fix text encoding, unescape HTML twice, collapse whitespace, lower-case."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class MobileCLIPTokenizer(CLIPTokenizer):
    """`CLIPTokenizer` that cleans captions as open_clip does before BPE and pads as open_clip does, with id 0.

    The pad *token* stays `<|endoftext|>` (as CLIP's); while it is, the pad *id* is 0. Id 0 is "!" in the BPE
    vocabulary and cannot be the pad token itself: special tokens are split out of the text before BPE, which would
    change the ids of every caption with a "!".
    """

    @property
    def pad_token_id(self) -> int | None:
        if self.pad_token is not None and self.pad_token == self.eos_token:
            return PAD_TOKEN_ID
        return self.convert_tokens_to_ids(self.pad_token) if self.pad_token is not None else None

    def _encode_plus(self, text, text_pair=None, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            text = self._clean(text)
            text_pair = self._clean(text_pair)
        return super()._encode_plus(text, text_pair, is_split_into_words=is_split_into_words, **kwargs)

    @classmethod
    def from_bpe_file(cls, bpe_path: str | Path | None = None, **kwargs) -> "MobileCLIPTokenizer":
        """Build the tokenizer offline from the gzip'd BPE merges file (default: the copy open_clip ships)."""
        vocab, merges = clip_bpe_vocab(bpe_path)
        kwargs.setdefault("model_max_length", CONTEXT_LENGTH)
        return cls(vocab=vocab, merges=merges, **kwargs)

    @staticmethod
    def _clean(text):
        if isinstance(text, str):
            return clean_caption(text)
        if isinstance(text, (list, tuple)):
            return [clean_caption(t) if isinstance(t, str) else t for t in text]
        return text


__all__ = ["CONTEXT_LENGTH", "PAD_TOKEN_ID", "MobileCLIPTokenizer", "clean_caption", "clip_bpe_vocab"]
