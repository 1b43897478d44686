"""Data-parallel training over torch.distributed: shards, lockstep, combined parameters.

    torchrun --nproc_per_node=2 -m w2v.train data.path=corpus.txt

Each rank trains on its own contiguous shard of the documents, with either engine, and every
trainer.sync_every steps (1: every step) the ranks combine their models with one dense
all_reduce per embedding table (gloo on CPU, NCCL on GPU); see `Sync`. Combining parameters
rather than gradients is what lets the fused Hogwild engine, which has no gradients, run
distributed too. With SGD the ranks' changes are summed, as threads sharing one model add
theirs, so two ranks learn as much per word as one process does (averaging them halves every
update: on text8-prefix after 5 epochs, analogy accuracy 0.049 averaged, 0.080 summed, 0.079
for one process with two threads; docs/performance.md). Ranks run the same number of steps
per epoch (the largest shard's; a rank that runs out does empty steps), so collectives always
match, and they synchronise at every epoch end, checkpoint and evaluation, so what rank 0
saves or scores is the combined model. The learning-rate schedule follows the global fraction
of the epoch. Rank 0 alone logs, evaluates, checkpoints and exports. A stop signal on any rank
stops all of them at the same (synchronised) step.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment; one process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def shard(corpus, world: World):
    """This rank's contiguous run of whole documents, balanced by tokens."""
    if not world.active:
        return corpus
    offsets = corpus.doc_offsets
    total = int(offsets[-1])
    cuts = [int(torch.searchsorted(offsets, total * r // world.size)) for r in range(world.size)]
    cuts.append(len(offsets) - 1)
    lo, hi = cuts[world.rank], cuts[world.rank + 1]
    start, end = int(offsets[lo]), int(offsets[hi])
    share = (end - start) / max(total, 1)
    return dataclasses.replace(
        corpus,
        ids=corpus.ids[start:end],
        doc_offsets=offsets[lo : hi + 1] - start,
        raw_tokens=round(corpus.raw_tokens * share),
    )


def agree_steps(world: World, local_steps: int) -> int:
    """The number of steps every rank runs this epoch: the largest shard's."""
    if not world.active:
        return local_steps
    t = torch.tensor([local_steps], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


class Sync:
    """Combines the ranks' updates into one model, every `every` steps and when forced.

    combine="sum" (SGD, either engine): the new parameters are the last synchronised ones
    plus the sum of every rank's change since, which is what N Hogwild threads sharing one
    model do, so N ranks learn as much per word as one process. It keeps one copy of the
    parameters (the last synchronised state). combine="mean" (Adam-family optimizers, whose
    steps are normalised per rank): the parameters are averaged, as data-parallel training
    with averaged gradients does. One dense all_reduce per parameter tensor either way.
    """

    def __init__(self, world: World, params: list[torch.Tensor], combine: str = "sum",
                 every: int = 1) -> None:
        if combine not in ("sum", "mean"):
            raise ValueError(f"combine={combine!r}: sum or mean")
        self.world, self.params, self.combine, self.every = world, params, combine, every
        self.since = 0  # steps since the last synchronisation
        self.base = ([p.detach().clone() for p in params]
                     if world.active and combine == "sum" else [])

    def __call__(self, stop: bool, force: bool = False) -> bool:
        """After a step: synchronise when due (or forced); return whether any rank asked to
        stop (known only when synchronising: a stop waits for the next synchronisation)."""
        if not self.world.active:
            return stop
        self.since += 1
        if self.since < self.every and not force:
            return False
        self.since = 0
        size = self.world.size
        with torch.no_grad():
            for i, p in enumerate(self.params):
                dist.all_reduce(p, op=dist.ReduceOp.SUM)  # sum of the ranks' parameters
                if self.combine == "sum":
                    # sum_r (base + delta_r) - (size - 1) * base = base + sum_r delta_r
                    p.sub_(self.base[i], alpha=size - 1)
                    self.base[i].copy_(p)
                else:
                    p.div_(size)
        flag = torch.tensor([int(stop)], device=self.params[0].device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def in_sync(world: World, tensors: list[torch.Tensor]) -> bool:
    """Whether every rank holds bit-identical tensors (checked once, at the end of a run)."""
    if not world.active:
        return True
    local = torch.stack([t.detach().double().sum() for t in tensors])
    gathered = [torch.zeros_like(local) for _ in range(world.size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()
