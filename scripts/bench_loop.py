"""The training loop's own cost: train() with its engine replaced by one that only sleeps.

    python scripts/bench_loop.py                          # text8-prefix, 5 epochs x 2 steps
    python scripts/bench_loop.py --steps 2 --step-seconds 0.03 --repeat 5

Everything train() does around the engine's steps is measured: the loss curve and TensorBoard
points, the epoch ends, the epoch-end checkpoints (their copy; the write is in the background),
the stop-flag checks. What a GPU adds on top (waiting for queued kernels at each loss read,
a stream idle while the host works) is not: that needs `scripts/bench.py --device cuda`. A
short run on a GPU (text8-prefix, 5 epochs: under a second) pays this cost in full, so it is
worth knowing apart from the engine's speed.

The engine takes `--step-seconds` per step (a sleep, so the loop's background threads run as
they would beside a GPU's kernels) over `--steps` steps per epoch (the cuda engine's are
about cuda_step_words = 2M words each: 2 for text8-prefix). The loop's own seconds are the
run's training seconds less the sleeping; medians and ranges over --repeat runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class SleepingEngine:
    """The Engine protocol with no work: each step sleeps, counting one example."""

    name, reduction, combine = "sleep", "sum", "sum"

    def __init__(self, steps: int, seconds: float) -> None:
        self.steps, self.seconds = steps, seconds

    def begin_epoch(self, epoch: int) -> int:
        return self.steps

    def step(self, epoch: int, step: int, steps: int, lr: float, lr_end: float):
        import torch

        from w2v.engines import Step

        time.sleep(self.seconds)
        return Step(step, steps, torch.ones((), dtype=torch.float64),
                    torch.ones((), dtype=torch.float64))

    def pause(self) -> None:
        pass

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state) -> None:
        pass


def loop_seconds(corpus: Path, tmp: Path, run: int, epochs: int, steps: int,
                 step_seconds: float) -> float:
    from w2v import train as train_mod
    from w2v.config import Config, DataConfig, EvalConfig, ModelConfig, TrainerConfig

    train_mod.make_engine = lambda *args, **kwargs: SleepingEngine(steps, step_seconds)
    cfg = Config(data=DataConfig(path=str(corpus), cache_dir=str(tmp / "cache")),
                 model=ModelConfig(arch="skipgram"),
                 trainer=TrainerConfig(epochs=epochs, progress=False),
                 eval=EvalConfig(dir=None, projector_words=0))
    metrics = train_mod.train(cfg, tmp / f"run-{run}")
    return metrics["train_seconds"] - epochs * steps * step_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per epoch")
    p.add_argument("--step-seconds", type=float, default=0.03)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--corpus", type=Path,
                   default=ROOT.parent / "shared" / "data" / "text8-prefix" / "text8-prefix")
    args = p.parse_args()
    if not args.corpus.is_file():
        sys.exit(f"error: corpus {args.corpus} not found; pass --corpus PATH")
    with tempfile.TemporaryDirectory(prefix="w2v-bench-loop-") as tmp:
        runs = [loop_seconds(args.corpus, Path(tmp), r, args.epochs, args.steps,
                             args.step_seconds) for r in range(args.repeat)]
    ms = sorted(1000 * r for r in runs)
    print(f"the loop's own time over {args.epochs} epochs x {args.steps} steps "
          f"({args.step_seconds * 1000:.0f} ms each): median {statistics.median(ms):.1f} ms, "
          f"range {ms[0]:.1f}-{ms[-1]:.1f} ms ({args.repeat} runs)")


if __name__ == "__main__":
    main()
