"""A run dir holds one run, whole: the loss and the epoch records a resume continues, one
run at a time in a run dir, no write through a planted symlink, no stale temporary files.

Each test backs a row of docs/reliability.md ("Run directories (round 3)")."""

from __future__ import annotations

import pytest

from tests.test_train_smoke import _StopAfter, planted_cfg
from w2v import checkpoint
from w2v import train as train_mod
from w2v.train import TrainingInterrupted, train

# 36,000 words in 3,000-word steps: 12 steps per epoch.
FUSED = ("trainer.engine=fused", "trainer.epochs=2", "trainer.chunk_words=3000")
STEPS = 12


def _cut_and_resume(planted, run, monkeypatch, after: int, *over: str) -> dict:
    """Train until a stop is seen after `after` steps, then resume in a new train() call."""
    monkeypatch.setattr(train_mod, "StopFlag", lambda: _StopAfter(after))
    with pytest.raises(TrainingInterrupted):
        train(planted_cfg(planted, *FUSED, *over), run)
    monkeypatch.undo()
    return train(planted_cfg(planted, *FUSED, *over, "trainer.resume=latest"), run)


def test_final_loss_after_a_resume_inside_the_last_epoch_equals_the_uninterrupted(
        planted, tmp_path, monkeypatch):
    full = train(planted_cfg(planted, *FUSED), tmp_path / "full")
    resumed = _cut_and_resume(planted, tmp_path / "cut", monkeypatch, STEPS + 5)
    _, cut = checkpoint.peek(tmp_path / "cut" / "checkpoints" / "step-00000018.pt")
    assert (cut.epoch, cut.step) == (1, 6)  # the stop landed inside the last epoch
    assert resumed["final_loss"] == full["final_loss"]


def test_a_stop_at_an_epoch_boundary_keeps_the_epochs_record(planted, tmp_path, monkeypatch,
                                                              caplog):
    """The stop is seen at the epoch's last step: the epoch's line and its epoch/loss point
    are written before the stop's checkpoint (they used to be lost, the resume starting the
    next epoch)."""
    caplog.set_level("INFO", logger="w2v")
    full = train(planted_cfg(planted, *FUSED), tmp_path / "full")
    caplog.clear()
    resumed = _cut_and_resume(planted, tmp_path / "cut", monkeypatch, STEPS - 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    _, cut = checkpoint.peek(tmp_path / "cut" / "checkpoints" / f"step-{STEPS:08d}.pt")
    assert (cut.epoch, cut.step) == (1, 0) and cut.epoch_loss is not None
    assert _epoch_points(tmp_path / "cut" / "tb") == [1, 2]
    assert resumed["final_loss"] == full["final_loss"]


def _epoch_points(tb) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in sorted(tb.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "epoch/loss" in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars("epoch/loss")]
    return sorted(steps)
