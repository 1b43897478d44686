"""Engines: how one training step updates the model's weights.

    engine = make_engine(choose_engine(cfg, device), model, corpus, cfg, device)
    steps = engine.begin_epoch(epoch)
    step = engine.step(epoch, 0, steps, lr, lr_end)

Every engine updates the same two tensors, `model.input.weight` (nn.Embedding) and
`model.output.weight` (nn.Linear), so checkpoints, resume, exports, evaluation, TensorBoard and
torchrun work the same whichever engine ran. ENGINES is the one table of which engine runs
which device, optimizer and loss: the automatic choice, the error messages and the README's
engine table all read it. Each engine owns its rules: how its loss is reduced (`reduction`)
and how distributed ranks combine its changes (`combine`).

Engines are imported on first use, so a run never imports a backend it does not use (numba
for `fused`, numba.cuda for `cuda` only).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Protocol

import torch

from w2v.errors import W2VError


@dataclass
class Step:
    """What one step reports; `loss_sum` may stay on the device until log time."""

    step: int  # index within the epoch
    steps: int  # steps in this epoch
    loss_sum: torch.Tensor | float
    examples: int | torch.Tensor  # a device tensor for fixed-shape GPU batches


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
        """Train one step with the learning rate going from lr to lr_end across it."""
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
    what: str  # one line for the README and error messages
    # Also runs on CPU tensors under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1: tests).
    simulator: bool = False

    def runs(self, device: str, optimizer: str, loss: str, sparse: bool) -> bool:
        on = device in self.devices or (self.simulator and device == "cpu" and simulated())
        return (on and optimizer in self.optimizers
                and loss in self.losses and (self.sparse or not sparse))

    def describe(self) -> str:
        return (f"trainer.engine={self.name} runs on {'/'.join(self.devices)} with "
                f"trainer.optimizer={'/'.join(self.optimizers)} and "
                f"model.loss={'/'.join(self.losses)}"
                + ("" if self.sparse else " (model.sparse=false)"))


ALL_OPTIMIZERS = ("sgd", "sparse_adam", "adam", "adamw")
ALL_LOSSES = ("negative", "hs", "softmax")

# In order of preference: `trainer.engine=auto` takes the first row that runs the config.
ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("fused", "fused", "FusedEngine", ("cpu",), ("sgd",), ("negative", "hs"), False,
               "word2vec's per-pair loop compiled with numba, Hogwild over trainer.threads"),
    EngineSpec("cuda", "cuda", "CudaEngine", ("cuda",), ("sgd",), ("negative", "hs"), False,
               "word2vec's per-pair update as one GPU kernel (numba-cuda), a warp per stretch "
               "of the corpus, atomic adds on the shared tables", simulator=True),
    EngineSpec("autograd", "autograd", "AutogradEngine", ("cpu", "cuda"), ALL_OPTIMIZERS,
               ALL_LOSSES, True,
               "batched Word2Vec.forward + loss.backward() with any torch optimizer"),
)


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
    row that runs this device, optimizer and loss when it is `auto`."""
    t, m = cfg.trainer, cfg.model
    key = (device.type, t.optimizer, m.loss, m.sparse)
    if t.engine == "auto":
        for row in ENGINES:
            if row.runs(*key):
                return row.name
        raise W2VError(f"no engine runs device={device.type}, optimizer={t.optimizer}, "
                       f"loss={m.loss}, sparse={m.sparse}")
    row = spec(t.engine)
    if not row.runs(*key):
        others = [r.name for r in ENGINES if r.runs(*key)]
        fix = (f"use trainer.engine={others[0]} (or auto)" if others
               else "change the device, optimizer or loss")
        raise W2VError(f"{row.describe()}; got device={device.type}, "
                       f"optimizer={t.optimizer}, loss={m.loss}, sparse={m.sparse}: {fix}")
    return row.name


def make_engine(name: str, model, corpus, cfg, device: torch.device) -> Engine:
    """Build the named engine over `model`'s weights (its module is imported only now)."""
    row = spec(name)
    cls = getattr(importlib.import_module(f"w2v.engines.{row.module}"), row.cls)
    return cls(model, corpus, cfg, device)
