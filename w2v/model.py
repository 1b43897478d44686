"""Word2Vec as an ordinary nn.Module: nn.Embedding (input vectors) + nn.Linear (output layer).

    model = Word2Vec(len(vocab), 100, arch="skipgram", noise_probs=vocab.noise_probs(0.75))
    loss = model(inputs, targets)   # then loss.backward(), optimizer.step()

The input embedding holds the vectors users keep. The Linear layer's weight (V_out, dim) holds
word2vec's second table: one output vector per word for negative sampling and full softmax
(syn1neg), or one per inner Huffman node for hierarchical softmax (syn1, V-1 rows). Output rows
are gathered with F.embedding, so with sparse=True both tables get sparse gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from w2v.errors import W2VError

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
        self.input = nn.Embedding(vocab_size, dim, sparse=sparse)
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
        """word2vec.c's initialisation: input uniform in (-0.5/dim, 0.5/dim), output zeros."""
        with torch.no_grad():
            self.input.weight.uniform_(-0.5 / self.dim, 0.5 / self.dim)
            self.output.weight.zero_()

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
        vectors = self.input(inputs)  # (B, D) or (B, C, D)
        if vectors.dim() == 2:
            return vectors
        if mask is None:
            mask = torch.ones(inputs.shape, dtype=torch.bool, device=inputs.device)
        weights = mask.to(vectors.dtype)  # (B, C)
        if self.cbow_mean:
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        return torch.bmm(weights.unsqueeze(1), vectors).squeeze(1)  # (B, D)

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


def build_model(cfg, vocab, reduction: str = "sum") -> Word2Vec:
    """The model for a ModelConfig and a Vocab (its size and, for hs, its Huffman tree)."""
    if len(vocab) < 2:  # nothing to tell apart: every loss would be constant (or NaN)
        raise W2VError(
            f"the vocabulary has {len(vocab)} word ({', '.join(map(repr, vocab.words))}); "
            "word2vec needs at least 2 distinct words: lower data.min_count or use a larger "
            "corpus"
        )
    # Both tables are allocated, then every page is written (reset_parameters): past the
    # memory there is, Linux either refuses the allocation (a traceback from torch's
    # allocator) or kills the process while it fills them. Refused here instead, by size.
    need = (2 * len(vocab) - (cfg.loss == "hs")) * cfg.dim * 4  # float32 (V + V_out, D)
    have = available_memory()
    if have is not None and need > have:
        raise W2VError(_too_large(cfg.dim, len(vocab), need, f"the {have / 2**30:.1f} GiB of "
                                  "memory available"))
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
        )
    except (MemoryError, RuntimeError) as err:  # no /proc/meminfo, or memory taken since
        if isinstance(err, RuntimeError) and "alloc" not in str(err):
            raise
        raise W2VError(_too_large(cfg.dim, len(vocab), need, "what could be allocated")) from None


def _too_large(dim: int, words: int, need: int, limit: str) -> str:
    return (f"model.dim={dim} needs {need / 2**30:.1f} GiB for its two weight tables "
            f"({words:,} words x {dim:,} float32 each), more than {limit}; lower model.dim "
            "(or data.max_vocab)")


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
