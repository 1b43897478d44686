"""Compile the cuda engine's kernel to PTX for real GPUs, without a GPU.

    pip install 'w2v[cuda12]' && python scripts/cuda_ptx.py          # every variant, sm_80/90
    python scripts/cuda_ptx.py --dim 300 --cc 9.0 --out kernel.ptx     # one dim, keep the PTX
    python scripts/cuda_ptx.py --reads coherent                        # the L2-load variant
    python scripts/cuda_ptx.py --against ../w2v-old                    # word kernel unchanged?

numba's CUDA simulator (the CI tests) runs the kernel as Python, so it cannot show that the
kernel compiles for a GPU; numba-cuda's NVVM wheel can, and ptxas (in the same wheel, when
present) reports registers per thread, spills and the stack frame (a local array left in
memory instead of registers), which set the occupancy to tune on a GPU.
One line per variant: architecture, loss, dim, compute capability, how weight rows are read
(w2v.engines.cuda.READS), then `ok` and the figures. A "coherent" variant must load its rows
with ld.global.cg, or it fails.

--against OLD compares the word model's kernel of this checkout with that of another (OLD, any
checkout whose scripts/cuda_ptx.py has compile_variant), instruction by instruction, for each
variant: "same" means the GPU runs the same code (the kernel arguments a later model added
aside), so the word model's speed cannot have changed, whatever else a change added; exit 1 if any
variant differs.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
                    cc: tuple[int, int], subwords: bool = False, window: int = 5) -> str:
    engine._kernel.cache_clear()
    per_lane = -(-dim // engine.LANES)
    # The subword CBOW kernel holds its window's positions (2 window + 1) in each lane, as
    # train_slice compiles it for model.window.
    ring = 2 * window + 1 if subwords and arch == "cbow" else 1
    kernel = engine._kernel(per_lane, engine.LANES, arch == "skipgram", loss == "hs",
                            reads == "coherent", engine.chunk_rows(per_lane), subwords, ring)
    ptx, _ = cuda.compile_ptx(kernel.py_func, kernel_signature(), cc=cc, fastmath=True)
    if (reads == "coherent") != ("ld.global.cg" in ptx):
        raise RuntimeError(f"reads={reads} but the PTX has "
                           f"{ptx.count('ld.global.cg')} ld.global.cg loads")
    return ptx


def instructions(ptx: str) -> list[str]:
    """A kernel's PTX instructions in order, registers included, without the declarations,
    comments and mangled names (those carry the module path and argument types). A constant
    array (numba names them _cudapy_cmem, _cudapy_cmem$1, ... in the order it meets them) is
    named by its contents, so the same tables declared in another order read the same."""
    contents = {m.group(1): hashlib.sha1(m.group(2).encode()).hexdigest()[:12] for m in
                re.finditer(r"\.const\b[^\n]*?(_cudapy_cmem[$\d]*)\[[^\n]*?=\s*\{([^}]*)\}", ptx)}
    out = []
    for line in ptx.splitlines():
        text = line.split("//")[0].strip()
        if not text or text.startswith((".", "{", "}", "(", ")")) or text.endswith(":"):
            continue  # declarations (params, constants), scopes, labels
        text = re.sub(r"_cudapy_cmem[$\d]*", lambda m: f"<const {contents.get(m.group(0))}>",
                      text)
        out.append(re.sub(r"_ZN\w+", "<symbol>", text))
    return out


def dump_words(root: Path, out: Path, args) -> None:
    """The word model's kernel variants of the checkout at root, as PTX files in out (run in
    a process of its own: that checkout's w2v and cuda_ptx helpers, not this one's)."""
    sys.path[:0] = [str(root), str(root / "scripts")]
    for name in [m for m in sys.modules if m == "w2v" or m.startswith("w2v.")]:
        del sys.modules[name]
    import importlib

    theirs = importlib.import_module("cuda_ptx") if root != ROOT else sys.modules[__name__]
    from numba import cuda

    from w2v.engines import cuda as engine

    out.mkdir(parents=True, exist_ok=True)
    for name, cc, dim, arch, loss, reads in word_variants(args):
        theirs.pretend_device(cc)
        ptx = theirs.compile_variant(engine, cuda, dim, arch, loss, reads, cc)
        (out / f"{name.replace(' ', '_')}.ptx").write_text(ptx)


def word_variants(args):
    for cc_text in args.cc:
        cc = tuple(int(x) for x in cc_text.split("."))
        for dim in args.dim:
            for arch in ("skipgram", "cbow"):
                for loss in ("negative", "hs"):
                    for reads in args.reads:
                        yield (f"{arch} {loss} dim {dim} sm_{cc[0]}{cc[1]} {reads}", cc, dim,
                               arch, loss, reads)


def compare_words(other: Path, args) -> bool:
    """Each word kernel variant of this checkout against the same of `other`; True if every
    one is the same instruction for instruction."""
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for root, name in ((other.resolve(), "other"), (ROOT, "this")):
            done = subprocess.run([sys.executable, __file__, "--dump-words", str(root),
                                   "--into", f"{tmp}/{name}", "--cc", *args.cc, "--dim",
                                   *map(str, args.dim), "--reads", *args.reads],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"error: compiling {root}'s kernel failed:\n{done.stderr[-2000:]}")
        for name, *_ in word_variants(args):
            file = f"{name.replace(' ', '_')}.ptx"
            a = instructions(Path(tmp, "other", file).read_text())
            b = instructions(Path(tmp, "this", file).read_text())
            if a == b:
                print(f"words {name}: same {len(b)} instructions")
                continue
            same = False
            matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
            changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in
                          matcher.get_opcodes() if tag != "equal")
            print(f"words {name}: DIFFERENT, {len(a)} -> {len(b)} instructions, {changed} "
                  "changed")
    return same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, nargs="*", default=[100, 300])
    p.add_argument("--cc", nargs="*", default=["8.0", "9.0"])
    p.add_argument("--reads", nargs="*", default=["cached", "coherent"])
    p.add_argument("--out", type=Path, help="write the last variant's PTX here")
    p.add_argument("--model", nargs="*", default=["words", "subwords"],
                   help="words (word2vec), subwords (fastText's n-grams), or both")
    p.add_argument("--window", type=int, default=5,
                   help="model.window (the subword CBOW kernel holds 2 window + 1 positions)")
    p.add_argument("--against", type=Path, help="another checkout: is the word model's "
                   "kernel the same, instruction for instruction?")
    p.add_argument("--dump-words", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--into", type=Path, help=argparse.SUPPRESS)
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
    if args.dump_words:
        dump_words(args.dump_words.resolve(), args.into, args)
        return
    if args.against:
        if not (args.against / "scripts" / "cuda_ptx.py").is_file():
            sys.exit(f"error: --against {args.against}: not a w2v checkout with "
                     "scripts/cuda_ptx.py")
        sys.exit(0 if compare_words(args.against, args) else 1)
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
                                          model == "subwords", args.window)
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
