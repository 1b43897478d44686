"""The house: w2v's modules import one way, in the order data flows (../shared/STYLE.md).

Every import in the package (top-level, inside functions, under TYPE_CHECKING) is read from
the source with `ast`. A module may import only modules of its own stage or of earlier ones,
and no two modules may import each other, directly or around a loop. A new module fails this
test until it is given its place in ORDER.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "w2v"

# The stages in the order the data flows, with the shared pieces first. Where a module sits
# and why, when STYLE.md's list does not say:
ORDER = [
    "errors",  # W2VError and one_line: any module may raise or cut an error
    "atomic",  # atomic writes: caches, checkpoints, vectors, metrics
    "memory",  # freed memory handed back to the system after a phase (corpus build, evaluation)
    "config",  # the typed settings of every stage
    "sweep",  # a multirun's job dir names and end table (Hydra's, from conf/config.yaml)
    "cli",  # --help, key=value parsing, override checks, error lines: every entry point's edge
    # data stages: text -> tokens
    "textlines",  # plain-text files read in bounded blocks (the builder sources.py loads with)
    "sources",  # where the text comes from: local files, the Hub -> a datasets Dataset
    "tokens",  # rows -> token chunks and document ends
    "tokenizer",  # what travels with the vectors: Tokenizer, the learnt Phrases, n-gram rules
    "phrases",  # token chunks -> phrase tokens (word2phrase), before the vocabulary counts
    "vocab",
    "corpus",
    "data",  # `python -m w2v.data`: the data stages end to end, command code above corpus
    "batches",
    "model",
    "engines",  # the package and its engines (autograd, fused, ...) are one stage
    "distributed",  # torchrun: corpus shards and combining the ranks' models
    "checkpoint",  # model + engine state, read by resume and by export
    "monitor",  # what a run reports: the loss curve, TensorBoard, the console/train.log format
    "rundir",  # resume from a run dir: the checkpoint's config reconciled, the run folder kept
    # STYLE.md lists train, export, vectors, evaluate; the imports say otherwise twice:
    "fasttext_bin",  # fastText's .bin format, written by export, read by init_from and export
    "vectors",  # KeyedVectors, the type export.load_vectors returns: before export
    "export",
    "evaluate",
    "init_from",  # trainer.init_from: reads vectors/checkpoints (export, checkpoint) into a model
    "train",  # its loop evaluates every N steps and exports at the end: above both
    "query",  # an entry point on exported vectors
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_imports(path: Path) -> set[str]:
    """The w2v modules `path` imports, wherever the import statement is."""
    found = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from w2v import checkpoint` imports the module w2v.checkpoint.
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("w2v."):
                name = name[len("w2v."):]
                if name in modules:
                    found.add(name)
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): package_imports(p) for p in sorted(PACKAGE.rglob("*.py"))
            if p != PACKAGE / "__init__.py"}


def stage(module: str) -> int:
    top = module.split(".")[0]
    if top not in ORDER:
        raise AssertionError(f"w2v/{module.replace('.', '/')}.py has no place in the flow: "
                             "add it to ORDER in tests/test_layout.py")
    return ORDER.index(top)


def later_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                  if stage(d) > stage(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop, each as the modules around it (depth-first search)."""
    found, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_the_scan_sees_the_package():
    graph = import_graph()
    assert {"corpus", "tokens", "cli", "engines.fused", "data"} <= set(graph)
    # one edge of each kind: top-level, inside a function, `from w2v import module`
    assert {"vocab", "sources"} <= graph["corpus"]
    assert "tokens" in graph["corpus"]  # imported inside the build only
    assert "checkpoint" in graph["train"]
    assert "engines" in graph["engines.fused"] and "vocab" in graph["engines.fused"]


def test_every_module_has_a_place_in_the_flow():
    for module in import_graph():
        stage(module)


def test_no_module_imports_a_later_stage():
    assert later_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_knot_and_a_backward_import():
    # data.py and corpus.py importing each other (the knot this layout removed)
    knot = {"tokens": {"corpus"}, "corpus": {"tokens"}}
    assert cycles(knot) == [["corpus", "tokens", "corpus"]]
    assert later_imports(knot) == ["tokens imports corpus"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    with pytest.raises(AssertionError, match="add it to ORDER"):
        stage("utils")
