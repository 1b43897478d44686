"""Trained vectors out: vectors.pt, word2vec text/binary, and nn.Embedding for downstream models.

    python -m w2v.export checkpoint=runs/x/checkpoints/step-00001000.pt out=runs/x binary=true
    python -m w2v.export vectors=runs/x/vectors.pt out=runs/x binary=true

Formats
- vectors.pt: see docs/design.md (a plain dict; `torch.load(path, weights_only=True)`).
- word2vec text: a `V D` header line, then `word v1 ... vD` per line, floats written with
  '%.9g' (9 significant digits: every float32 reads back bit-exact).
- word2vec binary: the same header, then per word `word ` + D little-endian float32 + `\\n`,
  as word2vec.c writes it (gensim reads both with and without that newline; so do we).

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
from w2v.atomic import archive_damage, atomic_open, atomic_torch_save
from w2v.cli import Usage, parse_cli, report_errors
from w2v.config import ExportConfig
from w2v.errors import W2VError, one_line
from w2v.vectors import KeyedVectors, _tokenizer_dict
from w2v.vocab import Tokenizer, Vocab

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
) -> None:
    """Write vectors.pt atomically. counts=None stores zeros (unknown counts)."""
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
    atomic_torch_save(obj, path)


def _table(t: Any, rows: int, name: str) -> torch.Tensor:
    """A detached, contiguous float32 CPU copy, checked to have one row per word."""
    t = torch.as_tensor(t).detach().to("cpu", torch.float32).contiguous()
    if t.dim() != 2 or t.shape[0] != rows:
        raise W2VError(f"{name} has shape {tuple(t.shape)}; expected ({rows}, dim)")
    return t


def _load_pt(path: Path) -> KeyedVectors:
    obj = read_vectors_pt(path)
    return KeyedVectors(obj["words"], obj["vectors"], obj["counts"].numpy(), obj["tokenizer"])


def read_vectors_pt(path: Path) -> dict:
    """vectors.pt as its plain dict (format checked, damage refused; see docs/design.md)."""
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
    damage = archive_damage(path)
    if damage:
        raise W2VError(f"{path} is corrupt: {damage}; re-export it")
    return obj


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
    data = path.read_bytes()
    if not data.strip():
        raise W2VError(f"{path} is empty; re-export the vectors")
    if data.startswith(ZIP_MAGIC):
        return _load_pt(path)
    suffix = path.suffix.lower()
    binary = suffix == ".bin" or (suffix not in (".txt", ".vec") and not _looks_like_text(data))
    return _read_binary(path, data) if binary else _read_text(path, data)


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
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise W2VError(f"{path} is not a readable vectors.pt or checkpoint "
                           f"({err.__class__.__name__}); re-export it") from err
        vocab = ckpt.vocab_dict(obj) if isinstance(obj, dict) else None
        if vocab is not None:  # a checkpoint
            return Tokenizer.from_dict(vocab["tokenizer"])
        if isinstance(obj, dict) and "tokenizer" in obj:
            return Tokenizer.from_dict(obj["tokenizer"])
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

    Rows 0..V-1 are the vocabulary in file order. Extra rows are appended so word ids stay
    the vocabulary's ids: '<pad>' (a zero row; padding_idx, so it gets no gradient) and then
    '<unk>' (unknown_init='mean': the mean of all vectors, a neutral guess for rare words;
    'zeros': a zero row).

    max_norm, norm_type, scale_grad_by_freq and sparse go to nn.Embedding.from_pretrained
    unchanged: e.g. sparse=True (with freeze=False) gives sparse gradients for
    torch.optim.SparseAdam or SGD, so a step updates only the rows a batch used.
    """
    kv = source if isinstance(source, KeyedVectors) else load_vectors(source)
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


# ---- a run's exports -----------------------------------------------------------------------


def export_tensors(
    out_dir: str | Path,
    words: list[str],
    counts: Any,
    tokenizer: Any,
    input_vectors: torch.Tensor,
    output_vectors: torch.Tensor | None,
    cfg: ExportConfig,
) -> list[Path]:
    """Write vectors.pt (+ .txt, .bin, and vectors_avg.* as cfg asks); return the paths."""
    out_dir = Path(out_dir)
    words = list(words)
    inp = _table(input_vectors, len(words), "input vectors")
    # Output rows are per-word vectors only with negative sampling/softmax (V rows);
    # hierarchical softmax's V-1 inner nodes belong to no word.
    per_word = output_vectors is not None and output_vectors.shape[0] == len(words)
    out = _table(output_vectors, len(words), "output vectors") if per_word else None
    written = _write_set(out_dir / "vectors", words, counts, tokenizer, inp, out, cfg)
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


def _write_set(stem: Path, words, counts, tokenizer, vectors, output, cfg) -> list[Path]:
    paths = [stem.with_suffix(".pt")]
    save_vectors(paths[0], words, counts, vectors, tokenizer, output=output)
    for wanted, suffix in ((cfg.text, ".txt"), (cfg.binary, ".bin")):
        if wanted:
            paths.append(stem.with_suffix(suffix))
            write_word2vec(paths[-1], words, vectors, binary=suffix == ".bin")
    return paths


def export_run(run_dir: str | Path, model: nn.Module, vocab: Any, cfg: ExportConfig) -> list[Path]:
    """Export a trained w2v.model.Word2Vec and its Vocab into run_dir (see export_tensors)."""
    return export_tensors(
        run_dir, vocab.words, vocab.counts, vocab.tokenizer,
        model.input.weight, model.output.weight, cfg,
    )


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, cfg: ExportConfig) -> list[Path]:
    """The same files from a training checkpoint (read by checkpoint.load, format checked)."""
    state = ckpt.load(checkpoint)
    try:
        vocab = Vocab.from_dict(state["vocab"])  # older checkpoints: words, counts, tokenizer
        weights = state["model"]
        inp = weights["input.weight"]
    except (KeyError, TypeError, ValueError) as err:
        raise W2VError(f"{checkpoint} is not a w2v checkpoint (needs 'model' with "
                       f"'input.weight' and 'vocab'): {err.__class__.__name__}") from err
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
