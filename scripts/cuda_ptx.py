"""Compile the cuda engine's kernel to PTX for real GPUs, without a GPU.

    pip install 'w2v[cuda12]' && python scripts/cuda_ptx.py          # every variant, sm_80/90
    python scripts/cuda_ptx.py --dim 300 --cc 9.0 --out kernel.ptx     # one dim, keep the PTX
    python scripts/cuda_ptx.py --reads coherent                        # the L2-load variant

numba's CUDA simulator (the CI tests) runs the kernel as Python, so it cannot show that the
kernel compiles for a GPU; numba-cuda's NVVM wheel can, and ptxas (in the same wheel, when
present) reports registers per thread, spills and the stack frame (a local array left in
memory instead of registers), which set the occupancy to tune on a GPU.
One line per variant: architecture, loss, dim, compute capability, how weight rows are read
(w2v.engines.cuda.READS), then `ok` and the figures. A "coherent" variant must load its rows
with ld.global.cg, or it fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kernel_signature():
    from numba import types

    def arr(dtype, ndim):
        return types.Array(dtype, ndim, "C")

    i64, f64 = types.int64, types.float64
    # The argument types of w2v.engines.cuda.train_slice's launch, in order.
    return (arr(types.float32, 2), arr(types.float32, 2), arr(types.int32, 1),
            arr(types.int64, 1), i64, i64, i64, i64, i64, i64, i64, i64, types.boolean,
            arr(types.int32, 1), arr(types.int32, 1), i64, arr(types.int8, 2),
            arr(types.int32, 2), arr(types.int32, 1), arr(types.int64, 1), arr(types.int32, 1),
            f64, f64, i64, i64, i64,
            arr(types.float64, 2))


def pretend_device(cc: tuple[int, int]) -> None:
    """Device functions compile for the current device's compute capability; without a GPU,
    say which one (numba-cuda internals: this script only)."""
    from numba.cuda import dispatcher

    class Device:
        compute_capability = cc

    dispatcher.get_current_device = lambda: Device()


def ptxas_report(ptx: str, cc: tuple[int, int], max_registers: int) -> str:
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        try:
            import nvidia.cuda_nvcc as nvcc  # the cu12 wheel ships ptxas beside NVVM

            found = Path(list(nvcc.__path__)[0]) / "bin" / "ptxas"
            ptxas = str(found) if found.is_file() else None
        except ImportError:
            ptxas = None
    if ptxas is None:
        return "(no ptxas for register counts)"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        # The kernel's register cap, which numba-cuda gives the linker rather than the PTX.
        done = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v",
                               f"--maxrregcount={max_registers}", str(src), "-o",
                               str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    text = done.stdout + done.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores", text)
    stack = re.search(r"(\d+) bytes stack frame", text)  # local arrays not in registers
    if done.returncode != 0 or regs is None:
        return f"ptxas failed: {text.strip().splitlines()[-1:]}"
    return (f"{regs.group(1)} registers, {spill.group(1) if spill else '?'} bytes spilled, "
            f"{stack.group(1) if stack else '?'} bytes stack frame")


def compile_variant(engine, cuda, dim: int, arch: str, loss: str, reads: str,
                    cc: tuple[int, int], subwords: bool = False) -> str:
    engine._kernel.cache_clear()
    per_lane = -(-dim // engine.LANES)
    kernel = engine._kernel(per_lane, engine.LANES, arch == "skipgram", loss == "hs",
                            reads == "coherent", engine.chunk_rows(per_lane), subwords)
    ptx, _ = cuda.compile_ptx(kernel.py_func, kernel_signature(), cc=cc, fastmath=True)
    if (reads == "coherent") != ("ld.global.cg" in ptx):
        raise RuntimeError(f"reads={reads} but the PTX has "
                           f"{ptx.count('ld.global.cg')} ld.global.cg loads")
    return ptx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, nargs="*", default=[100, 300])
    p.add_argument("--cc", nargs="*", default=["8.0", "9.0"])
    p.add_argument("--reads", nargs="*", default=["cached", "coherent"])
    p.add_argument("--out", type=Path, help="write the last variant's PTX here")
    p.add_argument("--model", nargs="*", default=["words", "subwords"],
                   help="words (word2vec), subwords (fastText's n-grams), or both")
    args = p.parse_args()
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        sys.exit("error: unset NUMBA_ENABLE_CUDASIM: the simulator compiles nothing")
    try:
        from numba import cuda
    except ImportError as err:
        sys.exit(f"error: {err}")
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is None:
        sys.exit("error: numba-cuda is not installed: pip install 'w2v[cuda12]'")
    from w2v.engines import cuda as engine

    failed = False
    ptx = ""
    for cc_text in args.cc:
        cc = tuple(int(x) for x in cc_text.split("."))
        pretend_device(cc)
        for dim in args.dim:
            for model, arch, loss, reads in ((m, a, lo, r) for m in args.model
                                             for a in ("skipgram", "cbow")
                                             for lo in ("negative", "hs") for r in args.reads):
                name = f"{model:8} {arch:8} {loss:8} dim {dim:4} sm_{cc[0]}{cc[1]} {reads:8}"
                try:
                    ptx = compile_variant(engine, cuda, dim, arch, loss, reads, cc,
                                          model == "subwords")
                except Exception as err:  # report every variant, then fail
                    print(f"{name}: FAILED {type(err).__name__}: {err}")
                    failed = True
                    continue
                print(f"{name}: ok, {len(ptx.splitlines())} PTX lines, "
                      f"{ptx.count('ld.global.cg')} L2 loads, "
                      f"{ptxas_report(ptx, cc, engine.MAX_REGISTERS)}", flush=True)
    if args.out and ptx:
        args.out.write_text(ptx)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
