"""Checkpoints: everything needed to continue a run exactly, written atomically; a run keeps
its newest KEEP (3) in its checkpoints/ folder.

    python -m w2v.train ... trainer.resume=outputs/.../checkpoints/step-00001200.pt

A checkpoint is a plain dict of tensors, numbers, strings and lists (format in docs/design.md),
so it loads with torch.load(weights_only=True): no pickle of our own objects, and a file
carrying a pickle payload is refused rather than run.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from w2v.atomic import archive_damage, archive_too_large, atomic_torch_save
from w2v.errors import W2VError
from w2v.model import is_table, non_finite

FORMAT = "w2v.checkpoint/2"
# Format 1 held the vocabulary as a dict of lists; such checkpoints are still read.
READABLE = (FORMAT, "w2v.checkpoint/1")
KEEP = 3  # step checkpoints kept per run; older ones are deleted after a newer one is safe
_NAME = re.compile(r"step-(\d+)\.pt$")


@dataclass
class Position:
    """Where training stands: the next step to run in `epoch`, and totals so far.

    The totals add up over every part of a run (an interrupted run and its resumes), so
    words/s is the words of the work kept over the seconds it took."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    words_done: int = 0
    train_seconds: float = 0.0  # time in the loop, summed over the run's parts
    epoch_loss: float | None = None  # mean loss of the last completed epoch
    # The loss summed over `epoch`'s steps done so far, and their examples: a run resumed
    # inside an epoch starts its epoch mean from these, so the mean (and metrics.json's
    # final_loss) covers the whole epoch, as the uninterrupted run's does.
    epoch_loss_sum: float = 0.0
    epoch_examples: float = 0.0

    def advance(self, epoch: int, next_step: int, words: int) -> None:
        self.epoch, self.step = epoch, next_step
        self.global_step += 1
        self.words_done += words

    def next_epoch(self) -> None:
        self.epoch, self.step = self.epoch + 1, 0
        self.epoch_loss_sum, self.epoch_examples = 0.0, 0.0


def run_record(vocab, cfg) -> dict:
    """What a checkpoint holds that does not change during a run: the vocabulary and the
    config (converting the config takes tens of milliseconds: a run computes this once,
    before its clock starts).

    The vocabulary is one JSON string, not its lists: torch.save pickles each list item
    through a Python call, and a background write of 22.5k words and counts held the GIL
    for 13-22 ms, which stalled a GPU run's loop by about that at every checkpoint (one
    string: 2-4 ms). `vocab_dict` reads either form back."""
    return {"vocab": json.dumps(vocab.to_dict(), ensure_ascii=False),
            "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)}


def vocab_dict(state: dict) -> dict | None:
    """A loaded checkpoint's vocabulary as Vocab.to_dict() gives it (format 2's JSON string
    decoded, format 1's dict as it is), or None when it holds none."""
    vocab = state.get("vocab")
    if isinstance(vocab, str):
        try:
            vocab = json.loads(vocab)
        except ValueError:
            return None
    return vocab if isinstance(vocab, dict) else None


def snapshot(model, engine, pos: Position, record: dict, into: dict | None = None,
             copy: bool = True) -> dict:
    """The checkpoint's contents, every tensor a CPU copy: later training steps do not
    change it, so it can be written while training goes on. `into`: the model tensors of an
    earlier snapshot that is on disk now, copied over when their shapes still fit.
    copy=False: the model's CPU tensors themselves (for a write before training goes on)."""
    optimizer = _cpu_copy(engine.state_dict())  # first: the fused engine's state pauses its threads
    state = model_state(model, into if copy else None)
    return {
        "format": FORMAT,
        "model": _model_copy(state, into) if copy else _cpu_copy(state, only_devices=True),
        "optimizer": optimizer,
        **record,
        "position": asdict(pos),
        "rng": {"torch": torch.get_rng_state()},
    }


def model_state(model, into: dict | None = None) -> dict:
    """The model's tensors as a checkpoint holds them (Word2Vec.checkpoint_state: a subword
    model's trainable input rows only, gathered into `into`'s table where it fits); any other
    module's state_dict."""
    compact = getattr(model, "checkpoint_state", None)
    return compact(into) if compact is not None else model.state_dict()


def _model_copy(state: dict, into: dict | None) -> dict:
    """The model's tensors on the CPU, in `into`'s tensors when they fit. Copying into tables
    that are already there skips allocating and first touching fresh memory (page faults),
    which was most of a checkpoint's cost on a GPU; a GPU's tables go to pinned memory,
    which the device copies to at full speed."""
    fits = into is not None and into.keys() == state.keys() and all(
        into[k].shape == v.shape and into[k].dtype == v.dtype for k, v in state.items())
    if not fits:
        into = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=v.is_cuda)
                for k, v in state.items()}
    for k, v in state.items():
        if into[k] is not v:  # (model_state may have filled it already)
            into[k].copy_(v.detach())
    return into


def _nbytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def write(ckpt_dir: Path, global_step: int, state: dict) -> Path:
    """Write a snapshot as checkpoints/step-N.pt atomically; prune older ones (`_prune`)."""
    path = Path(ckpt_dir) / f"step-{global_step:08d}.pt"
    atomic_torch_save(state, path)
    _prune(ckpt_dir, global_step)
    return path


def _prune(ckpt_dir: Path, global_step: int) -> None:
    """Keep the newest KEEP checkpoints up to the one just written, by step number (not by
    name: past 10^8 steps a name is longer). Never one past it: that is no older snapshot of
    this run (a run resumed from an earlier checkpoint), and never the one just written
    (which pruning by the highest names once deleted when the dir held an older run's)."""
    behind = [p for p in _step_files(ckpt_dir) if _step(p) <= global_step]
    for old in sorted(behind, key=_step)[:-KEEP]:
        old.unlink(missing_ok=True)


def _cpu_copy(obj, only_devices: bool = False):
    """Tensors (and numpy arrays) copied to the CPU, through dicts, lists and tuples.
    only_devices: tensors already on the CPU are kept as they are, not copied."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=not only_devices)
    if isinstance(obj, np.ndarray):
        return obj if only_devices else obj.copy()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v, only_devices) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v, only_devices) for v in obj)
    return obj


class Writer:
    """Writes a run's checkpoints in a background thread when the tables are small enough
    to copy (BACKGROUND_BYTES): the loop waits only for the copy (milliseconds), not for
    serialising and fsync-ing the file (tens of milliseconds, which on a GPU is longer than
    an epoch of text8-prefix). A snapshot that arrives while another is being written waits
    in one slot, replacing an older one still waiting there (the newer checkpoint supersedes
    it), so the loop never waits for the disk. The end of training and a stop signal
    (`wait=True`) wait until the newest is on disk; a write's error (a full disk) is raised
    at the loop's next save or wait. Larger tables are written in the loop, without a copy.

    `record` is `run_record(vocab, cfg)`, computed once by the caller. The copy of a snapshot
    that is on disk (or superseded) is kept for the next one: as many table-sized buffers as
    `reserve` set aside (one, or two for a GPU's tables), so a run allocates none in its loop."""

    # Tables larger than this are written in the loop: a copy of the subword model's input
    # table (2M bucket rows: 800 MB at dim 100) would cost the run more memory than the
    # write costs time (about a second, at each epoch's end).
    BACKGROUND_BYTES = 256 << 20

    def __init__(self, ckpt_dir: Path, record: dict, background: bool = True) -> None:
        self.ckpt_dir, self.record, self.background = Path(ckpt_dir), record, background
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: tuple[int, dict] | None = None
        self._error: BaseException | None = None
        self._spares: list[dict] = []  # model tensors of snapshots on disk or superseded
        self._keep = 1  # spares kept at most (reserve's count)
        self._bytes: int | None = None  # the size of a snapshot's model tensors
        self._layout: dict | None = None  # their shapes, dtypes and whether on a GPU
        self.last: Path | None = None

    def reserve(self, model, copies: int = 1) -> None:
        """Allocate `copies` sets of the tables background snapshots are copied into now,
        before the loop's clock starts (on a GPU, page-locking them takes milliseconds): the
        first checkpoints then cost what the others do. Two where an epoch can take less time
        than writing a file (a GPU's: 0.1 s for text8-prefix), so the next snapshot need not
        allocate while the last is still being written. Nothing for snapshots written in the
        loop."""
        state = model_state(model)
        self._bytes = _nbytes(state)
        self._layout = {k: (v.shape, v.dtype, v.is_cuda) for k, v in state.items()}
        if self.background and self._bytes <= self.BACKGROUND_BYTES:
            with self._lock:
                self._keep = max(self._keep, copies)
                while len(self._spares) < copies:
                    self._spares.append(_model_copy(state, None))

    def save(self, model, engine, pos: Position, wait: bool = False) -> Path:
        """Checkpoint now; returns the path the file has (or will have, once written in the
        background). wait=True: on disk before returning (a stop signal's checkpoint)."""
        self._raise()
        path = Path(self.ckpt_dir) / f"step-{pos.global_step:08d}.pt"
        if self._bytes is None:  # (a model's tables keep their size)
            self._bytes = _nbytes(model_state(model))
        if wait or not (self.background and self._bytes <= self.BACKGROUND_BYTES):
            self.wait()
            # Written now, before training goes on: tables on the CPU need no copy.
            state = snapshot(model, engine, pos, self.record, copy=False)
            self.last = write(self.ckpt_dir, pos.global_step, state)
            return self.last
        with self._lock:
            superseded, self._pending = self._pending, None  # not yet written: this replaces it
            if superseded is not None:
                self._give_back(superseded[1]["model"])
            # Without a spare, fresh tables of the snapshot's layout: the model's rows are
            # gathered straight into them (a gather copied over would be a second copy).
            spare = self._spares.pop() if self._spares else self._fresh()
        state = snapshot(model, engine, pos, self.record, into=spare)
        with self._lock:
            self._pending = (pos.global_step, state)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="w2v-checkpoint")
                self._thread.start()
        self.last = path
        return path

    def _drain(self) -> None:
        while True:
            with self._lock:
                item, self._pending = self._pending, None
                if item is None:
                    self._thread = None
                    return
            try:
                write(self.ckpt_dir, *item)
                with self._lock:  # on disk: its tables can hold the next snapshot
                    self._give_back(item[1]["model"])
            except BaseException as err:  # raised in the loop's thread by _raise()
                # The first failure is the one to report (a later snapshot would fail the
                # same way, and name another file): drop what waits, and stop writing.
                with self._lock:
                    self._error = self._error or err
                    self._pending, self._thread = None, None
                return

    def _fresh(self) -> dict | None:
        """Empty tables of a snapshot's layout (reserve's), or None before it is known."""
        if self._layout is None:
            return None
        return {k: torch.empty(shape, dtype=dtype, pin_memory=cuda)
                for k, (shape, dtype, cuda) in self._layout.items()}

    def _give_back(self, tables: dict) -> None:
        """A snapshot's model tensors back among the spares (the lock held)."""
        if len(self._spares) < self._keep:
            self._spares.append(tables)

    def wait(self) -> None:
        """Until every snapshot taken is on disk (or superseded); raise a write's error. The
        spare tables go too: what follows a wait (the exports, evaluation) needs the memory
        more than a later checkpoint needs the copy."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                break
            thread.join()
        self._spares = []
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def _read(path: Path, mmap: bool) -> dict:
    if not path.is_file():
        raise W2VError(f"checkpoint {path} does not exist")
    too_large = archive_too_large(path)
    if too_large:
        raise W2VError(f"{path} is not a w2v checkpoint: {too_large}; use an earlier checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise W2VError(
            f"checkpoint {path} cannot be read ({type(err).__name__}): it is not a w2v "
            "checkpoint, or it is truncated or corrupt (only plain tensors are loaded, never "
            "pickled code); use an earlier checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        raise W2VError(f"{path} is not a w2v checkpoint (format {FORMAT} expected)")
    vocab = vocab_dict(state)
    if vocab is None:
        raise W2VError(f"{path} is not a w2v checkpoint (its vocabulary cannot be read)")
    problem = _problem({**state, "vocab": vocab})
    if problem:
        raise W2VError(f"{path} is not a valid w2v checkpoint: {problem}; use an earlier "
                       "checkpoint")
    return {**state, "vocab": vocab}


def _problem(state: dict) -> str | None:
    """What is missing or of the wrong type or shape in the entries every reader of a
    checkpoint uses (an export, trainer.init_from, a resume), or None: checked once here, so
    that no later use of an entry fails with a traceback. What only a resume uses is checked
    by _resume_problem."""
    from w2v.vocab import Vocab

    try:
        words = len(Vocab.from_dict(state["vocab"]))
    except Exception as err:  # KeyError, TypeError, ValueError, W2VError: a bad vocabulary
        return f"its vocabulary is malformed ({type(err).__name__})"
    model = state.get("model")
    if isinstance(model, dict) and not all(isinstance(t, torch.Tensor) for t in model.values()):
        return "'model' holds entries that are not tensors"
    if not isinstance(model, dict):
        return "'model' is not a dict of tensors"
    kept = model.get("input.weight_rows")  # a subword model keeps its trainable rows alone
    if kept is not None and (kept.dim() != 1 or kept.is_floating_point()):
        return "'model' has a malformed 'input.weight_rows' (a 1-D integer tensor)"
    rows = words if kept is None else len(kept)
    if not is_table(model.get("input.weight"), rows):
        return f"'model' has no ({rows}, dim) float tensor 'input.weight'"
    output = model.get("output.weight")
    if not is_table(output, None, model["input.weight"].shape[1]):
        return f"'model' has no (rows, {model['input.weight'].shape[1]}) float tensor " \
               "'output.weight'"
    if not isinstance(state.get("config", {}), dict):
        return "'config' is not a dict"
    return None


def _resume_problem(state: dict) -> str | None:
    """What is missing or malformed among the entries a resume needs besides the tables."""
    position = state.get("position")
    known = {f.name for f in fields(Position)}
    if not (isinstance(position, dict) and position.keys() <= known
            and all(isinstance(v, (int, float, type(None))) for v in position.values())):
        return "'position' is not a dict of numbers"
    if not isinstance(state.get("config"), dict):
        return "'config' is not a dict"
    rng = state.get("rng")
    if not (isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
            and rng["torch"].dtype == torch.uint8):
        return "'rng' has no uint8 tensor 'torch'"
    if not isinstance(state.get("optimizer"), (dict, type(None))):  # None: the cuda engine
        return "'optimizer' is not a dict (or null)"
    return None


def peek(path: str | Path) -> tuple[dict, Position]:
    """A checkpoint's config (a plain dict) and position, its tensors left unread (memory-
    mapped): what a resume checks before building anything. `load` checks the whole file."""
    path = Path(path)
    state = _read(path, mmap=True)
    problem = _resume_problem(state)
    if problem:
        raise W2VError(f"{path} is not a valid w2v checkpoint to resume: {problem}; use an "
                       "earlier checkpoint")
    return dict(state["config"]), Position(**state["position"])


def load(path: str | Path) -> dict:
    """Load a checkpoint safely; any damage becomes one clear W2VError."""
    path = Path(path)
    state = _read(path, mmap=False)
    damage = archive_damage(path)
    if damage:
        raise W2VError(f"checkpoint {path} is corrupt: {damage}; use an earlier checkpoint")
    words = state["vocab"]["words"]
    for name, table in state["model"].items():
        bad = non_finite(table, words if name == "input.weight" else None)
        if bad:
            raise W2VError(f"checkpoint {path} holds non-finite weights in {name} ({bad}): the "
                           "run had diverged when it was written; use an earlier checkpoint and "
                           "a lower trainer.lr")
    return state


def restore(path: Path, model, engine, vocab, cfg) -> Position:
    """Load `path` into model and optimizer after checking it fits this run."""
    state = load(path)
    problem = _resume_problem(state)
    if problem:
        raise W2VError(f"{path} is not a valid w2v checkpoint to resume: {problem}; use an "
                       "earlier checkpoint")
    words = state["vocab"]["words"]
    if list(words) != list(vocab.words):
        raise W2VError(
            f"checkpoint {path} was trained on a different vocabulary ({len(words)} words, "
            f"this corpus gives {len(vocab.words)}); resume with the same data, data.* settings "
            "and trainer.init_from"
        )
    shapes = {k: tuple(v.shape) for k, v in state["model"].items()}
    expected = {k: tuple(v.shape) for k, v in model_state(model).items()}
    if shapes != expected:
        raise W2VError(
            f"checkpoint {path} holds tensors of shapes {shapes}, this model needs {expected}; "
            "resume with the same model.* settings (dim, loss)"
        )
    if hasattr(model, "load_checkpoint_state"):  # in place: the fused engine's views stay valid
        model.load_checkpoint_state(state["model"])
    else:
        model.load_state_dict(state["model"])
    try:
        engine.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise W2VError(f"checkpoint {path}: its optimizer or random state does not fit this "
                       f"run's engine ({type(err).__name__}); resume with the same "
                       "trainer.engine and trainer.optimizer, or use an earlier checkpoint"
                       ) from None
    return Position(**state["position"])


def resolve(resume: str, run_dir: Path) -> Path:
    """`latest` means the newest checkpoint in this run dir; anything else is a path."""
    if resume != "latest":
        if not Path(resume).is_file():
            raise W2VError(f"trainer.resume={resume}: the checkpoint does not exist; give an "
                           "existing file or 'latest'")
        return Path(resume)
    found = latest(Path(run_dir) / "checkpoints")
    if found is None:
        raise W2VError(
            f"trainer.resume=latest found no checkpoint in {run_dir}/checkpoints; set "
            "hydra.run.dir to the interrupted run's directory or give a checkpoint path"
        )
    return found


def latest(ckpt_dir: Path) -> Path | None:
    files = sorted(_step_files(ckpt_dir), key=_step)
    return files[-1] if files else None


def _step(path: Path) -> int:
    return int(_NAME.search(path.name).group(1))


def _step_files(ckpt_dir: Path) -> list[Path]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return [p for p in ckpt_dir.iterdir() if _NAME.search(p.name)]
