"""KV-cached, batched caption decoding for open_clip's CoCa, on the CoCa module's own weights.

What open_clip's ``CoCa.generate`` computes at each step (open_clip 3.3, ``coca_model.py`` / ``transformer.py``): the
whole growing sequence goes through the text tower (causal, with a ``cls`` token appended whose pad-key mask is
added to the causal mask) and through the multimodal decoder (causal self-attention, then cross-attention to the
image tokens, per layer), and every position is projected onto the vocabulary; only the last position's logits are
used. Every layer is causal, so a position's output never changes once computed: :class:`CachedCoCaDecoder` keeps
each layer's keys and values and runs only the newest token (one query) per step, and projects only that position.
The ``cls`` token is never needed (tokens cannot attend to it), and the image keys / values of every cross-attention
layer are computed once per image and shared by that image's captions (a caption's queries are grouped by image, so
no copy per caption is made).

:func:`generate_captions` is the decoding loop of the tool's CoCa captioner (the loop of ``CoCa.generate``'s
``top_p``/``top_k`` branch: min length, ``<end_of_text>`` forced at ``max_tokens``, pad after the end), with the
token choice passed in (``choose``: argmax for greedy, the seeded nucleus draw for sampling). The image is encoded
once per image, not once per caption. Models whose blocks this module does not know (open_clip's "custom" blocks,
an HF text tower, a non-causal text tower) fall back to re-running the model each step (:class:`UncachedCoCaDecoder`),
which gives the same tokens more slowly; :func:`cache_unsupported` names the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (logits of the unfinished rows [A, vocab], step, their row indices [A]) -> chosen token ids [A]
Choose = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def greedy(logits: torch.Tensor, step: int, rows: torch.Tensor) -> torch.Tensor:
    """The highest-scoring token (what ``CoCa.generate(generation_type="top_k", top_k=1)`` draws)."""
    return logits.argmax(dim=-1)


def cache_unsupported(model: nn.Module) -> str | None:
    """Why :class:`CachedCoCaDecoder` cannot decode ``model`` (None when it can)."""
    from open_clip.transformer import ResidualAttentionBlock, TextTransformer

    text, decoder = getattr(model, "text", None), getattr(model, "text_decoder", None)
    if not isinstance(text, TextTransformer):
        return f"text tower is a {type(text).__name__}, not open_clip's TextTransformer"
    if text.attn_mask is None:
        return "text tower is not causal (no_causal_mask)"
    blocks = list(text.transformer.resblocks) + list(decoder.resblocks) + list(decoder.cross_attn)
    for block in blocks:
        if type(block) is not ResidualAttentionBlock:
            return f"{type(block).__name__} blocks (only open_clip's default ResidualAttentionBlock is cached)"
        attn = block.attn
        if not (attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn):
            return "attention layout (batch_first, packed q/k/v, no bias_k / zero attention) not supported"
    if not (text.transformer.batch_first and decoder.batch_first):
        return "sequence-first transformers"
    return None


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, E] -> [B, heads, L, E / heads]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _attend(attn: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention of head-split q/k/v ([B, H, L, d]), heads merged, then the output projection."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(out.transpose(1, 2).flatten(2), attn.out_proj.weight, attn.out_proj.bias)


class _SelfAttentionCache:
    """One causal self-attention layer's keys and values for ``rows`` sequences of up to ``length`` tokens."""

    def __init__(self, block: nn.Module, rows: int, length: int):
        self.block, self.rows, self.length = block, rows, length
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def step(self, x: torch.Tensor, position: int, mask: torch.Tensor | None) -> torch.Tensor:
        """The block's output for the newest token ``x`` [R, 1, E] at ``position``."""
        block, attn = self.block, self.block.attn
        q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (_heads(t, attn.num_heads) for t in (q, k, v))
        if self.keys is None:  # allocated on first use, in the dtype autocast gives the projections
            shape = (x.shape[0], attn.num_heads, self.length, k.shape[-1])
            self.keys, self.values = k.new_empty(shape), v.new_empty(shape)
        self.keys[:, :, position] = k[:, :, 0]
        self.values[:, :, position] = v[:, :, 0]
        keys, values = self.keys[:, :, :position + 1], self.values[:, :, :position + 1]
        x = x + block.ls_1(_attend(attn, q, keys.to(q.dtype), values.to(q.dtype), mask))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def select(self, rows: torch.Tensor) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys[rows], self.values[rows]


class _CrossAttention:
    """One cross-attention layer with the image keys / values computed once per image; the ``per_image`` queries of
    an image's captions attend to them together (rows are grouped by image)."""

    def __init__(self, block: nn.Module, image_embs: torch.Tensor, per_image: int):
        self.block, self.per_image = block, per_image
        attn = block.attn
        width = attn.embed_dim
        kv = block.ln_1_kv(image_embs)
        k = F.linear(kv, attn.in_proj_weight[width:2 * width], attn.in_proj_bias[width:2 * width])
        v = F.linear(kv, attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
        self.keys, self.values = _heads(k, attn.num_heads), _heads(v, attn.num_heads)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        block, attn = self.block, self.block.attn
        width = attn.embed_dim
        q = F.linear(block.ln_1(x), attn.in_proj_weight[:width], attn.in_proj_bias[:width])  # [G*n, 1, E]
        q = q.view(-1, self.per_image, width)  # [G, n, E]: an image's captions are its query positions
        out = _attend(attn, _heads(q, attn.num_heads), self.keys.to(q.dtype), self.values.to(q.dtype))
        x = x + block.ls_1(out.reshape(x.shape))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def select(self, images: torch.Tensor) -> None:
        self.keys, self.values = self.keys[images], self.values[images]


class CachedCoCaDecoder:
    """Next-token logits of a CoCa, one new token per step, for ``per_image`` captions of each image in
    ``image_embs`` [images, tokens, width] (rows ``i * per_image + c``)."""

    def __init__(self, model: nn.Module, image_embs: torch.Tensor, per_image: int, max_tokens: int):
        reason = cache_unsupported(model)
        if reason is not None:
            raise ValueError(f"CoCa {type(model).__name__} cannot be decoded with a KV cache: {reason}")
        self.text, self.decoder, self.per_image = model.text, model.text_decoder, per_image
        if max_tokens > self.text.context_length:
            raise ValueError(f"max_tokens={max_tokens} exceeds the CoCa text context length "
                             f"{self.text.context_length}")
        rows = image_embs.shape[0] * per_image
        self.text_layers = [_SelfAttentionCache(b, rows, max_tokens) for b in self.text.transformer.resblocks]
        self.decoder_layers = [(_SelfAttentionCache(b, rows, max_tokens), _CrossAttention(c, image_embs, per_image))
                               for b, c in zip(self.decoder.resblocks, self.decoder.cross_attn)]
        # The text tower masks padding keys for every query (its cls mask); open_clip's legacy layout shifts that
        # mask by one position (key j is masked when token j - 1 is padding; key 0 never is).
        self.pad_id = self.text.pad_id
        self.shifted_pad_mask = self.text.cls_emb is not None and not getattr(self.text, "correct_cls_mask", False)
        self.key_valid = torch.ones(rows, max_tokens, dtype=torch.bool, device=image_embs.device)

    def _key_mask(self, tokens: torch.Tensor, position: int) -> torch.Tensor | None:
        if self.text.cls_emb is None and not self.text.use_pad_mask:
            return None
        if self.shifted_pad_mask:
            valid = tokens[:, position - 1] != self.pad_id if position else torch.ones_like(tokens[:, 0], dtype=bool)
        else:
            valid = tokens[:, position] != self.pad_id
        self.key_valid[:, position] = valid
        seen = self.key_valid[:, :position + 1]
        return None if bool(seen.all()) else seen[:, None, None, :]

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [rows, position + 1] (the sequences so far); returns the next-token logits [rows, vocab]."""
        position = tokens.shape[1] - 1
        text = self.text
        cast = text.transformer.get_cast_dtype()
        x = text.token_embedding(tokens[:, position:]).to(cast) + text.positional_embedding[position].to(cast)
        mask = self._key_mask(tokens, position)
        for layer in self.text_layers:
            x = layer.step(x, position, mask)
        if text.cls_emb is None:  # without a cls token the decoder reads the tower's final-normed tokens
            x = text.ln_final(x)
        for self_attention, cross_attention in self.decoder_layers:
            x = cross_attention.step(self_attention.step(x, position, None))
        x = self.decoder.ln_final(x)
        return (x @ self.decoder.text_projection)[:, 0]

    def select(self, images: torch.Tensor) -> None:
        """Keep only the captions of ``images`` (indices among the images kept so far)."""
        rows = (images[:, None] * self.per_image + torch.arange(self.per_image, device=images.device)).flatten()
        for layer in self.text_layers:
            layer.select(rows)
        for self_attention, cross_attention in self.decoder_layers:
            self_attention.select(rows)
            cross_attention.select(images)
        self.key_valid = self.key_valid[rows]


class UncachedCoCaDecoder:
    """The fallback: the whole sequence through ``model`` at every step (what ``CoCa.generate`` does)."""

    def __init__(self, model: nn.Module, image_latent: torch.Tensor, image_embs: torch.Tensor, per_image: int):
        self.model, self.per_image = model, per_image
        self.image_latent = image_latent.repeat_interleave(per_image, dim=0)
        self.image_embs = image_embs.repeat_interleave(per_image, dim=0)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(None, tokens, image_latent=self.image_latent, image_embs=self.image_embs,
                         output_labels=False)
        return out["logits"][:, -1]

    def select(self, images: torch.Tensor) -> None:
        rows = (images[:, None] * self.per_image + torch.arange(self.per_image, device=images.device)).flatten()
        self.image_latent, self.image_embs = self.image_latent[rows], self.image_embs[rows]


@torch.inference_mode()
def generate_captions(model: nn.Module, pixel_values: torch.Tensor, per_image: int, choose: Choose = greedy,
                      max_tokens: int = 30, min_tokens: int = 5, sot_token_id: int = 49406,
                      eos_token_id: int = 49407, pad_token_id: int | None = None,
                      cache: bool = True) -> torch.Tensor:
    """Token ids [images * per_image, <= max_tokens] (row ``i * per_image + c``: caption c of image i), starting with
    ``sot_token_id``; a row ends with ``eos_token_id`` (forced at ``max_tokens``) or with a drawn pad, then pads.

    The loop of ``CoCa.generate(image.repeat_interleave(per_image, 0), seq_len=max_tokens, min_seq_len=min_tokens,
    generation_type="top_k" / "top_p")``: ``<end_of_text>`` is barred while a row has fewer than ``min_tokens``
    tokens; the last step forces it; finished rows get ``pad_token_id`` (default: the model's ``pad_id``); the loop
    stops when every row has finished. ``choose(logits, step, rows)`` picks the unfinished rows' tokens.
    ``cache=False`` (or a model :func:`cache_unsupported` refuses) re-runs the whole model each step instead.
    """
    pad = getattr(model, "pad_id", 0) if pad_token_id is None else pad_token_id
    image_latent, image_embs = model._encode_image(pixel_values)  # once per image, not once per caption
    if cache and cache_unsupported(model) is None:
        decoder = CachedCoCaDecoder(model, image_embs, per_image, max_tokens)
    else:
        decoder = UncachedCoCaDecoder(model, image_latent, image_embs, per_image)
    device = pixel_values.device
    images = pixel_values.shape[0]
    out = torch.full((images * per_image, 1), sot_token_id, dtype=torch.long, device=device)
    live = torch.arange(images, device=device)  # images with an unfinished caption, as the decoder holds them
    within = torch.arange(per_image, device=device)
    for step in range(max_tokens - 1):
        finished = (out[:, -1] == eos_token_id) | (out[:, -1] == pad)
        if bool(finished.all()):
            break
        still = ~finished.view(images, per_image)[live].all(dim=1)
        if not bool(still.all()):  # drop the images whose captions have all ended
            decoder.select(still.nonzero().squeeze(1))
            live = live[still]
        rows = (live[:, None] * per_image + within).flatten()
        logits = decoder.logits(out[rows]).float()
        active = ~finished[rows]
        if not bool(active.all()):
            logits, rows = logits[active], rows[active]
        if out.shape[1] < min_tokens:
            logits[:, eos_token_id] = float("-inf")
        sample = torch.full((out.shape[0],), pad, dtype=torch.long, device=device)
        sample[rows] = eos_token_id if out.shape[1] + 1 == max_tokens else choose(logits, step, rows)
        out = torch.cat([out, sample.unsqueeze(1)], dim=1)
    return out


__all__ = ["CachedCoCaDecoder", "UncachedCoCaDecoder", "cache_unsupported", "generate_captions", "greedy"]
