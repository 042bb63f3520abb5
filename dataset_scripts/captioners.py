"""Captioners for the reinforcement tool: transformers image-to-text models and open_clip CoCa.

Spec strings: ``open_clip:<model>/<pretrained>`` (e.g. ``open_clip:coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k``),
``open_clip:hf-hub:<repo>``, ``open_clip:local-dir:<folder>`` for CoCa; ``hf:<repo or folder>`` or a bare repo id /
folder for any ``AutoModelForImageTextToText`` model (BLIP, VisionEncoderDecoder, ...).

Sampling follows Apple's generator: ``num_captions`` independent nucleus samples (top-p 0.9, temperature 1) per
image, each caption post-processed to its first sentence, stripped (:func:`postprocess_caption`). The captioner sees
the un-augmented image through its own preprocessing.

Determinism. Every caption row draws its random numbers from its own stream, seeded by the caller per (sample,
caption index), so a sample's captions do not depend on which other samples share its batch, on the number of
processes or on resuming. :class:`SeededNucleusSampler` does the draw: top-p filtering, then inverse-CDF sampling
with the row's next uniform number. For transformers it is a ``LogitsProcessor`` that leaves only the drawn token
finite, and ``generate`` runs greedily (``do_sample=False``), so the model's own processors (min length, repetition
penalty from its generation config) still run before it, as its sampling warpers would.

Objects. Besides spec strings, :func:`load_captioner` takes a transformers ``image-text-to-text`` pipeline (the
task that replaced ``image-to-text`` in transformers 5), a model in memory with its processor
(:func:`captioner_from_transformers`), and any object with the :class:`CaptionModel` interface (its captions get the
same post-processing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import PIL.Image
import torch

from .coca_decoding import generate_captions
from .teachers import HF_PREFIX, OPEN_CLIP_PREFIX, parse_open_clip_spec


def postprocess_caption(text: str) -> str:
    """Apple's post-processing: cut at ``<end_of_text>``, drop ``<start_of_text>``, keep the first sentence, strip."""
    text = text.split("<end_of_text>")[0].replace("<start_of_text>", "")
    return text.split(".")[0].strip()


def row_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """[rows, steps] uniforms in [0, 1), one independent numpy PCG64 stream per row seed."""
    return torch.from_numpy(np.stack([np.random.default_rng(int(s)).random(steps) for s in seeds]))


class SeededNucleusSampler:
    """Top-p sampling where row r at step t uses ``uniforms[r, t]``; returns the drawn token ids [rows].

    The kept set is transformers' ``TopPLogitsWarper`` rule: the most probable tokens, down to and including the
    first one at which the mass above reaches ``top_p`` (a token is dropped when the tokens more probable than it
    already hold ``top_p``; the most probable one always stays). The drawn token is the kept token, in vocabulary
    order, whose cumulative renormalised probability first exceeds the row's uniform (inverse CDF).

    Speed: the full vocabulary is not sorted. The ``candidates[0]`` most probable tokens (``topk``) settle every row
    whose nucleus they hold (their mass reaches ``top_p``); the other rows try ``candidates[1]`` (when the bound
    ``mass + (k1 - k0) * p_k0`` says it can be enough), and only rows whose nucleus is larger still are sorted whole.
    Each stage applies the same rule to the same probabilities, so the kept set and the draw do not depend on the
    stage (tests/test_coca_decoding.py checks the per-step distribution against ``TopPLogitsWarper`` for each).
    """

    def __init__(self, uniforms: torch.Tensor, top_p: float = 0.9, temperature: float = 1.0,
                 candidates: Sequence[int] = (64, 1024)):
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not candidates or any(k < 1 for k in candidates) or list(candidates) != sorted(candidates):
            raise ValueError(f"candidates must be increasing positive sizes, got {list(candidates)}")
        self.uniforms, self.top_p, self.temperature = uniforms, top_p, temperature
        self.candidates = tuple(candidates)

    def _draw_from(self, probs: torch.Tensor, ids: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Rows of ``probs`` [R, k] sorted descending (token ids ``ids``) that hold their nucleus: the draws."""
        probs = probs.double()
        keep = probs.cumsum(dim=-1) - probs < self.top_p  # the mass strictly above each token is below top_p
        keep[:, 0] = True
        vocab_order = torch.where(keep, ids, ids.new_full((), torch.iinfo(ids.dtype).max)).argsort(dim=-1)
        weights = torch.where(keep, probs, 0.0).gather(1, vocab_order)
        cdf = weights.cumsum(dim=-1)
        targets = (uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(1)
        index = torch.searchsorted(cdf, targets, right=True).squeeze(1)
        index = torch.minimum(index, keep.sum(dim=1) - 1)  # u * total rounding up to the total stays in the set
        return ids.gather(1, vocab_order).gather(1, index.unsqueeze(1)).squeeze(1)

    def draw(self, scores: torch.Tensor, step: int, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        scores = scores.float()
        if self.temperature != 1.0:
            scores = scores / self.temperature
        # Ranked on the scores themselves (the softmax keeps their order); probabilities only for the candidates.
        log_total = scores.logsumexp(dim=-1, keepdim=True)
        uniforms = self.uniforms[:, min(step, self.uniforms.shape[1] - 1)]
        if rows is not None:
            uniforms = uniforms[rows.cpu()]
        vocab = scores.shape[-1]
        tokens = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        pending = None  # the rows not settled yet (None: all of them)
        previous = None  # (k, mass of the top k, probability of the k-th) of the pending rows
        for k in [c for c in self.candidates if c < vocab] + [vocab]:
            if previous is not None and k < vocab:
                # skip this size for rows whose top k cannot reach top_p: mass(top k) <= mass(top k0) + (k - k0) p_k0
                k0, mass, last = previous
                if not bool((mass + (k - k0) * last >= self.top_p).any()):
                    continue
            rows_scores = scores if pending is None else scores[pending]
            if k < vocab:
                top, ids = rows_scores.topk(k, dim=-1, sorted=True)
            else:
                top, ids = rows_scores.sort(dim=-1, descending=True)
            top = (top - (log_total if pending is None else log_total[pending])).exp()
            mass = top.double().sum(dim=-1)
            done = (mass >= self.top_p) if k < vocab else torch.ones_like(mass, dtype=torch.bool)
            settled = torch.arange(scores.shape[0], device=scores.device) if pending is None else pending
            if bool(done.any()):
                tokens[settled[done]] = self._draw_from(top[done], ids[done], uniforms[settled[done].cpu()])
            pending, previous = settled[~done], (k, mass[~done], top[~done, -1].double())
            if pending.numel() == 0:
                break
        return tokens


class _HFSamplingProcessor:
    """``LogitsProcessor`` wrapper: every score but the drawn token becomes -inf (generate then runs greedily)."""

    def __init__(self, sampler: SeededNucleusSampler):
        self.sampler, self.start = sampler, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        tokens = self.sampler.draw(scores, input_ids.shape[1] - self.start)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, tokens.unsqueeze(1), 0.0)
        return out


@runtime_checkable
class CaptionModel(Protocol):
    """What ``reinforce(captioner=...)`` accepts besides spec strings.

    ``name`` is recorded in ``config.json`` (a rerun into the same output must use the same name).
    ``caption(images, seeds)`` gets un-augmented RGB PIL images and, per image, one integer seed per caption
    wanted; it returns that many captions per image, drawing caption ``c`` of image ``i`` from ``seeds[i][c]`` only
    (so the output does not depend on batching, processes or resuming). The tool applies
    :func:`postprocess_caption` to what it returns.
    """

    name: str

    def caption(self, images: Sequence[PIL.Image.Image], seeds: Sequence[Sequence[int]]) -> list[list[str]]: ...


def _check_seeds(images: Sequence, seeds: Sequence[Sequence[int]]) -> int:
    counts = {len(s) for s in seeds}
    if len(seeds) != len(images) or len(counts) != 1:
        raise ValueError(f"need the same number of seeds for each of the {len(images)} images, got "
                         f"{[len(s) for s in seeds]}")
    return counts.pop()


@dataclass
class ObjectCaptioner:
    """A :class:`CaptionModel` object, with the reference post-processing and a ``config.json`` entry."""

    obj: Any

    def describe(self) -> dict:
        return {"model": str(self.obj.name), "pretrained": None, "library": "object",
                "class": f"{type(self.obj).__module__}.{type(self.obj).__qualname__}",
                "input": "un-augmented image", "postprocess": "first sentence (split at '.'), stripped"}

    def caption(self, images: Sequence[PIL.Image.Image], seeds: Sequence[Sequence[int]]) -> list[list[str]]:
        n = _check_seeds(images, seeds)
        out = self.obj.caption(list(images), [list(s) for s in seeds])
        if len(out) != len(images) or any(len(c) != n for c in out):
            raise ValueError(f"captioner {self.obj.name!r} returned {[len(c) for c in out]} captions for "
                             f"{len(images)} images; expected {n} per image (one per seed)")
        return [[postprocess_caption(str(c)) for c in per_image] for per_image in out]


@dataclass
class Captioner:
    """A loaded captioner. :meth:`caption` returns one post-processed caption per seed, per image."""

    spec: Optional[str]
    library: str
    model: torch.nn.Module
    device: torch.device
    top_p: float = 0.9
    max_tokens: int = 30  # open_clip CoCa's seq_len default (including the start token)
    min_tokens: int = 5  # CoCa's min_seq_len; transformers models use their generation config instead
    autocast_dtype: Optional[torch.dtype] = None
    image_transform: Any = None
    tokenizer: Any = None
    model_name: str = ""
    pretrained: Optional[str] = None

    def describe(self) -> dict:
        return {"model": self.model_name, "pretrained": self.pretrained, "spec": self.spec, "library": self.library,
                "generation": "top_p", "top_p": self.top_p, "temperature": 1.0,
                "max_tokens": self.max_tokens, "min_tokens": self.min_tokens if self.library == "open_clip" else None,
                "input": "un-augmented image, captioner's own preprocessing",
                "postprocess": "first sentence (split at '.'), stripped"}

    def _autocast(self):
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled)

    @torch.inference_mode()
    def caption(self, images: Sequence[PIL.Image.Image], seeds: Sequence[Sequence[int]]) -> list[list[str]]:
        """``seeds[i][c]`` seeds caption ``c`` of image ``i``; returns ``len(seeds[i])`` captions per image."""
        if not images:
            return []
        n = _check_seeds(images, seeds)
        flat_seeds = [s for per_image in seeds for s in per_image]
        sampler = SeededNucleusSampler(row_uniforms(flat_seeds, self.max_tokens + 1), self.top_p)
        if self.library == "open_clip":
            texts = self._caption_coca(images, n, sampler)
        else:
            texts = self._caption_transformers(images, n, sampler)
        captions = [postprocess_caption(t) for t in texts]
        return [captions[i * n:(i + 1) * n] for i in range(len(images))]

    def _caption_transformers(self, images, n: int, sampler) -> list[str]:
        # All the processor's image inputs (pixel_values, or e.g. flattened_patches), one copy per caption.
        inputs = self.image_transform(images=list(images), return_tensors="pt")
        inputs = {k: v.repeat_interleave(n, dim=0).to(self.device) for k, v in inputs.items()
                  if isinstance(v, torch.Tensor)}
        with self._autocast():
            generated = self.model.generate(
                **inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_tokens, use_cache=True,
                logits_processor=[_HFSamplingProcessor(sampler)],
            )
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True)

    def _caption_coca(self, images, n: int, sampler) -> list[str]:
        # The top-p branch of open_clip's CoCa.generate (min length, forced <end_of_text> at seq_len, pad after the
        # end) with a KV cache (coca_decoding), each image encoded once, and the row-seeded draw in place of
        # torch.multinomial on the global generator.
        image = torch.stack([self.image_transform(img) for img in images]).to(self.device)
        with self._autocast():
            out = generate_captions(self.model, image, n, sampler.draw, max_tokens=self.max_tokens,
                                    min_tokens=self.min_tokens, sot_token_id=self.tokenizer.sot_token_id,
                                    eos_token_id=self.tokenizer.eot_token_id)
        return [self.tokenizer.decode(row.tolist()) for row in out.cpu()]


def captioner_from_transformers(model: torch.nn.Module, processor: Any, tokenizer: Any = None, name: str = "",
                                top_p: float = 0.9, max_tokens: int = 30, spec: Optional[str] = None) -> Captioner:
    """A captioner from a transformers image-to-text model in memory (anything whose ``generate`` takes the
    processor's image inputs: BLIP, VisionEncoderDecoder, GIT, ...) and its processor (or image processor +
    ``tokenizer``)."""
    if not hasattr(model, "generate"):
        raise ValueError(f"captioner {name or type(model).__name__!r} has no generate(); give an image-to-text model")
    tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"captioner {name!r}: no tokenizer to decode the captions; pass a processor with one or "
                         f"tokenizer=")
    device = next(model.parameters()).device
    return Captioner(spec=spec, library="transformers", model=model.eval(), device=device, top_p=top_p,
                     max_tokens=max_tokens, image_transform=processor, tokenizer=tokenizer,
                     model_name=name or getattr(model, "name_or_path", type(model).__name__))


def load_captioner(spec: Any, device: torch.device | str = "cpu", top_p: float = 0.9, max_tokens: int = 30,
                   dtype: Optional[torch.dtype] = None, trust_remote_code: bool = False):
    """A captioner from its spec string (see the module docstring), a transformers ``image-text-to-text`` pipeline, a
    :class:`Captioner`, or any :class:`CaptionModel` object (wrapped in :class:`ObjectCaptioner`)."""
    autocast_dtype = dtype if dtype not in (None, torch.float32) else None
    if isinstance(spec, (Captioner, ObjectCaptioner)):
        return spec
    if not isinstance(spec, str):
        import transformers

        if isinstance(spec, transformers.Pipeline):  # e.g. pipeline("image-text-to-text", model=<BLIP>)
            processor = getattr(spec, "processor", None) or spec.image_processor
            captioner = captioner_from_transformers(spec.model, processor, getattr(spec, "tokenizer", None),
                                                    spec.model.name_or_path, top_p, max_tokens)
            captioner.autocast_dtype = autocast_dtype
            return captioner
        if not (hasattr(spec, "name") and callable(getattr(spec, "caption", None))):
            raise ValueError(f"captioner {type(spec).__name__} is neither a spec string, an image-to-text pipeline "
                             f"nor an object with the dataset_scripts.captioners.CaptionModel interface "
                             f"(name, caption(images, seeds))")
        return ObjectCaptioner(spec)
    device = torch.device(device)
    if spec.startswith(OPEN_CLIP_PREFIX):
        import open_clip

        name, pretrained = parse_open_clip_spec(spec)
        model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        if not hasattr(model, "_encode_image") or not hasattr(model, "text_decoder"):
            raise ValueError(f"captioner {spec!r} is a {type(model).__name__}, not a CoCa model; open_clip captioners "
                             f"must be CoCa (e.g. open_clip:coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k)")
        return Captioner(spec=spec, library="open_clip", model=model.eval(), device=device, top_p=top_p,
                         max_tokens=max_tokens, autocast_dtype=autocast_dtype, image_transform=transform,
                         tokenizer=open_clip.get_tokenizer(name), model_name=name, pretrained=pretrained)
    if spec.startswith(HF_PREFIX) or os.path.isdir(spec) or "/" in spec:
        import transformers

        path = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
        model = transformers.AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code)
        image_processor = transformers.AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        captioner = captioner_from_transformers(model.to(device), image_processor, tokenizer, path, top_p,
                                                max_tokens, spec=spec)
        captioner.autocast_dtype = autocast_dtype
        return captioner
    raise ValueError(f"captioner spec {spec!r} is not understood; use 'open_clip:<coca model>/<pretrained>', "
                     f"'open_clip:local-dir:<folder>', 'hf:<repo>' or a transformers repo id / folder")


__all__ = ["CaptionModel", "Captioner", "ObjectCaptioner", "SeededNucleusSampler", "captioner_from_transformers",
           "load_captioner", "postprocess_caption", "row_uniforms"]
