"""Engines: how one training step updates the model's weights.

    engine = make_engine(choose_engine(cfg, device), model, corpus, cfg, device)
    steps = engine.begin_epoch(epoch)
    step = engine.step(epoch, 0, steps, lr, lr_end)

Every engine updates the same two tensors, `model.input.weight` (nn.Embedding) and
`model.output.weight` (nn.Linear), so checkpoints, resume, exports, evaluation, TensorBoard and
torchrun work the same whichever engine ran. ENGINES is the one table of which engine runs
which device, optimizer and loss: the automatic choice, the error messages and docs/engines.md's
engine table all read it. Each engine owns its rules: how its loss is reduced (`reduction`)
and how distributed ranks combine its changes (`combine`).

Engines are imported on first use, so a run never imports a backend it does not use (numba
for `fused`, numba.cuda for `cuda` only).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from w2v.errors import W2VError


@dataclass
class Step:
    """What one step reports; `loss_sum` may stay on the device until log time."""

    step: int  # index within the epoch
    steps: int  # steps in this epoch
    loss_sum: torch.Tensor | float
    examples: int | torch.Tensor  # a device tensor for fixed-shape GPU batches
    # (P, 2): the loss and examples of the step's P equal parts in order (its words split
    # evenly), for a loss curve finer than the steps (the cuda engine's long launches).
    curve: torch.Tensor | None = None
    # A GPU event after which `curve` (a pinned copy) is filled: reading it waits for this
    # step's kernel only, not for the steps queued after it.
    ready: Any = None


class Engine(Protocol):
    name: str
    # "sum": every example takes a full SGD step (word2vec's lr is per example); "mean": the
    # batch mean, as Adam-family optimizers expect.
    reduction: str
    # How torchrun ranks combine their models (distributed.Sync): "sum" of the changes, as
    # Hogwild threads add theirs, or "mean" of the parameters.
    combine: str

    def begin_epoch(self, epoch: int) -> int:
        """Prepare the epoch (subsampling, order); return its number of steps."""
        ...

    def step(self, epoch: int, step: int, steps: int, lr: float, lr_end: float) -> Step:
        """Train one step with the learning rate going from lr to lr_end across it. An engine
        may keep working in the background after it returns (fused: its threads run on
        through the epoch, so no thread waits at a step boundary)."""
        ...

    def pause(self) -> None:
        """Finish and stop any work still running, so the weights are whole: the loop calls it
        before a checkpoint, an evaluation, an epoch end or a stop, and when it ends. The
        next `step` starts the work again. A no-op for engines that never run on."""
        ...

    def state_dict(self) -> dict | None: ...

    def load_state_dict(self, state: dict | None) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """One row of the engine table: what an engine runs, and where its code lives."""

    name: str
    module: str  # w2v.engines.<module>.<cls>
    cls: str
    devices: tuple[str, ...]
    optimizers: tuple[str, ...]
    losses: tuple[str, ...]
    sparse: bool  # whether it takes model.sparse=true
    what: str  # one line for docs/engines.md and error messages
    exact: str  # when a run is bit-reproducible (and a resumed run equals an uninterrupted one)
    # Also runs on CPU tensors under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1: tests).
    simulator: bool = False
    subwords: bool = True  # whether it trains fastText's n-grams (model.maxn > 0)

    def runs(self, device: str, optimizer: str, loss: str, sparse: bool,
             subwords: bool = False) -> bool:
        on = device in self.devices or (self.simulator and device == "cpu" and simulated())
        return (on and optimizer in self.optimizers and loss in self.losses
                and (self.sparse or not sparse) and (self.subwords or not subwords))

    def describe(self) -> str:
        return (f"trainer.engine={self.name} runs on {'/'.join(self.devices)} with "
                f"trainer.optimizer={'/'.join(self.optimizers)} and "
                f"model.loss={'/'.join(self.losses)}"
                + ("" if self.sparse else " (model.sparse=false)")
                + ("" if self.subwords else " (word level: model.maxn=0)"))


ALL_OPTIMIZERS = ("sgd", "sparse_adam", "adam", "adamw")
ALL_LOSSES = ("negative", "hs", "softmax")

# In order of preference: `trainer.engine=auto` takes the first row that runs the config.
ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("fused", "fused", "FusedEngine", ("cpu",), ("sgd",), ("negative", "hs"), False,
               "word2vec's per-pair loop compiled with numba, Hogwild over trainer.threads",
               "with trainer.threads=1"),
    EngineSpec("cuda", "cuda", "CudaEngine", ("cuda",), ("sgd",), ("negative", "hs"), False,
               "word2vec's per-pair update as one GPU kernel (numba-cuda), a warp per stretch "
               "of the corpus, atomic adds on the shared tables",
               "with trainer.cuda_warps=1 (concurrent warps' atomic adds land in any order)",
               simulator=True),
    EngineSpec("autograd", "autograd", "AutogradEngine", ("cpu", "cuda"), ALL_OPTIMIZERS,
               ALL_LOSSES, True,
               "batched Word2Vec.forward + loss.backward() with any torch optimizer",
               "on CPU, always"),
)


def engine_table() -> str:
    """ENGINES as docs/engines.md's markdown table (that page holds this output verbatim)."""
    lines = ["| `trainer.engine` | devices | `trainer.optimizer` | `model.loss` | "
             "`model.sparse=true` | n-grams (`model.maxn>0`) | what runs | "
             "exact and resumable bit for bit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in ENGINES:
        cells = (f"`{row.name}`", "/".join(row.devices), ", ".join(row.optimizers),
                 ", ".join(row.losses), "yes" if row.sparse else "no",
                 "yes" if row.subwords else "no", row.what, row.exact)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def simulated() -> bool:
    """Whether numba's CUDA simulator is on (read, as numba does, from the environment)."""
    try:
        return int(os.environ.get("NUMBA_ENABLE_CUDASIM") or 0) != 0
    except ValueError:
        return False


def spec(name: str) -> EngineSpec:
    for row in ENGINES:
        if row.name == name:
            return row
    raise W2VError(f"trainer.engine={name!r} is unknown: use auto or one of "
                   f"{', '.join(r.name for r in ENGINES)}")


def choose_engine(cfg, device: torch.device) -> str:
    """The engine for cfg on device: trainer.engine, checked against the table, or the first
    row that runs this device, optimizer and loss when it is `auto`; then the engine's own
    rules on the rest of cfg (its `check`, if it has one), before any data is read."""
    name = _pick(cfg, device)
    check = getattr(_engine_class(spec(name)), "check", None)
    if check is not None:
        check(cfg, device)
    return name


def _pick(cfg, device: torch.device) -> str:
    t, m = cfg.trainer, cfg.model
    key = (device.type, t.optimizer, m.loss, m.sparse, m.maxn > 0)
    if t.engine == "auto":
        for row in ENGINES:
            if row.runs(*key):
                return row.name
        raise W2VError(f"no engine runs device={device.type}, optimizer={t.optimizer}, "
                       f"loss={m.loss}, sparse={m.sparse}, n-grams={m.maxn > 0}")
    row = spec(t.engine)
    if not row.runs(*key):
        others = [r.name for r in ENGINES if r.runs(*key)]
        fix = (f"use trainer.engine={others[0]} (or auto)" if others
               else "change the device, optimizer or loss")
        raise W2VError(f"{row.describe()}; got device={device.type}, "
                       f"optimizer={t.optimizer}, loss={m.loss}, sparse={m.sparse}, "
                       f"maxn={m.maxn}: {fix}")
    return row.name


def _engine_class(row: EngineSpec):
    return getattr(importlib.import_module(f"w2v.engines.{row.module}"), row.cls)


def make_engine(name: str, model, corpus, cfg, device: torch.device) -> Engine:
    """Build the named engine over `model`'s weights (its module is imported only now)."""
    return _engine_class(spec(name))(model, corpus, cfg, device)
