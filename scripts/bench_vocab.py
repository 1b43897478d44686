"""Data-stage speed and memory: gensim build_vocab vs w2v's cold build, cached rerun and x8 corpus.

    python scripts/bench_vocab.py --repeat 3
    python scripts/bench_vocab.py --phrases --repeat 3     # data.phrases vs gensim's Phrases

Each measurement runs in a fresh subprocess (so peak RSS is that run's own, and nothing is
warm in memory), alternating gensim / cold / cached, and the median of --repeat runs is shown.
Library imports are done before the clock starts on both sides (gensim; torch + datasets).
"Cold" means an empty w2v cache AND an empty datasets Arrow cache. The x8 corpus is --copies
concatenations of the file (one row, like text8), written to a temp file.

--phrases measures phrase detection instead (min_count 5, threshold 10, one pass): gensim's
`Phrases(Text8Corpus(path), min_count=5, threshold=10)` (learning only, the issue's figure),
gensim's whole path to a phrased vocabulary (Phrases, freeze, build_vocab on the phrased
sentences), and w2v's cold build_corpus with data.phrases.passes=1 (count, learn, apply,
vocabulary, encode, cache: everything), next to the plain cold build. numba's loading of the
compiled kernels from its disk cache is inside w2v's clock.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "text8-prefix" / "text8-prefix"


def child(kind: str, path: str, cache: str) -> None:
    """Run one measurement in this process and print {"seconds", "rss_mb"} as JSON."""
    import time

    if kind == "gensim":
        from gensim.models.word2vec import Text8Corpus, Word2Vec

        start = time.perf_counter()
        model = Word2Vec(min_count=5)
        model.build_vocab(Text8Corpus(path))
        seconds, info = time.perf_counter() - start, {"types": len(model.wv)}
    elif kind == "gensim_phrases":
        from gensim.models.phrases import Phrases
        from gensim.models.word2vec import Text8Corpus

        start = time.perf_counter()
        phrases = Phrases(Text8Corpus(path), min_count=5, threshold=10)
        seconds = time.perf_counter() - start
        info = {"phrases": len(phrases.export_phrases())}  # outside the clock
    elif kind == "gensim_phrased_vocab":
        from gensim.models.phrases import Phrases
        from gensim.models.word2vec import Text8Corpus, Word2Vec

        start = time.perf_counter()
        phrases = Phrases(Text8Corpus(path), min_count=5, threshold=10).freeze()
        model = Word2Vec(min_count=5)
        model.build_vocab(phrases[Text8Corpus(path)])
        seconds, info = time.perf_counter() - start, {"types": len(model.wv)}
    else:
        import datasets

        from w2v.config import DataConfig, PhrasesConfig
        from w2v.corpus import build_corpus

        datasets.config.HF_DATASETS_CACHE = os.path.join(cache, "hf")
        passes = 1 if kind == "w2v_phrases" else 0
        start = time.perf_counter()
        c = build_corpus(DataConfig(path=path, min_count=5, cache_dir=os.path.join(cache, "w2v"),
                                    phrases=PhrasesConfig(passes=passes)), progress=False)
        seconds = time.perf_counter() - start
        info = {"types": len(c.vocab), "hit": c.cache_hit, "tokens": len(c.ids)}
        if passes:
            info["phrases"] = len(c.vocab.tokenizer.phrases)
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"seconds": seconds, "rss_mb": rss / 1024, **info}))


def measure(kind: str, path: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--path", str(path), "--cache", str(cache)],
        env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def concatenate(path: Path, copies: int, dest: Path) -> None:
    text = path.read_bytes().strip()
    with open(dest, "wb") as f:
        for i in range(copies):
            f.write(text if i == 0 else b" " + text)


def bench_phrases(path: Path, repeat: int) -> None:
    kinds = ["gensim_phrases", "w2v_phrases", "w2v", "gensim_phrased_vocab"]
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench_phrases_") as tmp:
        for r in range(repeat):
            for kind in kinds:  # alternating, so machine noise hits every side alike
                runs[kind].append(measure(kind, path, Path(tmp) / f"{kind}{r}"))
                assert not runs[kind][-1].get("hit")
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    rss = {k: max(x["rss_mb"] for x in v) for k, v in runs.items()}
    found = runs["w2v_phrases"][0]["phrases"], runs["gensim_phrases"][0]["phrases"]
    print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, phrases found: w2v {found[0]:,}, "
          f"gensim {found[1]:,}; median of {repeat}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    rows = [("gensim Phrases(Text8Corpus), learn", "gensim_phrases"),
            ("gensim Phrases + freeze + build_vocab", "gensim_phrased_vocab"),
            ("w2v build_corpus, phrases, cold", "w2v_phrases"),
            ("w2v build_corpus, no phrases, cold", "w2v")]
    print(f"{'case':<40} {'seconds':>8} {'/ gensim Phrases':>17} {'peak RSS MB':>12}")
    for name, key in rows:
        print(f"{name:<40} {med[key]:>8.3f} {med[key] / med['gensim_phrases']:>16.2f}x "
              f"{rss[key]:>12.0f}")
    ratio = med["w2v_phrases"] / med["gensim_phrases"]
    print(f"target: w2v's whole build with phrases <= 1.5x gensim's Phrases ({ratio:.2f}x); "
          f"the phrase stage alone ~{med['w2v_phrases'] - med['w2v']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--phrases", action="store_true", help="measure phrase detection")
    ap.add_argument("--child", choices=["gensim", "w2v", "gensim_phrases",
                                        "gensim_phrased_vocab", "w2v_phrases"])
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path, args.cache)
        return
    if args.phrases:
        bench_phrases(Path(args.path), args.repeat)
        return

    path = Path(args.path)
    runs: dict[str, list[dict]] = {k: [] for k in ("gensim", "cold", "cached",
                                                   "gensim_x", "cold_x")}
    with tempfile.TemporaryDirectory(prefix="bench_vocab_") as tmp:
        tmp = Path(tmp)
        big = tmp / f"x{args.copies}.txt"
        concatenate(path, args.copies, big)
        for r in range(args.repeat):
            runs["gensim"].append(measure("gensim", path, tmp))
            cache = tmp / f"single{r}"
            runs["cold"].append(measure("w2v", path, cache))
            runs["cached"].append(measure("w2v", path, cache))
            assert runs["cached"][-1]["hit"] and not runs["cold"][-1]["hit"]
        for r in range(args.repeat):
            runs["gensim_x"].append(measure("gensim", big, tmp))
            runs["cold_x"].append(measure("w2v", big, tmp / f"big{r}"))

    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    rss = {k: max(x["rss_mb"] for x in v) for k, v in runs.items()}
    rows = [
        ("gensim build_vocab(Text8Corpus)", "gensim", "gensim"),
        ("w2v build_corpus, cold", "cold", "gensim"),
        ("w2v build_corpus, cached rerun", "cached", "gensim"),
        (f"gensim build_vocab, x{args.copies}", "gensim_x", "gensim"),
        (f"w2v build_corpus, cold, x{args.copies}", "cold_x", "cold"),
    ]
    print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, {runs['cold'][0]['types']:,} types, "
          f"median of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'case':<38} {'seconds':>8} {'ratio':>16} {'peak RSS MB':>12}")
    for name, key, base in rows:
        ratio = f"{med[key] / med[base]:.2f}x {base}"
        print(f"{name:<38} {med[key]:>8.3f} {ratio:>16} {rss[key]:>12.0f}")
    print(f"targets: cold <= 1.5x gensim ({med['cold'] / med['gensim']:.2f}x), cached < 0.5 s "
          f"({med['cached']:.3f}), x{args.copies} <= {args.copies + 1}x cold "
          f"({med['cold_x'] / med['cold']:.2f}x), x{args.copies} RSS < 2048 MB "
          f"({rss['cold_x']:.0f})")


if __name__ == "__main__":
    main()
