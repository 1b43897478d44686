"""Continued training: a new run that starts from existing vectors (trainer.init_from).

    python -m w2v.train data.path=b.txt trainer.init_from=outputs/<run>/vectors.pt \
        data.vocab_update=true

`trainer.resume` continues the same run (position, optimizer, schedule) from its checkpoint;
`trainer.init_from` starts a new run - a new corpus, schedule and optimizer - whose weights
begin as a previous run's instead of random:

- the file: vectors.pt (input vectors, and output vectors where it holds "output"), a
  checkpoint (both tables, and the loss they were trained with), a word2vec .txt/.bin file
  from any tool (input vectors only, no counts), or a fastText .bin (fastText's own, gensim's
  or w2v's: words, counts, n-gram rows and output vectors);
- a subword run (model.maxn > 0) starts from a subword model's file (a fastText .bin, or a
  vectors.pt/checkpoint of a w2v run with n-grams) with the same minn, maxn and bucket: the
  old words' rows and every n-gram row are copied, so unseen words keep their vectors too;
  a word-level run started from a subword model takes its words' composed vectors;
- its words keep their ids 0..V-1 (corpus.py encodes the new corpus against them, and
  vocab.continue_vocab appends this corpus's new words when data.vocab_update=true);
- words the file lacks start as word2vec starts every word (Word2Vec.reset_parameters: input
  uniform in +-0.5/dim, output zeros), from trainer.seed;
- output weights: per-word rows (negative sampling, softmax) are copied for the old words.
  Hierarchical-softmax rows are inner nodes of the Huffman tree, which is built from the counts:
  without vocab_update the counts, hence the tree, are the old run's and the rows are copied;
  with vocab_update the counts change, the tree is rebuilt and an old row would sit on a node
  that now splits other words, so the output layer starts from zeros (as word2vec's does).

Only the model's weights are touched, before the engine is built, so every engine (and every
torchrun rank: each loads the same file) starts from the same state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from w2v import checkpoint as ckpt
from w2v.atomic import archive_too_large
from w2v.config import Config
from w2v.errors import W2VError
from w2v.export import FORMAT as VECTORS_FORMAT
from w2v.export import IDENTITY_TOKENIZER, ZIP_MAGIC, load_vectors, read_vectors_pt
from w2v.fasttext_bin import FASTTEXT_MAGIC, read_fasttext_bin
from w2v.model import Word2Vec, full_input, mean_rows
from w2v.tokenizer import Tokenizer, subword_rows
from w2v.vocab import Vocab

log = logging.getLogger(__name__)

@dataclass
class InitFrom:
    """What a previous run left: its vocabulary (counts all 0 when the file has none) and
    weights. output is (V, D) per word, (V-1, D) Huffman nodes (output_loss "hs"), or None."""

    path: Path
    kind: str  # "vectors.pt", "checkpoint" or "word2vec"
    vocab: Vocab
    vectors: torch.Tensor  # float32 (V, D)
    output: torch.Tensor | None
    output_loss: str | None  # "negative"/"softmax" (per word), "hs" (nodes), None
    # A subword model's {"minn", "maxn", "bucket", "input": (V + bucket, D) input table}.
    subwords: dict | None = None


def load_init(cfg: Config) -> InitFrom:
    """Read trainer.init_from and check it fits cfg.model (dimension, output layer)."""
    path = Path(cfg.trainer.init_from).expanduser()
    if not path.is_file():
        raise W2VError(f"trainer.init_from={str(path)!r} does not exist; give a vectors.pt, a "
                       "checkpoint, or a word2vec .txt/.bin file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        init = _read_torch(path)
    elif head == FASTTEXT_MAGIC:
        init = _read_fasttext(path)
    else:
        kv = load_vectors(path)  # word2vec text/binary: no counts, no output layer
        init = InitFrom(path, "word2vec", _vocab(path, kv.words, None, IDENTITY_TOKENIZER),
                        kv.vectors.float(), None, None)
    _check(init, cfg)
    return init


def _read_torch(path: Path) -> InitFrom:
    """A checkpoint, read by checkpoint.load, or a vectors.pt, read by export.read_vectors_pt
    (each checks its format and refuses damage); the format tag says which."""
    fmt = _format_tag(path)
    if fmt in ckpt.READABLE:
        state = ckpt.load(path)
        model, vocab = state["model"], state["vocab"]
        m = (state.get("config") or {}).get("model")
        m = m if isinstance(m, dict) else {}  # (ckpt.load checked the rest of the file)
        rows = len(vocab["words"]) + (m.get("bucket", 0) if m.get("maxn") else 0)
        table, subwords = full_input(model, rows).float(), None
        if m.get("maxn"):  # a subword model: its words' vectors are means of their rows
            subwords = {k: m[k] for k in ("minn", "maxn", "bucket")} | {"input": table}
            table = mean_rows(table, *subword_rows(list(vocab["words"]), m["minn"], m["maxn"],
                                                   m["bucket"]))
        return InitFrom(path, "checkpoint",
                        _vocab(path, vocab["words"], vocab["counts"], vocab["tokenizer"]),
                        table, model.get("output.weight"), m.get("loss", "negative"),
                        subwords)
    if fmt == VECTORS_FORMAT:
        obj = read_vectors_pt(path)
        output = obj.get("output")
        return InitFrom(path, "vectors.pt",
                        _vocab(path, obj["words"], obj["counts"], obj["tokenizer"]),
                        obj["vectors"].float(), output, "negative" if output is not None else None,
                        obj.get("subwords"))
    raise W2VError(f"trainer.init_from={str(path)!r} is neither a w2v vectors.pt nor a "
                   f"checkpoint (format {fmt!r})")


def _read_fasttext(path: Path) -> InitFrom:
    """A fastText .bin: its words (in its order), counts, input table and output layer (per
    word with negative sampling; fastText's hierarchical-softmax tree is its own, so not
    taken)."""
    ft = read_fasttext_bin(path)
    a = ft.args
    table = torch.from_numpy(ft.input_matrix)
    subwords = None
    vectors = table[:len(ft.words)]
    if a["maxn"]:
        subwords = {"minn": a["minn"], "maxn": a["maxn"], "bucket": a["bucket"],
                    "input": table}
        vectors = mean_rows(table, *subword_rows(ft.words, a["minn"], a["maxn"], a["bucket"]))
    hs = a["loss"] == "hs"
    output = None if hs else torch.from_numpy(ft.output_matrix[:len(ft.words)])
    if hs:
        log.info("%s was trained with hierarchical softmax: its tree is fastText's own, so "
                 "the output layer starts from zeros", path)
    return InitFrom(path, "fastText .bin", _vocab(path, ft.words, ft.counts, IDENTITY_TOKENIZER),
                    vectors, output, None if hs else "negative", subwords)


def _format_tag(path: Path) -> str | None:
    """The "format" entry of a torch file, its tensors memory-mapped and left unread."""
    too_large = archive_too_large(path)
    if too_large:
        raise W2VError(f"trainer.init_from={str(path)!r} cannot be read: {too_large}; give an "
                       "intact vectors.pt or checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a damaged archive
        raise W2VError(f"trainer.init_from={str(path)!r} cannot be read "
                       f"({type(err).__name__}); give an intact vectors.pt or checkpoint") from None
    return obj.get("format") if isinstance(obj, dict) else None


def _vocab(path: Path, words: list[str], counts, tokenizer: dict) -> Vocab:
    counts = np.zeros(len(words), np.int64) if counts is None else np.asarray(counts, np.int64)
    if len(set(words)) != len(words):
        raise W2VError(f"trainer.init_from={str(path)!r} lists a word twice; a vocabulary needs "
                       "each word once")
    return Vocab(list(words), counts, Tokenizer.from_dict(tokenizer))


def _check_subwords(init: InitFrom, cfg: Config, where: str) -> None:
    """A subword run needs the file's n-gram rows, hashed as this run hashes."""
    m, sub = cfg.model, init.subwords
    if not m.maxn:
        return  # a word-level run takes the composed vectors of any file
    if sub is None:
        raise W2VError(f"{where} holds word vectors without n-grams, but model.maxn={m.maxn} "
                       "trains subwords: start from a subword model's file (a fastText .bin, "
                       "or vectors.pt of a run with n-grams), or train with model.maxn=0")
    theirs = (sub["minn"], sub["maxn"], sub["bucket"])
    if theirs != (m.minn, m.maxn, m.bucket):
        raise W2VError(f"{where} hashes n-grams with minn={theirs[0]}, maxn={theirs[1]}, "
                       f"bucket={theirs[2]}; set model.minn={theirs[0]} model.maxn={theirs[1]} "
                       f"model.bucket={theirs[2]} to continue from it")


def _check(init: InitFrom, cfg: Config) -> None:
    """Shapes that cannot fit this run are errors; a different tokenizer is a warning."""
    where = f"trainer.init_from={str(init.path)!r}"
    dim, loss = init.vectors.shape[1], cfg.model.loss
    _check_subwords(init, cfg, where)
    if dim != cfg.model.dim:
        raise W2VError(f"{where} holds {dim}-dimensional vectors but model.dim={cfg.model.dim}; "
                       f"set model.dim={dim}")
    if init.output is not None and (init.output_loss == "hs") != (loss == "hs"):
        have = ("Huffman-tree node vectors (model.loss=hs)" if init.output_loss == "hs"
                else "per-word output vectors (model.loss=negative/softmax)")
        raise W2VError(f"{where} holds {have}, which model.loss={loss} cannot use; train with "
                       f"the file's loss, or start from its input vectors alone (its word2vec "
                       ".txt export)")
    if init.output is not None and init.output.shape[1] != dim:
        raise W2VError(f"{where}: its output layer is {tuple(init.output.shape)}, expected "
                       f"(*, {dim}); the file is damaged")
    data, old = cfg.data, init.vocab.tokenizer
    if init.kind != "word2vec" and (old.lowercase, old.pattern) != (data.lowercase,
                                                                      data.token_pattern):
        log.warning("%s was tokenized with lowercase=%s, token_pattern=%r; this corpus uses "
                    "data.lowercase=%s, data.token_pattern=%r, so some words may not match",
                    where, old.lowercase, old.pattern, data.lowercase, data.token_pattern)
    if old.phrases is not None and not data.phrases.passes:
        log.warning("%s was trained with phrases (%d); this corpus is not phrased, so its "
                    "phrase words (e.g. new_york) get no new occurrences (data.phrases.passes "
                    "learns phrases from this corpus)", where, len(old.phrases))


def init_weights(model: Word2Vec, init: InitFrom, vocab: Vocab, cfg: Config) -> None:
    """Copy the old rows into a freshly initialised model whose vocabulary starts with the
    old words (corpus.build_corpus(..., base=init.vocab) gives such a vocabulary)."""
    v = len(init.vocab)
    if vocab.words[:v] != init.vocab.words:
        raise W2VError(f"the vocabulary does not start with trainer.init_from's {v} words; "
                       "build the corpus with base=init.vocab")  # a programming error
    output = "input vectors only"
    with torch.no_grad():
        if model.subwords is not None:  # the old words' own rows and every n-gram row
            table = init.subwords["input"]
            model.input.weight[:v].copy_(table[:v])
            model.input.weight[len(vocab):].copy_(table[v:])
        else:
            model.input.weight[:v].copy_(init.vectors)
        if init.output is not None and cfg.model.loss != "hs":
            model.output.weight[:v].copy_(init.output)
            output = "input and output vectors"
        elif init.output is not None and len(vocab) == v and np.array_equal(
                vocab.counts, init.vocab.counts):
            model.output.weight.copy_(init.output)  # same counts: the same Huffman tree
            output = "input vectors and Huffman-tree nodes"
        elif init.output is not None:
            output = ("input vectors; the Huffman tree is rebuilt from the updated counts, so "
                      "the output layer (tree nodes) starts from zeros")
    log.info("initialised %d of %d words from %s: %s", v, len(vocab), init.path, output)
