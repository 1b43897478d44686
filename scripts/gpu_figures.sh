#!/usr/bin/env bash
# Every GPU figure docs/performance.md's GPU section shows, measured again on the machine at hand.
#
#     scripts/gpu_figures.sh OUT_DIR [PART ...]
#     CORPUS=/data/text8-prefix EVAL_DIR=/data/eval scripts/gpu_figures.sh out tests protocol
#
# PARTs (default: all, in this order; not yet timed as a whole: split them over commands that
# must end within a time limit):
#   gpu       the GPU, driver and clocks (nvidia-smi)
#   tests     the CUDA tests on the GPU (tests/test_cuda_engine.py whole, and -m cuda)
#   reads     the cuda engine alone, both ways of reading weight rows (w2v.engines.cuda.READS),
#             CBOW and skip-gram, 5 epochs, seeds 1-3, with quality
#   chunks    the cuda engine alone, rows loaded one at a time against in chunks of 2, 3, 6
#             (w2v.engines.cuda.MAX_CHUNK), skip-gram and CBOW, 5 epochs, seeds 1-3, quality
#   warps     CBOW at 528, 1,056 and 2,112 warps, 5 epochs, seeds 1-3, with quality
#   subwords  the cuda engine alone on fastText's subword model, skip-gram and CBOW, at the
#             engine's own concurrency and at 1,056 and 4,224 warps, 5 epochs, seeds 1-3,
#             with quality (does the default still fit a model whose input rows are n-grams?)
#   protocol  BENCHMARK.md's GPU protocol, the word model against gensim on every core
#             (bench.py --device cuda --kinds words)
#   subword-protocol  the same for the subword model against fastText on every core
#             (bench.py --device cuda --kinds subwords)
#   before    the word model's kernel alone (bench_cuda.py, skip-gram and CBOW, x1 and x8) in
#             an older checkout BASE=<path> and in this one, alternating: its speed unchanged?
#             (e.g. mkdir -p base && git archive d82c3a7 | tar -x -C base, a git-ignored folder
#             to carry; scripts/cuda_ptx.py --against base answers it without a GPU)
#   trace     one traced run of each protocol run: where the GPU sits idle inside the loop
#   threads   CPU thread scaling against gensim, 1-16 threads (the fused engine)
# Each part writes OUT_DIR/<part>.txt (and trace/ its Chrome traces); a part that fails is
# reported and the next one runs. CORPUS and EVAL_DIR default to ../shared beside the project.
# The device README's 15 minutes hold about two or three parts: split them over calls.
# REPEAT=1 (default 3) runs the protocols' sides once each and SEEDS=1 (default 1,2,3) the
# subword and protocol parts with one seed: a first look that fits a short device budget.
# The Python packages are the project's with its cuda extra and dev extra (gensim for the
# protocol); where only a few files can be taken off the machine, tar OUT_DIR.
set -u
all="gpu tests chunks reads warps subwords protocol subword-protocol before trace threads"
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [$all]" >&2; exit 2; }
out=$1; shift
parts=${*:-$all}
root=$(cd "$(dirname "$0")/.." && pwd)
corpus=${CORPUS:-$root/../shared/data/text8-prefix/text8-prefix}
eval_dir=${EVAL_DIR:-$root/../shared/data/eval}
[ -f "$corpus" ] || { echo "error: no corpus at $corpus: set CORPUS to text8-prefix" >&2; exit 2; }
[ -d "$eval_dir" ] || { echo "error: no suites in $eval_dir: set EVAL_DIR" >&2; exit 2; }
mkdir -p "$out"
cd "$root" || exit 2
export PYTHONUNBUFFERED=1 W2V_EVAL_DIR=$eval_dir
repeat=${REPEAT:-3}
seeds=${SEEDS:-1,2,3}
data=(--corpus "$corpus" --eval-dir "$eval_dir")
failed=""

part() {  # part NAME COMMAND...: run it, its output into OUT_DIR/NAME.txt and on the console
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed="$failed $name"
}

for p in $parts; do
    case $p in
    gpu) part gpu nvidia-smi --query-gpu=name,driver_version,pstate,clocks.sm,clocks.max.sm,persistence_mode,memory.total --format=csv ;;
    tests) part tests bash -c "python -m pytest -q -p no:cacheprovider tests/test_cuda_engine.py && python -m pytest -q -p no:cacheprovider -m cuda tests --ignore=tests/test_cuda_engine.py" ;;
    reads) part reads bash -c "python scripts/bench_cuda.py --model cbow --epochs 5 --reads cached,coherent --quality --seeds 1,2,3 ${data[*]@Q} && python scripts/bench_cuda.py --model skipgram --epochs 5 --reads cached,coherent --quality --seeds 1,2,3 ${data[*]@Q}" ;;
    chunks) part chunks bash -c "python scripts/bench_cuda.py --model skipgram --epochs 5 --chunks 1,2,3,6 --quality --seeds 1,2,3 ${data[*]@Q} && python scripts/bench_cuda.py --model cbow --epochs 5 --chunks 1,2,3,6 --quality --seeds 1,2,3 ${data[*]@Q}" ;;
    warps) part warps python scripts/bench_cuda.py --model cbow --epochs 5 --warps 528,1056,2112 --quality --seeds 1,2,3 "${data[@]}" ;;
    subwords) part subwords bash -c "python scripts/bench_cuda.py --ngrams --model skipgram --epochs 5 --warps 0,1056,4224 --quality --seeds $seeds ${data[*]@Q} && python scripts/bench_cuda.py --ngrams --model cbow --epochs 5 --warps 0,1056,4224 --quality --seeds $seeds ${data[*]@Q}" ;;
    protocol) part protocol python scripts/bench.py --device cuda --kinds words --repeat "$repeat" --seeds "$seeds" "${data[@]}" ;;
    subword-protocol) part subword-protocol python scripts/bench.py --device cuda --kinds subwords --repeat "$repeat" --seeds "$seeds" "${data[@]}" ;;
    before)
        if [ -z "${BASE:-}" ] || [ ! -f "${BASE:-}/scripts/bench_cuda.py" ]; then
            echo "error: part before needs BASE=<an older checkout of w2v>" >&2; failed="$failed before"
        else
            part before bash -c "for r in 1 2 3; do for m in skipgram cbow; do for tree in ${BASE@Q} .; do echo \"== \$tree \$m run \$r\"; python \"\$tree/scripts/bench_cuda.py\" --model \$m --scale 1,8 ${data[*]@Q} || exit 1; done; done; done"
        fi ;;
    trace) part trace python scripts/bench.py --device cuda --kinds words,subwords --sides w2v --trace "$out/trace" "${data[@]}" ;;
    threads) part threads python scripts/bench.py --model skipgram,cbow --threads 1,2,4,8,16 --repeat 3 "${data[@]}" ;;
    *) echo "error: unknown part $p" >&2; failed="$failed $p" ;;
    esac
done
[ -z "$failed" ] || { echo "failed:$failed" >&2; exit 1; }
