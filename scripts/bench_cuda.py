"""The cuda engine alone: raw words/s of its steps at several concurrency settings, on a GPU.

    python scripts/bench_cuda.py --model skipgram --warps 528,1056,2112,4224 --scale 1,8

What scripts/bench.py's end-to-end figure adds to this (checkpoints, logging, evaluation) is
left out: each configuration trains `--epochs` epochs through CudaEngine.step, timed with the
GPU synchronised, and reports the share of the time spent subsampling (each epoch's first
step of a range prepares it). For tuning trainer.cuda_warps and trainer.cuda_step_words; the
quality at the default concurrency is bench.py's to measure.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def run(corpus, model_name: str, warps: int, step_words: int, epochs: int) -> dict:
    import torch

    from w2v.config import Config, DataConfig, ModelConfig, TrainerConfig
    from w2v.engines.cuda import CudaEngine
    from w2v.model import build_model

    device = torch.device("cuda")
    cfg = Config(data=DataConfig(path="unused"), model=ModelConfig(arch=model_name),
                 trainer=TrainerConfig(device="cuda", engine="cuda", cuda_warps=warps or None,
                                       cuda_step_words=step_words, epochs=epochs))
    torch.manual_seed(1)
    model = build_model(cfg.model, corpus.vocab).to(device)
    engine = CudaEngine(model, corpus, cfg, device)
    t = cfg.trainer
    prepare = 0.0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        steps = engine.begin_epoch(epoch)
        for s in range(steps):
            lr = t.lr - (t.lr - t.min_lr) * (epoch + s / steps) / epochs
            lr_end = t.lr - (t.lr - t.min_lr) * (epoch + (s + 1) / steps) / epochs
            before = engine.current
            torch.cuda.synchronize()  # the previous step's kernel is not subsampling's time
            p0 = time.perf_counter()
            engine._prepare(epoch, bisect.bisect_right(engine.first_step, s) - 1)  # timed apart
            if engine.current is not before:
                torch.cuda.synchronize()
                prepare += time.perf_counter() - p0
            engine.step(epoch, s, steps, lr, lr_end)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    words = corpus.raw_tokens * epochs
    return {"warps": engine.current.workers, "steps": engine.begin_epoch(0),
            "words_per_sec": words / seconds, "subsample_share": prepare / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="skipgram", choices=["skipgram", "cbow"])
    p.add_argument("--warps", default="0", help="comma list; 0: the engine's default")
    p.add_argument("--step-words", default="2000000", help="comma list")
    p.add_argument("--scale", default="1", help="comma list of text8-prefix copies")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--corpus", type=Path,
                   default=ROOT.parent / "shared" / "data" / "text8-prefix" / "text8-prefix")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: needs a CUDA GPU (torch sees none)")
    from bench import scaled_corpus

    from w2v.config import DataConfig
    from w2v.corpus import build_corpus

    print(f"{torch.cuda.get_device_name()}, {args.model}, {args.epochs} epoch(s)")
    print("| copies | cuda_warps | cuda_step_words | steps/epoch | raw words/s | subsampling |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [int(s) for s in args.scale.split(",")]:
            path = scaled_corpus(args.corpus, scale, Path(tmp))
            corpus = build_corpus(DataConfig(path=str(path), cache_dir=f"{tmp}/cache"),
                                  progress=False)
            for warps in [int(w) for w in args.warps.split(",")]:
                for step_words in [int(s) for s in args.step_words.split(",")]:
                    r = run(corpus, args.model, warps, step_words, args.epochs)
                    print(f"| x{scale} | {r['warps']:,} | {step_words:,} | {r['steps']} | "
                          f"{r['words_per_sec']:,.0f} | {r['subsample_share']:.0%} |",
                          flush=True)


if __name__ == "__main__":
    main()
