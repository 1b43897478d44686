"""cli.py: every entry point's --help, and the same key validation everywhere (the nearest key
named for a typo, schema nodes never offered as options)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from w2v.cli import _defaults, check_keys, config_groups, field_docs, parse_cli, precheck
from w2v.config import Config, register_configs
from w2v.errors import W2VError

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["train", "data", "query", "evaluate", "export"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each entry point's --help, and `w2v.data +data.typo=1`, started at once (imports
    dominate), from a folder outside the repository."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    argvs = {name: [f"w2v.{name}", "--help"] for name in ENTRY_POINTS}
    argvs["data-typo"] = ["w2v.data", "data=local", "data.path=corpus.txt", "+data.typo=1",
                          f"hydra.run.dir={cwd / 'run'}"]
    procs = {name: subprocess.Popen([sys.executable, "-m", *argv], cwd=cwd, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, argv in argvs.items()}
    return {name: (p, *p.communicate(timeout=300)) for name, p in procs.items()}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_prints_the_entry_points_own_usage(runs, name):
    proc, out, err = runs[name]
    assert proc.returncode == 0, err
    assert out.startswith(f"usage: python -m w2v.{name} "), out
    assert "examples:" in out and f"\n  python -m w2v.{name} " in out.split("examples:")[1]
    assert "error" not in err.lower(), err


def test_train_help_lists_groups_and_keys_but_no_schema_nodes(runs):
    _, out, _ = runs["train"]
    assert "model:       cbow, fasttext, skipgram (default)" in out
    assert "+experiment: sparse_adam, text8_prefix_bench" in out
    assert "trainer.*" in out and "trainer.epochs=5 " in out and "--cfg job" in out
    assert "--hydra-help" in out
    from w2v.checkpoint import KEEP

    assert f"the newest {KEEP} are kept" in " ".join(out.split())  # retention, said where seen
    assert "_schema" not in runs["data"][1] and "_schema" not in out


@pytest.mark.parametrize("name", ["train", "query", "evaluate", "export"])
def test_console_scripts_print_their_usage(name, monkeypatch, capsys):
    """pyproject's w2v-<name> scripts call <module>.main: the page names the script."""
    module = __import__(f"w2v.{name}", fromlist=["main"])
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/w2v-{name}", "-h"])
    try:
        module.main()
    except SystemExit as stop:
        assert stop.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: w2v-{name} ") and f"\n  w2v-{name} " in out


def test_data_command_refuses_unknown_keys_as_train_does(runs):
    proc, out, err = runs["data-typo"]
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [
        "error: unknown key data.typo (Key 'typo' not in 'DataConfig') "
        "(python -m w2v.data --cfg job lists every key)"]


@pytest.mark.parametrize("override,nearest", [
    ("trainer.epoch=1", "trainer.epochs"),
    ("+trainer.epoch=1", "trainer.epochs"),
    ("traner.epochs=1", "trainer.epochs"),
    ("model.dimm=3", "model.dim"),
    ("modle.window=3", "model.window"),
    ("data.min_cont=1", "data.min_count"),
    ("eval.restict_vocab=10", "eval.restrict_vocab"),
    ("export.binry=true", "export.binary"),
    ("+lrr=0.1", "trainer.lr"),
])
def test_a_typo_names_the_nearest_key(override, nearest):
    register_configs()
    with pytest.raises(W2VError) as err:
        precheck(["data=local", "data.path=corpus.txt", override])
    key = override.lstrip("+").split("=")[0]
    assert f"unknown key {key} " in str(err.value)
    assert f"did you mean {nearest}?" in str(err.value)
    assert "+trainer" not in str(err.value)  # never the `+key` that is then refused


def test_no_suggestion_when_nothing_is_near():
    with pytest.raises(W2VError) as err:
        check_keys(Config, ["data.typo"])
    assert "did you mean" not in str(err.value)


def test_schema_nodes_are_not_options():
    register_configs()
    groups = config_groups()
    assert groups["model"] == (["cbow", "fasttext", "skipgram"], "skipgram")
    assert not any(o.endswith("_schema") for options, _ in groups.values() for o in options)
    with pytest.raises(W2VError) as err:
        precheck(["model=model_schema"])
    assert "not an option" in str(err.value) and "cbow, fasttext, skipgram" in str(err.value)


def test_key_value_entry_points_name_the_nearest_key_too():
    from w2v import evaluate, export, query

    for module, schema, argv, nearest in (
        (export, export.ExportArgs, ["checkpoint=c.pt", "out=o", "binery=true"], "binary"),
        (query, query.QueryArgs, ["vector=v.pt"], "vectors"),
        (evaluate, evaluate.EvaluateArgs, ["vectors=v.pt", "eval.restrict_vocb=3"],
         "eval.restrict_vocab"),
    ):
        with pytest.raises(W2VError, match=f"did you mean {nearest}\\?"):
            parse_cli(schema, argv, module.USAGE)


def test_export_args_are_export_config_plus_paths():
    """ExportArgs does not re-declare ExportConfig's keys: it is one, plus where to read/write."""
    import dataclasses

    from w2v.config import ExportConfig
    from w2v.export import USAGE, ExportArgs

    args = parse_cli(ExportArgs, ["checkpoint=c.pt", "out=o", "binary=true"], USAGE)
    assert isinstance(args, ExportConfig) and args.binary and args.text
    own = {f.name for f in dataclasses.fields(ExportArgs)} - {
        f.name for f in dataclasses.fields(ExportConfig)}
    assert own == {"checkpoint", "vectors", "out"}


def test_train_help_describes_every_key_with_its_default(runs):
    """Each key's line: key=default, then the summary of its attribute docstring in
    w2v/config.py (the one place settings are described), wrapped over lines as needed."""
    _, out, _ = runs["train"]
    flat = " ".join(out.split())
    docs = field_docs(Config)
    assert set(docs) == set(_defaults(Config))
    for key, doc in docs.items():
        assert doc, f"{key} has no description: give its field an attribute docstring"
        assert re.search(rf" {re.escape(key)}=\S* {re.escape(doc)}", flat), key
    assert " trainer.epochs=5 Passes over the corpus." in flat
    assert " export.average_output=false Also write the input and output vectors averaged" in flat
    assert " model.arch=skipgram " in flat  # the defaults a bare run has, groups applied
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith("  python"))


@pytest.mark.parametrize("name", ["query", "evaluate", "export"])
def test_key_value_help_describes_every_key(runs, name):
    _, out, _ = runs[name]
    module = __import__(f"w2v.{name}", fromlist=["USAGE"])
    schema = {"query": "QueryArgs", "evaluate": "EvaluateArgs", "export": "ExportArgs"}[name]
    docs = field_docs(getattr(module, schema))
    flat = " ".join(out.split())
    for key, doc in docs.items():
        assert doc, f"w2v.{name} key {key} has no description"
        assert f"{key}=" in flat and doc in flat, key
