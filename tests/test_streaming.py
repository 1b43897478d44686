"""data.streaming=true under a memory cap: a corpus whose tokens would not fit in the cap as
Python strings still builds, and gives the same vocabulary and ids as a plain build.

How the cap is set (and why not RLIMIT_AS): torch, numba and pyarrow reserve over 1 GB of
address space at import, most of it never touched, so a cap on virtual memory says little.
The child process instead caps RLIMIT_DATA (private writable memory: the Python heap, numpy
buffers, anonymous mmaps; not the file-backed memory maps of the cache) at what it already
has after the imports and a warm-up build, plus BUDGET. It then builds the large corpus under
the cap, and finally shows the cap is real: holding the same corpus as Python strings
(`text.split()`) fails with MemoryError in the same process. Peak anonymous RSS over the build
is sampled and reported for information.

The build's own buffers are fixed in size (corpus.GROUP_TOKENS tokens counted together,
corpus.ENCODE_BLOCK tokens encoded per step); the child lowers both to 1M tokens so the
constant part stays well under a budget that a test-sized corpus can exceed several times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch

from w2v.config import DataConfig
from w2v.corpus import build_corpus

TOKENS = 8_000_000  # ~40 MB of text; as Python strings (text.split()) over 500 MB
BUDGET = 160 << 20  # bytes of private memory the streamed build may add


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))


def write_corpus(path, tokens: int, block: int = 500_000) -> None:
    """Zipf-distributed words over 100k types, lines of 1,000 words; one block repeated."""
    rng = np.random.default_rng(0)
    types = np.array([f"w{i:x}" for i in range(100_000)])
    words = types[np.minimum(rng.zipf(1.2, block), len(types)) - 1]
    lines = "\n".join(" ".join(words[a : a + 1000].tolist()) for a in range(0, block, 1000))
    with open(path, "w") as f:
        for _ in range(tokens // block):
            f.write(lines + "\n")


CHILD = textwrap.dedent("""
    import json, resource, sys, threading, time
    import w2v.corpus as corpus
    from w2v.config import DataConfig

    big, tiny, cache, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    corpus.GROUP_TOKENS = corpus.ENCODE_BLOCK = 1 << 20

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

    # Warm up (imports, Arrow and datasets thread pools), then cap what has been reached.
    corpus.build_corpus(DataConfig(path=tiny, min_count=1, streaming=True,
                                   cache_dir=cache + "/tiny"), progress=False)
    base_data, base_anon = status("VmData"), status("RssAnon")
    resource.setrlimit(resource.RLIMIT_DATA, (base_data + budget, resource.RLIM_INFINITY))
    peak, done = [base_anon], []

    def sample():
        while not done:
            peak[0] = max(peak[0], status("RssAnon"))
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    c = corpus.build_corpus(DataConfig(path=big, min_count=5, streaming=True,
                                       cache_dir=cache + "/big"), progress=False)
    done.append(True)
    try:
        with open(big) as f:
            held = len(f.read().split())
    except MemoryError:
        held = None
    print(json.dumps({"path": str(c.path), "anon_growth": peak[0] - base_anon,
                      "held_as_strings": held}))
""")


def test_streamed_build_under_a_memory_cap_equals_plain_build(tmp_path):
    big, tiny = tmp_path / "big.txt", tmp_path / "tiny.txt"
    write_corpus(big, TOKENS)
    tiny.write_text("a b c a\n")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(big), str(tiny), str(tmp_path / "capped"),
         str(BUDGET)],
        capture_output=True, text=True, timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    print(report)
    # The cap is real: the corpus as Python strings does not fit under it.
    assert report["held_as_strings"] is None

    from w2v.corpus import load_corpus

    streamed = load_corpus(report["path"])
    plain = build_corpus(DataConfig(path=str(big), min_count=5, cache_dir=str(tmp_path / "p")),
                         progress=False)
    assert streamed.raw_tokens == plain.raw_tokens == TOKENS
    assert streamed.vocab.words == plain.vocab.words
    assert np.array_equal(streamed.vocab.counts, plain.vocab.counts)
    assert torch.equal(streamed.ids, plain.ids)
    assert torch.equal(streamed.doc_offsets, plain.doc_offsets)
    assert streamed.num_docs == TOKENS // 1000


def mapped_file(address: int) -> str | None:
    """The file mapped at `address` in this process (/proc/self/maps), or None."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return fields[5].strip() if len(fields) == 6 else None
    return None


def test_fused_engine_trains_on_the_memory_map_in_place(tmp_path, planted):
    from w2v.distributed import World, shard
    from w2v.engines import fused

    c = build_corpus(DataConfig(path=str(planted.path), streaming=True), progress=False)
    part = shard(c, World(rank=1, size=2))
    # What the fused engine hands its kernel (train_job's conversion) is the shard's view of
    # the cache file's mapping, not a copy.
    ids = fused._as(part.ids, np.int32, "ids", 1)
    assert ids.ctypes.data == part.ids.data_ptr() > c.ids.data_ptr()
    assert mapped_file(ids.ctypes.data) == str(c.path / "ids.npy")


@pytest.mark.parametrize("kind", ["txt.gz", "parquet", "jsonl", "disk"])
def test_streamed_build_equals_plain_build_for_every_local_kind(tmp_path, planted, kind):
    lines = planted.path.read_text().splitlines()
    lines[3:3] = ["", "Mixed CASE words", "mixed case"]
    table = datasets.Dataset.from_dict({"text": lines, "id": list(range(len(lines)))})
    path = tmp_path / f"corpus.{kind}"
    if kind == "txt.gz":
        import gzip

        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    elif kind == "parquet":
        table.to_parquet(str(path))
    elif kind == "jsonl":
        table.to_json(str(path), lines=True)
    else:
        table.save_to_disk(str(path))
    plain = build_corpus(DataConfig(path=str(path), min_count=2, cache_dir=str(tmp_path / "a")),
                         progress=False)
    streamed = build_corpus(DataConfig(path=str(path), min_count=2, streaming=True,
                                       cache_dir=str(tmp_path / "b")), progress=False)
    assert streamed.vocab.words == plain.vocab.words and "mixed" in plain.vocab.words
    assert torch.equal(streamed.ids, plain.ids)
    assert torch.equal(streamed.doc_offsets, plain.doc_offsets)
    assert streamed.raw_tokens == plain.raw_tokens == sum(len(x.split()) for x in lines)
