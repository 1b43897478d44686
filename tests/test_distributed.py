"""torchrun with 2 CPU processes (gloo on loopback): ranks stay in sync, rank 0 writes,
quality matches a single-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.test_train_smoke import analogies_recovered, neighbours_recovered, planted_cfg
from w2v.train import train

ARGS = ["data=local", "data.min_count=1", "model.dim=24", "model.window=3", "model.sample=0",
        "trainer.threads=1", "trainer.progress=false", "trainer.epochs=4",
        "trainer.chunk_words=2000", "trainer.batch_size=256", "trainer.ckpt_every=0",
        "eval.projector_words=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
