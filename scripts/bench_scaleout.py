"""One process with N threads against torchrun with N processes of one thread (data parallel).

    python scripts/bench_scaleout.py --epochs 1 --repeat 5
    python scripts/bench_scaleout.py --epochs 5 --repeat 3 --quality
    python scripts/bench_scaleout.py --epochs 1 --repeat 3 --extra trainer.sync_every=4

Both sides run `python -m w2v.train +experiment=text8_prefix_bench` (the settings of
../shared/BENCHMARK.md) on the same warmed corpus cache, alternating and swapping the order
every repeat so machine noise hits both alike. words/s is metrics.json's words_per_sec (raw
corpus words x epochs / training seconds, vocabulary build excluded); quality is scored on the
exported vectors.txt by gensim's evaluators (scripts/bench.py `score`). Medians and ranges over
--repeat runs are printed, then a JSON line with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import DEFAULT_CORPUS, DEFAULT_EVAL, score  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(side: str, args, run_dir: Path, cache: str) -> dict:
    common = ["+experiment=text8_prefix_bench", f"data.path={args.corpus}",
              f"data.cache_dir={cache}", f"trainer.epochs={args.epochs}",
              "trainer.progress=false", "trainer.ckpt_every=0", "eval.projector_words=0",
              "eval.dir=null", f"hydra.run.dir={run_dir}", *args.extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if side == "single":
        cmd = [sys.executable, "-m", "w2v.train", f"trainer.threads={args.procs}", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.procs}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "w2v.train",
               "trainer.threads=1", *common]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = {"side": side, "words_per_sec": metrics["words_per_sec"],
           "train_seconds": metrics["train_seconds"]}
    if args.quality:
        from gensim.models import KeyedVectors

        kv = KeyedVectors.load_word2vec_format(str(run_dir / "vectors.txt"))
        out.update(score(kv, args.eval_dir))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--quality", action="store_true")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for both sides")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="w2v-scaleout-"))
    cache = str(work / "cache")
    subprocess.run([sys.executable, "-m", "w2v.data", "+experiment=text8_prefix_bench",
                    f"data.path={args.corpus}", f"data.cache_dir={cache}",
                    "trainer.progress=false", f"hydra.run.dir={work / 'warm'}"],
                   cwd=ROOT, check=True, capture_output=True)
    runs = []
    for r in range(args.repeat):
        order = ("single", "torchrun") if r % 2 == 0 else ("torchrun", "single")
        for side in order:
            res = run(side, args, work / f"{side}-{r}", cache)
            print(json.dumps(res), flush=True)
            runs.append(res)
    for side in ("single", "torchrun"):
        mine = [x for x in runs if x["side"] == side]
        for key in mine[0]:
            if key == "side" or not isinstance(mine[0][key], float):
                continue
            vals = [x[key] for x in mine]
            print(f"{side:9s} {key:14s} median {statistics.median(vals):12.4f}  "
                  f"range {min(vals):.4f} .. {max(vals):.4f}")
    print(json.dumps({"runs": runs, "epochs": args.epochs, "procs": args.procs,
                      "extra": args.extra}))


if __name__ == "__main__":
    main()
