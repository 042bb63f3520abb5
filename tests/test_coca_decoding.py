"""Fast captioning (issue 19): the KV-cached CoCa decoder against open_clip's own ``CoCa.generate``, the
vocabulary-bounded top-p draw against transformers' ``TopPLogitsWarper``, and the transformers captioners batched
with their cache against one image at a time."""

import io

import numpy as np
import open_clip
import open_clip.coca_model
import PIL.Image
import pytest
import torch
import transformers

from dataset_scripts.captioners import (
    SeededNucleusSampler,
    load_captioner,
    row_uniforms,
)
from dataset_scripts.coca_decoding import cache_unsupported, generate_captions, greedy
from dataset_scripts.tiny_reinforce_models import tiny_git, tiny_open_clip_coca

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EOS = 49407


@pytest.fixture(scope="module")
def coca(tmp_path_factory):
    """The tiny CoCa, with its ``<end_of_text>`` column scaled so that captions end at different lengths."""
    spec = tiny_open_clip_coca(str(tmp_path_factory.mktemp("coca")), image_size=32, seed=3)
    model = open_clip.create_model(spec[len("open_clip:"):]).eval()
    with torch.no_grad():
        model.text_decoder.text_projection[:, EOS] *= 5.0
    return model


@pytest.fixture
def open_clip_generate(monkeypatch):
    """open_clip's ``CoCa.generate`` as shipped. open_clip 3.3 disables all of it when transformers >= 5 lacks
    ``BeamSearchScorer``; its top-k / top-p branch needs only the warpers, so those are put back."""
    monkeypatch.setattr(open_clip.coca_model, "_has_transformers", True)
    monkeypatch.setitem(open_clip.coca_model.GENERATION_TYPES, "top_k", transformers.TopKLogitsWarper)
    monkeypatch.setitem(open_clip.coca_model.GENERATION_TYPES, "top_p", transformers.TopPLogitsWarper)


@pytest.mark.parametrize("correct_cls_mask", [False, True], ids=["legacy-cls-mask", "correct-cls-mask"])
def test_cached_greedy_tokens_equal_open_clip_generate(coca, open_clip_generate, correct_cls_mask, monkeypatch):
    monkeypatch.setattr(coca.text, "correct_cls_mask", correct_cls_mask)
    torch.manual_seed(0)
    images, per_image = torch.randn(4, 3, 32, 32), 3
    expected = coca.generate(images.repeat_interleave(per_image, 0), generation_type="top_k", top_k=1, seq_len=20,
                             min_seq_len=5)
    ours = generate_captions(coca, images, per_image, greedy, max_tokens=20, min_tokens=5)
    assert cache_unsupported(coca) is None
    lengths = (ours != 0).sum(1)  # pads after the end
    assert lengths.min() < lengths.max() == 20  # an image's captions end early: it leaves the batch, others go on
    assert torch.equal(ours, expected)
    assert torch.equal(generate_captions(coca, images, per_image, greedy, max_tokens=20, cache=False), expected)


def _reference_draw(scores: torch.Tensor, uniforms: torch.Tensor, top_p: float) -> torch.Tensor:
    """TopPLogitsWarper's kept set, renormalised, inverse CDF in vocabulary order over the full vocabulary."""
    kept = transformers.TopPLogitsWarper(top_p)(None, scores.clone())
    cdf = kept.softmax(-1).double().cumsum(-1)
    return torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)


@pytest.mark.parametrize("scale, nucleus", [(12.0, (1, 4)), (5.0, (5, 32)), (0.3, (33, 512))],
                         ids=["first-stage", "second-stage", "full-sort"])
def test_bounded_top_p_draw_has_the_top_p_distribution(scale, nucleus):
    # 4 then 32 candidates on a 512-token vocabulary: each case is settled by a different stage of the draw.
    torch.manual_seed(1)
    scores = torch.randn(1, 512) * scale
    kept = torch.isfinite(transformers.TopPLogitsWarper(0.9)(None, scores.clone()))[0]
    assert nucleus[0] <= int(kept.sum()) <= nucleus[1]
    rows = 8000
    uniforms = ((torch.arange(rows, dtype=torch.float64) + 0.5) / rows).unsqueeze(1)
    drawn = SeededNucleusSampler(uniforms, top_p=0.9, candidates=(4, 32)).draw(scores.expand(rows, -1), step=0)
    frequency = torch.bincount(drawn, minlength=512).double() / rows
    target = scores[0].masked_fill(~kept, float("-inf")).softmax(-1).double()
    assert set(drawn.unique().tolist()) == set(kept.nonzero().flatten().tolist())
    assert (frequency - target).abs().max() < 2.0 / rows
    assert torch.equal(drawn, _reference_draw(scores.expand(rows, -1), uniforms[:, 0], 0.9))


def test_seeded_coca_sampling_draws_what_the_full_vocabulary_rule_draws(coca):
    """On the CoCa's own logits at every step of a sampled decode, the bounded draw picks exactly the token the
    full-vocabulary rule (TopPLogitsWarper + inverse CDF) picks with the same uniform."""
    torch.manual_seed(2)
    images, per_image = torch.randn(3, 3, 32, 32), 4
    sampler = SeededNucleusSampler(row_uniforms(range(12), 21), top_p=0.9)
    seen = []

    def choose(logits, step, rows):
        tokens = sampler.draw(logits, step, rows)
        expected = _reference_draw(logits, sampler.uniforms[rows, step], 0.9)
        seen.append((torch.equal(tokens, expected), logits.shape[0]))
        return tokens

    out = generate_captions(coca, images, per_image, choose, max_tokens=20)
    assert len(seen) > 5 and all(equal for equal, _ in seen)
    assert sum(n for _, n in seen) > 50 and len({tuple(row) for row in out.tolist()}) == 12
    # the same seeds alone and batched with other images give the same captions
    alone = generate_captions(coca, images[1:2], per_image, lambda lg, s, r: sampler.draw(lg, s, r + 4),
                              max_tokens=20)
    assert torch.equal(alone, out[4:8, :alone.shape[1]]) and (out[4:8, alone.shape[1]:] == 0).all()


def test_transformers_decoder_only_captioner_batched_with_cache(tmp_path):
    """GIT (the image tokens prefix the text; no prompt, so every row has the same length and no padding): the
    batched, cached captions equal one image at a time, and generate's tokens equal those without a cache."""
    captioner = load_captioner(tiny_git(str(tmp_path / "git")), max_tokens=12)
    images = [PIL.Image.open(io.BytesIO(_jpeg(i))) for i in range(3)]
    seeds = [[10 * i + c for c in range(2)] for i in range(3)]
    together = captioner.caption(images, seeds)
    assert [captioner.caption([images[i]], [seeds[i]])[0] for i in range(3)] == together
    assert len({c for caps in together for c in caps}) > 3
    pixels = captioner.image_transform(images=images, return_tensors="pt")["pixel_values"]
    from dataset_scripts.captioners import _HFSamplingProcessor

    def tokens(use_cache):
        sampler = SeededNucleusSampler(row_uniforms(range(3), 13))
        return captioner.model.generate(pixel_values=pixels, do_sample=False, max_new_tokens=12, use_cache=use_cache,
                                        logits_processor=[_HFSamplingProcessor(sampler)])

    assert torch.equal(tokens(True), tokens(False))


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()
