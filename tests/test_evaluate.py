"""evaluate.py equals gensim's evaluators; suites, CLIs (evaluate, query) and fetch_eval."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors as GensimKV

from w2v.config import EvalConfig
from w2v.errors import W2VError
from w2v.evaluate import evaluate_analogies, evaluate_pairs, main, run_suites
from w2v.export import save_vectors
from w2v.vectors import KeyedVectors

ROOT = Path(__file__).resolve().parents[1]
SIMILARITY = ("wordsim353.tsv", "simlex999.txt")


def eval_words_kv(eval_dir: Path, noise: float = 1.0, seed: int = 0):
    """Vectors over the real suites' words where b = a + a per-section offset + noise.

    Accuracy then lands well inside (0, 1), so a wrong convention changes the numbers. Some
    words get a capitalised variant with its own vector (case handling) and fillers follow.
    """
    rng = np.random.default_rng(seed)
    d, vec, order, offset = 32, {}, [], None

    def add(w: str, base: np.ndarray | None = None) -> None:
        if w not in vec:
            vec[w] = rng.normal(size=d) if base is None else base + offset + noise * rng.normal(
                size=d)
            order.append(w)

    for line in (eval_dir / "questions-words.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            offset = rng.normal(size=d)
            continue
        a, b, c, x = line.lower().split()
        for p, q in ((a, b), (c, x)):
            add(p)
            add(q, vec[p])
    for name in SIMILARITY:
        for line in (eval_dir / name).read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                for w in line.split("\t")[:2]:
                    add(w.lower())
    words = list(rng.permutation(order))
    variants = [w.capitalize() for w in words[::20] if w.capitalize() != w]
    rows = [vec[w] for w in words] + [vec[w.lower()] + 0.3 * rng.normal(size=d) for w in variants]
    words += variants + [f"filler{i}" for i in range(2000)]
    rows += list(rng.normal(size=(2000, d)))
    table = np.stack(rows).astype(np.float32)
    g = GensimKV(d)
    g.add_vectors(words, table)
    return KeyedVectors(words, torch.from_numpy(table)), g


@pytest.fixture(scope="module")
def real(eval_dir):
    kv, g = eval_words_kv(eval_dir)
    return eval_dir, kv, g


def gensim_analogies(g, path, restrict, case_insensitive):
    total, sections = g.evaluate_word_analogies(str(path), restrict_vocab=restrict,
                                                case_insensitive=case_insensitive)
    counts = [(s["section"], len(s["correct"]), len(s["correct"]) + len(s["incorrect"]))
              for s in sections[:-1]]
    return total, counts


def split_accuracy(counts, syntactic: bool) -> float:
    part = [(c, t) for name, c, t in counts if name.startswith("gram") == syntactic]
    return sum(c for c, _ in part) / sum(t for _, t in part)


@pytest.mark.parametrize("restrict,case_insensitive", [(30_000, True), (3_000, False)])
def test_analogies_equal_gensim_on_questions_words(real, restrict, case_insensitive):
    eval_dir, kv, g = real
    path = eval_dir / "questions-words.txt"
    total, counts = gensim_analogies(g, path, restrict, case_insensitive)
    ours = evaluate_analogies(kv, path, restrict, case_insensitive)
    assert 0.2 < total < 0.95  # the planted offsets make the test informative
    assert ours.accuracy == pytest.approx(total, abs=1e-4)
    assert [(s.name, s.correct, s.total) for s in ours.sections] == counts
    metrics = run_suites(kv, EvalConfig(dir=None, analogies=[str(path)],
                                        restrict_vocab=restrict,
                                        case_insensitive=case_insensitive))
    for split in ("semantic", "syntactic"):
        want = split_accuracy(counts, split == "syntactic")
        assert metrics[f"analogy/questions-words/{split}"] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("name", SIMILARITY)
@pytest.mark.parametrize("restrict", [None, 1_500])
def test_spearman_equals_gensim_on_real_suites(real, name, restrict):
    eval_dir, kv, g = real
    _, spearman, oov_pct = g.evaluate_word_pairs(str(eval_dir / name),
                                                 restrict_vocab=restrict or len(kv))
    ours = evaluate_pairs(kv, eval_dir / name, restrict)
    assert ours.spearman == pytest.approx(spearman.statistic, abs=1e-4)
    assert 100 * ours.oov_ratio == pytest.approx(oov_pct, abs=1e-9)
    if restrict:
        assert ours.oov > 0  # the restricted run really exercises OOV skipping


# ---- synthetic suites: CRLF, comments, extra columns, spaces, OOV --------------------------


def small_kv():
    g = torch.Generator().manual_seed(3)
    words = ["king", "queen", "man", "woman", "paris", "france", "rome", "italy", "Paris",
             "big", "bigger", "small", "smaller", "cat", "dog"]
    table = torch.randn(len(words), 6, generator=g)
    gk = GensimKV(6)
    gk.add_vectors(words, table.numpy())
    return KeyedVectors(words, table), gk


PAIRS_MESSY = (
    "# word1\tword2\tscore\r\n"
    "# a second comment line\r\n"
    "King\tqueen\t8.5\tnoun\textra\r\n"
    "man  woman   7.0\r\n"
    "cat\tdog\t6.25\r\n"
    "paris\tunknownword\t3.0\r\n"
    "big\tsmall\t2\r\n"
    "rome\titaly\t9\r\n"
    "\r\n"
    "dog\tbigger\t1.5\r\n"
)


def test_similarity_file_variants_equal_gensim_on_clean_copy(tmp_path):
    kv, g = small_kv()
    (tmp_path / "messy.txt").write_bytes(PAIRS_MESSY.encode())
    # gensim wants exactly three tab-separated fields: give it the same pairs that way.
    clean = [" ".join(line.split()[:3]).replace(" ", "\t")
             for line in PAIRS_MESSY.splitlines() if line.strip() and not line.startswith("#")]
    (tmp_path / "clean.tsv").write_text("\n".join(clean) + "\n", encoding="utf-8")
    _, spearman, oov_pct = g.evaluate_word_pairs(str(tmp_path / "clean.tsv"))
    ours = evaluate_pairs(kv, tmp_path / "messy.txt")
    assert (ours.pairs, ours.oov) == (6, 1)
    assert ours.spearman == pytest.approx(spearman.statistic, abs=1e-4)
    assert 100 * ours.oov_ratio == pytest.approx(oov_pct)


ANALOGIES_MESSY = (
    ": capital-world\r\n"
    "paris france rome italy\r\n"
    "rome italy paris france\r\n"
    "paris france berlin germany\r\n"  # OOV: skipped and counted
    "\r\n"
    "too few words\r\n"
    ": gram2-comparative\r\n"
    "big bigger small smaller\r\n"
    "small smaller big bigger\r\n"
    ": family\r\n"
    "KING QUEEN MAN WOMAN\r\n"
    "man woman king queen\r\n"
    ": empty-section\r\n"
)


@pytest.mark.parametrize("case_insensitive", [True, False])
def test_analogy_file_variants_equal_gensim(tmp_path, case_insensitive):
    kv, g = small_kv()
    path = tmp_path / "qw.txt"
    path.write_bytes(ANALOGIES_MESSY.encode())
    total, counts = gensim_analogies(g, path, 30_000, case_insensitive)
    ours = evaluate_analogies(kv, path, 30_000, case_insensitive)
    assert ours.accuracy == pytest.approx(total, abs=1e-4)
    assert [(s.name, s.correct, s.total) for s in ours.sections] == counts
    assert ours.oov == (1 if case_insensitive else 2)  # KING... is OOV when case matters


def test_unusable_suite_files_are_errors(tmp_path):
    kv, _ = small_kv()
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "comments.tsv").write_text("# only\n# comments\n", encoding="utf-8")
    (tmp_path / "orphan.txt").write_text("a b c d\n", encoding="utf-8")
    with pytest.raises(W2VError, match="no 'word1 word2 score' lines"):
        evaluate_pairs(kv, tmp_path / "comments.tsv")
    with pytest.raises(W2VError, match="no 'a b c d' questions"):
        evaluate_analogies(kv, tmp_path / "empty.txt")
    with pytest.raises(W2VError, match="before any ': section'"):
        evaluate_analogies(kv, tmp_path / "orphan.txt")
    with pytest.raises(W2VError, match="does not exist"):
        evaluate_pairs(kv, tmp_path / "missing.tsv")


# ---- run_suites and the CLIs ---------------------------------------------------------------


def test_run_suites_finds_the_standard_files(real):
    eval_dir, kv, _ = real
    metrics = run_suites(kv, EvalConfig(dir=str(eval_dir)))
    for key in ("analogy/questions-words/accuracy", "analogy/questions-words/semantic",
                "analogy/questions-words/syntactic", "analogy/questions-words/oov",
                "analogy/questions-words/section/capital-common-countries",
                "similarity/wordsim353/spearman", "similarity/wordsim353/oov",
                "similarity/simlex999/spearman", "similarity/simlex999/oov"):
        assert key in metrics and np.isfinite(metrics[key])


def test_run_suites_without_suites_says_so(caplog, monkeypatch, tmp_path):
    kv, _ = small_kv()
    monkeypatch.delenv("W2V_EVAL_DIR", raising=False)
    caplog.set_level(logging.INFO, logger="w2v.evaluate")
    # The default eval.dir (nothing fetched there yet) is no error: no suites, one log line.
    assert run_suites(kv, EvalConfig()) == {}
    assert [r.getMessage() for r in caplog.records if "no suites found" in r.getMessage()]
    caplog.clear()
    assert run_suites(kv, EvalConfig(dir=None)) == {}  # null: no evaluation, nothing to say
    assert not caplog.records
    # A folder the user names must exist.
    with pytest.raises(W2VError, match="is not a folder"):
        run_suites(kv, EvalConfig(dir=str(tmp_path / "nowhere")))


def test_run_suites_all_oov_pairs_report_oov_not_nan(tmp_path):
    kv, _ = small_kv()
    (tmp_path / "oov.tsv").write_text("zz\tyy\t1\n", encoding="utf-8")
    metrics = run_suites(kv, EvalConfig(dir=None, similarities=[str(tmp_path / "oov.tsv")]))
    assert metrics == {"similarity/oov/oov": 1.0}


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("W2V_EVAL_DIR", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def small_pt(tmp_path) -> Path:
    kv, _ = small_kv()
    save_vectors(tmp_path / "v.pt", kv.words, None, kv.vectors,
                 {"lowercase": True, "pattern": None})
    return tmp_path / "v.pt"


def test_evaluate_cli_prints_a_table_and_writes_json(tmp_path, small_pt, capsys):
    (tmp_path / "qw.txt").write_bytes(ANALOGIES_MESSY.encode())
    (tmp_path / "pairs.txt").write_bytes(PAIRS_MESSY.encode())
    main([f"vectors={small_pt}", f"eval.analogies=[{tmp_path / 'qw.txt'}]",
          f"eval.similarities=[{tmp_path / 'pairs.txt'}]", "eval.restrict_vocab=100",
          f"json={tmp_path / 'out' / 'm.json'}"])
    table = capsys.readouterr().out
    assert "analogy/qw/accuracy" in table and "similarity/pairs/spearman" in table
    saved = json.loads((tmp_path / "out" / "m.json").read_text(encoding="utf-8"))
    kv, _ = small_kv()
    assert saved["analogy/qw/accuracy"] == evaluate_analogies(kv, tmp_path / "qw.txt", 100).accuracy


def test_evaluate_cli_errors_are_one_line(tmp_path, small_pt, capsys):
    for argv in ([f"vectors={tmp_path / 'missing.pt'}"], [f"vectors={small_pt}", "bogus=1"],
                 [f"vectors={small_pt}", "eval.restrict_vocab=0"],
                 [f"vectors={small_pt}", f"eval.dir={tmp_path / 'nowhere'}"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_evaluate_cli_subprocess(small_pt, tmp_path):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "wordsim353.tsv").write_bytes(PAIRS_MESSY.encode())
    res = run_cli("-m", "w2v.evaluate", f"vectors={small_pt}", f"eval.dir={tmp_path / 'suites'}")
    assert res.returncode == 0, res.stderr
    assert "similarity/wordsim353/spearman" in res.stdout
    # No suite anywhere (nothing fetched into the default eval.dir): an error, not a silent 0.
    res = run_cli("-m", "w2v.evaluate", f"vectors={small_pt}")
    assert res.returncode == 2 and not res.stdout
    assert res.stderr.startswith("error: no suites found") and res.stderr.count("\n") == 1


def test_suites_fetched_once_are_found_by_default(tmp_path, eval_dir, small_pt, monkeypatch):
    """scripts/fetch_eval.py without out= puts the suites where w2v.evaluate (and every
    training run) looks by default: $W2V_EVAL_DIR, else <cache root>/eval."""
    monkeypatch.delenv("W2V_EVAL_DIR", raising=False)
    fetch_eval = load_fetch_eval()
    fetch_eval.main([f"base={eval_dir.as_uri()}"])
    default = Path(os.environ["W2V_CACHE"]) / "eval"
    assert EvalConfig().dir == str(default)
    assert sorted(p.name for p in default.iterdir()) == sorted(fetch_eval.SUITES)
    res = run_cli("-m", "w2v.evaluate", f"vectors={small_pt}")  # no eval.dir given
    assert res.returncode == 0, res.stderr
    assert "similarity/wordsim353/spearman" in res.stdout
    monkeypatch.setenv("W2V_EVAL_DIR", str(tmp_path / "mine"))  # the override wins
    assert EvalConfig().dir == str(tmp_path / "mine")


def test_query_cli_non_interactive(small_pt):
    res = run_cli("-m", "w2v.query", f"vectors={small_pt}", "topn=3", "King", "man:king::woman:?",
                  "paris france rome")
    assert res.returncode == 0, res.stderr
    kv, _ = small_kv()
    out = res.stdout
    assert "nearest to King" in out and "man : king :: woman : ?" in out
    expected = kv.most_similar(["king", "woman"], ["man"], topn=3)[0][0]
    analogy_block = out.split("man : king :: woman : ?")[1].splitlines()
    assert analogy_block[1].split()[0] == expected
    assert len([line for line in out.splitlines() if line.startswith("  ")]) == 9

    res = run_cli("-m", "w2v.query", f"vectors={small_pt}", "kign")
    assert res.returncode == 2 and "did you mean 'king'" in res.stderr


def test_query_cli_interactive_reads_until_eof(small_pt):
    res = run_cli("-m", "w2v.query", f"vectors={small_pt}", "topn=2",
                  stdin="cat\nnotaword\n\nbig:bigger::small:?\n")
    assert res.returncode == 0, res.stderr
    assert "nearest to cat" in res.stdout and "error: 'notaword'" in res.stdout
    assert "big : bigger :: small : ?" in res.stdout


# ---- scripts/fetch_eval.py -----------------------------------------------------------------


def load_fetch_eval():
    spec = importlib.util.spec_from_file_location("fetch_eval", ROOT / "scripts" / "fetch_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_eval_offline_fails_with_one_line(tmp_path, monkeypatch, capsys):
    fetch_eval = load_fetch_eval()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch_eval.urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as exit_info:
        fetch_eval.main([f"out={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are you online?" in err
    assert not list(tmp_path.iterdir())


def test_fetch_eval_from_a_mirror_checks_sha256(tmp_path, eval_dir, capsys):
    fetch_eval = load_fetch_eval()
    fetch_eval.main([f"out={tmp_path / 'ok'}", f"base={eval_dir.as_uri()}"])
    for name in fetch_eval.SUITES:
        assert (tmp_path / "ok" / name).read_bytes() == (eval_dir / name).read_bytes()
    mirror = tmp_path / "bad"
    mirror.mkdir()
    for name in fetch_eval.SUITES:
        (mirror / name).write_text("tampered\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        fetch_eval.main([f"out={tmp_path / 'out'}", f"base={mirror.as_uri()}"])
    assert "sha256" in capsys.readouterr().err


def test_spearman_equals_scipys_with_ties_and_constants():
    """w2v.evaluate.spearman replaces scipy.stats.spearmanr (no scipy at run time): the same
    numbers on ties (average ranks), float32 model scores, tiny and constant inputs."""
    from scipy import stats

    from w2v.evaluate import spearman

    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 353, 999):
        gold = rng.integers(0, 6, n).astype(float)  # human scores: many ties
        model = np.round(rng.standard_normal(n), 2).astype(np.float32)  # some ties too
        assert spearman(gold, model) == pytest.approx(stats.spearmanr(gold, model).statistic,
                                                      abs=1e-12)
        smooth = rng.standard_normal(n)
        assert spearman(smooth, model) == pytest.approx(
            stats.spearmanr(smooth, model).statistic, abs=1e-12)
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
