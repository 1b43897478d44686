"""Index tensors -> training batches, generated vectorised on the training device.

    batches = Batches(corpus.ids, corpus.doc_offsets, keep, noise, window=5, negative=5,
                      arch="skipgram", batch_size=4096, device="cpu", seed=1)
    view = batches.view(epoch)                      # the epoch's subsampling and order
    for step in range(batches.steps(view)):
        b = batches.batch(view, epoch, step)
        loss = model(b.inputs, b.targets, b.mask, b.negatives, b.weights)

(what engines/autograd.py does; `weights` is None for compact CPU batches, and on a GPU it
zeroes the padding slots of fixed-shape batches, which would otherwise be trained.)

Each epoch, as word2vec does:
  1. subsampling is redrawn: token t is kept with probability keep[ids[t]];
  2. the kept tokens are compacted, so windows span the subsampled sequence (word2vec.c and
     gensim drop discarded words before taking windows), and never cross a document;
  3. centres are shuffled and cut into batches of `batch_size` centres; each centre draws a
     reduced window b uniformly in 1..window (word2vec's dynamic window).
Skip-gram emits one example per (context, centre) pair; CBOW one per centre with its context
mask. Negatives are drawn from the noise distribution by inverse-CDF lookup.

All randomness comes from generators seeded by (seed, epoch) and (seed, epoch, step), so a
batch depends on nothing but its position: a run resumed at step k of an epoch sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    inputs: torch.Tensor  # (P,) skip-gram context words, or (B, 2W) CBOW contexts
    targets: torch.Tensor  # (P,) or (B,) centre words
    mask: torch.Tensor | None  # (B, 2W) CBOW: which context slots are real
    negatives: torch.Tensor | None  # (P, K) or (B, K) noise words
    examples: int | torch.Tensor  # real examples (pairs or centres); a tensor when uncompacted
    weights: torch.Tensor | None = None  # (P,) or (B,) 1 for real examples, 0 for padding


@dataclass
class EpochView:
    """One epoch's subsampled corpus: kept token ids and their document bounds."""

    ids: torch.Tensor  # (M,) int64 kept tokens, compacted
    doc_start: torch.Tensor  # (M,) int64 first position of each token's document
    doc_end: torch.Tensor  # (M,) int64 one past its last position
    order: torch.Tensor  # (M,) int64 shuffled centre positions


def _seed(*parts: int) -> int:
    # A stable mix of (seed, epoch[, step]) into one 63-bit seed (splitmix64-style constants).
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (p + 0x632BE59BD9B4E019)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class Batches:
    """Vectorised batch generator over a corpus held on `device`."""

    def __init__(
        self,
        ids: torch.Tensor,
        doc_offsets: torch.Tensor,
        keep_prob: np.ndarray | torch.Tensor,
        noise_probs: np.ndarray | torch.Tensor | None,
        *,
        window: int,
        negative: int,
        arch: str,
        batch_size: int,
        device: str | torch.device = "cpu",
        seed: int = 1,
        compact: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        # compact=True drops the slots outside each reduced window (fewer examples: best on
        # CPU); False keeps fixed (B*2W,) shapes with 0/1 weights, because boolean indexing
        # makes a GPU wait for the host every step. Default: compact on CPU only.
        self.compact = self.device.type == "cpu" if compact is None else compact
        self.ids = ids.to(self.device, torch.long)  # (N,)
        offsets = doc_offsets.to(self.device, torch.long)  # (D+1,)
        lengths = offsets[1:] - offsets[:-1]
        self.doc_of = torch.repeat_interleave(
            torch.arange(len(lengths), device=self.device), lengths
        )  # (N,) document of each token
        self.num_docs = len(lengths)
        self.keep_prob = torch.as_tensor(keep_prob, dtype=torch.float32).to(self.device)
        self.noise_cdf = None
        if noise_probs is not None and negative > 0:
            cdf = torch.cumsum(torch.as_tensor(noise_probs, dtype=torch.float64), 0)
            self.noise_cdf = (cdf / cdf[-1]).to(self.device, torch.float32)
        self.window, self.negative = window, negative
        self.arch, self.batch_size, self.seed = arch, batch_size, seed
        self.offsets = torch.cat(
            [torch.arange(-window, 0), torch.arange(1, window + 1)]
        ).to(self.device)  # (2W,)

    def generator(self, *parts: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(_seed(self.seed, *parts))

    def view(self, epoch: int) -> EpochView:
        """Redraw subsampling, compact, and shuffle the centres for `epoch`."""
        gen = self.generator(epoch)
        draw = torch.rand(self.ids.shape, generator=gen, device=self.device)
        kept = draw < self.keep_prob[self.ids]
        ids, docs = self.ids[kept], self.doc_of[kept]
        counts = torch.bincount(docs, minlength=self.num_docs)
        ends = torch.cumsum(counts, 0)
        starts = ends - counts
        order = torch.randperm(len(ids), generator=gen, device=self.device)
        return EpochView(ids=ids, doc_start=starts[docs], doc_end=ends[docs], order=order)

    def steps(self, view: EpochView) -> int:
        return -(-len(view.order) // self.batch_size)

    def batch(self, view: EpochView, epoch: int, step: int) -> Batch:
        gen = self.generator(epoch, step)
        centres = view.order[step * self.batch_size : (step + 1) * self.batch_size]  # (B,)
        reduced = torch.randint(
            1, self.window + 1, centres.shape, generator=gen, device=self.device
        )  # (B,) word2vec's b: the window actually used
        pos = centres.unsqueeze(1) + self.offsets  # (B, 2W)
        valid = (
            (self.offsets.abs() <= reduced.unsqueeze(1))
            & (pos >= view.doc_start[centres].unsqueeze(1))
            & (pos < view.doc_end[centres].unsqueeze(1))
        )
        context = view.ids[pos.clamp(0, len(view.ids) - 1)]  # (B, 2W)
        centre_ids = view.ids[centres]  # (B,)
        if not self.compact:
            return self._fixed_shape_batch(context, valid, centre_ids, gen)
        if self.arch == "skipgram":
            inputs = context[valid]  # (P,)
            targets = centre_ids.unsqueeze(1).expand_as(valid)[valid]  # (P,)
            mask = None
        else:
            has = valid.any(1)  # centres whose reduced window holds at least one word
            inputs, mask, targets = context[has], valid[has], centre_ids[has]
        return Batch(
            inputs=inputs,
            targets=targets,
            mask=mask,
            negatives=self.draw_negatives(len(targets), gen),
            examples=len(targets),
        )

    def _fixed_shape_batch(self, context, valid, centre_ids, gen) -> Batch:
        """The same examples as the compact batch, padded to fixed shapes: no host sync."""
        if self.arch == "skipgram":
            inputs = context.flatten()  # (B*2W,)
            targets = centre_ids.unsqueeze(1).expand_as(valid).flatten()  # (B*2W,)
            mask, weights = None, valid.flatten().float()
        else:
            inputs, mask, targets = context, valid, centre_ids
            weights = valid.any(1).float()  # (B,)
        return Batch(
            inputs=inputs,
            targets=targets,
            mask=mask,
            negatives=self.draw_negatives(len(targets), gen),
            examples=weights.sum(),
            weights=weights,
        )

    def draw_negatives(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        if self.noise_cdf is None:
            return None
        u = torch.rand((n, self.negative), generator=gen, device=self.device)
        idx = torch.searchsorted(self.noise_cdf, u)  # (n, K) inverse-CDF sampling
        return idx.clamp_max(len(self.noise_cdf) - 1)
