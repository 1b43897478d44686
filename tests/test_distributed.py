"""torchrun with 2 CPU processes (gloo on loopback): ranks stay in sync, rank 0 writes,
quality matches a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import analogies_recovered, free_port, neighbours_recovered, planted_cfg
from w2v.distributed import Sync, World
from w2v.train import train

ARGS = ["data=local", "data.min_count=1", "model.dim=24", "model.window=3", "model.sample=0",
        "trainer.threads=1", "trainer.progress=false", "trainer.epochs=4",
        "trainer.chunk_words=2000", "trainer.batch_size=256", "trainer.ckpt_every=0",
        "eval.projector_words=0"]


def torchrun(tmp_path, planted, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "w2v.train", f"data.path={planted.path}", f"hydra.run.dir={tmp_path}",
           *ARGS, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("engine", ["fused", "autograd"])
def test_two_processes_stay_in_sync_and_learn(planted, tmp_path, engine):
    done = torchrun(tmp_path / "dist", planted, f"trainer.engine={engine}")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert metrics["engine"] == engine
    # Rank 0 alone writes: one TensorBoard event file, one set of vectors.
    assert len(list((tmp_path / "dist" / "tb").glob("events.out.tfevents.*"))) == 1
    dist_vec = torch.load(tmp_path / "dist" / "vectors.pt", weights_only=True)

    single = planted_cfg(planted, f"trainer.engine={engine}", "trainer.epochs=4",
                         "trainer.chunk_words=2000")
    train(single, tmp_path / "single")
    one = torch.load(tmp_path / "single" / "vectors.pt", weights_only=True)
    for vec in (dist_vec, one):
        assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
        assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5
    assert metrics["corpus_words"] == json.loads(
        (tmp_path / "single" / "metrics.json").read_text())["corpus_words"]


def test_sync_every_n_steps_stays_in_sync_and_learns(planted, tmp_path):
    # Synchronising every 3 steps, and always at checkpoints (every 5 steps) and epoch ends.
    done = torchrun(tmp_path, planted, "trainer.engine=fused", "trainer.sync_every=3",
                    "trainer.ckpt_every=5", "trainer.chunk_words=500")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    steps = [int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("step-*.pt")]
    assert any(n % 5 == 0 and n % 3 for n in steps)  # a checkpoint between regular syncs
    vec = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5


def _sync_worker(rank: int, port: int, results) -> None:
    """Rank r adds (r + 1) to its copy of two shared tensors between synchronisations."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        world = World(rank=rank, size=2)
        out = {}
        for combine in ("sum", "mean"):
            params = [torch.ones(3, 2), torch.full((4, 2), 2.0)]
            sync = Sync(world, params, combine=combine, every=2)
            trace = []
            for stop, force in ((False, False), (rank == 1, False), (False, True)):
                for p in params:
                    p.add_(rank + 1)
                trace.append((sync(stop, force=force), params[0][0, 0].item(),
                              params[1][0, 0].item()))
            out[combine] = trace
        results[rank] = out
    finally:
        dist.destroy_process_group()


def test_sync_sums_or_averages_changes_every_n_steps():
    results = mp.Manager().dict()
    mp.spawn(_sync_worker, args=(free_port(), results), nprocs=2)
    # sum: base + both ranks' changes (+1 and +2 per step); mean: the ranks' average.
    # Step 1 is not due (every=2): each rank keeps its own values. Step 2 synchronises and
    # reports rank 1's stop to both; step 3 is forced.
    assert results[0]["sum"] == [(False, 2.0, 3.0), (True, 7.0, 8.0), (False, 10.0, 11.0)]
    assert results[1]["sum"] == [(False, 3.0, 4.0), (True, 7.0, 8.0), (False, 10.0, 11.0)]
    assert results[0]["mean"] == [(False, 2.0, 3.0), (True, 4.0, 5.0), (False, 5.5, 6.5)]
    assert results[1]["mean"][1:] == results[0]["mean"][1:]


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_two_processes_train_a_subword_model_in_sync(planted, tmp_path, arch):
    """fastText's subword model under torchrun: the ranks combine the whole input table (the
    words' and the n-grams' rows) and stay in sync; rank 0 writes the .bin."""
    done = torchrun(tmp_path, planted, "trainer.engine=fused", f"model={arch}",
                    "model.minn=2", "model.maxn=4", "model.bucket=1000")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert (tmp_path / "fasttext.bin").is_file()
    vec = torch.load(tmp_path / "vectors.pt", weights_only=True)
    assert vec["subwords"]["input"].shape[0] == len(vec["words"]) + 1000
    assert neighbours_recovered(vec["vectors"], vec["words"], planted) >= 0.75
    assert analogies_recovered(vec["vectors"], vec["words"], planted) >= 0.5
