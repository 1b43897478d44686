"""Typed settings for every stage, registered with Hydra's ConfigStore.

Each YAML group in conf/ is validated against one of these dataclasses, so a typo or an
out-of-range value fails when the config is composed, with the key named:

    python -m w2v.train model=cbow model.dim=50 trainer.epochs=1 data.path=corpus.txt
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from w2v.errors import W2VError


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise W2VError(f"{key}={value!r} is out of range: it must be {allowed}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, key, "one of " + ", ".join(allowed), value)


@dataclass
class DataConfig:
    """Where the corpus comes from and how it becomes tokens and a vocabulary."""

    name: str = "local"
    # A Hugging Face Hub dataset (id, config, split, text column); `path` replaces it.
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "train"
    revision: str | None = None
    text_column: str = "text"
    # Local file, directory, glob, or `save_to_disk` folder: txt(.gz/.bz2/.xz), parquet, json(l).
    path: str | None = None
    # Tokenizer: lowercase then whitespace split, or `token_pattern` (a regex, re.findall).
    lowercase: bool = True
    token_pattern: str | None = None
    # Vocabulary.
    min_count: int = 5
    max_vocab: int | None = None
    # Rows longer than this many words are cut into pseudo-documents (gensim's 10,000-word
    # sentences), so text8's single row still gives windows that never span a whole corpus.
    max_doc_words: int = 10_000
    # Where index tensors are cached (keyed by source fingerprint + tokenizer + vocab settings);
    # null: $W2V_CACHE, else ~/.cache/w2v.
    cache_dir: str | None = None
    # Read the source as a streamed IterableDataset (no Arrow copy of the corpus on disk).
    # Memory stays bounded either way: tokens are counted in chunks and the ids go to disk.
    streaming: bool = False
    # gensim's max_vocab_size (word2vec.c's ReduceVocab): while counting, whenever there are
    # more distinct words than this, forget those counted min_reduce times or fewer (1, then
    # 2, ...), bounding the counting dict on corpora with huge vocabularies. null: no limit.
    max_vocab_size: int | None = None

    def __post_init__(self) -> None:
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
LOSSES = ("negative", "hs", "softmax")


@dataclass
class ModelConfig:
    """The word2vec model: gensim's names where gensim has one."""

    arch: str = MISSING  # set by the group: model=skipgram or model=cbow
    dim: int = 100
    window: int = 5
    loss: str = "negative"
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    cbow_mean: bool = True
    sparse: bool = False

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


OPTIMIZERS = ("sgd", "sparse_adam", "adam", "adamw")
ENGINES = ("auto", "fused", "cuda", "autograd")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainerConfig:
    """The loop: schedule, device, engine, logging and checkpoints."""

    epochs: int = 5
    lr: float = 0.025
    min_lr: float = 0.0001
    optimizer: str = "sgd"
    # fused: word2vec's per-pair loop compiled with numba, Hogwild over `threads` (CPU only).
    # cuda: the same loop as one GPU kernel (numba-cuda; SGD with negative/hs).
    # autograd: batched nn.Module forward/backward (CPU or CUDA, any optimizer and loss).
    # auto: the first of fused, cuda, autograd that runs the device, optimizer and loss.
    engine: str = "auto"
    # Centre words per autograd step (each gives up to 2*window pairs). With SGD each example
    # takes a full word2vec step, so a word repeated many times in one batch sums that many
    # stale steps: keep batches moderate with SGD, or use sparse_adam/adam for big GPU batches.
    batch_size: int = 1024
    # Words per fused-engine job (the unit of progress, logging and lr decay).
    chunk_words: int = 100_000
    # cuda engine: warps in flight, each training its own stretch of the corpus. null: 16 per
    # SM of the GPU (2,112 on an H100); either way at most one per 256 kept tokens.
    cuda_warps: int | None = None
    # cuda engine: words per kernel launch (a step: the unit of progress, logging, lr decay,
    # checkpoints and SIGINT); a few hundredths of a second on a recent GPU.
    cuda_step_words: int = 2_000_000
    # cuda engine: corpus tokens held on the GPU at once. null: as many as fit in its free
    # memory; a larger corpus is trained in document ranges copied from the memory-mapped ids.
    cuda_resident_tokens: int | None = None
    # Distributed runs (torchrun): steps between combining the ranks' models (one dense
    # all_reduce of both tables each time); epoch ends, checkpoints and evaluations always do.
    sync_every: int = 1
    device: str = "auto"
    threads: int = 2
    seed: int = 1
    log_every: int = 50
    eval_every: int = 0
    ckpt_every: int = 1000
    # A checkpoint path, `latest` (the newest in this run dir's checkpoints/), or null.
    resume: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "trainer.epochs", "an integer >= 1", self.epochs)
        _require(self.lr > 0, "trainer.lr", "> 0", self.lr)
        _require(0 <= self.min_lr <= self.lr, "trainer.min_lr", f"in [0, trainer.lr={self.lr}]",
                 self.min_lr)
        _choice("trainer.optimizer", self.optimizer, OPTIMIZERS)
        _choice("trainer.engine", self.engine, ENGINES)
        _choice("trainer.device", self.device, DEVICES)
        _require(self.batch_size >= 1, "trainer.batch_size", "an integer >= 1", self.batch_size)
        _require(self.chunk_words >= 1, "trainer.chunk_words", "an integer >= 1",
                 self.chunk_words)
        _require(self.cuda_warps is None or self.cuda_warps >= 1, "trainer.cuda_warps",
                 "null or an integer >= 1", self.cuda_warps)
        _require(self.cuda_step_words >= 1, "trainer.cuda_step_words", "an integer >= 1",
                 self.cuda_step_words)
        _require(self.cuda_resident_tokens is None or self.cuda_resident_tokens >= 1,
                 "trainer.cuda_resident_tokens", "null or an integer >= 1",
                 self.cuda_resident_tokens)
        _require(self.sync_every >= 1, "trainer.sync_every", "an integer >= 1",
                 self.sync_every)
        _require(self.threads >= 1, "trainer.threads", "an integer >= 1", self.threads)
        _require(self.log_every >= 1, "trainer.log_every", "an integer >= 1", self.log_every)
        _require(self.eval_every >= 0, "trainer.eval_every", "an integer >= 0 (0: at the end only)",
                 self.eval_every)
        _require(self.ckpt_every >= 0, "trainer.ckpt_every", "an integer >= 0 (0: epochs only)",
                 self.ckpt_every)


@dataclass
class EvalConfig:
    """Similarity and analogy suites, run during and after training."""

    # A folder holding any of questions-words.txt, wordsim353.tsv, simlex999.txt.
    dir: str | None = "${oc.env:W2V_EVAL_DIR,null}"
    # Explicit suite files, in addition to those found in `dir`.
    analogies: list[str] = field(default_factory=list)
    similarities: list[str] = field(default_factory=list)
    restrict_vocab: int = 30_000
    case_insensitive: bool = True
    # Words shown in TensorBoard's embedding projector at the end (0: none).
    projector_words: int = 2000

    def __post_init__(self) -> None:
        _require(self.restrict_vocab >= 1, "eval.restrict_vocab", "an integer >= 1",
                 self.restrict_vocab)
        _require(self.projector_words >= 0, "eval.projector_words", "an integer >= 0",
                 self.projector_words)


@dataclass
class ExportConfig:
    """What a run writes besides vectors.pt."""

    text: bool = True  # vectors.txt (word2vec text format)
    binary: bool = False  # vectors.bin (word2vec binary format)
    # Also write input+output averaged vectors (vectors_avg.*), as some users prefer.
    average_output: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
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


def register_configs() -> None:
    """Register the schemas so the YAML groups are type-checked when composed."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)
