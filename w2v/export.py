"""Trained vectors out: vectors.pt, word2vec text/binary, and nn.Embedding for downstream models.

    python -m w2v.export checkpoint=runs/x/checkpoints/step-00001000.pt out=runs/x binary=true
    python -m w2v.export vectors=runs/x/vectors.pt out=runs/x binary=true

Formats
- vectors.pt: see docs/design.md (a plain dict; `torch.load(path, weights_only=True)`).
- word2vec text: a `V D` header line, then `word v1 ... vD` per line, floats written with
  '%.9g' (9 significant digits: every float32 reads back bit-exact).
- word2vec binary: the same header, then per word `word ` + D little-endian float32 + `\\n`,
  as word2vec.c writes it (gensim reads both with and without that newline; so do we).

- fasttext.bin (subword models, model.maxn > 0): fastText's binary model format, which
  fastText (`fasttext.load_model`) and gensim (`load_facebook_model`) read, giving every word,
  seen or unseen, the vector w2v gives it (w2v.fasttext_bin).

Subword models also keep their n-gram table in vectors.pt (`subwords`: minn, maxn, bucket and
the whole (V + bucket, D) input table), so that load_vectors and load_embedding give unseen
words vectors (the mean of their n-gram rows, as fastText and gensim do); the word2vec formats
hold the vocabulary's composed vectors.

Words containing whitespace cannot be stored in the word2vec formats (whitespace separates the
fields). They are written with each whitespace character replaced by '_', with a warning; if that
makes two words equal the export fails with W2VError, because a reader would keep only one.
vectors.pt stores every word unchanged.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING
from torch import nn

from w2v import checkpoint as ckpt
from w2v.atomic import archive_damage, archive_too_large, atomic_open, atomic_torch_save
from w2v.cli import Usage, parse_cli, report_errors
from w2v.config import ExportConfig
from w2v.errors import W2VError, one_line
from w2v.fasttext_bin import FASTTEXT_MAGIC, read_fasttext_bin, write_fasttext_bin
from w2v.model import full_input, is_table, mean_rows, non_finite
from w2v.tokenizer import Tokenizer, oov_rows, subword_rows
from w2v.vectors import KeyedVectors, Ngrams, _tokenizer_dict
from w2v.vocab import Vocab

FORMAT = "w2v.vectors/1"
# Recorded for vectors read from other tools' files: the words are used exactly as written.
IDENTITY_TOKENIZER = {"lowercase": False, "pattern": None}
PAD, UNK = "<pad>", "<unk>"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save files are zip archives
TEXT_BLOCK_ROWS = 256  # rows formatted at once for the word2vec text format (~4 MB of Python)


# ---- vectors.pt ----------------------------------------------------------------------------


def save_vectors(
    path: str | Path,
    words: list[str],
    counts: Any,
    vectors: torch.Tensor,
    tokenizer: Any,
    output: torch.Tensor | None = None,
    subwords: dict | None = None,
) -> None:
    """Write vectors.pt atomically. counts=None stores zeros (unknown counts). subwords: a
    subword model's {"minn", "maxn", "bucket", "input": (V + bucket, D) input table}."""
    vectors = _table(vectors, len(words), "vectors")
    if counts is None:
        counts = np.zeros(len(words), dtype=np.int64)
    counts = torch.as_tensor(np.asarray(counts, dtype=np.int64)).clone()
    if counts.shape != (len(words),):
        raise W2VError(f"counts has shape {tuple(counts.shape)}; expected ({len(words)},)")
    obj = {
        "format": FORMAT,
        "words": list(words),
        "counts": counts,
        "vectors": vectors,
        "tokenizer": dict(_tokenizer_dict(tokenizer) or IDENTITY_TOKENIZER),
    }
    if output is not None:
        obj["output"] = _table(output, len(words), "output")
    if subwords is not None:
        rows = len(words) + int(subwords["bucket"])
        obj["subwords"] = {**{k: int(subwords[k]) for k in ("minn", "maxn", "bucket")},
                           "input": _table(subwords["input"], rows, "subword input table")}
    atomic_torch_save(obj, path)


def _table(t: Any, rows: int, name: str) -> torch.Tensor:
    """A detached, contiguous float32 CPU copy, checked to have one row per word."""
    t = torch.as_tensor(t).detach().to("cpu", torch.float32).contiguous()
    if t.dim() != 2 or t.shape[0] != rows:
        raise W2VError(f"{name} has shape {tuple(t.shape)}; expected ({rows}, dim)")
    return t


def _load_pt(path: Path) -> KeyedVectors:
    obj = read_vectors_pt(path)
    return KeyedVectors(obj["words"], obj["vectors"], obj["counts"].numpy(), obj["tokenizer"],
                        ngrams=_ngrams(obj.get("subwords"), len(obj["words"])))


def _ngrams(subwords: dict | None, words: int) -> Ngrams | None:
    """vectors.pt's n-gram table (its input rows after the vocabulary's), if it has one."""
    if subwords is None:
        return None
    table = subwords["input"]
    return Ngrams(subwords["minn"], subwords["maxn"], subwords["bucket"], table[words:],
                  table[:words])


def _load_fasttext(path: Path) -> KeyedVectors:
    """A fastText .bin (fastText's, gensim's or ours): composed vectors and n-gram rows."""
    ft = read_fasttext_bin(path)
    a = ft.args
    table = torch.from_numpy(ft.input_matrix)
    vectors = mean_rows(table, *subword_rows(ft.words, a["minn"], a["maxn"], a["bucket"]))
    ngrams = Ngrams(a["minn"], a["maxn"], a["bucket"], table[len(ft.words):],
                    table[:len(ft.words)]) if a["maxn"] else None
    return KeyedVectors(ft.words, vectors, np.asarray(ft.counts), IDENTITY_TOKENIZER,
                        ngrams=ngrams)


def read_vectors_pt(path: Path) -> dict:
    """vectors.pt as its plain dict (format checked, damage refused; see docs/design.md):
    sizes before anything is allocated, then the entries' types and shapes, then the CRCs,
    then that every weight is a finite number."""
    too_large = archive_too_large(path)
    if too_large:
        raise W2VError(f"{path} is not a w2v vectors.pt: {too_large}; re-export it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged archive
        raise W2VError(f"{path} is not a readable vectors.pt file ({err.__class__.__name__}: "
                       f"{one_line(err)}); re-export it") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        hint = " (a training checkpoint: run python -m w2v.export first)" if got and str(
            got).startswith("w2v.checkpoint") else ""
        raise W2VError(f"{path} has format {got!r}, expected {FORMAT!r}{hint}")
    problem = _vectors_pt_problem(obj)
    if problem:
        raise W2VError(f"{path} is not a valid vectors.pt: {problem}; re-export it")
    damage = archive_damage(path)
    if damage:
        raise W2VError(f"{path} is corrupt: {damage}; re-export it")
    for key in ("vectors", "output"):
        bad = non_finite(obj[key], obj["words"]) if obj.get(key) is not None else None
        if bad:
            raise W2VError(f"{path} holds non-finite {key} ({bad}): it was exported from a "
                           "diverged run; export a good checkpoint or retrain with a lower "
                           "trainer.lr")
    return obj


def _vectors_pt_problem(obj: dict) -> str | None:
    """What is missing or of the wrong type or shape in a loaded vectors.pt dict, or None.
    Checked once here, so that no later use of an entry fails with a traceback."""
    words = obj.get("words")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return "'words' is not a list of strings"
    vectors = obj.get("vectors")
    if not is_table(vectors, len(words)):
        return f"'vectors' is not a ({len(words)}, dim) float tensor"
    counts = obj.get("counts")
    if not (isinstance(counts, torch.Tensor) and tuple(counts.shape) == (len(words),)
            and not counts.is_floating_point() and not counts.is_complex()):
        return f"'counts' is not a ({len(words)},) integer tensor"
    tokenizer = obj.get("tokenizer")
    if not (isinstance(tokenizer, dict) and isinstance(tokenizer.get("lowercase"), bool)
            and isinstance(tokenizer.get("pattern"), (str, type(None)))
            and isinstance(tokenizer.get("phrases"), (dict, type(None)))):
        return "'tokenizer' is not a dict of lowercase (bool), pattern and phrases"
    output = obj.get("output")
    if output is not None and not is_table(output, len(words), vectors.shape[1]):
        return f"'output' is not a ({len(words)}, {vectors.shape[1]}) float tensor"
    return None


# ---- word2vec text and binary --------------------------------------------------------------


def _w2v_words(words: list[str]) -> list[str]:
    """Words safe for the word2vec formats: whitespace -> '_' (warned), collisions refused."""
    bad = [w for w in words if not w or any(ch.isspace() for ch in w)]
    if not bad:
        return list(words)
    if "" in bad:
        raise W2VError("an empty word cannot be written in word2vec format; drop it from the "
                       "vocabulary or export vectors.pt only")
    out = ["".join("_" if ch.isspace() else ch for ch in w) for w in words]
    if len(set(out)) != len(set(words)):
        seen: dict[str, str] = {}
        for w, o in zip(words, out):
            if o in seen and seen[o] != w:
                raise W2VError(f"words {seen[o]!r} and {w!r} both become {o!r} in word2vec "
                               "format (whitespace -> '_'); export vectors.pt only")
            seen[o] = w
    warnings.warn(f"{len(bad)} words contain whitespace and are written with '_' instead "
                  f"(e.g. {bad[0]!r}); vectors.pt keeps them unchanged", stacklevel=3)
    return out


def write_word2vec(path: str | Path, words: list[str], vectors: Any, binary: bool) -> None:
    """Write the word2vec text or binary format (atomically); see the module docstring."""
    table = _table(vectors, len(words), "vectors").numpy()
    names = _w2v_words(list(words))
    v, d = table.shape
    with atomic_open(path, "wb") as f:
        f.write(f"{v} {d}\n".encode())
        if binary:
            rows = table.astype("<f4")
            f.write(b"".join(w.encode() + b" " + rows[i].tobytes() + b"\n"
                             for i, w in enumerate(names)))
        else:
            # One C-level '%' per row formats all D floats: ~10x faster than per-float str().
            # Rows go out in blocks, so the Python floats and strings in memory at once are a
            # block's (a few MB), not the whole table's (~70 MB for 22k x 100).
            fmt = " ".join(["%.9g"] * d)
            for start in range(0, v, TEXT_BLOCK_ROWS):
                rows = table[start : start + TEXT_BLOCK_ROWS].tolist()
                lines = [f"{w} {fmt % tuple(row)}\n"
                         for w, row in zip(names[start : start + TEXT_BLOCK_ROWS], rows)]
                f.write("".join(lines).encode())


def _header(line: bytes, path: Path) -> tuple[int, int] | None:
    """(V, D) from a `V D` header line, or None when the line is not a header (GloVe-style)."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        v, d = int(parts[0]), int(parts[1])
        if d < 1:
            raise W2VError(f"{path}: header {line.strip().decode()!r} gives dimension 0")
        return v, d
    return None


def _read_text(path: Path, data: bytes) -> KeyedVectors:
    lines = data.split(b"\n")  # bytes split: a word may hold any non-ASCII character
    header = _header(lines[0], path)
    body = lines[1:] if header else lines
    while body and not body[-1].strip():
        body.pop()  # the final newline (and stray blank lines) at the end
    if header is None:
        d = len(body[0].split()) - 1
        if d < 1:
            raise W2VError(f"{path}: first line is neither a 'V D' header nor 'word v1 ... vD'")
        v = len(body)
    else:
        v, d = header
    if len(body) != v:
        raise W2VError(f"{path}: header says {v} words but the file has {len(body)} lines of "
                       "vectors; the file is truncated or the header is wrong")
    words, values = [], []
    for n, line in enumerate(body, start=2 if header else 1):
        word, _, rest = _decode(line, path, n).rstrip().partition(" ")
        fields = rest.split()
        if len(fields) != d:
            raise W2VError(f"{path}: line {n} ({word!r}) has {len(fields)} values, expected {d} "
                           "(from the header/first line); the file is damaged")
        words.append(word)
        values.append(rest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (or raises) on unparsable text
            table = np.fromstring(" ".join(values), dtype=np.float32, sep=" ")  # C parser, fast
    except (ValueError, DeprecationWarning) as err:
        raise W2VError(f"{path}: some values are not numbers; the file is damaged") from err
    if table.size != v * d:
        raise W2VError(f"{path}: some values are not numbers; the file is damaged")
    return KeyedVectors(words, torch.from_numpy(table.reshape(v, d)), None, IDENTITY_TOKENIZER)


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise W2VError(f"{path}: line {line} is not UTF-8 ({err.reason}); re-encode the file") \
            from err


def _read_binary(path: Path, data: bytes) -> KeyedVectors:
    end = data.find(b"\n")
    header = _header(data[:end], path) if end >= 0 else None
    if header is None:
        raise W2VError(f"{path}: a word2vec binary file starts with a 'V D' header line")
    v, d = header
    width = 4 * d
    # Each entry is at least a 1-byte word, a space and D floats: a header that promises more
    # than the file holds is refused before anything is allocated for it (1e14 words: 728 TiB).
    if v * (width + 2) > len(data) - end - 1:
        raise W2VError(f"{path}: header says {v:,} words of {d:,} floats, at least "
                       f"{v * (width + 2):,} bytes, but {len(data) - end - 1:,} bytes follow it; "
                       "it is truncated or the header is wrong")
    words, starts = [], np.empty(v, dtype=np.int64)
    pos = end + 1
    for i in range(v):  # word boundaries need a scan; the floats are gathered at once below
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + width > len(data):
            raise W2VError(f"{path}: header says {v} words of {d} floats but the file ends "
                           f"after {i}; it is truncated or the header is wrong")
        # word2vec.c ends each vector with '\n'; gensim writes none: accept both.
        words.append(_decode(data[pos:space].lstrip(b"\n"), path, i + 2))
        starts[i] = space + 1
        pos = space + 1 + width
    if data[pos:].strip():
        raise W2VError(f"{path}: {len(data) - pos} bytes follow the {v} words the header "
                       "announces; the header is wrong or the file is not word2vec binary")
    # One join of V slices: no (V, 4D) index array (that would be 8x the table's size).
    packed = b"".join(data[s : s + width] for s in starts.tolist())
    table = np.frombuffer(packed, dtype="<f4").astype(np.float32)
    return KeyedVectors(words, torch.from_numpy(table.reshape(v, d)), None, IDENTITY_TOKENIZER)


def _looks_like_text(data: bytes) -> bool:
    """True when the first vector line parses as `word float...` (binary floats almost never do)."""
    lines = data.split(b"\n", 2)
    probe = lines[1] if len(lines) > 1 and _header(lines[0], Path()) else lines[0]
    try:
        fields = probe.decode("utf-8").split()
        [float(x) for x in fields[1:]]
    except (UnicodeDecodeError, ValueError):
        return False
    return len(fields) >= 2


def load_vectors(path: str | Path) -> KeyedVectors:
    """Read vectors.pt, or a word2vec text/binary file from any tool (by content and extension)."""
    path = Path(path)
    if not path.is_file():
        raise W2VError(f"{path} does not exist (expected vectors.pt, .txt or .bin)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        return _load_pt(path)  # (not read whole first: a subword table is large)
    if head == FASTTEXT_MAGIC:
        return _load_fasttext(path)
    data = path.read_bytes()
    if not data.strip():
        raise W2VError(f"{path} is empty; re-export the vectors")
    suffix = path.suffix.lower()
    binary = suffix == ".bin" or (suffix not in (".txt", ".vec") and not _looks_like_text(data))
    kv = _read_binary(path, data) if binary else _read_text(path, data)
    bad = non_finite(kv.vectors, kv.words)
    if bad:  # word2vec.c and gensim write and read nan/inf without a word
        raise W2VError(f"{path} holds {bad}: vectors from a diverged run, or a damaged file; "
                       "retrain with a lower trainer.lr, or drop those rows")
    return kv


# ---- text -> tokens ------------------------------------------------------------------------


def load_tokenizer(source: str | Path | KeyedVectors) -> Tokenizer:
    """The tokenizer that trained `source` (vectors.pt, a checkpoint, a corpus cache's
    vocab.json, or loaded KeyedVectors): lowercasing, token pattern and phrases, so that
    `tokenizer(text)` gives the tokens training gave (`New York` -> `new_york`). Word2vec
    text/binary files record none: their tokenizer splits on whitespace and keeps case."""
    if isinstance(source, KeyedVectors):
        return Tokenizer.from_dict(source.tokenizer or IDENTITY_TOKENIZER)
    path = Path(source)
    if path.suffix == ".json":
        return Vocab.load(path).tokenizer
    if path.is_file() and path.read_bytes()[:4] == ZIP_MAGIC:
        too_large = archive_too_large(path)
        if too_large:
            raise W2VError(f"{path} is not a w2v vectors.pt or checkpoint: {too_large}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise W2VError(f"{path} is not a readable vectors.pt or checkpoint "
                           f"({err.__class__.__name__}); re-export it") from err
        vocab = ckpt.vocab_dict(obj) if isinstance(obj, dict) else None
        recorded = vocab if vocab is not None else obj  # a checkpoint's, or a vectors.pt's
        if isinstance(recorded, dict) and "tokenizer" in recorded:
            try:
                return Tokenizer.from_dict(recorded["tokenizer"])
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                raise W2VError(f"{path} records a malformed tokenizer ({type(err).__name__}); "
                               "re-export it") from None
        raise W2VError(f"{path} holds no tokenizer (not a w2v vectors.pt or checkpoint)")
    return Tokenizer.from_dict(load_vectors(path).tokenizer or IDENTITY_TOKENIZER)


def tokenize(text: str, source: str | Path | KeyedVectors | Tokenizer) -> list[str]:
    """`text` as the run behind `source` tokenized its corpus (see load_tokenizer). For many
    texts, load the tokenizer once: `tok = w2v.load_tokenizer(path); tok(text)`."""
    tokenizer = source if isinstance(source, Tokenizer) else load_tokenizer(source)
    return tokenizer(text)


# ---- nn.Embedding --------------------------------------------------------------------------


def load_embedding(
    source: str | Path | KeyedVectors,
    freeze: bool = True,
    padding: bool = False,
    unknown: bool = False,
    unknown_init: str = "mean",
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> tuple[nn.Embedding, dict[str, int]]:
    """An nn.Embedding initialised from trained vectors, and its word -> row mapping.
    Subword vectors (a model trained with n-grams) give a SubwordEmbedding instead, which maps
    any words, seen or not, to vectors (`emb(["king", "kingliness"])`).

    Rows 0..V-1 are the vocabulary in file order. Extra rows are appended so word ids stay
    the vocabulary's ids: '<pad>' (a zero row; padding_idx, so it gets no gradient) and then
    '<unk>' (unknown_init='mean': the mean of all vectors, a neutral guess for rare words;
    'zeros': a zero row).

    max_norm, norm_type, scale_grad_by_freq and sparse go to nn.Embedding.from_pretrained
    unchanged: e.g. sparse=True (with freeze=False) gives sparse gradients for
    torch.optim.SparseAdam or SGD, so a step updates only the rows a batch used.
    """
    kv = source if isinstance(source, KeyedVectors) else load_vectors(source)
    if kv.ngrams is not None:
        if padding or unknown:
            raise W2VError("subword vectors give every word a vector (unseen ones from their "
                           "n-grams): load them without padding/unknown and pad in your model")
        emb = SubwordEmbedding(kv, freeze=freeze, max_norm=max_norm, norm_type=norm_type,
                               sparse=sparse)
        return emb, dict(emb.vocab)
    mapping = {w: i for i, w in enumerate(kv.words)}
    rows = [kv.vectors.detach().float().cpu()]
    padding_idx = None
    for name, wanted in ((PAD, padding), (UNK, unknown)):
        if not wanted:
            continue
        if name in mapping and mapping[name] < len(kv):
            raise W2VError(f"the vocabulary already has {name!r}; use it directly instead of "
                           f"{'padding' if name == PAD else 'unknown'}=True")
        mapping[name] = sum(r.shape[0] for r in rows)
        if name == PAD:
            padding_idx = mapping[name]
            rows.append(torch.zeros(1, kv.dim))
        elif unknown_init == "mean":
            rows.append(rows[0].mean(0, keepdim=True))
        elif unknown_init == "zeros":
            rows.append(torch.zeros(1, kv.dim))
        else:
            raise W2VError(f"unknown_init={unknown_init!r} is not 'mean' or 'zeros'")
    weight = torch.cat(rows)
    emb = nn.Embedding.from_pretrained(weight, freeze=freeze, padding_idx=padding_idx,
                                       max_norm=max_norm, norm_type=norm_type,
                                       scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
    return emb, mapping


class SubwordEmbedding(nn.Module):
    """fastText's word vectors as a PyTorch module: an nn.EmbeddingBag (mode mean) over the
    subword model's input table, where a vocabulary word is the bag of its own row and its
    n-grams' rows, and an unseen word the bag of its n-grams' rows.

        emb, vocab = w2v.load_embedding("outputs/<run>/vectors.pt", freeze=False)
        vectors = emb(["king", "kingliness"])          # (2, D), the second one unseen
        rows, starts = emb.encode(batch_words)         # or in a DataLoader's collate_fn
        vectors = emb.bag(rows, starts)

    A word with no n-gram and no row (impossible for minn <= 3) gets a zero vector."""

    def __init__(self, kv: KeyedVectors, freeze: bool = True, max_norm: float | None = None,
                 norm_type: float = 2.0, sparse: bool = False) -> None:
        super().__init__()
        ng = kv.ngrams
        words = len(kv.words)
        self.minn, self.maxn, self.bucket = ng.minn, ng.maxn, ng.bucket
        self.lowercase = bool(kv.tokenizer and kv.tokenizer.get("lowercase"))
        table = torch.cat([ng.word_rows, ng.rows]) if ng.word_rows is not None else None
        if table is None:  # no raw word rows (a .bin's): each word is its composed vector
            table = torch.cat([kv.vectors.float(), ng.rows.float()])
        self.bag = nn.EmbeddingBag.from_pretrained(
            table.detach().float().clone(), freeze=freeze, max_norm=max_norm,
            norm_type=norm_type, mode="mean", sparse=sparse)
        self.vocab = {w: i for i, w in enumerate(kv.words)}
        if ng.word_rows is not None:
            offsets, rows = subword_rows(kv.words, self.minn, self.maxn, self.bucket)
        else:
            offsets, rows = np.arange(words + 1), np.arange(words)
        self._rows = {w: rows[offsets[i]:offsets[i + 1]].tolist()
                      for i, w in enumerate(kv.words)}

    def rows(self, word: str) -> list[int]:
        """The input rows whose mean is `word`'s vector."""
        key = word.lower() if self.lowercase else word
        found = self._rows.get(key)
        if found is None:
            found = oov_rows(key, self.minn, self.maxn, self.bucket, len(self.vocab))
        return found

    def encode(self, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """EmbeddingBag's (input, offsets) for `words`: one bag per word."""
        rows = [self.rows(w) for w in words]
        starts = np.cumsum([0] + [len(r) for r in rows[:-1]])
        device = self.bag.weight.device
        return (torch.tensor([i for r in rows for i in r], dtype=torch.long, device=device),
                torch.as_tensor(starts, dtype=torch.long, device=device))

    def forward(self, words: list[str]) -> torch.Tensor:
        """(N, D) the vectors of `words`."""
        return self.bag(*self.encode(list(words)))


# ---- a run's exports -----------------------------------------------------------------------


def export_tensors(
    out_dir: str | Path,
    words: list[str],
    counts: Any,
    tokenizer: Any,
    input_vectors: torch.Tensor,
    output_vectors: torch.Tensor | None,
    cfg: ExportConfig,
    subwords: dict | None = None,
) -> list[Path]:
    """Write vectors.pt (+ .txt, .bin, and vectors_avg.* as cfg asks); return the paths.
    input_vectors are the words' vectors (a subword model's composed ones); subwords: see
    save_vectors."""
    out_dir = Path(out_dir)
    words = list(words)
    inp = _table(input_vectors, len(words), "input vectors")
    # Output rows are per-word vectors only with negative sampling/softmax (V rows);
    # hierarchical softmax's V-1 inner nodes belong to no word.
    per_word = output_vectors is not None and output_vectors.shape[0] == len(words)
    out = _table(output_vectors, len(words), "output vectors") if per_word else None
    ngrams = subwords["input"] if subwords else None
    for name, table in (("input vectors", inp), ("output vectors", out),
                        ("input rows (words and n-grams)", ngrams)):
        bad = non_finite(table, words) if table is not None else None
        if bad:  # before any file is written: no export of a diverged run
            raise W2VError(f"refusing to export: the {name} hold {bad} (the run diverged); "
                           "export an earlier checkpoint or retrain with a lower trainer.lr")
    written = _write_set(out_dir / "vectors", words, counts, tokenizer, inp, out, cfg,
                         subwords)
    if cfg.average_output:
        if out is None:
            warnings.warn("export.average_output needs per-word output vectors (loss=negative "
                          "or softmax); hierarchical softmax has none, so vectors_avg.* is "
                          "not written", stacklevel=2)
        else:
            avg = (inp + out) / 2
            written += _write_set(out_dir / "vectors_avg", words, counts, tokenizer, avg, None,
                                  cfg)
    return written


def _write_set(stem: Path, words, counts, tokenizer, vectors, output, cfg,
               subwords: dict | None = None) -> list[Path]:
    paths = [stem.with_suffix(".pt")]
    save_vectors(paths[0], words, counts, vectors, tokenizer, output=output, subwords=subwords)
    for wanted, suffix in ((cfg.text, ".txt"), (cfg.binary, ".bin")):
        if wanted:
            paths.append(stem.with_suffix(suffix))
            write_word2vec(paths[-1], words, vectors, binary=suffix == ".bin")
    return paths


def export_run(run_dir: str | Path, model: nn.Module, vocab: Any, cfg: ExportConfig,
               run_cfg: Any = None) -> list[Path]:
    """Export a trained w2v.model.Word2Vec and its Vocab into run_dir (see export_tensors);
    a subword model also as fasttext.bin, with run_cfg's settings (the run's Config)."""
    sub = getattr(model, "subwords", None)
    subwords = None if sub is None else {"minn": sub.minn, "maxn": sub.maxn,
                                         "bucket": sub.bucket, "input": model.input.weight}
    written = export_tensors(run_dir, vocab.words, vocab.counts, vocab.tokenizer,
                             model.word_vectors(), model.output.weight, cfg, subwords)
    if subwords is not None:
        written.append(export_fasttext(Path(run_dir) / "fasttext.bin", model, vocab, run_cfg))
    return written


def export_fasttext(path: Path, model: nn.Module, vocab: Any, run_cfg: Any) -> Path:
    """A subword model as fastText's .bin: its dictionary, input table (with the n-gram
    rows) and output table, with the run's settings under fastText's names."""
    m, t = run_cfg.model, run_cfg.trainer
    write_fasttext_bin(
        path, list(vocab.words), [int(c) for c in vocab.counts],
        model.input.weight.detach().cpu().numpy(), model.output.weight.detach().cpu().numpy(),
        arch=m.arch, loss=m.loss, dim=m.dim, window=m.window, epochs=t.epochs,
        min_count=run_cfg.data.min_count, negative=m.negative, minn=m.minn, maxn=m.maxn,
        bucket=m.bucket, lr=t.lr, sample=m.sample, ntokens=int(np.sum(vocab.counts)))
    return path


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, cfg: ExportConfig) -> list[Path]:
    """The same files from a training checkpoint (read by checkpoint.load, format checked)."""
    state = ckpt.load(checkpoint)
    try:
        vocab = Vocab.from_dict(state["vocab"])  # older checkpoints: words, counts, tokenizer
        weights = state["model"]
        model_cfg = (state.get("config") or {}).get("model", {})
        inp = full_input(weights, len(vocab.words) + (model_cfg.get("bucket", 0)
                                                       if model_cfg.get("maxn") else 0))
    except (KeyError, TypeError, ValueError) as err:
        raise W2VError(f"{checkpoint} is not a w2v checkpoint (needs 'model' with "
                       f"'input.weight' and 'vocab'): {err.__class__.__name__}") from err
    if model_cfg.get("maxn"):  # a subword model: its words' vectors are means of rows
        words = mean_rows(inp.float(), *subword_rows(list(vocab.words), model_cfg["minn"],
                                                     model_cfg["maxn"], model_cfg["bucket"]))
        subwords = {k: model_cfg[k] for k in ("minn", "maxn", "bucket")} | {"input": inp}
        return export_tensors(out_dir, vocab.words, vocab.counts, vocab.tokenizer,
                              words, weights.get("output.weight"), cfg, subwords)
    return export_tensors(out_dir, vocab.words, vocab.counts, vocab.tokenizer,
                          inp, weights.get("output.weight"), cfg)


def export_vectors(vectors: str | Path, out_dir: str | Path, cfg: ExportConfig) -> list[Path]:
    """The same files from exported vectors: a run's vectors.pt (its output vectors too, for
    cfg.average_output, when it has them), or a word2vec text/binary file to convert. A
    training checkpoint given here is exported as export_checkpoint does."""
    path = Path(vectors)
    if stored_format(path).startswith("w2v.checkpoint"):
        return export_checkpoint(path, out_dir, cfg)
    if _starts_with(path, ZIP_MAGIC):
        obj = read_vectors_pt(path)
        return export_tensors(out_dir, obj["words"], obj["counts"], obj["tokenizer"],
                              obj["vectors"], obj.get("output"), cfg)
    kv = load_vectors(path)  # word2vec text or binary: no counts, no output vectors
    return export_tensors(out_dir, kv.words, kv.counts, kv.tokenizer, kv.vectors, None, cfg)


def stored_format(path: Path) -> str:
    """The `format` a w2v file records (w2v.checkpoint/2, w2v.vectors/1), read with
    weights_only; "" for anything else (word2vec files, damaged or foreign archives, whose
    readers then say what is wrong)."""
    if not _starts_with(path, ZIP_MAGIC):
        return ""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types for a damaged or foreign archive
        return ""
    return str(obj.get("format", "")) if isinstance(obj, dict) else ""


def _starts_with(path: Path, magic: bytes) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


# ---- CLI -----------------------------------------------------------------------------------


@dataclass
class ExportArgs(ExportConfig):
    """ExportConfig's keys (text, binary, average_output) and where to read and write."""

    checkpoint: str | None = None
    """A training checkpoint (checkpoints/step-N.pt; a run keeps its newest 3)."""
    vectors: str | None = None
    """Or exported vectors: a run's vectors.pt, or a word2vec .txt/.bin to convert."""
    out: str = MISSING
    """The folder to write vectors.pt, vectors.txt, vectors.bin, vectors_avg.* into."""

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.vectors is None):
            raise W2VError("give checkpoint=PATH (a training checkpoint) or vectors=PATH (a "
                           "run's vectors.pt, or word2vec .txt/.bin), one of the two")


USAGE = Usage(
    module="w2v.export",
    synopsis="checkpoint=PATH|vectors=PATH out=DIR [key=value ...]",
    about="""
        Write vectors.pt and the word2vec text/binary formats, as a finished run writes them
        into its run dir, from a training checkpoint (a run keeps its newest 3, in
        checkpoints/) or from exported vectors (a run's vectors.pt: e.g. binary=true for a
        run that wrote only vectors.txt; or a word2vec file to convert).
    """,
    examples=(
        "checkpoint=outputs/<run>/checkpoints/step-00001000.pt out=outputs/<run>",
        "vectors=outputs/<run>/vectors.pt out=outputs/<run> binary=true",
        "checkpoint=outputs/<run>/checkpoints/step-00001000.pt out=vecs binary=true text=false",
    ),
)


@report_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_cli(ExportArgs, sys.argv[1:] if argv is None else argv, USAGE)
    # Either key takes either kind of file: the content decides (a vectors.pt given as
    # checkpoint= is exported as vectors.pt); a file neither reads as is refused by the
    # reader its key names.
    if args.checkpoint and not stored_format(Path(args.checkpoint)).startswith(FORMAT):
        written = export_checkpoint(args.checkpoint, args.out, args)
    else:
        written = export_vectors(args.checkpoint or args.vectors, args.out, args)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
