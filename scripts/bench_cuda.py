"""The cuda engine alone: raw words/s of its steps at several concurrency settings, on a GPU.

    python scripts/bench_cuda.py --model skipgram --warps 528,1056,2112,4224 --scale 1,8
    python scripts/bench_cuda.py --model cbow --epochs 5 --reads cached,coherent --quality \
        --seeds 1,2,3                            # how rows are loaded: speed and quality
    python scripts/bench_cuda.py --model skipgram --epochs 5 --chunks 1,3,6 --quality --seeds 1,2,3
    python scripts/bench_cuda.py --model cbow --epochs 5 --chunks 1,2 --dims 100,300
    python scripts/bench_cuda.py --ngrams --model cbow --epochs 5 --warps 528,1056,2112 --quality

What scripts/bench.py's end-to-end figure adds to this (checkpoints, logging, evaluation) is
left out: each configuration trains `--epochs` epochs through CudaEngine.step, timed with the
GPU synchronised, and reports the share of the time spent subsampling (each epoch's first
step of a range prepares it). For tuning trainer.cuda_warps, trainer.cuda_step_words,
w2v.engines.cuda.READS (--reads) and MAX_CHUNK (--chunks); --quality scores each run's
vectors on the suites in --eval-dir (w2v's evaluators, equal to gensim's), --seeds runs each
configuration once per seed; --ngrams trains fastText's subword model (char n-grams 3-6,
--bucket rows), scored on its words' vectors (the mean of each word's rows). The end-to-end
figures against gensim and fastText are bench.py's to measure.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def run(corpus, model_name: str, warps: int, step_words: int, epochs: int, reads: str = "cached",
        seed: int = 1, chunk: int = 3, dim: int = 100, bucket: int = 0) -> tuple[dict, object]:
    """One configuration's epochs through CudaEngine.step, timed with the GPU synchronised
    (under numba's CUDA simulator, on CPU tensors: how the tests run this code); bucket > 0
    trains the subword model with that many n-gram rows."""
    import torch
    from bench import NGRAMS  # the same n-gram lengths as bench.py's subword runs

    from w2v.config import Config, DataConfig, ModelConfig, TrainerConfig
    from w2v.engines import cuda as engine_mod
    from w2v.engines import simulated
    from w2v.engines.cuda import CudaEngine
    from w2v.model import build_model

    device = torch.device("cpu" if simulated() else "cuda")
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ngrams = {"minn": NGRAMS["minn"], "maxn": NGRAMS["maxn"], "bucket": bucket} if bucket else {}
    cfg = Config(data=DataConfig(path="unused"),
                 model=ModelConfig(arch=model_name, dim=dim, **ngrams),
                 trainer=TrainerConfig(device=device.type, engine="cuda",
                                       cuda_warps=warps or None, cuda_step_words=step_words,
                                       epochs=epochs, seed=seed))
    engine_mod.READS = reads
    engine_mod.MAX_CHUNK = chunk
    torch.manual_seed(seed)
    model = build_model(cfg.model, corpus.vocab).to(device)
    t = cfg.trainer
    # One untimed step first, on a copy of the model: on an H100 a kernel variant's first
    # real launch in a process cost up to 0.3 s beyond its compile (that run: 28-30M words/s
    # where the next seeds' ran at 170-190M), which is not the kernel's speed.
    warm = CudaEngine(copy.deepcopy(model), corpus, cfg, device)
    warm.step(0, 0, warm.begin_epoch(0), t.lr, t.lr)
    del warm
    engine = CudaEngine(model, corpus, cfg, device)
    prepare = 0.0
    synchronize()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        steps = engine.begin_epoch(epoch)
        for s in range(steps):
            lr = t.lr - (t.lr - t.min_lr) * (epoch + s / steps) / epochs
            lr_end = t.lr - (t.lr - t.min_lr) * (epoch + (s + 1) / steps) / epochs
            before = engine.current
            synchronize()  # the previous step's kernel is not subsampling's time
            p0 = time.perf_counter()
            engine._prepare(epoch, bisect.bisect_right(engine.first_step, s) - 1)  # timed apart
            if engine.current is not before:
                synchronize()
                prepare += time.perf_counter() - p0
            engine.step(epoch, s, steps, lr, lr_end)
    synchronize()
    seconds = time.perf_counter() - t0
    words = corpus.raw_tokens * epochs
    return {"warps": engine.current.workers, "steps": engine.begin_epoch(0),
            "words_per_sec": words / seconds, "subsample_share": prepare / seconds}, model


def quality(model, corpus, eval_dir: Path) -> str:
    """analogy | WS353 | SimLex cells for a trained model (w2v's evaluators)."""
    from w2v.config import EvalConfig
    from w2v.evaluate import run_suites
    from w2v.vectors import KeyedVectors

    kv = KeyedVectors(corpus.vocab.words, model.word_vectors().cpu(),
                      counts=corpus.vocab.counts)
    m = run_suites(kv, EvalConfig(dir=str(eval_dir), projector_words=0))
    keys = ("analogy/questions-words/accuracy", "similarity/wordsim353/spearman",
            "similarity/simlex999/spearman")
    return " | ".join(f"{m[k]:.4f}" if k in m else "" for k in keys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="skipgram", choices=["skipgram", "cbow"])
    p.add_argument("--warps", default="0", help="comma list; 0: the engine's default")
    p.add_argument("--step-words", default="2000000", help="comma list")
    p.add_argument("--scale", default="1", help="comma list of text8-prefix copies")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--reads", default="cached", help="comma list of w2v.engines.cuda.READS")
    p.add_argument("--chunks", default="3", help="comma list of w2v.engines.cuda.MAX_CHUNK "
                   "(output rows loaded at once; 1: one row at a time)")
    p.add_argument("--dims", default="100", help="comma list of model.dim (rows held per "
                   "chunk depend on it)")
    p.add_argument("--seeds", default="1", help="comma list: one run per seed")
    p.add_argument("--quality", action="store_true", help="score every run's vectors too")
    p.add_argument("--ngrams", action="store_true", help="fastText's subword model")
    p.add_argument("--bucket", type=int, default=2_000_000, help="n-gram rows (--ngrams)")
    p.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    p.add_argument("--corpus", type=Path,
                   default=ROOT.parent / "shared" / "data" / "text8-prefix" / "text8-prefix")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: needs a CUDA GPU (torch sees none)")
    from bench import scaled_corpus

    from w2v.config import DataConfig
    from w2v.corpus import build_corpus

    model_kind = f"subwords (bucket {args.bucket:,})" if args.ngrams else "words"
    print(f"{torch.cuda.get_device_name()}, {args.model}, {model_kind}, {args.epochs} epoch(s)")
    head = "| copies | dim | reads | chunk | seed | cuda_warps | cuda_step_words | steps/epoch | " \
           "raw words/s | subsampling |"
    print(head + (" analogy | WS353 | SimLex |" if args.quality else ""))
    print("| ---: " * (head.count("|") - 1 + (3 if args.quality else 0)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [int(s) for s in args.scale.split(",")]:
            path = scaled_corpus(args.corpus, scale, Path(tmp))
            corpus = build_corpus(DataConfig(path=str(path), cache_dir=f"{tmp}/cache"),
                                  progress=False)
            points = [(dim, reads, int(c), seed, int(w), int(s))
                      for dim in [int(d) for d in args.dims.split(",")]
                      for reads in args.reads.split(",")
                      for c in args.chunks.split(",")
                      for seed in [int(x) for x in args.seeds.split(",")]
                      for w in args.warps.split(",") for s in args.step_words.split(",")]
            for dim, reads, chunk, seed, warps, step_words in points:
                r, model = run(corpus, args.model, warps, step_words, args.epochs, reads, seed,
                               chunk, dim, args.bucket if args.ngrams else 0)
                cells = f" {quality(model, corpus, args.eval_dir)} |" if args.quality else ""
                print(f"| x{scale} | {dim} | {reads} | {chunk} | {seed} | {r['warps']:,} | "
                      f"{step_words:,} | {r['steps']} | {r['words_per_sec']:,.0f} | "
                      f"{r['subsample_share']:.0%} |" + cells, flush=True)


if __name__ == "__main__":
    main()
