"""Every conf/ group combination composes and validates; bad values fail with the key named."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import compose_cfg
from w2v.cli import CONF_DIR
from w2v.config import Config
from w2v.errors import W2VError

CONF = CONF_DIR
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
          for g in ("data", "model", "trainer")}
COMBOS = list(itertools.product(GROUPS["data"], GROUPS["model"], GROUPS["trainer"]))


@pytest.mark.parametrize("data,model,trainer", COMBOS)
def test_every_group_combination_composes(data, model, trainer):
    cfg = compose_cfg([f"data={data}", f"model={model}", f"trainer={trainer}", "data.path=x.txt"])
    assert isinstance(cfg, Config)
    # model=fasttext is skip-gram over words and their n-grams (CBOW: model.arch=cbow)
    assert cfg.model.arch == {"fasttext": "skipgram"}.get(model, model)
    assert (cfg.model.minn, cfg.model.maxn) == ((3, 6) if model == "fasttext" else (3, 0))
    assert cfg.data.path == str(Path("x.txt").resolve())  # recorded absolute


def test_local_paths_are_recorded_absolute_so_a_resume_finds_them_anywhere(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(["data.path='corpus/*.txt'", "trainer.init_from='~/runs/a/vectors.pt'"])
    assert cfg.data.path == str(tmp_path / "corpus" / "*.txt")
    assert cfg.trainer.init_from == str(Path.home() / "runs" / "a" / "vectors.pt")
    assert compose_cfg(["data=text8"]).data.path is None  # the Hub: no path


def test_experiment_sets_the_benchmark_settings():
    cfg = compose_cfg(["+experiment=text8_prefix_bench"])
    assert cfg.data.path.endswith("text8-prefix") and cfg.trainer.epochs == 5
    assert (cfg.model.dim, cfg.model.window, cfg.model.negative) == (100, 5, 5)


def test_adam_family_optimizers_start_at_the_rate_measured_for_them():
    """Adam's steps are normalised: word2vec's SGD rate does not carry over, and Adam's usual
    0.001 trained far weaker vectors on text8-prefix (config.ADAM_LR)."""
    for opt in ("adam", "adamw"):
        assert compose_cfg([f"trainer.optimizer={opt}"]).trainer.lr == 0.01
    assert compose_cfg(["trainer.optimizer=adam", "trainer.lr=0.002"]).trainer.lr == 0.002
    assert compose_cfg(["model=cbow"]).trainer.lr == 0.05  # sgd: word2vec's, per architecture
    cfg = compose_cfg(["+experiment=sparse_adam"])
    t = cfg.trainer
    assert (cfg.model.sparse, t.optimizer, t.lr, t.batch_size) == (True, "sparse_adam", 0.01,
                                                                    1024)
    both = compose_cfg(["+experiment=[text8_prefix_bench,sparse_adam]"])
    assert both.data.path.endswith("text8-prefix") and both.trainer.optimizer == "sparse_adam"


def test_defaults_are_word2vecs():
    cfg = compose_cfg([])
    m, t, d = cfg.model, cfg.trainer, cfg.data
    assert (m.arch, m.dim, m.window, m.negative, m.ns_exponent, m.sample) == (
        "skipgram", 100, 5, 5, 0.75, 1e-3)
    assert (t.lr, t.min_lr, d.min_count, d.hub_id) == (0.025, 0.0001, 5, "afmck/text8")


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.dim=0", "model.dim"),
        ("model.window=0", "model.window"),
        ("model.negative=-1", "model.negative"),
        ("model.sample=-0.1", "model.sample"),
        ("model.loss=nce", "model.loss"),
        ("trainer.lr=0", "trainer.lr"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("trainer.optimizer=lbfgs", "trainer.optimizer"),
        ("trainer.device=tpu", "trainer.device"),
        ("data.min_count=0", "data.min_count"),
        ("data.max_vocab=0", "data.max_vocab"),
        ("data.max_vocab_size=0", "data.max_vocab_size"),
        ("trainer.sync_every=0", "trainer.sync_every"),
        ("trainer.threads=0", "trainer.threads"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(W2VError, match=key.replace(".", r"\.")):
        compose_cfg([override])


def test_threads_default_to_the_usable_cores_shared_by_local_ranks(monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0))
    assert compose_cfg([]).trainer.threads == cores
    assert compose_cfg(["trainer.threads=3"]).trainer.threads == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores + 1))  # torchrun: more ranks than cores
    assert compose_cfg([]).trainer.threads == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert compose_cfg(["trainer.threads=null"]).trainer.threads == 8


def test_sparse_needs_an_optimizer_that_takes_sparse_gradients():
    with pytest.raises(W2VError, match="model.sparse"):
        compose_cfg(["model.sparse=true", "trainer.optimizer=adam"])
    with pytest.raises(W2VError, match="sparse_adam"):
        compose_cfg(["trainer.optimizer=sparse_adam"])
    assert compose_cfg(["model.sparse=true", "trainer.optimizer=sparse_adam"]).model.sparse


@pytest.mark.parametrize("override", ["model.dimm=3", "trainer.epochs=many"])
def test_unknown_keys_and_wrong_types_fail_at_composition(override):
    with pytest.raises(Exception, match=override.split("=")[0].replace(".", r"\.")):
        compose_cfg([override])


def test_the_learning_rate_defaults_to_the_architectures():
    """word2vec.c's -alpha: 0.025 for skip-gram, 0.05 for CBOW; trainer.lr=null means that
    default, resolved when the config is built (so checkpoints and metrics hold the number)."""
    assert compose_cfg([]).trainer.lr == 0.025
    assert compose_cfg(["model=cbow"]).trainer.lr == 0.05
    assert compose_cfg(["model=cbow", "trainer.lr=0.01"]).trainer.lr == 0.01
    with pytest.raises(W2VError, match=r"trainer\.min_lr"):
        compose_cfg(["model=cbow", "trainer.min_lr=0.06"])


def test_the_fasttext_group_takes_cbow_and_fasttexts_settings():
    cfg = compose_cfg(["model=fasttext", "model.arch=cbow", "data.path=x.txt"])
    assert (cfg.model.arch, cfg.model.minn, cfg.model.maxn, cfg.model.bucket) == (
        "cbow", 3, 6, 2_000_000)
    assert cfg.trainer.lr == 0.05  # CBOW's word2vec default, as for model=cbow


@pytest.mark.parametrize("overrides,key", [
    (["model.maxn=6", "model.minn=7"], "model.minn"),
    (["model.maxn=6", "model.minn=0"], "model.minn"),
    (["model.maxn=6", "model.bucket=0"], "model.bucket"),
    (["model.maxn=33"], "model.maxn"),
    (["model.maxn=-1"], "model.maxn"),
])
def test_bad_ngram_settings_are_one_line_naming_the_key(overrides, key):
    with pytest.raises(Exception, match=rf"{key}=.* is out of range") as err:
        compose_cfg([*overrides, "data.path=x.txt"])
    assert "\n" not in str(err.value).strip()
