"""fastText's binary model format (.bin): read and write.

    write_fasttext_bin("fasttext.bin", words, counts, input_matrix, output_matrix, arch="skipgram",
                       loss="negative", dim=100, window=5, epochs=5, min_count=5, negative=5,
                       minn=3, maxn=6, bucket=2_000_000, lr=0.025, sample=1e-3, ntokens=n)
    model = read_fasttext_bin("wiki.en.bin")        # words, counts, both matrices, args

The layout (fastText's FastText::saveModel; gensim's `_fasttext_bin` reads the same):
magic 793712314 and version 12 (int32 each); the args (dim, ws, epoch, minCount, neg,
wordNgrams, loss, model, bucket, minn, maxn, lrUpdateRate as int32, t as float64); the
dictionary (size, nwords, nlabels as int32, ntokens and pruneidx_size as int64, then per entry
the word's UTF-8 bytes, a NUL, its count as int64 and its type as int8, then pruneidx_size
int32 pairs); the input matrix (a quantisation flag byte, rows and columns as int64, then
float32 rows); the output matrix likewise. Little-endian, as on every machine fastText runs on.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.atomic import atomic_open
from w2v.errors import W2VError

MAGIC, VERSION = 793712314, 12
FASTTEXT_MAGIC = struct.pack("<i", MAGIC)  # a .bin's first 4 bytes
_HEAD = struct.Struct("<2i")
_ARGS = struct.Struct("<12id")
_ARG_NAMES = ("dim", "ws", "epoch", "min_count", "neg", "word_ngrams", "loss", "model", "bucket",
              "minn", "maxn", "lr_update_rate", "t")
_DICT = struct.Struct("<3iqq")
_ENTRY = struct.Struct("<qb")
_MATRIX = struct.Struct("<?qq")
# fastText's enums (args.h): loss_name and model_name.
LOSSES = {1: "hs", 2: "negative", 3: "softmax", 4: "ova"}
MODELS = {1: "cbow", 2: "skipgram", 3: "supervised"}


@dataclass
class FastTextModel:
    """What a .bin holds: the dictionary's words (in its order) and counts, the input matrix
    (nwords + bucket, dim), the output matrix, and the args by fastText's names (loss and
    model as w2v's names: "negative"/"hs", "skipgram"/"cbow")."""

    words: list[str]
    counts: list[int]
    input_matrix: np.ndarray
    output_matrix: np.ndarray
    args: dict


def write_fasttext_bin(path, words, counts, input_matrix, output_matrix, *, arch: str,
                       loss: str, dim: int, window: int, epochs: int, min_count: int,
                       negative: int, minn: int, maxn: int, bucket: int, lr: float,
                       sample: float, ntokens: int) -> None:
    """Write a model fastText and gensim load (atomically). For loss="hs" w2v's output
    table has a row per inner node (V-1); fastText allocates one per word, so it is padded
    with a zero row. fastText keeps no lr in the file; lr is accepted for symmetry."""
    losses = {v: k for k, v in LOSSES.items()}
    models = {v: k for k, v in MODELS.items()}
    out = np.asarray(output_matrix, np.float32)
    if out.shape[0] < len(words):
        out = np.concatenate([out, np.zeros((len(words) - out.shape[0], out.shape[1]),
                                            np.float32)])
    with atomic_open(path, "wb") as f:
        f.write(_HEAD.pack(MAGIC, VERSION))
        f.write(_ARGS.pack(dim, window, epochs, min_count, negative, 1, losses[loss],
                           models[arch], bucket, minn, maxn, 100, sample))
        f.write(_DICT.pack(len(words), len(words), 0, int(ntokens), -1))
        for word, count in zip(words, counts):
            f.write(word.encode("utf-8") + b"\0" + _ENTRY.pack(int(count), 0))
        for matrix in (np.asarray(input_matrix, np.float32), out):
            f.write(_MATRIX.pack(False, *matrix.shape))
            # The table itself, not a bytes copy of it (800 MB at 2M buckets x dim 100).
            f.write(memoryview(np.ascontiguousarray(matrix, "<f4")).cast("B"))


def read_fasttext_bin(path: str | Path) -> FastTextModel:
    """Read a .bin written by fastText, gensim or w2v. Damage and what w2v cannot use (a
    supervised or quantised model) are one W2VError line; sizes are checked against the
    file's before anything is allocated."""
    path = Path(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        reader = _Reader(f, size, path)
        magic, version = reader.unpack(_HEAD)
        if magic != MAGIC:
            raise W2VError(f"{path} is not a fastText .bin (its magic number is {magic})")
        args = dict(zip(_ARG_NAMES, reader.unpack(_ARGS)))
        words, counts = _read_dictionary(reader, args)
        inp = reader.matrix("input")
        out = reader.matrix("output")
    args["loss"] = LOSSES.get(args["loss"], str(args["loss"]))
    args["model"] = MODELS.get(args["model"], str(args["model"]))
    if args["model"] == "supervised":
        raise W2VError(f"{path} is a supervised (classifier) fastText model; w2v reads word "
                       "vector models (fasttext.train_unsupervised)")
    # (fastText sets bucket 0 for a word-level model; a writer may keep it anyway)
    if inp.shape[1] != args["dim"] or inp.shape[0] not in (len(words),
                                                           len(words) + args["bucket"]):
        raise W2VError(f"{path}: its input matrix is {inp.shape}, but its dictionary and args "
                       f"give {len(words)} words + {args['bucket']} buckets of dim "
                       f"{args['dim']}; the file is damaged")
    return FastTextModel(words, counts, inp, out, args)


def _read_dictionary(reader: _Reader, args: dict) -> tuple[list[str], list[int]]:
    entries, nwords, nlabels, _ntokens, prune = reader.unpack(_DICT)
    if not 0 <= nwords <= entries or nlabels or entries * (1 + _ENTRY.size) > reader.left():
        raise W2VError(f"{reader.path}: its dictionary header ({entries} entries, {nwords} "
                       f"words, {nlabels} labels) does not fit the file; it is damaged or a "
                       "supervised model")
    words, counts = [], []
    for _ in range(entries):
        words.append(reader.word())
        count, _kind = reader.unpack(_ENTRY)
        counts.append(count)
    if prune > 0:
        reader.skip(prune * 8)
    return words[:nwords], counts[:nwords]


class _Reader:
    """Sequential reads with one clear error at the end of the file."""

    def __init__(self, f, size: int, path: Path) -> None:
        self.f, self.size, self.path = f, size, path

    def left(self) -> int:
        return self.size - self.f.tell()

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise W2VError(f"{self.path} ends early (a truncated fastText .bin)")
        return data

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.read(fmt.size))

    def skip(self, n: int) -> None:
        self.read(n)

    def word(self) -> str:
        raw = bytearray()
        while (b := self.read(1)) != b"\0":
            raw += b
        return raw.decode("utf-8", errors="replace")

    def matrix(self, name: str) -> np.ndarray:
        quantised, rows, cols = self.unpack(_MATRIX)
        if quantised:
            raise W2VError(f"{self.path} is a quantised fastText model (.ftz); w2v reads full "
                           "models (.bin)")
        if rows < 0 or cols < 0 or rows * cols * 4 > self.left():
            raise W2VError(f"{self.path}: its {name} matrix ({rows} x {cols}) does not fit the "
                           "file; it is damaged or truncated")
        data = np.fromfile(self.f, dtype="<f4", count=rows * cols)
        return data.reshape(rows, cols).astype(np.float32, copy=False)
