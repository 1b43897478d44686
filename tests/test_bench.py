"""scripts/bench.py's GPU protocol, as far as it runs without a GPU: the refusal, the report;
its seeds; and scripts/bench_loop.py's stand-in engine."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def bench_module(name: str = "bench"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the protocol would run")
def test_device_cuda_without_a_gpu_is_one_error_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device",
                           "cuda", "--corpus", str(corpus)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert "--device cuda needs a CUDA GPU" in done.stderr


def test_gpu_report_names_the_gpu_the_concurrency_and_every_figure():
    bench = bench_module()
    w2v = {"gpu": "NVIDIA H100 80GB HBM3", "engine": "cuda", "cuda_warps": 2112,
           "words_per_sec": 5e7, "words_per_sec_no_ckpt": 6e7, "train_seconds": 0.2,
           "peak_rss_mib": 900, "peak_gpu_mib": 120, "analogy": 0.089, "ws353": 0.47,
           "simlex": 0.226}
    gensim = {"words_per_sec": 1.5e6, "train_seconds": 7.0, "peak_rss_mib": 150,
              "analogy": 0.084, "ws353": 0.46, "simlex": 0.224}
    args = Namespace(threads=16, repeat=3, seeds="1,2,3")
    report = bench.gpu_report(args, [("skipgram, text8-prefix x1, 5 epoch(s)",
                                      {"w2v": w2v, "gensim": gensim})])
    assert report.splitlines()[0] == ("GPU: NVIDIA H100 80GB HBM3; w2v engine cuda, "
                                      "trainer.cuda_warps 2112; the peers on 16 CPU threads; "
                                      "median of 3 (quality: mean over seeds 1,2,3)")
    assert "| figure | w2v | gensim | w2v/gensim |" in report
    assert "| raw words/s | 50,000,000 | 1,500,000 | 33.33x |" in report
    assert "| peak GPU MiB (torch.cuda.max_memory_allocated) | 120 |  |  |" in report
    assert "| analogy@30k | 0.0890 | 0.0840 | 1.06x |" in report
    assert [label for label, *_ in bench.GPU_RUNS] == ["skipgram", "cbow", "skipgram", "cbow"]
    traced = {**w2v, "gpu_loop_seconds": 0.5, "gpu_idle_in_loop_seconds": 0.3,
              "gpu_idle_by_phase_ms": {"step": 20.0, "checkpoint": 0.0, "other host work": 5.5},
              "gpu_longest_gaps": [(120.5, 0.0, ["step", "subsample"]), (3.25, 210.0, [])]}
    lines = bench.gpu_report(args, [("run", {"w2v": traced})]).splitlines()[-2:]
    assert lines == ["traced run: the loop 0.500 s, the GPU idle 0.300 s of it; idle ms while "
                     "the host was in: step 20.0, other host work 5.5",
                     "longest idle gaps (ms at +ms into the loop): 120.50 at +0 (step, "
                     "subsample); 3.25 at +210 (no phase)"]


def test_the_gpu_protocol_runs_the_subword_model_against_fasttext_beside_the_word_rows(
        tmp_path, monkeypatch):
    """--device cuda: each GPU run for the word model against gensim, then for the subword
    model (--ngrams, the bucket passed on) against fastText, both on every thread asked for;
    the report gives each table its own peer's column."""
    bench = bench_module()
    calls = []

    def worker(side, corpus, run, min_count, model, threads, seed):
        calls.append((side, model, run.epochs, run.quality, run.ngrams, corpus.name, threads))
        return {"words_per_sec": 2e7 if side == "w2v" else 1e6, "engine": "cuda",
                "gpu": "NVIDIA H200", "cuda_warps": 2112}

    monkeypatch.setattr(bench, "run_worker", worker)
    corpus = tmp_path / "text8-prefix"
    corpus.write_text("a b c")
    args = Namespace(sides="w2v,gensim,fasttext", kinds="words,subwords", corpus=corpus,
                     repeat=2, threads="16", seeds="1,2", ngrams=False, bucket=2_000_000)
    results = bench.gpu_protocol(args, tmp_path)
    assert [label for label, _ in results] == [
        f"{kind}: {model}, text8-prefix x{scale}, {epochs} epoch(s)"
        for kind in ("words", "subwords")
        for model, scale, epochs, _ in bench.GPU_RUNS]
    assert [sorted(res) for _, res in results] == ([["gensim", "w2v"]] * 4
                                                   + [["fasttext", "w2v"]] * 4)
    subword_runs = [c for c in calls if c[4]]
    assert {c[0] for c in subword_runs} == {"w2v", "fasttext"} and len(subword_runs) == 16
    assert {c[0] for c in calls if not c[4]} == {"w2v", "gensim"}
    assert ("fasttext", "skipgram", 5, True, True, "text8-prefix", 16) in calls
    assert ("fasttext", "cbow", 1, False, True, "text8-prefix-x8", 16) in calls
    report = bench.gpu_report(args, results)
    sections = report.split("\n\n")
    assert "subwords: cbow, text8-prefix x8" in sections[-1]
    assert "| figure | w2v | fasttext | w2v/fasttext |" in sections[-1]
    assert "| raw words/s | 20,000,000 | 1,000,000 | 20.00x |" in sections[-1]
    args.kinds = "subwords"
    assert len(bench.gpu_protocol(args, tmp_path)) == len(bench.GPU_RUNS)


def test_bench_refuses_unknown_kinds_and_missing_peers_in_one_line(tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    script = str(ROOT / "scripts" / "bench.py")
    done = subprocess.run([sys.executable, script, "--device", "cuda", "--kinds", "phrases",
                           "--corpus", str(corpus)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: --kinds phrases: words, subwords, or both "
                                   "comma-separated")
    done = subprocess.run([sys.executable, script, "--kinds", "words", "--corpus", str(corpus)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: --kinds picks the GPU")
    bench = bench_module()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fasttext" else real(name, *a))
    with pytest.raises(SystemExit) as stop:
        bench.check_peers(["w2v", "gensim", "fasttext"])
    assert str(stop.value) == ("error: --sides fasttext needs the fasttext package, a peer in "
                               "the dev extra: pip install -e '.[dev]'")


def test_repeats_take_the_seeds_in_turn_and_quality_is_their_mean_with_its_range():
    """Speed is the median of the repeats; quality the mean over their seeds, shown with the
    range (a positional-random GPU engine gives one draw per seed, however often it runs)."""
    bench = bench_module()
    args = Namespace(seeds="1,2,3")
    assert [bench.seed_of(args, r) for r in range(4)] == [1, 2, 3, 1]
    runs = [{"words_per_sec": w, "simlex": q} for w, q in ((3e7, 0.17), (1e7, 0.20), (2e7, 0.21))]
    merged = bench.median_of(runs)
    assert merged["words_per_sec"] == 2e7
    assert abs(merged["simlex"] - 0.19333) < 1e-4 and merged["simlex_range"] == (0.17, 0.21)
    assert "| SimLex-999 Spearman | 0.1933 (0.1700-0.2100) |  |  |" in bench.table(
        "figure", merged, None)
    assert bench.median_of(runs[:1])["simlex"] == 0.17  # one run: its own figure, no range


def test_bench_loop_runs_the_real_loop_around_a_sleeping_engine(planted, tmp_path, monkeypatch):
    """train() runs whole with the stand-in: every step, the last epoch's checkpoint written,
    vectors exported; the loop's own time is what is left after the
    sleeping."""
    from w2v import train as train_mod

    monkeypatch.setattr(train_mod, "make_engine", train_mod.make_engine)  # restored after
    loop = bench_module("bench_loop")
    steps = []
    step = loop.SleepingEngine.step
    monkeypatch.setattr(loop.SleepingEngine, "step",
                        lambda self, *a: steps.append(a[:2]) or step(self, *a))
    seconds = loop.loop_seconds(planted.path, tmp_path, 0, epochs=3, steps=2, step_seconds=0.0)
    assert steps == [(e, s) for e in range(3) for s in range(2)]
    assert seconds >= 0
    run = tmp_path / "run-0"
    names = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert names[-1] == "step-00000006.pt" and len(names) <= 3  # one waiting may be superseded
    assert (run / "vectors.pt").is_file()


def test_the_gpu_busy_time_is_the_union_of_kernel_spans_and_the_gaps_longest_first():
    bench = bench_module()
    busy, gaps = bench.busy_and_gaps([(10, 20), (0, 5), (15, 30), (40, 41), (30, 32)])
    assert busy == 5 + 22 + 1  # 0-5, 10-32 (three overlapping or touching), 40-41
    assert gaps == [8, 5]
    assert bench.busy_and_gaps([]) == (0.0, [])


def test_gpu_idle_in_the_loop_is_put_down_to_the_host_phases_it_falls_in():
    """Idle = the loop's span less the kernels' union, its ends included; each phase gets the
    idle time it overlaps (nested phases both), the rest is "other host work"."""
    bench = bench_module()
    kernels = [(5, 20), (18, 30), (40, 60), (70, 200)]  # one runs past the loop's end
    phases = {"loop": [(0, 100)], "step": [(2, 8), (31, 35)], "subsample": [(32, 34)],
              "checkpoint": [(62, 75)]}
    idle = bench.idle_by_phase(kernels, phases, (0, 100))
    assert idle["window"] == 100 and idle["idle"] == 5 + 10 + 10  # 0-5, 30-40, 60-70
    assert idle["by_phase"] == {"step": 3 + 4, "subsample": 2, "checkpoint": 8,
                                "other host work": 25 - 3 - 4 - 8}
    assert idle["gaps"] == [(10, 30, ["step", "subsample"]), (10, 60, ["checkpoint"]),
                            (5, 0, ["step"])]


def test_a_traced_run_marks_the_loops_phases(planted, tmp_path, monkeypatch):
    """--trace names the loop's host phases in the profile (what idle_by_phase reads)."""
    from torch.autograd import DeviceType

    from tests.conftest import planted_cfg
    from w2v.train import train

    bench = bench_module()
    bench.annotate_phases(monkeypatch.setattr)
    tracer = bench.start_trace("cpu")
    train(planted_cfg(planted, "trainer.epochs=2", "eval.dir=null"), tmp_path)
    tracer.__exit__(None, None, None)
    names = {e.name for e in tracer.events() if e.device_type == DeviceType.CPU}
    marked = {n[len(bench.MARK):] for n in names if n.startswith(bench.MARK)}
    assert {"loop", "loss points", "epoch loss read", "epoch end", "checkpoint"} <= marked


def test_finish_trace_reads_kernels_and_marked_phases_from_the_profile(tmp_path):
    """The cuda branch of finish_trace on a stand-in profile: CUDA events are the kernels,
    CPU events named with MARK the phases (times in microseconds); the profiler's GPU-side
    mirrors of the marks (CUDA events named with MARK) are not the GPU's work."""
    from torch.autograd import DeviceType

    bench = bench_module()

    def event(name, device, start, end):
        return SimpleNamespace(name=name, device_type=device,
                               time_range=SimpleNamespace(start=start, end=end))

    cpu, gpu = DeviceType.CPU, DeviceType.CUDA
    events = [event("w2v: loop", cpu, 1000, 11000), event("w2v: step", cpu, 1000, 1500),
              event("aten::add", cpu, 1200, 1300), event("train", gpu, 1500, 6000),
              event("train", gpu, 6000, 9000), event("w2v: checkpoint", cpu, 9000, 11000),
              event("train", gpu, 20000, 21000),  # after the loop: not its time
              event("w2v: loop", gpu, 1500, 21000), event("w2v: step", gpu, 1500, 6000)]
    tracer = SimpleNamespace(events=lambda: events, __exit__=lambda *a: None,
                             export_chrome_trace=lambda path: Path(path).write_text("{}"))
    args = Namespace(trace=tmp_path / "traces", model="cbow", epochs=5, seed=1, device="cuda")
    out = bench.finish_trace(tracer, args)
    assert Path(out["trace"]).is_file() and out["gpu_kernels"] == 3
    assert out["gpu_busy_seconds"] == pytest.approx(8.5e-3)
    assert out["gpu_loop_seconds"] == pytest.approx(0.01)
    assert out["gpu_idle_in_loop_seconds"] == pytest.approx(2.5e-3)
    assert out["gpu_idle_by_phase_ms"] == {"step": 0.5, "checkpoint": 2.0, "other host work": 0.0}
    assert out["gpu_longest_gaps"] == [(2.0, 8.0, ["checkpoint"]), (0.5, 0.0, ["step"])]


def test_gpu_figures_refuses_a_missing_corpus_and_runs_on_past_a_failed_part(tmp_path):
    """scripts/gpu_figures.sh: one line and exit 2 without text8-prefix; a part that fails
    (here an unknown one) is named at the end, exit 1, after the others have run."""
    script = ROOT / "scripts" / "gpu_figures.sh"
    env = {"PATH": "/usr/bin:/bin", "CORPUS": str(tmp_path / "none"),
           "EVAL_DIR": str(tmp_path)}
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no corpus at" in done.stderr
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n")
    env["CORPUS"] = str(corpus)
    done = subprocess.run(["bash", str(script), str(tmp_path / "out"), "bogus", "bogus2"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "failed: bogus bogus2"


def kernel_corpus(tmp_path, monkeypatch, sentences: int):
    """A small planted corpus for bench_cuda.py's runs of the kernel (numba's CUDA simulator,
    or a GPU), with the engine's module settings restored after the test."""
    from tests.conftest import write_planted_corpus
    from w2v.config import DataConfig
    from w2v.corpus import build_corpus
    from w2v.engines import cuda as engine_mod
    from w2v.engines import simulated

    if not simulated() and not torch.cuda.is_available():
        pytest.skip("needs numba's CUDA simulator (tests/conftest.py) or a GPU")
    for name in ("READS", "MAX_CHUNK"):
        monkeypatch.setattr(engine_mod, name, getattr(engine_mod, name))  # restored after
    planted = write_planted_corpus(tmp_path / "planted.txt", entities=4, context_per_entity=5,
                                   context_per_form=3, sentences=sentences, length=8)
    return build_corpus(DataConfig(path=str(planted.path), min_count=1,
                                   cache_dir=str(tmp_path / "cache")), progress=False)


@pytest.mark.parametrize("chunk", [1, 6])
def test_bench_cuda_runs_the_engine_with_each_chunk_size(tmp_path, monkeypatch, chunk):
    """scripts/bench_cuda.py's run() (here in numba's CUDA simulator, on a small planted
    corpus): the engine trains every step with the chunk size asked for, and the module
    settings it sets are those of the run."""
    from w2v.engines import cuda as engine_mod
    from w2v.engines import simulated

    corpus = kernel_corpus(tmp_path, monkeypatch, sentences=200)
    kernel, chunks = engine_mod._kernel, set()
    # _kernel(per_lane, lanes, sg, hs, coherent, chunk, subwords): the chunk is the 6th
    monkeypatch.setattr(engine_mod, "_kernel", lambda *a: chunks.add(a[5]) or kernel(*a))
    bench_cuda = bench_module("bench_cuda")
    result, model = bench_cuda.run(corpus, "skipgram", warps=2, step_words=500, epochs=1,
                                   chunk=chunk, dim=8)
    per_lane = -(-8 // engine_mod.SIM_LANES) if simulated() else 1
    assert chunks == {engine_mod.chunk_rows(per_lane)}  # the kernel compiled for the run's
    assert chunks == {min(chunk, engine_mod.ROW_FLOATS // per_lane)}
    assert result["steps"] == 4 and 1 <= result["warps"] <= 2 and result["words_per_sec"] > 0
    assert model.input.weight.shape[1] == 8


def test_bench_cuda_trains_the_subword_model_with_its_bucket(tmp_path, monkeypatch):
    """bench_cuda.py --ngrams: the kernel compiled for subwords, the model's input table the
    vocabulary's rows and the bucket's, each word's rows its n-grams (bench.py's lengths)."""
    from w2v.engines import cuda as engine_mod

    corpus = kernel_corpus(tmp_path, monkeypatch, sentences=100)
    kernel, flags = engine_mod._kernel, set()
    monkeypatch.setattr(engine_mod, "_kernel", lambda *a: flags.add(a[6]) or kernel(*a))
    bench_cuda = bench_module("bench_cuda")
    result, model = bench_cuda.run(corpus, "cbow", warps=2, step_words=400, epochs=1, dim=8,
                                   bucket=50)
    assert flags == {True} and result["words_per_sec"] > 0
    assert model.input.weight.shape == (len(corpus.vocab) + 50, 8)
    assert model.subwords.minn == 3 and model.subwords.maxn == 6
    assert model.word_vectors().shape == (len(corpus.vocab), 8)


def test_cuda_ptx_compares_kernels_by_their_instructions_not_their_declarations():
    """scripts/cuda_ptx.py --against: two builds of a kernel that differ only in declared
    parameters, comments, labels' names aside, and mangled names are the same code; a changed
    instruction or register is not."""
    cuda_ptx = bench_module("cuda_ptx")
    old = """.visible .entry _ZN3w2v7engines4cuda5trainB2v1E5ArrayIf(
\t.param .u64 _ZN3w2v7engines4cuda5trainB2v1E5ArrayIf_param_0
)
{
\t.reg .b32 %r<4>;
\tld.param.u64 %rd1, [_ZN3w2v7engines4cuda5trainB2v1E5ArrayIf_param_0];
$L__BB0_1:
\tadd.s32 %r1, %r2, 1;  // the loop
\tst.global.f32 [%rd1], %f1;
}"""
    new = old.replace("E5ArrayIf", "E5ArrayIfE5ArrayIx").replace(
        "_param_0\n)", "_param_0,\n\t.param .u64 _ZN3w2v_param_1\n)").replace("the loop", "")
    assert cuda_ptx.instructions(old) == cuda_ptx.instructions(new)
    assert cuda_ptx.instructions(old) == ["ld.param.u64 %rd1, [<symbol>];",
                                          "add.s32 %r1, %r2, 1;", "st.global.f32 [%rd1], %f1;"]
    assert cuda_ptx.instructions(old) != cuda_ptx.instructions(old.replace("%r2, 1", "%r3, 1"))
    tables = """.const .align 4 .b8 _cudapy_cmem[2] = {1, 2};
.const .align 4 .b8 _cudapy_cmem$1[2] = {3, 4};
{
\tmov.u64 %rd1, _cudapy_cmem;
\tmov.u64 %rd2, _cudapy_cmem$1;
}"""
    swapped = tables.replace("{1, 2}", "{0}").replace("{3, 4}", "{1, 2}").replace("{0}", "{3, 4}")
    assert cuda_ptx.instructions(tables) != cuda_ptx.instructions(swapped)  # other data
    renamed = swapped.replace("%rd1, _cudapy_cmem;", "%rd1, X;").replace(
        "%rd2, _cudapy_cmem$1;", "%rd2, _cudapy_cmem;").replace("%rd1, X;", "%rd1, _cudapy_cmem$1;")
    assert cuda_ptx.instructions(tables) == cuda_ptx.instructions(renamed)  # names only


@pytest.mark.parametrize(("arch", "subwords", "ring"), [("cbow", True, 11), ("cbow", False, 1),
                                                        ("skipgram", True, 1)])
def test_cuda_ptx_compiles_the_subword_cbow_kernel_with_its_window_positions(arch, subwords,
                                                                             ring):
    """The kernel train_slice launches for subword CBOW holds 2 window + 1 positions: the
    variant scripts/cuda_ptx.py reports (registers, local memory) must be that one."""
    from functools import lru_cache

    from w2v.engines import cuda as engine

    cuda_ptx = bench_module("cuda_ptx")
    seen = []

    @lru_cache
    def kernel(*args):
        seen.append(args)
        return SimpleNamespace(py_func=None)

    fake_engine = SimpleNamespace(_kernel=kernel, LANES=32, chunk_rows=engine.chunk_rows)
    fake_cuda = SimpleNamespace(compile_ptx=lambda *a, **k: ("ld.global.f32", None))
    cuda_ptx.compile_variant(fake_engine, fake_cuda, 100, arch, "negative", "cached", (9, 0),
                             subwords, 5)
    assert seen[0][6:] == (subwords, ring)
