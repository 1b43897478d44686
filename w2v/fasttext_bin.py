"""Placeholder until the fastText format module lands (replaced at merge)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.atomic import atomic_open

MAGIC, VERSION = 793712314, 12
FASTTEXT_MAGIC = struct.pack("<i", MAGIC)
_ARGS = "<12id"
LOSS = {"hs": 1, "negative": 2, "softmax": 3}
MODEL = {"cbow": 1, "skipgram": 2}


@dataclass
class FastTextModel:
    words: list
    counts: list
    input_matrix: np.ndarray
    output_matrix: np.ndarray
    args: dict


def write_fasttext_bin(path, words, counts, input_matrix, output_matrix, *, arch, loss, dim,
                       window, epochs, min_count, negative, minn, maxn, bucket, lr, sample,
                       ntokens):
    out = np.asarray(output_matrix, np.float32)
    if out.shape[0] < len(words):  # hs: fastText allocates a row per word
        out = np.concatenate([out, np.zeros((len(words) - out.shape[0], out.shape[1]),
                                            np.float32)])
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<2i", MAGIC, VERSION))
        f.write(struct.pack(_ARGS, dim, window, epochs, min_count, negative, 1, LOSS[loss],
                            MODEL[arch], bucket, minn, maxn, 100, sample))
        f.write(struct.pack("<3iqq", len(words), len(words), 0, ntokens, -1))
        for w, c in zip(words, counts):
            f.write(w.encode("utf-8") + b"\0" + struct.pack("<qb", c, 0))
        for m in (np.asarray(input_matrix, np.float32), out):
            f.write(struct.pack("<?qq", False, *m.shape))
            # The table itself, not a bytes copy of it (800 MB at 2M buckets x dim 100).
            f.write(memoryview(np.ascontiguousarray(m, "<f4")).cast("B"))


def read_fasttext_bin(path) -> FastTextModel:
    data = Path(path).read_bytes()
    pos = 8
    vals = struct.unpack_from(_ARGS, data, pos)
    pos += struct.calcsize(_ARGS)
    names = ["dim", "ws", "epoch", "min_count", "neg", "word_ngrams", "loss", "model",
             "bucket", "minn", "maxn", "lr_update_rate", "t"]
    args = dict(zip(names, vals))
    args["loss"] = {v: k for k, v in LOSS.items()}.get(args["loss"], "softmax")
    args["model"] = {v: k for k, v in MODEL.items()}.get(args["model"], "supervised")
    size, nwords, nlabels, ntokens, prune = struct.unpack_from("<3iqq", data, pos)
    pos += struct.calcsize("<3iqq")
    words, counts = [], []
    for _ in range(size):
        end = data.index(b"\0", pos)
        words.append(data[pos:end].decode("utf-8"))
        c, _t = struct.unpack_from("<qb", data, end + 1)
        counts.append(c)
        pos = end + 10
    pos += max(prune, 0) * 8
    mats = []
    for _ in range(2):
        _q, m, n = struct.unpack_from("<?qq", data, pos)
        pos += 17
        mats.append(np.frombuffer(data, np.float32, m * n, pos).reshape(m, n).copy())
        pos += 4 * m * n
    return FastTextModel(words, counts, mats[0], mats[1], args)
