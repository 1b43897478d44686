"""w2v against gensim, side by side in one run (the protocol of ../shared/BENCHMARK.md).

    python scripts/bench.py --model skipgram --epochs 1 --repeat 3
    python scripts/bench.py --model cbow --epochs 5 --quality       # + analogy/WS353/SimLex
    python scripts/bench.py --model skipgram --scale 1,4,8           # cost growth
    python scripts/bench.py --rss-epochs 20                          # RSS flat across epochs
    python scripts/bench.py --model skipgram,cbow --threads 1,2,4,8,16 --repeat 3   # threads
    python scripts/bench.py --device cuda --repeat 3                 # the GPU protocol
    python scripts/bench.py --device cuda --kinds subwords --repeat 3 # its subword rows only
    python scripts/bench.py --device cuda --sides w2v --trace traces # where a GPU run's time goes
    python scripts/bench.py --ngrams --model skipgram,cbow --threads 1,2 --repeat 3   # subwords
    python scripts/bench.py --ngrams --epochs 5 --quality --sides w2v,fasttext,gensim-fasttext

--ngrams trains fastText's subword model (char n-grams minn 3, maxn 6, --bucket rows) on w2v's
side, against fastText (the `fasttext-wheel` package's train_unsupervised, timed alone) with
n-grams ("fasttext") and without ("fasttext-words"), and gensim's FastText
("gensim-fasttext"); the default sides are then w2v,fasttext. Subword quality is scored by
gensim's evaluators on each side's fastText .bin read by gensim's load_facebook_vectors, on
the vocabulary's words (the rows "analogy@30k", "WS353", "SimLex-999") and on every pair of
the suites, unseen words through their n-grams ("... every pair").

--device cuda runs BENCHMARK.md's GPU protocol in one go: w2v's cuda engine with every CPU
core for the peers (--threads, default os.cpu_count()), text8-prefix 5 epochs skip-gram and
CBOW (raw words/s, quality, peak GPU memory) and text8-prefix x8 1 epoch (raw words/s), for
each of --kinds: "words" (word2vec) against gensim, "subwords" (fastText's model, --bucket
rows) against fastText; headed by the GPU's name and the engine's concurrency
(trainer.cuda_warps, --cuda-warps). --ngrams there means --kinds subwords.

--seeds 1,2,3 gives the repeats those seeds in turn (both sides alike): quality figures are then
the mean over the runs with their range, the seed noise the issue's quality bounds speak of
(with one seed, a GPU engine whose randomness is positional repeats one draw).

Each measurement runs in a fresh subprocess (so peak RSS is that side's alone), alternating
w2v and gensim and swapping the order every repeat so machine noise hits both alike. Both sides
get the same corpus file, settings and thread count (gensim's `workers`); quality is scored on
both sides' vectors by gensim's own evaluators. Speed figures are medians over --repeat runs.
With several models or thread counts, every repeat runs each (model, threads) point once,
both sides alternating, so drift in the machine's load spreads over all points alike, and the
result is one table of words/s and ratios per thread count.

raw words/s = corpus words (before min_count and subsampling) x epochs / training seconds;
training seconds exclude the vocabulary build, reported on its own rows (w2v: cold, i.e. load +
count + encode + cache into an empty cache, and cached, i.e. a rerun that finds the cache).
They include w2v's checkpoint at each epoch end, which the row "raw words/s, checkpoints
excluded" takes out (on a GPU the checkpoints can take longer than the training itself).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure the w2v of this checkout, not another installed one
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_CORPUS = SHARED / "text8-prefix" / "text8-prefix"
DEFAULT_EVAL = SHARED / "eval"
# The starting learning rate, the same on both sides, is --lr or w2v's default for the
# architecture (w2v.config.ARCH_LR, word2vec.c's: 0.025 skip-gram, 0.05 CBOW; gensim's own
# default is 0.025 for both); the workers get it as --lr.
SETTINGS = dict(dim=100, window=5, negative=5, sample=1e-3, min_count=5, ns_exponent=0.75,
                min_lr=0.0001, seed=1)
NGRAMS = dict(minn=3, maxn=6)  # fastText's defaults; the bucket rows are --bucket


# ------------------------------------------------------------------------------ the workers


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def score(kv, eval_dir: Path) -> dict:
    """Quality by gensim's evaluators (the same for both sides)."""
    out = {}
    qw = eval_dir / "questions-words.txt"
    if qw.is_file():
        acc, _ = kv.evaluate_word_analogies(str(qw), restrict_vocab=30000, case_insensitive=True)
        out["analogy"] = acc
    for name, file in (("ws353", "wordsim353.tsv"), ("simlex", "simlex999.txt")):
        if (eval_dir / file).is_file():
            pearson, spearman, oov = kv.evaluate_word_pairs(str(eval_dir / file))
            out[name] = float(spearman.statistic if hasattr(spearman, "statistic")
                              else spearman[0])
            out[f"{name}_oov"] = oov
    return out


def score_every_pair(kv, eval_dir: Path) -> dict:
    """Spearman over every pair of the suites, unseen words through their n-grams (a subword
    model's KeyedVectors gives every word a vector): the share of pairs scored is 100%."""
    from scipy.stats import spearmanr

    out = {}
    for name, file in (("ws353", "wordsim353.tsv"), ("simlex", "simlex999.txt")):
        path = eval_dir / file
        if not path.is_file():
            continue
        gold, model = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if line.startswith("#") or len(fields) < 3:
                continue
            a, b = fields[0].lower(), fields[1].lower()
            gold.append(float(fields[2]))
            model.append(float(kv.similarity(a, b)))
        out[f"{name}_all"] = float(spearmanr(gold, model).statistic)
    return out


def score_fasttext_bin(path: Path, eval_dir: Path) -> dict:
    """Both scores of a subword model, from its .bin through gensim's loader."""
    from gensim.models.fasttext import load_facebook_vectors

    kv = load_facebook_vectors(str(path))
    return score(kv, eval_dir) | score_every_pair(kv, eval_dir)


def _scratch(prefix: str) -> str:
    """A temporary folder removed when the worker process exits: a run's (1.7 GB with
    n-grams: vectors.pt, fasttext.bin, checkpoints) used to be left in /tmp by every run."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def worker_w2v(args) -> dict:
    import datasets  # noqa: F401  (imported lazily by a cold build: keep imports out of its time)
    from gensim.models import KeyedVectors

    from w2v.config import Config, DataConfig, EvalConfig, ExportConfig, ModelConfig, TrainerConfig
    from w2v.corpus import build_corpus
    from w2v.engines import fused
    from w2v.train import train

    cache = _scratch("w2v-bench-cache-")
    data = DataConfig(path=str(args.corpus), min_count=args.min_count, cache_dir=cache)
    t0 = time.perf_counter()
    corpus = build_corpus(data, progress=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_corpus(data, progress=False)
    cached = time.perf_counter() - t0
    compile_s = fused.warmup() if args.device == "cpu" else 0.0
    saving = time_checkpoints()
    epoch_speeds = record_epochs()

    cfg = Config(
        data=data,
        model=ModelConfig(arch=args.model, dim=SETTINGS["dim"], window=SETTINGS["window"],
                          negative=SETTINGS["negative"], sample=SETTINGS["sample"],
                          ns_exponent=SETTINGS["ns_exponent"],
                          **(NGRAMS | {"bucket": args.bucket} if args.ngrams else {})),
        trainer=TrainerConfig(epochs=args.epochs, lr=args.lr, min_lr=SETTINGS["min_lr"],
                              threads=args.threads, seed=args.seed, device=args.device,
                              engine=args.engine, progress=False, ckpt_every=0,
                              **({"batch_size": args.batch_size} if args.batch_size else {}),
                              cuda_warps=args.cuda_warps),
        eval=EvalConfig(dir=None, projector_words=0),
        export=ExportConfig(text=True),
    )
    run_dir = Path(_scratch("w2v-bench-run-"))
    sampler = RssSampler() if args.rss_trace else None
    gpu = gpu_before(args.device)
    if args.trace:
        annotate_phases()
    tracer = start_trace(args.device) if args.trace else None
    metrics = train(cfg, run_dir)
    traced = finish_trace(tracer, args) if tracer else {}
    words = corpus.raw_tokens * args.epochs
    train_s = metrics["train_seconds"]
    out = {
        "side": "w2v",
        "engine": metrics["engine"],
        "words": corpus.raw_tokens,
        "vocab": len(corpus.vocab),
        "train_seconds": train_s,
        "words_per_sec": words / train_s,
        "checkpoint_seconds": saving["seconds"],
        "words_per_sec_no_ckpt": words / max(train_s - saving["seconds"], 1e-9),
        **epoch_figures(epoch_speeds),
        "vocab_seconds": cold,
        "vocab_cached_seconds": cached,
        "compile_seconds": compile_s,
        "peak_rss_mib": peak_rss_mib(),
        **gpu_after(gpu, args),
        **traced,
    }
    if sampler:
        out["rss_trace_mib"] = sampler.stop()
    if args.quality and args.ngrams:
        out.update(score_fasttext_bin(run_dir / "fasttext.bin", args.eval_dir))
    elif args.quality:
        kv = KeyedVectors.load_word2vec_format(str(run_dir / "vectors.txt"))
        out.update(score(kv, args.eval_dir))
    return out


def worker_fasttext(args, ngrams: bool) -> dict:
    """fastText (the fasttext-wheel package) at the same settings; train_unsupervised timed
    alone (it reads the corpus and builds its vocabulary inside: it cannot be split)."""
    import fasttext

    t0 = time.perf_counter()
    model = fasttext.train_unsupervised(
        str(args.corpus), model=args.model, dim=SETTINGS["dim"], ws=SETTINGS["window"],
        neg=SETTINGS["negative"], t=SETTINGS["sample"], minCount=args.min_count,
        epoch=args.epochs, thread=args.threads, lr=args.lr, bucket=args.bucket,
        **({"minn": NGRAMS["minn"], "maxn": NGRAMS["maxn"]} if ngrams else {"maxn": 0}),
        verbose=0)  # (fastText takes no seed)
    train_s = time.perf_counter() - t0
    words = len(Path(args.corpus).read_bytes().split())  # raw words, counted as w2v's are
    out = {"side": "fasttext" if ngrams else "fasttext-words", "engine": "fasttext",
           "words": words, "vocab": len(model.words), "train_seconds": train_s,
           "words_per_sec": words * args.epochs / train_s, "peak_rss_mib": peak_rss_mib()}
    if args.quality:
        path = Path(_scratch("w2v-bench-ft-")) / "model.bin"
        model.save_model(str(path))
        out.update(score_fasttext_bin(path, args.eval_dir) if ngrams else
                   score(_fasttext_word_vectors(model), args.eval_dir))
    return out


def _fasttext_word_vectors(model):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(model.get_dimension())
    kv.add_vectors(model.words, model.get_input_matrix()[:len(model.words)])
    return kv


def worker_gensim_fasttext(args) -> dict:
    from gensim.models import FastText
    from gensim.models.word2vec import Text8Corpus

    model = FastText(
        sg=int(args.model == "skipgram"), vector_size=SETTINGS["dim"], window=SETTINGS["window"],
        negative=SETTINGS["negative"], hs=0, sample=SETTINGS["sample"],
        min_count=args.min_count, ns_exponent=SETTINGS["ns_exponent"], alpha=args.lr,
        min_alpha=SETTINGS["min_lr"], workers=args.threads, epochs=args.epochs, seed=args.seed,
        min_n=NGRAMS["minn"], max_n=NGRAMS["maxn"], bucket=args.bucket, cbow_mean=1)
    sentences = Text8Corpus(str(args.corpus))
    t0 = time.perf_counter()
    model.build_vocab(sentences)
    vocab_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    train_s = time.perf_counter() - t0
    out = {"side": "gensim-fasttext", "engine": "gensim FastText",
           "words": model.corpus_total_words, "vocab": len(model.wv),
           "train_seconds": train_s,
           "words_per_sec": model.corpus_total_words * args.epochs / train_s,
           "vocab_seconds": vocab_s, "peak_rss_mib": peak_rss_mib()}
    if args.quality:
        out.update(score(model.wv, args.eval_dir) | score_every_pair(model.wv, args.eval_dir))
    return out


WORKERS = {"w2v": lambda a: worker_w2v(a), "gensim": lambda a: worker_gensim(a),
           "fasttext": lambda a: worker_fasttext(a, True),
           "fasttext-words": lambda a: worker_fasttext(a, False),
           "gensim-fasttext": lambda a: worker_gensim_fasttext(a)}


def time_checkpoints() -> dict:
    """Count the seconds train()'s loop spends on checkpoints (it still writes them): the
    snapshot, and the whole write where it is not in the background. On a GPU the snapshot's
    copy would first wait for the steps still queued: that wait is training, so the GPU is
    synchronised before the clock starts."""
    import torch

    from w2v import checkpoint

    saving = {"seconds": 0.0}
    save = checkpoint.Writer.save

    def timed(*a, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            return save(*a, **kw)
        finally:
            saving["seconds"] += time.perf_counter() - t0

    checkpoint.Writer.save = timed
    return saving


def record_epochs() -> list[float]:
    """Collect each epoch's words/s as train() logs it (the epoch's steps, from its start to
    its loss read; the checkpoint after it excluded)."""
    from w2v import monitor

    speeds: list[float] = []
    epoch_end = monitor.LossCurve.epoch_end

    def recorded(self, epoch, epochs, mean, speed, lr):
        speeds.append(speed)
        return epoch_end(self, epoch, epochs, mean, speed, lr)

    monitor.LossCurve.epoch_end = recorded
    return speeds


def epoch_figures(speeds: list[float]) -> dict:
    """The first epoch's words/s and the median of the others: a gap between them is a
    start-up cost (lazy initialisation, a GPU still raising its clocks) that a short run pays
    in full and a long one hardly at all."""
    if len(speeds) < 2:
        return {}
    return {"first_epoch_words_per_sec": speeds[0],
            "later_epochs_words_per_sec": statistics.median(speeds[1:])}


# The loop's host phases, marked in --trace's traces (torch.profiler.record_function), so each
# stretch of GPU idle can be put down to what the host was doing meanwhile: (module, attribute,
# phase). The step's parts nest inside it, and every phase inside the loop.
PHASES = [
    ("w2v.train", "Loop.run", "loop"),
    ("w2v.engines.cuda", "CudaEngine.step", "step"),
    ("w2v.engines.cuda", "CudaEngine._prepare", "subsample"),
    ("w2v.engines.cuda", "train_slice", "launch"),
    ("w2v.train", "Loop._curve_points", "loss points"),
    ("w2v.monitor", "Interval.mean", "epoch loss read"),
    ("w2v.monitor", "LossCurve.epoch_end", "epoch end"),
    ("w2v.train", "Loop._checkpoint", "checkpoint"),
]
MARK = "w2v: "  # the prefix of the phases' names in a trace


def annotate_phases(set_attribute=setattr) -> None:
    """Wrap each of PHASES in a record_function range named MARK + phase (this process only;
    tests pass monkeypatch.setattr)."""
    import functools
    import importlib

    from torch.profiler import record_function

    def marked(fn, name):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            with record_function(MARK + name):
                return fn(*a, **kw)
        return wrapper

    for module, attribute, name in PHASES:
        owner = importlib.import_module(module)
        *path, leaf = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        set_attribute(owner, leaf, marked(getattr(owner, leaf), name))


def start_trace(device: str):
    """torch.profiler over the whole train() call: the host's calls and, on a GPU, every
    kernel the process launches (numba's included: CUPTI sees the device, not the caller)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    tracer = profile(activities=activities)
    tracer.__enter__()
    return tracer


def finish_trace(tracer, args) -> dict:
    """Write the Chrome trace (chrome://tracing, Perfetto) into --trace and sum where the GPU
    was busy: the union of its kernels' spans; inside the loop (Loop.run: the training
    clock's span and the few lines that set it up), its idle time, how much of it each host
    phase (PHASES) overlaps, and the longest idle gaps with the phases they fall in. The
    traced run is slower than an untraced one: its words/s are not figures to report."""
    from torch.autograd import DeviceType

    tracer.__exit__(None, None, None)
    args.trace.mkdir(parents=True, exist_ok=True)
    path = args.trace / f"{args.model}-{args.epochs}ep-seed{args.seed}-{os.getpid()}.json"
    tracer.export_chrome_trace(str(path))
    if args.device != "cuda":
        return {"trace": str(path)}
    events = tracer.events()
    # The GPU's work: kernels and copies. The profiler also mirrors each record_function range
    # (our phase marks) onto the GPU's timeline, spanning the kernels launched inside it;
    # counted as work, they hid most of the idle time (an H100 trace: 32 ms idle reported in
    # a 131 ms loop where the kernels and copies left 83 ms).
    spans = [(e.time_range.start, e.time_range.end) for e in events
             if e.device_type == DeviceType.CUDA and not e.name.startswith(MARK)]
    phases: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e.device_type == DeviceType.CPU and e.name.startswith(MARK):
            phases.setdefault(e.name[len(MARK):], []).append(
                (e.time_range.start, e.time_range.end))
    busy, _ = busy_and_gaps(spans)
    out = {"trace": str(path), "gpu_kernels": len(spans), "gpu_busy_seconds": busy / 1e6}
    if phases.get("loop"):
        idle = idle_by_phase(spans, phases, phases["loop"][0])
        out.update({"gpu_loop_seconds": idle["window"] / 1e6,
                    "gpu_idle_in_loop_seconds": idle["idle"] / 1e6,
                    "gpu_idle_by_phase_ms": {k: round(v / 1e3, 2)
                                             for k, v in idle["by_phase"].items()},
                    "gpu_longest_gaps": [(round(g / 1e3, 2), round(at / 1e3, 1), names)
                                         for g, at, names in idle["gaps"][:8]]})
    return out


def merged(spans) -> list[tuple[float, float]]:
    """The union of (start, end) spans as sorted, disjoint spans (touching ones joined)."""
    out: list[tuple[float, float]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """The length of the intersection of two sorted, disjoint span lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def busy_and_gaps(spans: list[tuple[float, float]]) -> tuple[float, list[float]]:
    """The length of the union of (start, end) spans, and the gaps between them, longest
    first (kernels on one stream do not overlap, but copies and other streams may)."""
    union = merged(spans)
    gaps = [b[0] - a[1] for a, b in zip(union, union[1:])]
    return float(sum(stop - start for start, stop in union)), sorted(gaps, reverse=True)


def idle_by_phase(kernels, phases: dict, window: tuple[float, float]) -> dict:
    """Where the GPU sat idle inside `window` (the loop), and what the host was doing then.

    kernels: the GPU's (start, end) spans; phases: name -> the host's (start, end) spans of
    that phase (nested phases overlap their parents). Returns the window's length, the idle
    time (the window less the kernels' union, its ends included), the idle time each phase
    overlaps (phases other than "loop"; "other host work" is idle time in none of them), and
    the gaps, longest first, as (length, start relative to the window, [phases in it])."""
    lo, hi = window
    busy = merged((max(a, lo), min(b, hi)) for a, b in kernels if b > lo and a < hi)
    edges = [lo] + [t for span in busy for t in span] + [hi]
    gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]
    unions = {name: merged(spans) for name, spans in phases.items() if name != "loop"}
    by_phase = {name: overlap(gaps, union) for name, union in unions.items()}
    anywhere = merged(span for union in unions.values() for span in union)
    idle = float(sum(b - a for a, b in gaps))
    by_phase["other host work"] = idle - overlap(gaps, anywhere)
    listed = sorted(((b - a, a - lo, [n for n, u in unions.items() if overlap([(a, b)], u)])
                     for a, b in gaps), key=lambda g: -g[0])
    return {"window": hi - lo, "idle": idle, "by_phase": by_phase, "gaps": listed}


def gpu_before(device: str) -> str | None:
    if device != "cuda":
        return None
    import torch

    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.get_device_name()


def gpu_after(name: str | None, args) -> dict:
    """The GPU's name, peak memory torch allocated (the tables, the corpus ids, the epoch's
    subsampled ids and temporaries) and the cuda engine's default concurrency."""
    if name is None:
        return {}
    import torch

    from w2v.engines.cuda import default_warps

    device = torch.device("cuda")
    return {"gpu": name, "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
            "cuda_warps": args.cuda_warps or default_warps(device)}


def worker_gensim(args) -> dict:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import Text8Corpus

    model = Word2Vec(
        sg=int(args.model == "skipgram"), vector_size=SETTINGS["dim"], window=SETTINGS["window"],
        negative=SETTINGS["negative"], hs=0, sample=SETTINGS["sample"],
        min_count=args.min_count, ns_exponent=SETTINGS["ns_exponent"],
        alpha=args.lr, min_alpha=SETTINGS["min_lr"], workers=args.threads,
        epochs=args.epochs, seed=args.seed, cbow_mean=1,
    )
    sentences = Text8Corpus(str(args.corpus))
    t0 = time.perf_counter()
    model.build_vocab(sentences)
    vocab_s = time.perf_counter() - t0
    sampler = RssSampler() if args.rss_trace else None
    t0 = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    train_s = time.perf_counter() - t0
    out = {
        "side": "gensim",
        "engine": "gensim",
        "words": model.corpus_total_words,
        "vocab": len(model.wv),
        "train_seconds": train_s,
        "words_per_sec": model.corpus_total_words * args.epochs / train_s,
        "vocab_seconds": vocab_s,
        "peak_rss_mib": peak_rss_mib(),
    }
    if sampler:
        out["rss_trace_mib"] = sampler.stop()
    if args.quality:
        out.update(score(model.wv, args.eval_dir))
    return out


class RssSampler:
    """Samples this process's resident set every 0.25 s while training runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]) / 1024)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.samples


# ------------------------------------------------------------------------------ the runner


def scaled_corpus(corpus: Path, scale: int, tmp: Path) -> Path:
    """The corpus concatenated `scale` times (one line, like text8) in a temporary file."""
    if scale == 1:
        return corpus
    out = tmp / f"{corpus.name}-x{scale}"
    if not out.exists():
        text = corpus.read_bytes().strip()
        with open(out, "wb") as f:
            for i in range(scale):
                f.write(text if i == 0 else b" " + text)
    return out


def arch_lr(model: str) -> float:
    """word2vec.c's starting lr for the architecture (what w2v's trainer.lr=null resolves to)."""
    sys.path.insert(0, str(ROOT))  # this process only: the workers' imports stay their own
    from w2v.config import ARCH_LR

    return ARCH_LR[model]


def seed_of(args, repeat: int) -> int:
    """The seed of repeat r (both sides): --seeds in turn, so quality over several repeats is
    spread over seeds (one fixed seed makes every repeat of a deterministic engine one draw)."""
    seeds = [int(x) for x in str(args.seeds).split(",") if x]
    return seeds[repeat % len(seeds)]


def run_worker(side: str, corpus: Path, args, min_count: int, model: str, threads: int,
               seed: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--corpus", str(corpus),
           "--min-count", str(min_count), "--seed", str(seed),
           "--model", model, "--epochs", str(args.epochs), "--threads", str(threads),
           "--device", args.device, "--engine", args.engine, "--eval-dir", str(args.eval_dir),
           "--lr", str(args.lr or arch_lr(model))]
    cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    cmd += ["--cuda-warps", str(args.cuda_warps)] if args.cuda_warps else []
    cmd += ["--quality"] if args.quality else []
    cmd += ["--ngrams", "--bucket", str(args.bucket)] if args.ngrams else []
    cmd += ["--rss-trace"] if args.rss_trace else []
    cmd += ["--trace", str(args.trace)] if args.trace and side == "w2v" else []
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


QUALITY = ("analogy", "ws353", "simlex")


def median_of(runs: list[dict]) -> dict:
    """Medians of the runs' figures; quality is the mean over the runs (their seeds) with its
    range, as seed noise is what a quality bound is judged against."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    for key in QUALITY:
        if key in out and len(runs) > 1:
            values = [r[key] for r in runs]
            out[key] = statistics.fmean(values)
            out[f"{key}_range"] = (min(values), max(values))
    return out


ROWS = [
    ("raw words/s", "words_per_sec", "{:,.0f}"),
    ("raw words/s, checkpoints excluded", "words_per_sec_no_ckpt", "{:,.0f}"),
    ("raw words/s, first epoch's steps", "first_epoch_words_per_sec", "{:,.0f}"),
    ("raw words/s, later epochs' steps (median)", "later_epochs_words_per_sec", "{:,.0f}"),
    ("training seconds", "train_seconds", "{:.2f}"),
    ("vocabulary seconds (cold)", "vocab_seconds", "{:.2f}"),
    ("vocabulary seconds (cached)", "vocab_cached_seconds", "{:.3f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:,.0f}"),
    ("GPU busy seconds (--trace: the union of its kernels)", "gpu_busy_seconds", "{:.3f}"),
    ("peak GPU MiB (torch.cuda.max_memory_allocated)", "peak_gpu_mib", "{:,.0f}"),
    ("analogy@30k", "analogy", "{:.4f}"),
    ("WS353 Spearman", "ws353", "{:.4f}"),
    ("SimLex-999 Spearman", "simlex", "{:.4f}"),
    ("WS353 Spearman, every pair", "ws353_all", "{:.4f}"),
    ("SimLex-999 Spearman, every pair", "simlex_all", "{:.4f}"),
]


def table(label: str, w2v: dict | None, *others: dict | None, names=("gensim",)) -> str:
    """One column per side, and w2v's ratio to each other side."""
    others = others or (None,)
    head = ["w2v", *names, *(f"w2v/{n}" for n in names)]
    lines = [f"| {label} | " + " | ".join(head) + " |",
             "| --- |" + " ---: |" * len(head)]
    for name, key, fmt in ROWS:
        a = w2v.get(key) if w2v else None
        bs = [o.get(key) if o else None for o in others]
        if a is None and all(b is None for b in bs):
            continue
        ratios = [f"{a / b:.2f}x" if a is not None and b else "" for b in bs]
        cells = [cell(w2v, key, fmt), *(cell(o, key, fmt) for o in others)]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def cell(result: dict | None, key: str, fmt: str) -> str:
    """A figure, and the range over seeds where quality was averaged over several."""
    if not result or result.get(key) is None:
        return ""
    text = fmt.format(result[key])
    if f"{key}_range" in result:
        lo, hi = result[f"{key}_range"]
        text += f" ({fmt.format(lo)}-{fmt.format(hi)})"
    return text


GPU_RUNS = [  # (model, corpus copies, epochs, quality): BENCHMARK.md's GPU section
    ("skipgram", 1, 5, True), ("cbow", 1, 5, True),
    ("skipgram", 8, 1, False), ("cbow", 8, 1, False),
]
# The GPU protocol's kinds of model, each with the peers its rows may take (of --sides): the
# word model against gensim, the subword model against fastText (which trains on CPUs only).
GPU_KINDS = {"words": ("gensim", "fasttext-words"), "subwords": ("fasttext", "gensim-fasttext")}


def check_gpu(args) -> None:
    """--device cuda without a usable GPU: one error line, before any run starts."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        sys.exit(f"error: --device cuda needs a CUDA GPU, and torch {torch.__version__} sees "
                 "none (a CPU build of torch, or no driver); run it on a GPU machine")
    if args.engine in ("auto", "cuda") and importlib.util.find_spec("numba_cuda") is None:
        sys.exit("error: w2v's cuda engine needs numba-cuda: pip install 'w2v[cuda12]' (or "
                 "'w2v[cuda13]', after torch.version.cuda's major version)")


PEER_PACKAGES = {"gensim": "gensim", "gensim-fasttext": "gensim", "fasttext": "fasttext",
                 "fasttext-words": "fasttext"}


def check_peers(sides: list[str]) -> None:
    """A peer whose package is missing: one error line before any run starts (not a worker's
    traceback after the first w2v run)."""
    import importlib.util

    for side in sides:
        package = PEER_PACKAGES.get(side)
        if package and importlib.util.find_spec(package) is None:
            sys.exit(f"error: --sides {side} needs the {package} package, a peer in the dev "
                     "extra: pip install -e '.[dev]'")


def gpu_protocol(args, tmp: Path) -> list[tuple[str, dict]]:
    """Every run of GPU_RUNS for each of --kinds, each side --repeat times alternating;
    (label, medians by side) each, the word rows first."""
    asked = [s for s in args.sides.split(",") if s]
    out = []
    for kind, model, scale, epochs, quality in ((k, *r) for k in GPU_KINDS
                                                  if k in args.kinds.split(",")
                                                  for r in GPU_RUNS):
        sides = [s for s in asked if s == "w2v" or s in GPU_KINDS[kind]]
        run = argparse.Namespace(**{**vars(args), "model": model, "epochs": epochs,
                                    "quality": quality, "ngrams": kind == "subwords"})
        corpus = scaled_corpus(args.corpus, scale, tmp)
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        for r in range(args.repeat):
            for side in sides if r % 2 == 0 else sides[::-1]:
                runs[side].append(run_worker(side, corpus, run, SETTINGS["min_count"], model,
                                             int(args.threads), seed_of(args, r)))
                print(f"  {kind} {model} x{scale} run {r + 1} {side}: "
                      f"{runs[side][-1]['words_per_sec']:,.0f} words/s", file=sys.stderr)
        label = f"{kind}: {model}, {args.corpus.name} x{scale}, {epochs} epoch(s)"
        out.append((label, {s: median_of(v) for s, v in runs.items()}))
    return out


def gpu_report(args, results: list[tuple[str, dict]]) -> str:
    """docs/performance.md's GPU tables: one per run, headed by the GPU and the concurrency."""
    first = next((res["w2v"] for _, res in results if "w2v" in res), {})
    lines = [f"GPU: {first.get('gpu', '?')}; w2v engine {first.get('engine', '?')}, "
             f"trainer.cuda_warps {first.get('cuda_warps', '?')}; the peers on "
             f"{args.threads} CPU threads; median of {args.repeat} (quality: mean over seeds "
             f"{args.seeds})"]
    for label, res in results:
        peers = tuple(side for side in res if side != "w2v")
        lines += ["", label, table("figure", res.get("w2v"), *(res[p] for p in peers),
                                   names=peers or ("peer",))]
        lines += trace_lines(res.get("w2v") or {})
    return "\n".join(lines)


def trace_lines(w2v: dict) -> list[str]:
    """A traced run's GPU idle time inside the loop, by host phase, and its longest gaps."""
    if "gpu_idle_in_loop_seconds" not in w2v:
        return []
    by_phase = ", ".join(f"{k} {v:.1f}" for k, v in w2v["gpu_idle_by_phase_ms"].items() if v)
    gaps = "; ".join(f"{ms:.2f} at +{at:.0f} ({', '.join(names) or 'no phase'})"
                     for ms, at, names in w2v["gpu_longest_gaps"])
    return [f"traced run: the loop {w2v['gpu_loop_seconds']:.3f} s, the GPU idle "
            f"{w2v['gpu_idle_in_loop_seconds']:.3f} s of it; idle ms while the host was in: "
            f"{by_phase}", f"longest idle gaps (ms at +ms into the loop): {gaps}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="skipgram", help="skipgram, cbow, or a comma list")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=None,
                   help="starting learning rate for both sides (default: word2vec.c's for "
                        "the architecture, 0.025 skip-gram, 0.05 CBOW)")
    p.add_argument("--threads", help="threads (gensim workers), or a comma list such as "
                   "1,2,4,8,16 for a sweep (default 2; with --device cuda, every core)")
    p.add_argument("--scale", default="1", help="comma list of corpus repeats, e.g. 1,4,8")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seeds", default=str(SETTINGS["seed"]),
                   help="comma list of seeds taken in turn by the repeats (both sides), e.g. "
                        "--repeat 3 --seeds 1,2,3: quality is then the mean over the seeds")
    p.add_argument("--seed", type=int, default=SETTINGS["seed"], help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default="auto")
    p.add_argument("--batch-size", type=int, help="autograd engine only (default: its own)")
    p.add_argument("--cuda-warps", type=int, help="the cuda engine's trainer.cuda_warps")
    p.add_argument("--sides", help="comma list of w2v, gensim, fasttext, fasttext-words, "
                   "gensim-fasttext (default w2v,gensim; w2v,fasttext with --ngrams)")
    p.add_argument("--quality", action="store_true", help="score analogy/WS353/SimLex too")
    p.add_argument("--fixed-vocab", action="store_true",
                   help="with --scale K, use min_count 5*K so the vocabulary stays the same")
    p.add_argument("--min-count", type=int, default=SETTINGS["min_count"], help=argparse.SUPPRESS)
    p.add_argument("--rss-epochs", type=int, default=0,
                   help="train this many epochs and report RSS across them (long-run check)")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--trace", type=Path,
                   help="profile w2v's runs (torch.profiler) into Chrome traces in this folder, "
                        "with the GPU's busy time and longest idle gaps (slower: diagnosis only)")
    p.add_argument("--ngrams", action="store_true",
                   help="fastText's subword model (minn 3, maxn 6) on w2v's side; default "
                        "sides w2v,fasttext")
    p.add_argument("--bucket", type=int, default=2_000_000, help="n-gram rows (--ngrams)")
    p.add_argument("--kinds", help="--device cuda: words, subwords or both comma-separated "
                   "(default both; subwords with --ngrams)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--rss-trace", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        args.threads = int(args.threads)
        result = WORKERS[args.worker](args)
        print(json.dumps(result))
        return
    if args.threads is None:
        args.threads = str(os.cpu_count() or 1) if args.device == "cuda" else "2"
    if args.device == "cuda":
        args.kinds = args.kinds or ("subwords" if args.ngrams else "words,subwords")
        if set(args.kinds.split(",")) - set(GPU_KINDS):
            sys.exit(f"error: --kinds {args.kinds}: words, subwords, or both comma-separated")
        args.sides = args.sides or "w2v,gensim,fasttext"
    elif args.kinds:
        sys.exit("error: --kinds picks the GPU protocol's models (with --device cuda); on the "
                 "CPU, --ngrams runs the subword model")
    args.sides = args.sides or ("w2v,fasttext" if args.ngrams else "w2v,gensim")
    unknown = set(args.sides.split(",")) - set(WORKERS) - {""}
    if unknown:
        sys.exit(f"error: --sides {args.sides}: unknown {', '.join(sorted(unknown))}; use "
                 f"{', '.join(sorted(WORKERS))}")
    check_peers([s for s in args.sides.split(",") if s])
    models = [m for m in args.model.split(",") if m]
    if not models or any(m not in ("skipgram", "cbow") for m in models):
        sys.exit(f"error: --model {args.model}: skipgram, cbow, or both comma-separated")
    counts = [int(t) for t in args.threads.split(",") if t]
    if not counts or min(counts) < 1:
        sys.exit(f"error: --threads {args.threads}: integers >= 1, comma-separated")
    if not args.corpus.is_file():
        sys.exit(f"error: corpus {args.corpus} not found; pass --corpus PATH")
    if args.device == "cuda":
        check_gpu(args)
        args.quality = True
        with tempfile.TemporaryDirectory(prefix="w2v-bench-") as tmp:
            results = gpu_protocol(args, Path(tmp))
        print(gpu_report(args, results))
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "results": results}, indent=2, default=str))
        return
    if args.rss_epochs:
        args.epochs, args.rss_trace = args.rss_epochs, True
    sides = [s for s in args.sides.split(",") if s]
    points = [(m, t) for m in models for t in counts]
    results = {}
    with tempfile.TemporaryDirectory(prefix="w2v-bench-") as tmp:
        for scale in [int(s) for s in args.scale.split(",")]:
            corpus = scaled_corpus(args.corpus, scale, Path(tmp))
            # K copies let words seen once reach min_count 5, tripling the vocabulary at K=8;
            # --fixed-vocab scales min_count with K so only the corpus length changes.
            min_count = SETTINGS["min_count"] * (scale if args.fixed_vocab else 1)
            runs = {(m, t, s): [] for m, t in points for s in sides}
            for r in range(args.repeat):
                for i, (model, threads) in enumerate(points):
                    for side in sides if (r + i) % 2 == 0 else sides[::-1]:
                        out = run_worker(side, corpus, args, min_count, model, threads,
                                         seed_of(args, r))
                        runs[model, threads, side].append(out)
                        print(f"  scale {scale} run {r + 1} {model} {threads} thread(s) {side}: "
                              f"{out['words_per_sec']:,.0f} words/s", file=sys.stderr)
            results[scale] = {f"{m}/{t}": {s: median_of(runs[m, t, s]) for s in sides}
                              for m, t in points}
    lr = args.lr or "word2vec.c's per arch (0.025 skip-gram, 0.05 CBOW)"
    if args.ngrams:
        print(f"subword model: char n-grams {NGRAMS['minn']}-{NGRAMS['maxn']}, bucket "
              f"{args.bucket:,}")
    print(f"{args.model}, lr {lr}, {args.epochs} epoch(s), {args.threads} thread(s), device "
          f"{args.device}, median of {args.repeat} (quality: mean over seeds {args.seeds}), "
          f"corpus {args.corpus.name}")
    for scale, by_point in results.items():
        first = next(iter(by_point.values()))[sides[0]]
        words, vocab = int(first["words"]), int(first["vocab"])
        print(f"\nscale x{scale} ({words:,} words, vocabulary {vocab:,})")
        if len(points) > 1:
            for peer in [s for s in sides if s != "w2v"] or ["gensim"]:
                print(sweep_table(by_point, models, counts, peer))
            continue
        res = by_point[f"{models[0]}/{counts[0]}"]
        others = [s for s in sides if s != "w2v"]
        print(table("figure", res.get("w2v"), *(res.get(s) for s in others),
                    names=tuple(others) or ("gensim",)))
        for side, r in res.items():
            if "rss_trace_mib" in r and r["rss_trace_mib"]:
                trace = r["rss_trace_mib"]
                tail = trace[len(trace) // 10:]  # after start-up
                print(f"{side} RSS during training: first {tail[0]:.0f} MiB, last "
                      f"{tail[-1]:.0f} MiB, max {max(tail):.0f} MiB ({len(trace)} samples)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"corpus": str(args.corpus),
                                                               "eval_dir": str(args.eval_dir),
                                                               "json": str(args.json)},
                                         "results": results}, indent=2, default=str))


def sweep_table(by_point: dict, models: list[str], counts: list[int],
                peer: str = "gensim") -> str:
    """Raw words/s of w2v and `peer` and their ratio, one row per thread count."""
    names = {"skipgram": "skip-gram", "cbow": "CBOW"}
    head = ["threads"]
    for m in models:
        head += [f"{names[m]} w2v", f"{names[m]} {peer}", f"{names[m]} ratio"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * len(head)) + " |"]
    for t in counts:
        row = [str(t)]
        for m in models:
            res = by_point[f"{m}/{t}"]
            a = res.get("w2v", {}).get("words_per_sec")
            b = res.get(peer, {}).get("words_per_sec")
            row += [f"{a:,.0f}" if a else "", f"{b:,.0f}" if b else "",
                    f"{a / b:.2f}x" if a and b else ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
