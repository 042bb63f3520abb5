"""Two-process (gloo, CPU) run of `mobileclip_loss` for tests/test_losses.py::test_two_processes_match_one_process.

Usage: python tests/dist_loss_worker.py WORKDIR

Reads WORKDIR/inputs.pt (global batch + tiny model weights, written by the test), spawns 2 ranks that each take their
half of the batch through a DDP-wrapped tiny model and the loss, and writes WORKDIR/rank{r}.pt with the loss parts,
the gradients of the local features and the DDP-averaged parameter gradients. A separate script (not mp.spawn from
the test module) so that the children can import it whatever pytest's import mode is; the file:// rendezvous in
WORKDIR avoids port clashes with other jobs on the machine.
"""

import datetime
import gc
import importlib.util
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

# losses.py needs only torch. Loading it by path skips the package __init__ (transformers + Auto registration, ~4 s
# per process), which keeps this run well inside its time budget on a small shared CPU.
_spec = importlib.util.spec_from_file_location(
    "mobileclip_losses", Path(__file__).resolve().parents[1] / "modeling_mobileclip" / "training" / "losses.py")
losses = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(losses)

WORLD_SIZE = 2


class TinyTowers(torch.nn.Module):
    """Linear image/text "towers" + learnable logit scale; the test computes the same functions in one process."""

    def __init__(self, weights: dict):
        super().__init__()
        self.image_proj = torch.nn.Linear(*weights["image_proj.weight"].shape[::-1], dtype=torch.float64)
        self.text_proj = torch.nn.Linear(*weights["text_proj.weight"].shape[::-1], dtype=torch.float64)
        self.logit_scale = torch.nn.Parameter(weights["logit_scale"].clone())
        self.load_state_dict(weights)

    def forward(self, images, texts, syn_texts):
        return (F.normalize(self.image_proj(images), dim=1), F.normalize(self.text_proj(texts), dim=1),
                F.normalize(self.text_proj(syn_texts), dim=1), self.logit_scale.exp().clamp(max=100))


def run_rank(rank: int, workdir: str) -> None:
    torch.set_num_threads(1)  # two ranks share a small CPU
    dist.init_process_group("gloo", init_method=f"file://{workdir}/rendezvous", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=60))
    try:
        inputs = torch.load(Path(workdir) / "inputs.pt")
        b = inputs["images"].shape[0] // WORLD_SIZE
        local = {k: v[rank * b:(rank + 1) * b] for k, v in inputs.items() if k not in ("weights", "config")}
        model = torch.nn.parallel.DistributedDataParallel(TinyTowers(inputs["weights"]))

        img, txt, syn, scale = model(local["images"], local["texts"], local["syn_texts"])
        for t in (img, txt, syn):
            t.retain_grad()
        parts = losses.mobileclip_loss(
            img, txt, scale, syn_text_features=syn, teacher_image_emb=local["teacher_image"],
            teacher_text_emb=local["teacher_text"], teacher_syn_text_emb=local["teacher_syn"],
            rank=rank, world_size=WORLD_SIZE, **inputs["config"])
        sum(parts.values()).backward()  # DDP averages the parameter gradients over the ranks here

        probe = torch.arange(3.0) + 10 * rank  # gather_with_grad on its own: values and summed gradient
        probe.requires_grad_(True)
        gathered = losses.gather_with_grad(probe, rank, WORLD_SIZE)
        (gathered * torch.arange(1.0, 1.0 + gathered.numel())).sum().backward()

        torch.save({
            "parts": {k: v.detach() for k, v in parts.items()},
            "feature_grads": {"images": img.grad, "texts": txt.grad, "syn_texts": syn.grad},
            "param_grads": {n: p.grad for n, p in model.module.named_parameters()},
            "resolved": losses.resolve_rank_world_size(),
            "gathered": gathered.detach(), "probe_grad": probe.grad,
        }, Path(workdir) / f"rank{rank}.pt")
        # DDP's reducer keeps the process group and gloo work objects alive; if it outlives destroy_process_group it
        # is torn down at interpreter exit with gloo threads still attached ("terminate called without an active
        # exception", seen in ~30 % of runs under pytest). Free it first, then leave the group together.
        del model, img, txt, syn, scale, parts
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run_rank, args=(sys.argv[1],), nprocs=WORLD_SIZE, join=True)
