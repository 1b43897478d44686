"""Checkpoints: everything needed to continue a run exactly, written atomically.

    python -m w2v.train ... trainer.resume=outputs/.../checkpoints/step-00001200.pt

A checkpoint is a plain dict of tensors, numbers, strings and lists (format in docs/design.md),
so it loads with torch.load(weights_only=True): no pickle of our own objects, and a file
carrying a pickle payload is refused rather than run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from w2v.atomic import archive_damage, atomic_torch_save
from w2v.errors import W2VError

FORMAT = "w2v.checkpoint/1"
KEEP = 3  # step checkpoints kept per run; older ones are deleted after a newer one is safe
_NAME = re.compile(r"step-(\d+)\.pt$")


@dataclass
class Position:
    """Where training stands: the next step to run in `epoch`, and totals so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    words_done: int = 0

    def advance(self, epoch: int, next_step: int, words: int) -> None:
        self.epoch, self.step = epoch, next_step
        self.global_step += 1
        self.words_done += words

    def next_epoch(self) -> None:
        self.epoch, self.step = self.epoch + 1, 0


def save(ckpt_dir: Path, model, engine, vocab, cfg, pos: Position) -> Path:
    """Write checkpoints/step-N.pt atomically, then prune all but the newest KEEP."""
    path = Path(ckpt_dir) / f"step-{pos.global_step:08d}.pt"
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": engine.state_dict(),
        "vocab": vocab.to_dict(),
        "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        "position": asdict(pos),
        "rng": {"torch": torch.get_rng_state()},
    }
    atomic_torch_save(state, path)
    for old in sorted(_step_files(ckpt_dir))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load(path: str | Path) -> dict:
    """Load a checkpoint safely (resume and export both read through here); any damage
    becomes one clear W2VError."""
    path = Path(path)
    if not path.is_file():
        raise W2VError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise W2VError(
            f"checkpoint {path} cannot be read ({type(err).__name__}): it is not a w2v "
            "checkpoint, or it is truncated or corrupt (only plain tensors are loaded, never "
            "pickled code); use an earlier checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise W2VError(f"{path} is not a w2v checkpoint (format {FORMAT} expected)")
    damage = archive_damage(path)
    if damage:
        raise W2VError(f"checkpoint {path} is corrupt: {damage}; use an earlier checkpoint")
    return state


def restore(path: Path, model, engine, vocab, cfg) -> Position:
    """Load `path` into model and optimizer after checking it fits this run."""
    state = load(path)
    words = state["vocab"]["words"]
    if list(words) != list(vocab.words):
        raise W2VError(
            f"checkpoint {path} was trained on a different vocabulary ({len(words)} words, "
            f"this corpus gives {len(vocab.words)}); resume with the same data, data.* settings "
            "and trainer.init_from"
        )
    shapes = {k: tuple(v.shape) for k, v in state["model"].items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if shapes != expected:
        raise W2VError(
            f"checkpoint {path} holds tensors of shapes {shapes}, this model needs {expected}; "
            "resume with the same model.* settings (dim, loss)"
        )
    model.load_state_dict(state["model"])  # copies in place: the fused engine's views stay valid
    engine.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    return Position(**state["position"])


def resolve(resume: str, run_dir: Path) -> Path:
    """`latest` means the newest checkpoint in this run dir; anything else is a path."""
    if resume != "latest":
        if not Path(resume).is_file():
            raise W2VError(f"trainer.resume={resume}: the checkpoint does not exist; give an "
                           "existing file or 'latest'")
        return Path(resume)
    found = latest(Path(run_dir) / "checkpoints")
    if found is None:
        raise W2VError(
            f"trainer.resume=latest found no checkpoint in {run_dir}/checkpoints; set "
            "hydra.run.dir to the interrupted run's directory or give a checkpoint path"
        )
    return found


def latest(ckpt_dir: Path) -> Path | None:
    files = sorted(_step_files(ckpt_dir))
    return files[-1] if files else None


def _step_files(ckpt_dir: Path) -> list[Path]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return [p for p in ckpt_dir.iterdir() if _NAME.search(p.name)]
