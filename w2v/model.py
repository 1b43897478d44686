"""Word2Vec as an ordinary nn.Module: nn.Embedding (input vectors) + nn.Linear (output layer).

    model = Word2Vec(len(vocab), 100, arch="skipgram")
    loss = model(inputs, targets, negatives=negatives)   # then loss.backward(), optimizer.step()
    vectors = model.word_vectors()                       # (V, D) the vectors users keep

fastText's subword model (Bojanowski et al. 2017) is the same module with `subwords`: the input
side is an nn.EmbeddingBag over V + bucket rows, and a word's input vector is the mean of its
own row and its character n-grams' rows (`input_offsets`/`input_rows`, the CSR table built
once from the vocabulary by w2v.tokenizer.subword_rows; engines train the same rows).

The input embedding holds the vectors users keep. The Linear layer's weight (V_out, dim) holds
word2vec's second table: one output vector per word for negative sampling and full softmax
(syn1neg), or one per inner Huffman node for hierarchical softmax (syn1, V-1 rows). Output rows
are gathered with F.embedding, so with sparse=True both tables get sparse gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from w2v.errors import W2VError
from w2v.tokenizer import subword_rows


@dataclass(frozen=True)
class Subwords:
    """fastText's n-gram settings (model.minn, model.maxn, model.bucket) and each vocabulary
    word's input rows: offsets int64 (V+1,) and rows (R,) into the V + bucket input rows."""

    minn: int
    maxn: int
    bucket: int
    offsets: np.ndarray
    rows: np.ndarray

# The largest |weight| a run may reach before it counts as diverged (train.py checks it at
# every epoch end and before every checkpoint). Word2vec's weights stay small: text8-prefix
# (2 MB of it, 5 epochs) and the planted test corpus (80 epochs) end every engine, loss and
# architecture at |w| <= 4, Adam at lr 0.05 at 3.1, and published vectors stay under ~10-20.
# At 1e3 a dot product of two rows can reach dim x 1e6, where every sigmoid is saturated: the
# weights only grow, nothing is learnt. Far from normal runs (250x the largest measured); the
# loss bound below catches a milder divergence sooner.
MAX_WEIGHT = 1e3
# A logged mean loss above this multiple of the loss of untrained weights (untrained_loss)
# means the run diverged: training only lowers the loss from there (measured on 2 MB of
# text8-prefix, every loss and architecture ends its first epoch at 0.6-0.8 of it), while
# Adam at lr 0.5 ends the epoch at 6x and lr 2 at 95x, the fused engine at lr 1e4 at 1e17x.
LOSS_FACTOR = 4.0
_CHECK_ROWS = 1 << 16  # rows scanned at once when counting non-finite values (bounded memory)


class Word2Vec(nn.Module):
    """Skip-gram or CBOW with negative sampling, hierarchical softmax or full softmax.

    forward(inputs, targets, mask=None, negatives=None) returns the loss:
      - skip-gram: inputs (B,) context words, each predicting its centre word targets (B,)
        (word2vec.c and gensim train the context word's input vector on the centre word);
      - CBOW: inputs (B, C) context words with mask (B, C), their mean (or sum) predicting
        targets (B,);
      - negatives (B, K) noise words for loss="negative" (see w2v.batches); noise words equal
        to the target are ignored, as in word2vec.c;
      - weights (B,) optional 0/1 (or any) per-example weights, for fixed-shape padded batches.
    reduction="sum" makes each example's gradient a full SGD step (word2vec's learning rate
    applies per example); "mean" suits Adam and hand-written loops.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        arch: str = "skipgram",
        loss: str = "negative",
        cbow_mean: bool = True,
        sparse: bool = False,
        huffman=None,
        reduction: str = "sum",
        subwords: Subwords | None = None,
    ) -> None:
        super().__init__()
        if arch not in ("skipgram", "cbow"):
            raise W2VError(f"model.arch={arch!r} is unknown: use skipgram or cbow")
        if loss not in ("negative", "hs", "softmax"):
            raise W2VError(f"model.loss={loss!r} is unknown: use negative, hs or softmax")
        if loss == "hs" and huffman is None:
            raise ValueError("loss='hs' needs the vocabulary's Huffman tree (vocab.huffman())")
        self.arch, self.loss, self.cbow_mean = arch, loss, cbow_mean
        self.sparse, self.reduction = sparse, reduction
        out_rows = max(vocab_size - 1, 1) if loss == "hs" else vocab_size
        self.vocab_size = vocab_size
        self.subwords = subwords
        if subwords is None:
            self.input = nn.Embedding(vocab_size, dim, sparse=sparse)
        else:
            self.input = nn.EmbeddingBag(vocab_size + subwords.bucket, dim, mode="mean",
                                         sparse=sparse)
            # Derived from the vocabulary and the settings, so not saved in state_dict.
            self.register_buffer("input_offsets", torch.as_tensor(subwords.offsets,
                                                                  dtype=torch.long),
                                 persistent=False)
            self.register_buffer("input_rows", torch.as_tensor(subwords.rows, dtype=torch.long),
                                 persistent=False)
            # The only rows training ever changes: the words' own and their n-grams'.
            self.trainable = torch.as_tensor(np.unique(subwords.rows), dtype=torch.long)
        self.output = nn.Linear(dim, out_rows, bias=False)
        if huffman is not None:
            # Per word: the inner nodes on its root path, the branch taken at each, the depth.
            points = torch.as_tensor(huffman.points, dtype=torch.long).clamp_min(0)  # pads -> 0
            self.register_buffer("hs_points", points)
            self.register_buffer("hs_codes", torch.as_tensor(huffman.codes, dtype=torch.float32))
            self.register_buffer("hs_lengths", torch.as_tensor(huffman.lengths, dtype=torch.long))
        self.reset_parameters()

    @property
    def dim(self) -> int:
        return self.input.embedding_dim

    def reset_parameters(self) -> None:
        """word2vec.c's initialisation: input uniform in (-0.5/dim, 0.5/dim), output zeros;
        fastText's for the subword model: input rows uniform in (-1/dim, 1/dim), except the
        bucket rows no vocabulary word hashes to, which no training step touches: they start
        and stay zero (fastText leaves them random), so an unseen word's vector is the mean
        of trained rows and zeros, without noise, and a checkpoint need not hold them."""
        bound = (0.5 if self.subwords is None else 1.0) / self.dim
        with torch.no_grad():
            self.input.weight.uniform_(-bound, bound)
            self.output.weight.zero_()
            if self.subwords is not None:
                kept = self.input.weight[self.trainable].clone()
                self.input.weight.zero_()
                self.input.weight[self.trainable] = kept

    def checkpoint_state(self, into: dict | None = None) -> dict[str, torch.Tensor]:
        """state_dict() for a checkpoint: a subword model's input table as its trainable rows
        ("input.weight", (R, D)) and their indices ("input.weight_rows"): the others are
        zero or trainer.init_from's, which a resume restores first (2M bucket rows at dim 100
        are 800 MB, of which text8-prefix's words use about a tenth)."""
        state = self.state_dict()
        if self.subwords is not None:
            weight = state["input.weight"]
            rows = self.trainable.to(weight.device)
            # into: an earlier snapshot's tensors (checkpoint.Writer's spares): the rows are
            # gathered into its table, not into a new one copied over after (a transient copy
            # of ~70 MiB for text8-prefix at every checkpoint, the run's peak).
            out = (into or {}).get("input.weight")
            if out is not None and out.shape == (len(rows), weight.shape[1]) and (
                    out.dtype, out.device) == (weight.dtype, weight.device):
                state["input.weight"] = torch.index_select(weight, 0, rows, out=out)
            else:
                state["input.weight"] = weight[rows]
            state["input.weight_rows"] = rows
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """The inverse of checkpoint_state, in place (the engines' views stay valid)."""
        state = dict(state)
        rows = state.pop("input.weight_rows", None)
        if rows is None:
            self.load_state_dict(state)
            return
        values = state.pop("input.weight")
        self.load_state_dict(state | {"input.weight": self.input.weight}, strict=True)
        with torch.no_grad():
            self.input.weight[rows.to(self.input.weight.device)] = values.to(self.input.weight)

    def word_vectors(self) -> torch.Tensor:
        """(V, D) the vocabulary's word vectors, detached: the input rows themselves for
        word2vec, each word's mean of its own and its n-grams' rows for the subword model."""
        weight = self.input.weight.detach()
        if self.subwords is None:
            return weight
        return mean_rows(weight, self.input_offsets, self.input_rows)

    def _bags(self, words: torch.Tensor, bag: torch.Tensor, bags: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The input rows of `words` (M,) in order, and each bag's start among them (bags,),
        where word m belongs to bag bag[m] (non-decreasing): EmbeddingBag's input/offsets."""
        starts = self.input_offsets[words]
        counts = self.input_offsets[words + 1] - starts  # (M,) rows per word
        owner = torch.repeat_interleave(torch.arange(len(words), device=words.device), counts)
        first = torch.cumsum(counts, 0) - counts  # (M,) each word's first slot
        rows = self.input_rows[starts[owner] + torch.arange(len(owner), device=words.device)
                               - first[owner]]
        per_bag = torch.zeros(bags, dtype=torch.long, device=words.device)
        per_bag.index_add_(0, bag, counts)
        return rows, torch.cumsum(per_bag, 0) - per_bag

    def forward(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.hidden(inputs, mask)  # (B, D)
        if self.loss == "negative":
            if negatives is None:
                raise ValueError("loss='negative' needs negatives (B, K)")
            per_example = self._negative_sampling(hidden, targets, negatives)
        elif self.loss == "hs":
            per_example = self._hierarchical_softmax(hidden, targets)
        else:
            per_example = F.cross_entropy(self.output(hidden), targets, reduction="none")
        if weights is None:
            return per_example.sum() if self.reduction == "sum" else per_example.mean()
        total = (per_example * weights).sum()  # padded examples (weight 0) count for nothing
        return total if self.reduction == "sum" else total / weights.sum().clamp_min(1.0)

    def hidden(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The projection layer: one input vector (skip-gram) or the context mean/sum (CBOW)."""
        if self.subwords is not None:
            return self._subword_hidden(inputs, mask)
        vectors = self.input(inputs)  # (B, D) or (B, C, D)
        if vectors.dim() == 2:
            return vectors
        if mask is None:
            mask = torch.ones(inputs.shape, dtype=torch.bool, device=inputs.device)
        weights = mask.to(vectors.dtype)  # (B, C)
        if self.cbow_mean:
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        return torch.bmm(weights.unsqueeze(1), vectors).squeeze(1)  # (B, D)

    def _subword_hidden(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Skip-gram: each input word's mean of rows. CBOW: the mean over all rows of all the
        context's words (fastText's CBOW), or their sum with cbow_mean=False."""
        if inputs.dim() == 1:
            rows, starts = self._bags(inputs, torch.arange(len(inputs), device=inputs.device),
                                      len(inputs))
            return self.input(rows, starts)  # (B, D)
        if mask is None:
            mask = torch.ones(inputs.shape, dtype=torch.bool, device=inputs.device)
        example = torch.arange(inputs.shape[0], device=inputs.device)
        example = example.unsqueeze(1).expand_as(inputs)[mask]
        rows, starts = self._bags(inputs[mask], example, inputs.shape[0])
        return F.embedding_bag(rows, self.input.weight, starts, sparse=self.sparse,
                               mode="mean" if self.cbow_mean else "sum")  # (B, D)

    def _output_rows(self, index: torch.Tensor) -> torch.Tensor:
        # F.embedding instead of weight[index]: sparse=True then gives a sparse gradient.
        return F.embedding(index, self.output.weight, sparse=self.sparse)

    def _negative_sampling(
        self, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        pos = (self._output_rows(targets) * hidden).sum(-1)  # (B,)
        neg_rows = self._output_rows(negatives)  # (B, K, D)
        neg = torch.bmm(neg_rows, hidden.unsqueeze(-1)).squeeze(-1)  # (B, K)
        # word2vec.c skips a noise word that happens to be the target.
        keep = (negatives != targets.unsqueeze(1)).to(neg.dtype)
        return -F.logsigmoid(pos) - (F.logsigmoid(-neg) * keep).sum(-1)

    def _hierarchical_softmax(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        points = self.hs_points[targets]  # (B, L) inner nodes on the path
        codes = self.hs_codes[targets]  # (B, L) 0/1 branch
        depth = torch.arange(points.shape[1], device=points.device)
        on_path = (depth.unsqueeze(0) < self.hs_lengths[targets].unsqueeze(1)).to(hidden.dtype)
        scores = torch.bmm(self._output_rows(points), hidden.unsqueeze(-1)).squeeze(-1)  # (B, L)
        # word2vec.c trains node j towards label 1 - code: sign +1 for code 0, -1 for code 1.
        sign = 1.0 - 2.0 * codes
        return -(F.logsigmoid(sign * scores) * on_path).sum(-1)


def mean_rows(table: torch.Tensor, offsets, rows) -> torch.Tensor:
    """(V, D) each word's mean of its rows of `table` (fastText's word vectors), for CSR
    offsets (V+1,) and rows (R,) (arrays or tensors)."""
    device = table.device
    rows = torch.as_tensor(np.asarray(rows) if not torch.is_tensor(rows) else rows,
                           dtype=torch.long, device=device)
    starts = torch.as_tensor(np.asarray(offsets) if not torch.is_tensor(offsets) else offsets,
                             dtype=torch.long, device=device)[:-1]
    with torch.no_grad():
        return F.embedding_bag(rows, table.detach(), starts, mode="mean")


def full_input(model_state: dict, rows: int) -> torch.Tensor:
    """A checkpoint's input table (rows, D), the rows it does not hold zero (see
    Word2Vec.checkpoint_state); a word-level checkpoint's as it is."""
    table = model_state["input.weight"]
    where = model_state.get("input.weight_rows")
    if where is None:
        return table
    full = torch.zeros(rows, table.shape[1], dtype=table.dtype)
    full[where] = table
    return full


def build_subwords(cfg, words: list[str]) -> Subwords | None:
    """The subword model's input rows for `words` (None when model.maxn is 0: word2vec)."""
    if not cfg.maxn:
        return None
    offsets, rows = subword_rows(list(words), cfg.minn, cfg.maxn, cfg.bucket)
    return Subwords(cfg.minn, cfg.maxn, cfg.bucket, offsets, rows)


def build_model(cfg, vocab, reduction: str = "sum") -> Word2Vec:
    """The model for a ModelConfig and a Vocab (its size and, for hs, its Huffman tree; for
    the subword model, its words' n-gram rows)."""
    if len(vocab) < 2:  # nothing to tell apart: every loss would be constant (or NaN)
        raise W2VError(
            f"the vocabulary has {len(vocab)} word ({', '.join(map(repr, vocab.words))}); "
            "word2vec needs at least 2 distinct words: lower data.min_count or use a larger "
            "corpus"
        )
    # Both tables are allocated, then every page is written (reset_parameters): past the
    # memory there is, Linux either refuses the allocation (a traceback from torch's
    # allocator) or kills the process while it fills them. Refused here instead, by size.
    bucket = cfg.bucket if cfg.maxn else 0  # a subword model's n-gram rows
    need = (2 * len(vocab) + bucket - (cfg.loss == "hs")) * cfg.dim * 4  # float32 (V_in, D)
    have = available_memory()
    if have is not None and need > have:
        raise W2VError(tables_too_large(cfg.dim, len(vocab) + bucket, need,
                                        f"the {have / 2**30:.1f} GiB of memory available",
                                        bool(bucket)))
    try:
        return Word2Vec(
            len(vocab),
            cfg.dim,
            arch=cfg.arch,
            loss=cfg.loss,
            cbow_mean=cfg.cbow_mean,
            sparse=cfg.sparse,
            huffman=vocab.huffman() if cfg.loss == "hs" else None,
            reduction=reduction,
            subwords=build_subwords(cfg, vocab.words),
        )
    except (MemoryError, RuntimeError) as err:  # no /proc/meminfo, or memory taken since
        if isinstance(err, RuntimeError) and "alloc" not in str(err):
            raise
        raise W2VError(tables_too_large(cfg.dim, len(vocab) + bucket, need,
                                        "what could be allocated", bool(bucket))) from None


def tables_too_large(dim: int, rows: int, need: int, limit: str, subwords: bool) -> str:
    """The one line for weight tables past the memory there is (the host's here, a GPU's in
    train._on_device); rows: the input table's (the vocabulary's, plus a subword model's
    n-gram buckets)."""
    fix = "lower model.bucket or model.dim" if subwords else "lower model.dim (or data.max_vocab)"
    return (f"model.dim={dim} needs {need / 2**30:.1f} GiB for its weight tables ({rows:,} "
            f"input rows x {dim:,} float32 each, and the output's), more than {limit}; {fix}")


def available_memory() -> int | None:
    """Bytes of memory the kernel can give without swapping (MemAvailable), or None where
    /proc/meminfo does not say (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def is_table(t: object, rows: int | None = None, dim: int | None = None) -> bool:
    """A 2-D floating-point tensor with `rows` rows and `dim` columns (when given): what a
    loader checks a file's weight tables against."""
    return (isinstance(t, torch.Tensor) and t.dim() == 2 and t.is_floating_point()
            and (rows is None or t.shape[0] == rows) and (dim is None or t.shape[1] == dim))


def largest_weight(t: torch.Tensor) -> float:
    """max |w| over a table, NaN when it holds a NaN (one pass, no |t|-sized copy)."""
    if t.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(t.detach())
    return float(torch.maximum(-lo, hi))


def non_finite(t: torch.Tensor, words: Sequence[str] | None = None) -> str | None:
    """None when every value of the table `t` is finite; else how many are NaN or infinite
    and the first row (and its word) holding one, for an error message."""
    t = t.detach()
    if not t.is_floating_point() or t.numel() == 0 or math.isfinite(largest_weight(t)):
        return None  # (integer tables, such as the Huffman paths a model keeps, are finite)
    rows = t.reshape(t.shape[0], -1)
    bad, first = 0, -1
    for start in range(0, rows.shape[0], _CHECK_ROWS):
        mask = ~torch.isfinite(rows[start : start + _CHECK_ROWS])  # (rows, D) of one block
        bad += int(mask.sum())
        if first < 0 and bad:
            first = start + int(mask.any(dim=1).nonzero()[0, 0])
    word = f", {words[first]!r}" if words is not None and first < len(words) else ""
    return f"{bad:,} NaN or infinite values, the first in row {first}{word}"


def untrained_loss(model: Word2Vec, negative: int) -> float:
    """The loss per example of weights that score every prediction 0 (word2vec's start: the
    output layer is zeros): log 2 per binary prediction, (1 + negative) of them with negative
    sampling, the deepest Huffman path's length with hs (rare words' paths are the longest),
    log V over V words with softmax."""
    if model.loss == "negative":
        return (1 + negative) * math.log(2)
    if model.loss == "hs":
        return max(int(model.hs_lengths.max()), 1) * math.log(2)
    return math.log(model.output.out_features)
