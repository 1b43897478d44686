"""Training end to end on the planted corpus: learning, outputs, TensorBoard, resume."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from tests.conftest import (
    StopAfter,
    analogies_recovered,
    neighbours_recovered,
    planted_cfg,
    planted_table,
    scalars,
    write_planted_suites,
)
from w2v import train as train_mod
from w2v.train import TrainingInterrupted, train

CASES = [
    ("skipgram", "negative", "autograd"),
    ("cbow", "negative", "autograd"),
    ("skipgram", "hs", "autograd"),
    ("cbow", "hs", "autograd"),
    ("skipgram", "softmax", "autograd"),
    ("cbow", "softmax", "autograd"),
    ("skipgram", "negative", "fused"),
    ("cbow", "negative", "fused"),
    ("skipgram", "hs", "fused"),
    ("cbow", "hs", "fused"),
]


@pytest.mark.parametrize("arch,loss,engine", CASES)
def test_learns_planted_structure(planted, tmp_path, arch, loss, engine):
    cfg = planted_cfg(planted, f"model={arch}", f"model.loss={loss}", f"trainer.engine={engine}",
                      "trainer.epochs=4", "trainer.chunk_words=2000")
    metrics = train(cfg, tmp_path)
    vec = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert metrics["engine"] == engine
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5
    losses = scalars(tmp_path / "tb", "train/loss")
    assert losses[-1] < losses[0]  # loss falls


def test_run_dir_outputs_and_tensorboard(planted, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = planted_cfg(planted, "trainer.epochs=2", "trainer.engine=autograd")
    metrics = train(cfg, tmp_path)
    for name in ("vectors.pt", "vectors.txt", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "checkpoints").glob("step-*.pt"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("words_per_sec", "train_seconds", "epochs", "final_loss"):
        assert key in saved and saved[key] == pytest.approx(metrics[key])
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/words_per_sec", "epoch/loss"} <= tags
    assert len(acc.Scalars("epoch/loss")) == 2
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] <= 0.025
    assert (tmp_path / "tb" / "projector_config.pbtxt").is_file()


def test_train_loss_is_the_interval_mean_not_a_running_total(planted, tmp_path):
    cfg = planted_cfg(planted, "trainer.epochs=3", "trainer.engine=autograd",
                      "model.loss=negative")
    train(cfg, tmp_path)
    losses = scalars(tmp_path / "tb", "train/loss")
    # a cumulative tally would grow; a per-pair mean of NS loss starts near 6 * log 2
    assert max(losses) < 6 * 0.7 and losses[-1] < losses[0]


@pytest.mark.parametrize("engine", ["autograd", "fused"])
def test_interrupted_and_resumed_equals_uninterrupted(planted, tmp_path, monkeypatch, engine):
    over = (f"trainer.engine={engine}", "trainer.epochs=2", "trainer.chunk_words=3000",
            "trainer.batch_size=512")
    train(planted_cfg(planted, *over), tmp_path / "full")
    full = torch.load(tmp_path / "full" / "vectors.pt", weights_only=True)["vectors"]

    monkeypatch.setattr(train_mod, "StopFlag", lambda: StopAfter(7))
    with pytest.raises(TrainingInterrupted) as stop:
        train(planted_cfg(planted, *over), tmp_path / "cut")
    assert stop.value.code == 128 + signal.SIGTERM
    monkeypatch.undo()
    train(planted_cfg(planted, *over, "trainer.resume=latest"), tmp_path / "cut")
    resumed = torch.load(tmp_path / "cut" / "vectors.pt", weights_only=True)["vectors"]
    assert torch.equal(full, resumed)


def test_nan_loss_stops_with_a_clear_message(planted, tmp_path):
    from w2v.errors import W2VError

    # (SGD at this lr is refused before training: see test_sgd_batches_too_large_...)
    cfg = planted_cfg(planted, "trainer.engine=autograd", "trainer.lr=1e30",
                      "trainer.optimizer=adam", "model.loss=softmax", "trainer.epochs=2")
    # A loss that leaves the sane range stops the run before it reaches NaN (LOSS_FACTOR).
    with pytest.raises(W2VError, match="loss became|the training diverged: the loss reached"):
        train(cfg, tmp_path)


def test_sparse_adam_at_its_default_rate_learns_what_adams_usual_rate_does_not(planted,
                                                                               tmp_path):
    """+experiment=sparse_adam (lr 0.01, config.ADAM_LR) recovers the planted structure in 2
    epochs; Adam's usual 0.001, the rate the README once suggested, recovers none of it."""
    found = {}
    for lr in ("null", "0.001"):
        cfg = planted_cfg(planted, "+experiment=sparse_adam", f"trainer.lr={lr}",
                          "trainer.epochs=2", "eval.projector_words=0")
        train(cfg, tmp_path / lr)
        vec = torch.load(tmp_path / lr / "vectors.pt", weights_only=True)
        found[lr] = (neighbours_recovered(vec["vectors"], vec["words"], planted),
                     analogies_recovered(vec["vectors"], vec["words"], planted))
    assert found["null"] == (1.0, 1.0)
    assert found["0.001"][0] == 0.0 and found["0.001"][1] < 0.5


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_fused_and_autograd_engines_learn_the_same_geometry(planted, tmp_path, arch):
    """The fast engine must give vectors of the same quality as the autograd model: compare the
    planted words' cosine-similarity matrices of both engines, not just each one's scores."""
    sims = {}
    for engine in ("fused", "autograd"):
        cfg = planted_cfg(planted, f"model={arch}", f"trainer.engine={engine}",
                          "trainer.epochs=4", "trainer.chunk_words=2000")
        train(cfg, tmp_path / engine)
        vec = torch.load(tmp_path / engine / "vectors.pt", weights_only=True)
        assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
        assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5
        table = planted_table(vec["vectors"], vec["words"], planted).flatten(0, 1)
        sims[engine] = (table @ table.T)[torch.triu_indices(len(table), len(table), 1).unbind()]
    corr = torch.corrcoef(torch.stack([sims["fused"], sims["autograd"]]))[0, 1]
    assert corr > 0.8


def test_fixed_shape_batches_train_like_the_gpu_path(planted, tmp_path, monkeypatch):
    """The batches a GPU gets (fixed shapes, 0/1 weights, no host sync per step) run through
    the whole loop on the CPU and learn the planted structure."""
    from w2v import batches

    original = batches.Batches.__init__

    def fixed_shape(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.compact = False

    monkeypatch.setattr(batches.Batches, "__init__", fixed_shape)
    cfg = planted_cfg(planted, "trainer.engine=autograd", "trainer.epochs=4")
    metrics = train(cfg, tmp_path)
    vec = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5
    assert math.isfinite(metrics["final_loss"])


def _fixed_shape_batches(monkeypatch) -> None:
    """The batches a GPU gets (fixed shapes, 0/1 weights), on the CPU: the same arithmetic."""
    from w2v import batches

    original = batches.Batches.__init__

    def fixed_shape(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.compact = False

    monkeypatch.setattr(batches.Batches, "__init__", fixed_shape)


def test_sgd_batches_too_large_to_train_are_refused(planted, tmp_path, monkeypatch):
    """The old trainer=gpu default (autograd, SGD, 4,096 centres, every example's step summed)
    diverges on any device: with the GPU's fixed-shape batches on the CPU the loss explodes.
    It is refused in one line naming the fix; the largest accepted batch trains."""
    from w2v.engines.autograd import AutogradEngine
    from w2v.errors import W2VError

    _fixed_shape_batches(monkeypatch)
    over = ("trainer.engine=autograd", "model.sample=1e-3", "trainer.epochs=4")
    too_big = planted_cfg(planted, *over, "trainer.batch_size=4096")
    with pytest.raises(W2VError) as refused:
        train(too_big, tmp_path / "refused")
    assert "\n" not in str(refused.value) and "trainer.engine=auto" in str(refused.value)
    assert not (tmp_path / "refused").exists()  # refused before anything was read or written

    monkeypatch.setattr(AutogradEngine, "check", staticmethod(lambda cfg, device: None))
    try:  # what the refusal prevents
        metrics = train(too_big, tmp_path / "diverged")
        assert not metrics["final_loss"] < 100  # exploded (NaN or huge)
    except W2VError as err:
        assert "loss became" in str(err) or "the training diverged" in str(err)
    monkeypatch.undo()
    _fixed_shape_batches(monkeypatch)
    # window 3: 4 examples per centre; 0.025 x 1536 x 4 is the limit, 0.025 x 1024 x 6
    largest = planted_cfg(planted, *over, "trainer.batch_size=1536")
    metrics = train(largest, tmp_path / "largest")
    vec = torch.load(tmp_path / "largest" / "vectors.pt", weights_only=True)
    assert math.isfinite(metrics["final_loss"])
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5


def test_softmax_under_trainer_gpu_trains(planted, tmp_path, monkeypatch):
    """trainer=gpu with model.loss=softmax: the autograd engine (no kernel does softmax) at
    trainer=gpu's batch, with the GPU's fixed-shape batches, run here on the CPU; the CPU
    default batch (1,024, which explodes on text8-prefix) is refused."""
    from w2v.errors import W2VError

    with pytest.raises(W2VError, match="model.loss=softmax"):
        train(planted_cfg(planted, "model.loss=softmax", "trainer.batch_size=1024"),
              tmp_path / "refused")
    _fixed_shape_batches(monkeypatch)
    cfg = planted_cfg(planted, "trainer=gpu", "trainer.device=cpu", "model.loss=softmax",
                      "trainer.batch_size=256", "trainer.epochs=4")  # trainer=gpu's batch
    metrics = train(cfg, tmp_path)
    vec = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert metrics["engine"] == "autograd" and math.isfinite(metrics["final_loss"])
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda(planted, tmp_path):
    """trainer=gpu picks the cuda engine (with numba-cuda; else it says how to install it);
    the autograd engine still trains on CUDA at its default batch."""
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is not None:
        metrics = train(planted_cfg(planted, "trainer=gpu", "trainer.epochs=4",
                                    "model.sample=1e-3"), tmp_path / "cuda")
        vec = torch.load(tmp_path / "cuda" / "vectors.pt", weights_only=True)
        assert metrics["engine"] == "cuda"
        assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    cfg = planted_cfg(planted, "trainer=gpu", "trainer.engine=autograd", "trainer.epochs=4",
                      "model.sample=1e-3")
    metrics = train(cfg, tmp_path / "autograd")
    vec = torch.load(tmp_path / "autograd" / "vectors.pt", weights_only=True)
    assert metrics["engine"] == "autograd"
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75


def test_eval_curves_and_projector_reach_tensorboard(planted, tmp_path):
    """What `tensorboard --logdir <run>/tb` shows, read back with TensorBoard's own readers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suites = write_planted_suites(tmp_path / "suites", planted)
    cfg = planted_cfg(planted, "trainer.epochs=3", "trainer.engine=autograd",
                      f"eval.dir={suites}", "trainer.eval_every=20")
    metrics = train(cfg, tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    analogy = "eval/analogy/questions-words/accuracy"
    assert {analogy, "eval/similarity/wordsim353/spearman"} <= tags
    curve = [e.value for e in acc.Scalars(analogy)]
    assert len(curve) >= 2 and curve[-1] >= 0.5  # evaluated during training and at the end
    assert metrics[analogy] == pytest.approx(curve[-1])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["eval/similarity/wordsim353/spearman"] > 0.3  # 3 tied score levels
    projector = (tmp_path / "run" / "tb" / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in projector and "tensors.tsv" in projector
    meta = next((tmp_path / "run" / "tb").glob("*/input_vectors/metadata.tsv")).read_text()
    assert meta.splitlines()[0] == "word\tcount" and len(meta.splitlines()) == 51


def test_eval_curves_get_a_point_per_epoch_by_default(planted, tmp_path):
    """With suites present, every eval/* scalar has one point per epoch (at its last word),
    the final one being the metrics' (not evaluated twice); trainer.eval_epochs=false leaves
    the final point alone."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suites = write_planted_suites(tmp_path / "suites", planted)
    points = {}
    for name, extra in (("per-epoch", []), ("final-only", ["trainer.eval_epochs=false"])):
        cfg = planted_cfg(planted, "trainer.epochs=2", "trainer.engine=autograd",
                          f"eval.dir={suites}", "eval.projector_words=0", *extra)
        metrics = train(cfg, tmp_path / name)
        acc = EventAccumulator(str(tmp_path / name / "tb"))
        acc.Reload()
        tags = [t for t in acc.Tags()["scalars"] if t.startswith("eval/")]
        assert "eval/analogy/questions-words/accuracy" in tags
        points[name] = {t: [e.step for e in acc.Scalars(t)] for t in tags}
        for tag in tags:
            assert acc.Scalars(tag)[-1].value == pytest.approx(metrics[tag])
    words = metrics["corpus_words"]
    assert all(steps == [words, 2 * words] for steps in points["per-epoch"].values())
    assert all(steps == [2 * words] for steps in points["final-only"].values())


def test_hydra_multirun_sweeps_every_combination(planted, tmp_path):
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "w2v.train", "-m", "model=skipgram,cbow", "model.dim=8,16",
           "data=local", f"data.path={planted.path}", "data.min_count=1", "trainer.epochs=1",
           "trainer.progress=false", "trainer.threads=1", "eval.projector_words=0",
           f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [r.name.split("_", 1)[0] for r in runs] == ["0", "1", "2", "3"]
    dims = set()
    for run in runs:
        vec = torch.load(run / "vectors.pt", weights_only=True)
        dims.add(vec["vectors"].shape[1])
        assert (run / "metrics.json").is_file() and (run / "tb").is_dir()
    assert dims == {8, 16}


def test_softmax_on_the_cpu_warns_with_the_cost_and_the_alternatives(planted, tmp_path, caplog):
    caplog.set_level("WARNING", logger="w2v.train")
    train(planted_cfg(planted, "model.loss=softmax", "trainer.epochs=1",
                      "eval.projector_words=0"), tmp_path / "softmax")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "model.loss=softmax on the CPU scores all" in warning
    assert "times the work of model.loss=negative" in warning
    assert "model.loss=hs" in warning and "trainer.device=cuda" in warning
    caplog.clear()
    train(planted_cfg(planted, "trainer.epochs=1", "eval.projector_words=0"), tmp_path / "ns")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
