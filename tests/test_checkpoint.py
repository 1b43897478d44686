"""Checkpoint writing: a background write holds the model as it was when the loop asked, and
its errors reach the loop; a stop signal's checkpoint is on disk before save returns."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from w2v import checkpoint
from w2v.config import Config, ModelConfig
from w2v.errors import W2VError
from w2v.model import Word2Vec
from w2v.vocab import Vocab

WORDS = ["a", "b", "c", "d"]


def parts():
    vocab = Vocab(WORDS, [4, 3, 2, 1])
    model = Word2Vec(len(WORDS), 5, arch="skipgram")
    engine = SimpleNamespace(state_dict=lambda: {"moments": torch.ones(3)})
    return model, engine, vocab, Config(model=ModelConfig(arch="skipgram", dim=5))


def writer_for(path, vocab, cfg):
    return checkpoint.Writer(path, checkpoint.run_record(vocab, cfg), background=True)


def test_a_background_checkpoint_holds_the_model_as_it_was(tmp_path):
    model, engine, vocab, cfg = parts()
    writer = writer_for(tmp_path, vocab, cfg)
    before = model.input.weight.detach().clone()
    path = writer.save(model, engine, checkpoint.Position(global_step=7))
    with torch.no_grad():
        model.input.weight.add_(1.0)  # training goes on while the file is written
    writer.wait()
    state = checkpoint.load(path)
    assert path.name == "step-00000007.pt" and writer.last == path
    assert torch.equal(state["model"]["input.weight"], before)
    assert torch.equal(state["optimizer"]["moments"], torch.ones(3))
    assert state["position"]["global_step"] == 7


def test_a_snapshot_on_disk_lends_its_tables_to_the_next_and_each_file_holds_its_own_model(
        tmp_path, monkeypatch):
    """The copy of a written checkpoint is reused for the next one (no fresh table-sized
    allocation per checkpoint), and reusing it never changes a file already written or one
    still being written."""
    model, engine, vocab, cfg = parts()
    writer = writer_for(tmp_path, vocab, cfg)
    copies = []
    model_copy = checkpoint._model_copy

    def spy(state, into):
        out = model_copy(state, into)
        copies.append((into is not None, out["input.weight"].data_ptr()))
        return out

    monkeypatch.setattr(checkpoint, "_model_copy", spy)
    expected = {}
    for step in (1, 2, 3):
        with torch.no_grad():
            model.input.weight.fill_(float(step))
        expected[step] = model.input.weight.detach().clone()
        writer.save(model, engine, checkpoint.Position(global_step=step))
        with torch.no_grad():
            model.input.weight.fill_(-1.0)  # training goes on
        deadline = time.monotonic() + 10
        while writer._thread is not None:  # on disk: its tables are the spare for the next
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert [reused for reused, _ in copies] == [False, True, True]
    assert len({ptr for _, ptr in copies}) == 1  # one table-sized copy for the whole run
    writer.wait()
    assert writer._spares == []  # the end of training: the copy's memory goes back
    for step, weight in expected.items():
        state = checkpoint.load(tmp_path / f"step-{step:08d}.pt")
        assert torch.equal(state["model"]["input.weight"], weight)
    copies.clear()
    writer.reserve(model)  # before a loop's clock starts: the first save copies into it too
    writer.save(model, engine, checkpoint.Position(global_step=4))
    writer.wait()
    assert [reused for reused, _ in copies] == [False, True]  # reserve's, then save's


def test_two_reserved_copies_hold_snapshots_taken_faster_than_files_are_written(
        tmp_path, monkeypatch):
    """A GPU's epoch can be shorter than a write: with two copies reserved, the snapshots
    taken while one is still being written allocate nothing (one is written, the newest
    waits, and each newer one takes over the waiting one's tables); every file written holds
    its own step's model, and only the newest waiting one is written."""
    import threading

    model, engine, vocab, cfg = parts()
    writer = writer_for(tmp_path, vocab, cfg)
    writer.reserve(model, copies=2)
    reserved = {t["input.weight"].data_ptr() for t in writer._spares}
    assert len(reserved) == 2
    fresh = []
    model_copy = checkpoint._model_copy
    monkeypatch.setattr(checkpoint, "_model_copy", lambda state, into: fresh.append(into is None)
                        or model_copy(state, into))
    release, write = threading.Event(), checkpoint.write
    monkeypatch.setattr(checkpoint, "write", lambda *a: release.wait(10) and write(*a))
    for step in (1, 2, 3, 4):
        with torch.no_grad():
            model.input.weight.fill_(float(step))
        writer.save(model, engine, checkpoint.Position(global_step=step))
        deadline = time.monotonic() + 10
        while step == 1 and writer._pending is not None:  # step 1 is being written
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert fresh == [False] * 4  # none allocated while step 1 was being written
    release.set()
    writer.wait()
    written = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert written == ["step-00000001.pt", "step-00000004.pt"]  # 2 and 3 were superseded
    for step in (1, 4):
        state = checkpoint.load(tmp_path / f"step-{step:08d}.pt")
        assert torch.equal(state["model"]["input.weight"],
                           torch.full_like(model.input.weight, float(step)))


def test_a_failed_background_write_is_raised_at_the_next_wait(tmp_path):
    model, engine, vocab, cfg = parts()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    writer = writer_for(blocked / "checkpoints", vocab, cfg)
    writer.save(model, engine, checkpoint.Position(global_step=1))
    with pytest.raises(W2VError, match="cannot write"):
        writer.wait()
    writer.wait()  # raised once


def test_wait_true_and_large_tables_write_before_returning(tmp_path, monkeypatch):
    model, engine, vocab, cfg = parts()
    writer = writer_for(tmp_path, vocab, cfg)
    path = writer.save(model, engine, checkpoint.Position(global_step=2), wait=True)
    assert path.is_file() and writer._thread is None
    monkeypatch.setattr(checkpoint.Writer, "BACKGROUND_BYTES", 0)  # tables too big to copy
    path = writer.save(model, engine, checkpoint.Position(global_step=3))
    assert path.is_file() and writer._thread is None
    assert [p.name for p in sorted(tmp_path.glob("step-*.pt"))] == ["step-00000002.pt",
                                                                     "step-00000003.pt"]


def test_the_loop_never_waits_for_the_disk_and_a_newer_snapshot_supersedes_a_waiting_one(
        tmp_path, monkeypatch):
    import threading

    model, engine, vocab, cfg = parts()
    writer = writer_for(tmp_path, vocab, cfg)
    disk_free, writing = threading.Event(), threading.Event()
    write = checkpoint.write

    def slow_write(ckpt_dir, step, state):
        writing.set()
        disk_free.wait(10)  # the disk is slow: every write waits until the test lets it go
        return write(ckpt_dir, step, state)

    monkeypatch.setattr(checkpoint, "write", slow_write)
    writer.save(model, engine, checkpoint.Position(global_step=1))
    assert writing.wait(10)  # 1 is being written
    for step in (2, 3):  # 2 waits in the slot, 3 replaces it
        writer.save(model, engine, checkpoint.Position(global_step=step))
    assert not list(tmp_path.glob("step-*.pt"))  # the saves returned with nothing on disk yet
    disk_free.set()
    writer.wait()
    assert [p.name for p in sorted(tmp_path.glob("step-*.pt"))] == ["step-00000001.pt",
                                                                     "step-00000003.pt"]


def test_the_first_failed_write_is_the_one_reported_and_nothing_after_it_is_written(
        tmp_path, monkeypatch):
    """A snapshot waiting behind a failing write is dropped: the error names the first file
    that could not be written (a full disk fails every later one the same way)."""
    import threading

    model, engine, vocab, cfg = parts()
    writer = writer_for(tmp_path, vocab, cfg)
    writing, queued, attempts = threading.Event(), threading.Event(), []

    def failing_write(ckpt_dir, step, state):
        attempts.append(step)
        writing.set()
        queued.wait(10)  # the loop queues the next snapshot while this one is being written
        raise W2VError(f"cannot write step-{step:08d}.pt: No space left on device")

    monkeypatch.setattr(checkpoint, "write", failing_write)
    writer.save(model, engine, checkpoint.Position(global_step=3))
    assert writing.wait(10)  # 3 is being written (not still waiting, to be superseded)
    writer.save(model, engine, checkpoint.Position(global_step=6))
    queued.set()
    with pytest.raises(W2VError, match="step-00000003.pt"):
        writer.wait()
    assert attempts == [3]


def test_the_vocabulary_is_one_string_on_disk_and_format_1_checkpoints_still_restore(tmp_path):
    """Format 2 stores the vocabulary as one JSON string (a list item per word made the
    background write hold the GIL for milliseconds per thousand words); checkpoint.load gives
    the dict back, and a format-1 checkpoint (the dict itself) restores the same."""
    model, engine, vocab, cfg = parts()
    vocab = Vocab(["zürich", "new_york", "a\tb"], [3, 2, 1])  # JSON round-trips any text
    model = Word2Vec(len(vocab.words), 5, arch="skipgram")
    path = writer_for(tmp_path, vocab, cfg).save(model, engine, checkpoint.Position(),
                                                  wait=True)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "w2v.checkpoint/2" and isinstance(raw["vocab"], str)
    assert checkpoint.load(path)["vocab"] == vocab.to_dict()

    old = dict(raw, format="w2v.checkpoint/1", vocab=vocab.to_dict())
    torch.save(old, tmp_path / "step-00000009.pt")
    fresh = Word2Vec(len(vocab.words), 5, arch="skipgram")
    engine.load_state_dict = lambda state: None
    pos = checkpoint.restore(tmp_path / "step-00000009.pt", fresh, engine, vocab, cfg)
    assert pos == checkpoint.Position()
    assert torch.equal(fresh.input.weight, model.input.weight)

    torch.save(dict(raw, vocab="{not json"), tmp_path / "step-00000010.pt")
    with pytest.raises(W2VError, match="vocabulary cannot be read"):
        checkpoint.load(tmp_path / "step-00000010.pt")


def test_a_subword_snapshot_gathers_its_rows_into_the_writers_table(tmp_path):
    """A subword model's checkpoint holds its trainable rows, gathered straight into the
    writer's table for them (a spare, or a fresh one of the reserved layout): gathering into
    a new table and copying that over was a second copy of the rows at every checkpoint, the
    run's peak memory."""
    import numpy as np

    from w2v.model import Subwords

    offsets, rows = np.array([0, 2, 3, 5]), np.array([0, 4, 1, 2, 9])
    model = Word2Vec(3, 6, subwords=Subwords(2, 3, 20, offsets, rows))
    want = model.checkpoint_state()
    spare = {k: torch.empty_like(v) for k, v in want.items()}
    got = model.checkpoint_state(spare)
    assert got["input.weight"] is spare["input.weight"]
    assert torch.equal(got["input.weight"], model.input.weight.detach()[[0, 1, 2, 4, 9]])

    writer = checkpoint.Writer(tmp_path, {})
    writer.reserve(model)
    writer._spares.clear()  # as after a wait(): the next snapshot's tables are fresh
    fresh = writer._fresh()
    assert {k: (v.shape, v.dtype) for k, v in fresh.items()} == {
        k: (v.shape, v.dtype) for k, v in want.items()}
