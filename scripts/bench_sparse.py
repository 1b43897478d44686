"""What model.sparse=true saves on a large vocabulary: autograd steps, dense vs sparse gradients.

    python scripts/bench_sparse.py --vocab 1000000 --dim 100 --steps 30

Trains the autograd engine's Word2Vec on random batches (skip-gram, negative sampling, SGD and
Adam/SparseAdam) and reports seconds per step and peak RSS for each setting, each in a fresh
subprocess. With dense gradients every step materialises and updates both full (V, D) tables;
with sparse gradients only the rows the batch touched.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SETTINGS = [("dense", "sgd"), ("sparse", "sgd"), ("dense", "adam"), ("sparse", "sparse_adam")]


def worker(args) -> dict:
    import torch

    from w2v.model import Word2Vec

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    sparse = args.worker_sparse == "sparse"
    model = Word2Vec(args.vocab, args.dim, sparse=sparse,
                     reduction="sum" if args.worker_opt == "sgd" else "mean")
    params = list(model.parameters())
    opt = {"sgd": lambda: torch.optim.SGD(params, lr=0.025),
           "adam": lambda: torch.optim.Adam(params, lr=1e-3),
           "sparse_adam": lambda: torch.optim.SparseAdam(params, lr=1e-3)}[args.worker_opt]()
    pairs = args.batch

    def step():
        inputs = torch.randint(0, args.vocab, (pairs,))
        targets = torch.randint(0, args.vocab, (pairs,))
        negatives = torch.randint(0, args.vocab, (pairs, 5))
        loss = model(inputs, targets, negatives=negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: allocator, optimizer state
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - t0) / args.steps
    return {"sec_per_step": seconds, "pairs_per_sec": pairs / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--batch", type=int, default=4096, help="pairs per step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker-sparse", help=argparse.SUPPRESS)
    p.add_argument("--worker-opt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_sparse:
        print(json.dumps(worker(args)))
        return
    print(f"V={args.vocab:,} dim={args.dim} batch={args.batch} pairs, {args.threads} threads")
    print("| gradients | optimizer | s/step | pairs/s | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: |")
    for grads, opt in SETTINGS:
        cmd = [sys.executable, __file__, "--worker-sparse", grads, "--worker-opt", opt,
               "--vocab", str(args.vocab), "--dim", str(args.dim), "--batch", str(args.batch),
               "--steps", str(args.steps), "--threads", str(args.threads)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                       .stdout.strip().splitlines()[-1])
        print(f"| {grads} | {opt} | {r['sec_per_step']:.4f} | {r['pairs_per_sec']:,.0f} | "
              f"{r['peak_rss_mib']:,.0f} |")


if __name__ == "__main__":
    main()
