"""Typed settings for every stage, registered with Hydra's ConfigStore.

Each YAML group in conf/ is validated against one of these dataclasses, so a typo or an
out-of-range value fails when the config is composed, with the key named:

    python -m w2v.train model=cbow model.dim=50 trainer.epochs=1 data.path=corpus.txt
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from w2v.errors import W2VError


def config_dir() -> Path:
    """The YAML groups Hydra composes: the wheel ships them inside the package (w2v/conf, mapped
    from the repository's top-level conf/ by pyproject.toml); a source checkout or an editable
    install reads the repository's conf/ itself."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise W2VError(f"the configuration folder is missing from {here} (conf/config.yaml); "
                   "reinstall w2v")


def default_eval_dir() -> str:
    """Where scripts/fetch_eval.py puts the evaluation suites and every run looks for them:
    $W2V_EVAL_DIR, else <cache root>/eval (the cache root: $W2V_CACHE, else ~/.cache/w2v)."""
    if os.environ.get("W2V_EVAL_DIR"):
        return os.environ["W2V_EVAL_DIR"]
    root = os.environ.get("W2V_CACHE") or "~/.cache/w2v"
    return str(Path(root).expanduser() / "eval")


def absolute_path(path: str | None) -> str | None:
    """A local path (file, folder or glob, `~` expanded) made absolute; None, Hydra's
    unset value and URLs stay as they are."""
    if not isinstance(path, str) or path == MISSING or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise W2VError(f"{key}={value!r} is out of range: it must be {allowed}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, key, "one of " + ", ".join(allowed), value)


SCORINGS = ("default", "npmi")
CONNECTOR_PRESETS = ("none", "english")


@dataclass
class PhrasesConfig:
    """Multi-word tokens, as word2phrase and gensim's Phrases find them (w2v/phrases.py).

    passes=0 (the default) turns phrase detection off. Each pass joins frequent collocations
    (`new york` -> `new_york`); a second pass runs on the phrased text, reaching 3-4 words.
    """

    passes: int = 0
    """Phrase-detection passes (0: off); each joins frequent bigrams, two reach 3-4 words."""
    min_count: int = 5
    """Bigrams seen fewer times than this never become phrases."""
    threshold: float = 10.0
    """A bigram becomes a phrase when its score is above this (default scoring > 0, npmi in
    [-1, 1])."""
    scoring: str = "default"
    """Bigram score: default or npmi.

    default: word2phrase's (count(ab) - min_count) * N / (count(a) * count(b)), N = gensim's
    number of distinct unigrams and bigrams; npmi: normalised pointwise mutual information."""
    delimiter: str = "_"
    """Joins a phrase's words into one token (new_york)."""
    connectors: str = "none"
    """Words allowed inside a phrase (bank_of_america): none, or english (gensim's
    ENGLISH_CONNECTOR_WORDS), plus connector_words.

    Gensim's connector_words: they do not break a phrase."""
    connector_words: list[str] = field(default_factory=list)
    """More connector words, added to the connectors preset."""
    max_vocab_size: int | None = 40_000_000
    """Bigram counts held at once (null: no limit); rare ones are forgotten above it.

    gensim's Phrases max_vocab_size (its default): above it, bigrams counted min_reduce times
    or fewer are forgotten (1, then 2, ...)."""

    def __post_init__(self) -> None:
        _require(self.passes >= 0, "data.phrases.passes", "an integer >= 0 (0: off)",
                 self.passes)
        _require(self.min_count >= 1, "data.phrases.min_count", "an integer >= 1",
                 self.min_count)
        _choice("data.phrases.scoring", self.scoring, SCORINGS)
        if self.scoring == "default":
            _require(self.threshold > 0, "data.phrases.threshold",
                     "> 0 with data.phrases.scoring=default", self.threshold)
        else:
            _require(-1 <= self.threshold <= 1, "data.phrases.threshold",
                     "in [-1, 1] with data.phrases.scoring=npmi", self.threshold)
        _require(bool(self.delimiter) and not any(ch.isspace() for ch in self.delimiter),
                 "data.phrases.delimiter", "a non-empty string without whitespace",
                 self.delimiter)
        _choice("data.phrases.connectors", self.connectors, CONNECTOR_PRESETS)
        _require(all(w and not any(ch.isspace() for ch in w) for w in self.connector_words),
                 "data.phrases.connector_words", "a list of single words", self.connector_words)
        _require(self.max_vocab_size is None or self.max_vocab_size >= 1,
                 "data.phrases.max_vocab_size", "null or an integer >= 1", self.max_vocab_size)


@dataclass
class DataConfig:
    """Where the corpus comes from and how it becomes tokens and a vocabulary."""

    name: str = "local"
    """A label for the corpus (set by the data group; shown in TensorBoard's hparams)."""
    hub_id: str | None = None
    """A Hugging Face Hub dataset id (with hub_config, split, text_column); `path` replaces it."""
    hub_config: str | None = None
    """The Hub dataset's configuration name (e.g. wikitext-2-raw-v1)."""
    split: str = "train"
    """The Hub dataset's split."""
    revision: str | None = None
    """The Hub dataset's revision (a commit, branch or tag); null: the default branch."""
    text_column: str = "text"
    """The column holding the text (Hub datasets, parquet, json)."""
    path: str | None = None
    """A local corpus: file, directory, glob or save_to_disk folder (txt(.gz/.bz2/.xz),
    parquet, json(l))."""
    lowercase: bool = True
    """Lowercase the text before tokenizing."""
    token_pattern: str | None = None
    """A regex whose matches are the tokens (re.findall); null: split on whitespace."""
    min_count: int = 5
    """Words seen fewer times than this are dropped from the vocabulary."""
    max_vocab: int | None = None
    """Keep at most this many of the most frequent words (null: no limit)."""
    max_doc_words: int = 10_000
    """Rows longer than this many words are cut into pseudo-documents.

    gensim's 10,000-word sentences: text8's single row still gives windows that never span a
    whole corpus."""
    cache_dir: str | None = None
    """Where index tensors are cached (keyed by source, tokenizer and vocabulary settings);
    null: $W2V_CACHE, else ~/.cache/w2v."""
    streaming: bool = False
    """Read the source as a streamed IterableDataset (no Arrow copy of the corpus on disk).

    Memory stays bounded either way: tokens are counted in chunks and the ids go to disk."""
    max_vocab_size: int | None = None
    """Distinct words held while counting (null: no limit); rare ones are forgotten above it.

    gensim's max_vocab_size (word2vec.c's ReduceVocab): whenever there are more distinct words
    than this, forget those counted min_reduce times or fewer (1, then 2, ...), bounding the
    counting dict on corpora with huge vocabularies."""
    phrases: PhrasesConfig = field(default_factory=PhrasesConfig)
    """Multi-word tokens (new_york), found between tokenizing and the vocabulary; off by
    default."""
    vocab_update: bool = False
    """With trainer.init_from: true adds this corpus's new words to the old vocabulary, false
    keeps the old vocabulary as it is.

    gensim's build_vocab(update=True): true appends this corpus's new words (min_count,
    max_vocab as usual) after the old vocabulary, old ids kept, counts summed; false drops this
    corpus's other words."""

    def __post_init__(self) -> None:
        # A local path is recorded absolute (in checkpoints too), so a resume from another
        # working directory finds the same files.
        self.path = absolute_path(self.path)
        _require(self.min_count >= 1, "data.min_count", "an integer >= 1", self.min_count)
        _require(
            self.max_vocab is None or self.max_vocab >= 1,
            "data.max_vocab",
            "null or an integer >= 1",
            self.max_vocab,
        )
        _require(
            self.max_vocab_size is None or self.max_vocab_size >= 1,
            "data.max_vocab_size",
            "null or an integer >= 1",
            self.max_vocab_size,
        )
        _require(self.max_doc_words >= 2, "data.max_doc_words", "an integer >= 2",
                 self.max_doc_words)


ARCHS = ("skipgram", "cbow")
# word2vec.c's starting learning rate per architecture (its -alpha default: 0.05 with -cbow 1,
# else 0.025). CBOW averages its context, so each update is smaller; at 0.025 CBOW learns
# markedly less per epoch (docs/performance.md, "Measured design choices"). gensim uses 0.025
# for both.
ARCH_LR = {"skipgram": 0.025, "cbow": 0.05}
# The Adam-family optimizers' starting rate: their steps are normalised per weight, so SGD's
# rates do not carry over, and Adam's usual 0.001 learns far less (docs/measurements.md).
ADAM_LR = 0.01
LOSSES = ("negative", "hs", "softmax")


@dataclass
class ModelConfig:
    """The word2vec model: gensim's names where gensim has one."""

    arch: str = MISSING
    """skipgram or cbow: set by the group (model=skipgram or model=cbow)."""
    dim: int = 100
    """Vector size."""
    window: int = 5
    """Context words on each side of a centre (reduced uniformly at random per centre)."""
    loss: str = "negative"
    """negative (negative sampling), hs (hierarchical softmax) or softmax (full; costly)."""
    negative: int = 5
    """Noise words per example with loss=negative."""
    ns_exponent: float = 0.75
    """Noise distribution: word counts raised to this power."""
    sample: float = 1e-3
    """Subsampling threshold for frequent words (0: off)."""
    cbow_mean: bool = True
    """CBOW: average the context vectors (false: sum them)."""
    sparse: bool = False
    """Sparse gradients in the autograd engine (needed by trainer.optimizer=sparse_adam)."""
    minn: int = 3
    """Subword model: the shortest character n-gram of `<word>` (with maxn > 0)."""
    maxn: int = 0
    """Subword model: the longest character n-gram; 0: no n-grams (word2vec).

    fastText's model: a word's input vector is the mean of its own row and the rows of its
    n-grams of `<word>`, hashed into `bucket` rows after the vocabulary's. model=fasttext sets
    minn 3, maxn 6, bucket 2,000,000 (fastText's defaults)."""
    bucket: int = 2_000_000
    """Subword model: hash buckets (input rows) shared by all n-grams."""

    def __post_init__(self) -> None:
        if self.arch != MISSING:  # the schema itself is built before a group sets it
            _choice("model.arch", self.arch, ARCHS)
        _choice("model.loss", self.loss, LOSSES)
        _require(self.dim >= 1, "model.dim", "an integer >= 1", self.dim)
        _require(self.window >= 1, "model.window", "an integer >= 1", self.window)
        _require(self.negative >= 0, "model.negative", "an integer >= 0", self.negative)
        _require(
            self.loss != "negative" or self.negative >= 1,
            "model.negative",
            ">= 1 with model.loss=negative",
            self.negative,
        )
        _require(math.isfinite(self.ns_exponent), "model.ns_exponent", "a finite number",
                 self.ns_exponent)
        _require(self.sample >= 0, "model.sample", ">= 0 (0 turns subsampling off)", self.sample)
        _require(0 <= self.maxn <= MAX_NGRAM, "model.maxn",
                 f"an integer in [0, {MAX_NGRAM}] (0 turns n-grams off)", self.maxn)
        if self.maxn:
            _require(1 <= self.minn <= self.maxn, "model.minn",
                     f"an integer in [1, model.maxn={self.maxn}]", self.minn)
            _require(self.bucket >= 1, "model.bucket", "an integer >= 1 with n-grams on "
                     "(model.maxn > 0)", self.bucket)


# Longer n-grams than this are words more than subwords (fastText's own default maxn is 6).
MAX_NGRAM = 32
OPTIMIZERS = ("sgd", "sparse_adam", "adam", "adamw")
ENGINE_NAMES = ("auto", "fused", "cuda", "autograd")  # trainer.engine; engines.ENGINES is the table
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainerConfig:
    """The loop: schedule, device, engine, logging and checkpoints."""

    epochs: int = 5
    """Passes over the corpus."""
    lr: float | None = None
    """Starting learning rate; null: word2vec's with sgd (0.025 skip-gram, 0.05 CBOW), 0.01
    with the Adam-family optimizers.

    Resolved when the config is built (ARCH_LR, ADAM_LR), so checkpoints and metrics record
    the number. conf/experiment/sparse_adam.yaml has the Adam settings measured."""
    min_lr: float = 0.0001
    """The learning rate at the end: it decays linearly from lr over all words of all
    epochs."""
    optimizer: str = "sgd"
    """sgd (word2vec's), sparse_adam (with model.sparse=true), adam or adamw."""
    engine: str = "auto"
    """auto, fused (CPU, numba), cuda (GPU kernel) or autograd (any device, optimizer, loss).

    fused: word2vec's per-pair loop compiled with numba, Hogwild over `threads` (CPU only).
    cuda: the same loop as one GPU kernel (numba-cuda; SGD with negative/hs).
    autograd: batched nn.Module forward/backward (CPU or CUDA, any optimizer and loss).
    auto: the first of fused, cuda, autograd that runs the device, optimizer and loss."""
    batch_size: int = 1024
    """Centre words per autograd step (each gives up to 2*window pairs).

    With SGD each example takes a full word2vec step, so a word repeated many times in one
    batch sums that many stale steps: keep batches moderate with SGD, or use sparse_adam/adam
    for big GPU batches."""
    chunk_words: int | None = None
    """Words per fused-engine step; null: a run's words over about 256 steps.

    A job of whole documents: the unit of steps for evaluation, checkpoints and the loss
    curve's points. Its threads do not stop at job ends, so it does not limit how many threads
    have work. null: within 10k..1M words (100k..1M under torchrun, where every step syncs the
    ranks)."""
    cuda_warps: int | None = None
    """cuda engine: warps in flight; null: 16 per SM of the GPU.

    Each warp trains its own stretch of the corpus (2,112 on an H100); either way at most one
    per 256 kept tokens."""
    cuda_step_words: int = 2_000_000
    """cuda engine: words per kernel launch (a step: the unit of progress, logging, lr decay,
    checkpoints and SIGINT)."""
    cuda_resident_tokens: int | None = None
    """cuda engine: corpus tokens held on the GPU at once; null: as many as fit.

    A larger corpus is trained in document ranges copied from the memory-mapped ids."""
    sync_every: int = 1
    """torchrun: steps between combining the ranks' models.

    One dense all_reduce of both tables each time; epoch ends, checkpoints and evaluations
    always do."""
    device: str = "auto"
    """auto (cuda when a GPU is visible), cpu or cuda."""
    threads: int | None = None
    """Fused-engine threads and torch's intra-op threads; null: every core this process may
    use.

    os.sched_getaffinity, divided among the torchrun ranks on this node."""
    seed: int = 1
    """Random seed (initial vectors, subsampling, windows, negatives)."""
    log_points: int = 200
    """Points on the loss curve (TensorBoard train/*, the progress bar) per run.

    Evenly spaced in words processed, whatever the engine's step size or the corpus size; the
    loss is read from the device only then."""
    log_seconds: float = 10.0
    """At least one loss-curve point this often."""
    eval_every: int = 0
    """Also evaluate every this many steps (0: only at epoch ends, see eval_epochs)."""
    eval_epochs: bool = True
    """Evaluate at each epoch's end (a point per epoch on TensorBoard's eval/* curves).

    Only where eval.dir or eval.analogies/similarities give suites; the final vectors are
    always evaluated. One evaluation of text8-prefix's vectors (22.5k words, the three
    standard suites) took 3.0-3.4 s on 2 busy cores, about an epoch of the fused engine there;
    its time is not counted in words/s. false: evaluate the final vectors only."""
    ckpt_every: int = 1000
    """Steps between checkpoints (0: at epoch ends only); the newest 3 are kept.

    Checkpoints are also written at each epoch's end and on SIGINT/SIGTERM, into the run dir's
    checkpoints/; older ones are deleted once a newer one is safely on disk."""
    resume: str | None = None
    """Continue a run: `latest` (the newest checkpoint of hydra.run.dir) or a checkpoint path
    (resumes in the run dir it belongs to)."""
    init_from: str | None = None
    """Start a new run from existing vectors (vectors.pt, a checkpoint, word2vec .txt/.bin).

    Input vectors, and output weights where the file has them. Unlike `resume`, the schedule,
    optimizer and position start afresh (see data.vocab_update)."""
    progress: bool = True
    """Show a progress bar."""
    overwrite: bool = False
    """Replace another run held in hydra.run.dir (its outputs are removed when this starts).

    A new run in a run dir that holds another run's checkpoints or vectors is refused (the two
    would mix) unless this is true."""

    def __post_init__(self) -> None:
        self.init_from = absolute_path(self.init_from)  # read again when the run resumes
        _require(self.epochs >= 1, "trainer.epochs", "an integer >= 1", self.epochs)
        _require(self.lr is None or self.lr > 0, "trainer.lr",
                 "> 0 (or null: the model's default)", self.lr)
        _require(self.min_lr >= 0, "trainer.min_lr", ">= 0", self.min_lr)
        _choice("trainer.optimizer", self.optimizer, OPTIMIZERS)
        _choice("trainer.engine", self.engine, ENGINE_NAMES)
        _choice("trainer.device", self.device, DEVICES)
        _require(self.batch_size >= 1, "trainer.batch_size", "an integer >= 1", self.batch_size)
        _require(self.chunk_words is None or self.chunk_words >= 1, "trainer.chunk_words",
                 "null (about 256 steps per run) or an integer >= 1", self.chunk_words)
        _require(self.cuda_warps is None or self.cuda_warps >= 1, "trainer.cuda_warps",
                 "null or an integer >= 1", self.cuda_warps)
        _require(self.cuda_step_words >= 1, "trainer.cuda_step_words", "an integer >= 1",
                 self.cuda_step_words)
        _require(self.cuda_resident_tokens is None or self.cuda_resident_tokens >= 1,
                 "trainer.cuda_resident_tokens", "null or an integer >= 1",
                 self.cuda_resident_tokens)
        _require(self.sync_every >= 1, "trainer.sync_every", "an integer >= 1",
                 self.sync_every)
        _require(self.threads is None or self.threads >= 1, "trainer.threads",
                 "null (every core) or an integer >= 1", self.threads)
        if self.threads is None:
            self.threads = available_cores()
        _require(self.log_points >= 1, "trainer.log_points", "an integer >= 1",
                 self.log_points)
        _require(self.log_seconds > 0, "trainer.log_seconds", "> 0", self.log_seconds)
        _require(self.eval_every >= 0, "trainer.eval_every",
                 "an integer >= 0 (0: off)",
                 self.eval_every)
        _require(self.ckpt_every >= 0, "trainer.ckpt_every", "an integer >= 0 (0: epochs only)",
                 self.ckpt_every)

    def lr_at(self, epoch: int, fraction: float) -> float:
        """word2vec's learning rate: linear from lr to min_lr over all words of all epochs,
        `fraction` of the way through `epoch` (0-based)."""
        return self.lr - (self.lr - self.min_lr) * (epoch + fraction) / self.epochs


def available_cores() -> int:
    """The cores this process may run on, shared among the torchrun ranks of this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // max(ranks, 1))


@dataclass
class EvalConfig:
    """Similarity and analogy suites, run during and after training."""

    dir: str | None = field(default_factory=default_eval_dir)
    """Folder of questions-words.txt, wordsim353.tsv, simlex999.txt; default $W2V_EVAL_DIR,
    else ~/.cache/w2v/eval.

    Where scripts/fetch_eval.py puts them; a run without suites there skips evaluation."""
    analogies: list[str] = field(default_factory=list)
    """More analogy suite files, in addition to those found in `dir`."""
    similarities: list[str] = field(default_factory=list)
    """More similarity suite files, in addition to those found in `dir`."""
    restrict_vocab: int = 30_000
    """Analogies search only the most frequent this many words (gensim's default)."""
    case_insensitive: bool = True
    """Match suite words to the vocabulary ignoring case."""
    projector_words: int = 2000
    """Most frequent words shown in TensorBoard's embedding projector at the end (0: none)."""

    def __post_init__(self) -> None:
        _require(self.restrict_vocab >= 1, "eval.restrict_vocab", "an integer >= 1",
                 self.restrict_vocab)
        _require(self.projector_words >= 0, "eval.projector_words", "an integer >= 0",
                 self.projector_words)


@dataclass
class ExportConfig:
    """What a run writes besides vectors.pt."""

    text: bool = True
    """Write vectors.txt (word2vec text format)."""
    binary: bool = False
    """Write vectors.bin (word2vec binary format)."""
    average_output: bool = False
    """Also write the input and output vectors averaged (vectors_avg.*), as some users
    prefer."""


@dataclass
class Config:
    """Every setting of a run: one group per stage."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        t = self.trainer
        if t.lr is None and t.optimizer != "sgd":
            t.lr = ADAM_LR
        if t.lr is None and self.model.arch in ARCH_LR:  # (arch is MISSING in a bare schema)
            t.lr = ARCH_LR[self.model.arch]
        if t.lr is not None:
            _require(t.min_lr <= t.lr, "trainer.min_lr", f"in [0, trainer.lr={t.lr}]", t.min_lr)
        # Checks across groups: sparse gradients need an optimizer that accepts them.
        opt, sparse = self.trainer.optimizer, self.model.sparse
        if sparse and opt in ("adam", "adamw"):
            raise W2VError(
                f"model.sparse=true gives sparse gradients, which trainer.optimizer={opt} cannot "
                "take: use trainer.optimizer=sparse_adam or sgd, or model.sparse=false"
            )
        if opt == "sparse_adam" and not sparse:
            raise W2VError(
                "trainer.optimizer=sparse_adam needs sparse gradients: set model.sparse=true"
            )
        if self.data.vocab_update and not self.trainer.init_from:
            raise W2VError("data.vocab_update=true extends the vocabulary of trainer.init_from; "
                           "set trainer.init_from to the vectors to continue from")


def register_configs() -> None:
    """Register the schemas so the YAML groups are type-checked when composed."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)
