"""Tests for modeling_mobileclip/training/losses.py and modeling_mobileclip/training/optim.py.

The loss is checked against a direct NumPy float64 transcription of the formula (see losses.py's docstring), and a
real two-process gloo run is checked against one process on the global batch.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_mobileclip.training.losses import (
    clip_loss,
    distill_loss,
    gather_with_grad,
    mobileclip_loss,
    resolve_rank_world_size,
    total_loss,
)
from modeling_mobileclip.training.optim import (
    build_optimizer,
    default_adam_eps,
    exclude_from_weight_decay,
    param_groups,
    warmup_cosine_factor,
    warmup_cosine_schedule,
)

TESTS_DIR = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
DIMS = [12, 20]  # two teachers of different widths, so a wrong split cannot pass by symmetry
TAUS = [70.0, 60.0]  # DFNDR's per-teacher scales


# ----------------------------------------------------------------------------------------------- NumPy reference


def np_log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def np_term(img, txt, s, t_img, t_txt, dims, taus):
    """(C, D) for one kind of caption, straight from the formula, float64."""
    n = img.shape[0]
    l_img, l_txt = s * img @ txt.T, s * txt @ img.T
    diag = (np.arange(n), np.arange(n))
    c = 0.5 * (-np_log_softmax(l_img)[diag].mean() - np_log_softmax(l_txt)[diag].mean())
    cuts = np.cumsum(dims)[:-1]
    a_parts, b_parts = np.split(t_img, cuts, axis=1), np.split(t_txt, cuts, axis=1)
    p_img = np.mean([np.exp(np_log_softmax(tau * a @ b.T)) for a, b, tau in zip(a_parts, b_parts, taus)], axis=0)
    p_txt = np.mean([np.exp(np_log_softmax(tau * b @ a.T)) for a, b, tau in zip(a_parts, b_parts, taus)], axis=0)
    d = 0.5 * (-(p_img * np_log_softmax(l_img)).sum(axis=1).mean() - (p_txt * np_log_softmax(l_txt)).sum(axis=1).mean())
    return c, d


def unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_batch(n=8, d=16, dims=DIMS, seed=0):
    """Unit-norm student features and per-teacher unit-norm teacher embeddings, float64 NumPy."""
    rng = np.random.default_rng(seed)

    def teacher():
        return np.concatenate([unit_rows(rng.standard_normal((n, k))) for k in dims], axis=1)

    return dict(img=unit_rows(rng.standard_normal((n, d))), txt=unit_rows(rng.standard_normal((n, d))),
                syn=unit_rows(rng.standard_normal((n, d))), t_img=teacher(), t_txt=teacher(), t_syn=teacher())


def run_loss(batch, dtype=torch.float64, s=100.0, weights=(0.25, 0.75), two_terms=True, dims=DIMS, taus=TAUS, **kw):
    t = {k: torch.tensor(v, dtype=dtype) for k, v in batch.items()}
    return mobileclip_loss(
        t["img"], t["txt"], torch.tensor(s, dtype=dtype), loss_weights=weights,
        syn_text_features=t["syn"] if two_terms else None, teacher_image_emb=t["t_img"], teacher_text_emb=t["t_txt"],
        teacher_syn_text_emb=t["t_syn"] if two_terms else None, teacher_dims=dims, teacher_logit_scales=taus, **kw)


def reference_parts(batch, s=100.0, weights=(0.25, 0.75), two_terms=True, dims=DIMS, taus=TAUS):
    """The parts mobileclip_loss should return: weighted, zero-weight terms left out."""
    w0, w1 = weights
    captions = {"_gt": ("txt", "t_txt"), "_syn": ("syn", "t_syn")} if two_terms else {"": ("txt", "t_txt")}
    parts = {}
    for suffix, (txt, t_txt) in captions.items():
        c, d = np_term(batch["img"], batch[txt], s, batch["t_img"], batch[t_txt], dims, taus)
        if w0:
            parts[f"contrastive_loss{suffix}"] = w0 * c
        if w1:
            parts[f"distill_loss{suffix}"] = w1 * d
    return parts


def max_abs_diff(parts, expected):
    assert set(parts) == set(expected)
    return max(abs(parts[k].item() - expected[k]) for k in expected)


# ------------------------------------------------------------------------------------------------ loss vs NumPy


@pytest.mark.parametrize("s", [100.0, 1 / 0.07])
def test_two_term_loss_matches_numpy_float64(s):
    batch = make_batch()
    parts = run_loss(batch, s=s)
    assert max_abs_diff(parts, reference_parts(batch, s=s)) < 1e-10
    assert total_loss(parts).item() == pytest.approx(sum(reference_parts(batch, s=s).values()), abs=1e-10)


def test_float32_loss_matches_numpy():
    batch = make_batch(n=16, d=32)
    parts = run_loss(batch, dtype=torch.float32)
    # The reference sees the float32-rounded inputs, so only the loss arithmetic differs.
    rounded = {k: v.astype(np.float32).astype(np.float64) for k, v in batch.items()}
    assert all(v.dtype == torch.float32 for v in parts.values())
    # Relative 1e-6: the parts are ~5-25, float32 arithmetic leaves ~1e-7 absolute (measured 7e-7 at most).
    expected = reference_parts(rounded)
    assert max_abs_diff(parts, expected) < 1e-6 * max(abs(v) for v in expected.values())


def test_single_term_keys_and_values():
    batch = make_batch()
    parts = run_loss(batch, two_terms=False)
    assert max_abs_diff(parts, reference_parts(batch, two_terms=False)) < 1e-10


def test_three_teachers_average_after_softmax():
    dims, taus = [4, 8, 6], [100.0, 30.0, 5.0]
    batch = make_batch(dims=dims, seed=3)
    parts = run_loss(batch, weights=(0.0, 1.0), dims=dims, taus=taus)
    assert max_abs_diff(parts, reference_parts(batch, weights=(0.0, 1.0), dims=dims, taus=taus)) < 1e-10
    # A softmax of averaged logits (the reference's no-flag path) gives a different target: guard against it.
    cuts = np.cumsum(dims)[:-1]
    pairs = list(zip(np.split(batch["t_img"], cuts, axis=1), np.split(batch["t_txt"], cuts, axis=1), taus))
    after = np.mean([np.exp(np_log_softmax(tau * a @ b.T)) for a, b, tau in pairs], axis=0)
    before = np.exp(np_log_softmax(np.mean([tau * a @ b.T for a, b, tau in pairs], axis=0)))
    assert np.abs(after - before).max() > 1e-2


def test_clip_loss_and_distill_loss_wrappers():
    batch = make_batch()
    t = {k: torch.tensor(v) for k, v in batch.items()}
    c, d = np_term(batch["img"], batch["txt"], 100.0, batch["t_img"], batch["t_txt"], DIMS, TAUS)
    assert clip_loss(t["img"], t["txt"], 100.0)["contrastive_loss"].item() == pytest.approx(c, abs=1e-10)
    out = distill_loss(t["img"], t["txt"], 100.0, t["t_img"], t["t_txt"], teacher_dims=DIMS, teacher_logit_scales=TAUS)
    assert list(out) == ["distill_loss"] and out["distill_loss"].item() == pytest.approx(d, abs=1e-10)


def test_clip_only_skips_distillation_and_needs_no_teacher():
    batch = make_batch()
    t = {k: torch.tensor(v) for k, v in batch.items()}
    parts = mobileclip_loss(t["img"], t["txt"], 100.0, loss_weights=(1.0, 0.0), syn_text_features=t["syn"])
    assert set(parts) == {"contrastive_loss_gt", "contrastive_loss_syn"}
    assert max_abs_diff(parts, reference_parts(batch, weights=(1.0, 0.0))) < 1e-10


def test_distill_only_skips_contrastive():
    batch = make_batch()
    parts = run_loss(batch, weights=(0.0, 1.0))
    assert set(parts) == {"distill_loss_gt", "distill_loss_syn"}
    assert max_abs_diff(parts, reference_parts(batch, weights=(0.0, 1.0))) < 1e-10


def test_teacher_slices_are_renormalised_per_teacher():
    batch = make_batch()
    scaled = dict(batch)
    for key in ("t_img", "t_txt", "t_syn"):  # scale each teacher's slice differently
        scaled[key] = np.concatenate([batch[key][:, :DIMS[0]] * 3.0, batch[key][:, DIMS[0]:] * 0.5], axis=1)
    assert max_abs_diff(run_loss(scaled), reference_parts(batch)) < 1e-10
    # Without re-normalisation the raw embeddings are used as given.
    assert max_abs_diff(run_loss(scaled, normalize_teacher=False), reference_parts(scaled)) < 1e-10


def test_bf16_inputs_computed_in_float32_even_under_autocast():
    batch = make_batch(n=16, d=32)
    t = {k: torch.tensor(v, dtype=torch.bfloat16, requires_grad=k in ("img", "txt", "syn")) for k, v in batch.items()}
    scale = torch.tensor(100.0, dtype=torch.bfloat16, requires_grad=True)
    kwargs = dict(loss_weights=(0.25, 0.75), syn_text_features=t["syn"], teacher_image_emb=t["t_img"],
                  teacher_text_emb=t["t_txt"], teacher_syn_text_emb=t["t_syn"], teacher_dims=DIMS,
                  teacher_logit_scales=TAUS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = mobileclip_loss(t["img"], t["txt"], scale, **kwargs)
    assert all(v.dtype == torch.float32 for v in parts.values())
    rounded = {k: v.detach().double().numpy() for k, v in t.items()}
    # bf16 rounding breaks the unit norm of the teacher slices; the loss re-normalises them, so does the reference.
    for key in ("t_img", "t_txt", "t_syn"):
        rounded[key] = np.concatenate([unit_rows(p) for p in np.split(rounded[key], [DIMS[0]], axis=1)], axis=1)
    assert max_abs_diff(parts, reference_parts(rounded)) < 1e-5
    total_loss(parts).backward()
    assert t["img"].grad.dtype == torch.bfloat16 and torch.isfinite(t["img"].grad.float()).all()
    assert scale.grad is not None


def test_gradients_match_finite_differences():
    batch = make_batch(n=5, d=6, dims=[3, 4])
    t = {k: torch.tensor(v, requires_grad=k in ("img", "txt", "syn")) for k, v in batch.items()}
    scale = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)

    def loss(img, txt, syn, s):
        return total_loss(mobileclip_loss(
            img, txt, s, loss_weights=(0.25, 0.75), syn_text_features=syn, teacher_image_emb=t["t_img"],
            teacher_text_emb=t["t_txt"], teacher_syn_text_emb=t["t_syn"], teacher_dims=[3, 4],
            teacher_logit_scales=[10.0, 5.0]))

    assert torch.autograd.gradcheck(loss, (t["img"], t["txt"], t["syn"], scale))


def test_nan_propagates_for_the_caller_to_detect():
    batch = make_batch()
    batch["img"][0, 0] = np.nan
    assert not torch.isfinite(total_loss(run_loss(batch)))


# ---------------------------------------------------------------------------------------------------- bad input


def test_teacher_width_mismatch_names_both_numbers():
    img = F.normalize(torch.randn(4, 16), dim=1)
    teacher = torch.randn(4, 1024)
    with pytest.raises(ValueError, match=r"teacher_image_emb has width 1024, but teacher_dims=\[768, 768\] sums to "
                                         r"1536"):
        distill_loss(img, img, 100.0, teacher, teacher, teacher_dims=[768, 768], teacher_logit_scales=[100, 100])


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss_weights=(0.0, 0.0)), "not both 0"),
    (dict(loss_weights=(-1.0, 1.0)), r"loss_weights=\(-1.0, 1.0\)"),
    (dict(loss_weights=(0.0, 1.0), teacher_dims=[8, 8], teacher_logit_scales=[100.0]),
     "teacher_logit_scales has 1 values"),
    (dict(loss_weights=(0.0, 1.0), teacher_dims=None, teacher_logit_scales=None), "needs teacher_dims"),
    (dict(loss_weights=(0.0, 1.0), teacher_dims=[8, 8], teacher_logit_scales=100.0),
     "teacher_logit_scales=100.0: expected a list"),
    (dict(loss_weights=1.0), "loss_weights=1.0: expected a list"),
    (dict(loss_weights=(0.0, 1.0), teacher_dims=[8, 8], teacher_logit_scales=[100.0, 0.0]),
     "finite positive"),
    (dict(loss_weights=(1.0, 0.0), rank=0), "pass both"),
    (dict(loss_weights=(1.0, 0.0), rank=0, world_size=2), "needs an initialised torch.distributed"),
    (dict(loss_weights=(1.0, 0.0), rank=2, world_size=2), "0 <= rank < world_size"),
    (dict(loss_weights=(1.0, 0.0), logit_scale=torch.ones(2)), "must be a scalar"),
    (dict(loss_weights=(1.0, 0.0), text_features=torch.randn(3, 16)), "has 3 rows but image_features has 4"),
    (dict(loss_weights=(1.0, 0.0), text_features=torch.randn(4, 8)), "has width 8, expected 16"),
    (dict(loss_weights=(0.0, 1.0), teacher_dims=[8, 8], teacher_logit_scales=[1.0, 1.0],
          syn_text_features=torch.randn(4, 16)), "teacher_syn_text_emb is None"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    args = dict(image_features=torch.randn(4, 16), text_features=torch.randn(4, 16), logit_scale=torch.tensor(10.0),
                teacher_image_emb=torch.randn(4, 16), teacher_text_emb=torch.randn(4, 16))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        mobileclip_loss(args.pop("image_features"), args.pop("text_features"), args.pop("logit_scale"), **args)


# ------------------------------------------------------------------------------------------------------- gather


def test_single_process_defaults_and_gather_is_identity():
    assert resolve_rank_world_size() == (0, 1)
    x = torch.randn(3, 4)
    assert gather_with_grad(x, 0, 1) is x


def test_local_rows_against_gathered_columns_average_to_global_loss():
    """What each rank computes, emulated in one process: its rows against all columns, labels offset by rank * b.

    Splitting the global batch into 4 equal "ranks" and averaging the per-rank losses must give the global loss;
    the real collective is exercised by test_two_processes_match_one_process.
    """
    batch = make_batch(n=12)
    full = reference_parts(batch)
    w0, w1 = 0.25, 0.75
    per_rank = []
    for r in range(4):
        rows = slice(3 * r, 3 * r + 3)
        s = 100.0
        parts = {}
        for cap, tcap in (("txt", "t_txt"), ("syn", "t_syn")):
            suffix = "_gt" if cap == "txt" else "_syn"
            l_img = s * batch["img"][rows] @ batch[cap].T
            l_txt = s * batch[cap][rows] @ batch["img"].T
            labels = np.arange(3) + 3 * r
            c = 0.5 * (-np_log_softmax(l_img)[np.arange(3), labels].mean()
                       - np_log_softmax(l_txt)[np.arange(3), labels].mean())
            cuts = np.cumsum(DIMS)[:-1]
            a = np.split(batch["t_img"], cuts, axis=1)
            b = np.split(batch[tcap], cuts, axis=1)
            p_img = np.mean([np.exp(np_log_softmax(tau * ak[rows] @ bk.T)) for ak, bk, tau in zip(a, b, TAUS)], 0)
            p_txt = np.mean([np.exp(np_log_softmax(tau * bk[rows] @ ak.T)) for ak, bk, tau in zip(a, b, TAUS)], 0)
            d = 0.5 * (-(p_img * np_log_softmax(l_img)).sum(1).mean() - (p_txt * np_log_softmax(l_txt)).sum(1).mean())
            parts[f"contrastive_loss{suffix}"], parts[f"distill_loss{suffix}"] = w0 * c, w1 * d
        per_rank.append(parts)
    for key, value in full.items():
        assert np.mean([p[key] for p in per_rank]) == pytest.approx(value, abs=1e-12)


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """Two gloo ranks, each with half of the batch, through DDP: the mean of the per-rank losses equals the
    one-process loss on the global batch; each rank's feature gradient divided by the world size (the factor DDP's
    averaging applies) equals the one-process gradient for those rows; DDP-averaged parameter gradients equal the
    one-process parameter gradients."""
    n, d_in, d = 8, 10, 16
    gen = torch.Generator().manual_seed(0)

    def teacher():
        return torch.cat([F.normalize(torch.randn(n, k, generator=gen, dtype=torch.float64), dim=1) for k in DIMS], 1)

    inputs = {
        "images": torch.randn(n, d_in, generator=gen, dtype=torch.float64),
        "texts": torch.randn(n, d_in, generator=gen, dtype=torch.float64),
        "syn_texts": torch.randn(n, d_in, generator=gen, dtype=torch.float64),
        "teacher_image": teacher(), "teacher_text": teacher(), "teacher_syn": teacher(),
        "weights": {"image_proj.weight": torch.randn(d, d_in, generator=gen, dtype=torch.float64),
                    "image_proj.bias": torch.randn(d, generator=gen, dtype=torch.float64),
                    "text_proj.weight": torch.randn(d, d_in, generator=gen, dtype=torch.float64),
                    "text_proj.bias": torch.randn(d, generator=gen, dtype=torch.float64),
                    "logit_scale": torch.tensor(math.log(30.0), dtype=torch.float64)},
        "config": dict(loss_weights=(0.25, 0.75), teacher_dims=DIMS, teacher_logit_scales=TAUS),
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = subprocess.run([sys.executable, str(TESTS_DIR / "dist_loss_worker.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    # One process, global batch, same tiny model written functionally.
    params = {k: v.clone().requires_grad_(True) for k, v in inputs["weights"].items()}
    img = F.normalize(F.linear(inputs["images"], params["image_proj.weight"], params["image_proj.bias"]), dim=1)
    txt = F.normalize(F.linear(inputs["texts"], params["text_proj.weight"], params["text_proj.bias"]), dim=1)
    syn = F.normalize(F.linear(inputs["syn_texts"], params["text_proj.weight"], params["text_proj.bias"]), dim=1)
    for feat in (img, txt, syn):
        feat.retain_grad()
    parts = mobileclip_loss(img, txt, params["logit_scale"].exp().clamp(max=100), syn_text_features=syn,
                            teacher_image_emb=inputs["teacher_image"], teacher_text_emb=inputs["teacher_text"],
                            teacher_syn_text_emb=inputs["teacher_syn"], **inputs["config"])
    total_loss(parts).backward()

    loss_diff = max(abs((ranks[0]["parts"][k] + ranks[1]["parts"][k]) / 2 - parts[k]).item() for k in parts)
    feature_diff = max((torch.cat([r["feature_grads"][k] for r in ranks]) / 2 - one.grad).abs().max().item()
                       for k, one in (("images", img), ("texts", txt), ("syn_texts", syn)))
    param_diff = max((r["param_grads"][k] - params[k].grad).abs().max().item() for r in ranks for k in params)
    print(f"2-proc vs 1-proc max abs diff: loss {loss_diff:.2e}, feature grads {feature_diff:.2e}, "
          f"param grads {param_diff:.2e}")
    assert set(ranks[0]["parts"]) == set(parts)
    assert loss_diff < 1e-12 and feature_diff < 1e-12 and param_diff < 1e-12
    # Each rank's loss on its own differs from the global loss (so the check above is not vacuous).
    assert abs(ranks[0]["parts"]["distill_loss_gt"] - parts["distill_loss_gt"]).item() > 1e-6
    # Rank and world size read from torch.distributed; gather_with_grad's values and summed gradients.
    assert [r["resolved"] for r in ranks] == [(0, 2), (1, 2)]
    for r, out in enumerate(ranks):
        assert torch.equal(out["gathered"], torch.tensor([0.0, 1, 2, 10, 11, 12]))
        assert torch.equal(out["probe_grad"], 2 * torch.arange(1.0, 4.0) + 6 * r)


# -------------------------------------------------------------------------------------------------------- optim


class ToyModel(torch.nn.Module):
    """Parameter names and shapes of the kinds that the weight-decay rule has to sort."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)  # weight 4-D: decay; bias: no decay
        self.bn = torch.nn.BatchNorm2d(4)  # 1-D: no decay
        self.ln_final = torch.nn.LayerNorm(4)  # 1-D: no decay
        self.proj = torch.nn.Linear(4, 4)  # weight decay, bias not
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.659))  # 0-d: no decay
        self.layer_scale = torch.nn.Parameter(torch.ones(4, 1))  # 2-D: decayed, as in the reference
        self.position_embedding = torch.nn.Parameter(torch.zeros(5, 4))  # 2-D: decayed, as in the reference
        self.class_embedding = torch.nn.Parameter(torch.zeros(4))  # 1-D: no decay
        self.frozen = torch.nn.Parameter(torch.zeros(4, 4), requires_grad=False)  # not in any group


def group_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: sorted(names[id(p)] for p in g["params"]) for g in groups}


def test_param_groups_follow_open_clip_rule():
    model = ToyModel()
    groups = param_groups(model, weight_decay=0.2)
    assert group_names(model, groups) == {
        "no_decay": sorted(["conv.bias", "bn.weight", "bn.bias", "ln_final.weight", "ln_final.bias", "proj.bias",
                            "logit_scale", "class_embedding"]),
        "decay": sorted(["conv.weight", "proj.weight", "layer_scale", "position_embedding"]),
    }
    assert [g["weight_decay"] for g in groups] == [0.0, 0.2]
    # The name rule alone exempts a 2-D parameter too.
    assert exclude_from_weight_decay("blocks.0.bn.weight", torch.zeros(4, 4))
    extra = param_groups(model, extra_no_decay=("layer_scale", "position_embedding"))
    assert "layer_scale" in group_names(model, extra)["no_decay"]
    assert group_names(model, extra)["decay"] == ["conv.weight", "proj.weight"]


def test_build_optimizer_defaults_and_decay_step():
    model = ToyModel()
    opt = build_optimizer(model, "MobileCLIP-S2")
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    assert build_optimizer(model, "ViT-B-16").defaults["eps"] == 1e-6
    assert default_adam_eps("MobileCLIP-B") == 1e-8  # name rule, as open_clip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only decoupled weight decay moves parameters, by lr * wd
    assert torch.allclose(model.proj.weight, before["proj.weight"] * (1 - 1e-3 * 0.2))
    assert torch.equal(model.proj.bias, before["proj.bias"])
    assert torch.equal(model.logit_scale, before["logit_scale"])


def test_build_optimizer_without_trainable_params():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, "MobileCLIP-S2")


def test_warmup_cosine_matches_open_clip_cosine_lr():
    open_clip_scheduler = pytest.importorskip("open_clip_train.scheduler")
    warmup, total, base = 10, 50, 1e-3
    model = torch.nn.Linear(2, 2)
    ours = torch.optim.AdamW(model.parameters(), lr=base)
    theirs = torch.optim.AdamW(model.parameters(), lr=base)
    scheduler = warmup_cosine_schedule(ours, warmup_steps=warmup, total_steps=total)
    adjust = open_clip_scheduler.cosine_lr(theirs, base, warmup, total)
    for step in range(total):
        adjust(step)
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        ours.step()
        scheduler.step()
    assert warmup_cosine_factor(0, warmup, total) == pytest.approx(0.1)
    assert warmup_cosine_factor(total + 20, warmup, total) == 0.0  # clamped past the end
    with pytest.raises(ValueError, match="warmup_steps=50, total_steps=50"):
        warmup_cosine_schedule(ours, warmup_steps=50, total_steps=50)
