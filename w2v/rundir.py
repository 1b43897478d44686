"""A run's directory: one run at a time in it (a lock), one run's outputs in it (a new run
in another run's dir is refused), continuing the run it holds (resume), and leaving nothing
when a run fails before writing anything.

    python -m w2v.train trainer.resume=latest hydra.run.dir=outputs/2024-05-01/12-00-00

A checkpoint carries its run's config, and that config is the run's: a resume needs the run
dir (or a checkpoint path, which resumes in the run dir it belongs to: `hydra_args`) and
nothing else, and continues in that run dir (one train.log, one TensorBoard curve, the
vectors where the run started). Settings that do not change what is trained
(threads, logging, progress, evaluation, exports, checkpoint cadence) may be changed on
resume: they are applied and reported. Any other setting that differs from the run's (the
corpus, vocabulary, model, schedule, engine, seed...) is refused by name, since the result
would be neither the run that was started nor a new one. A run that is finished (its final
checkpoint and metrics.json are written) is left as it is.

Hydra writes `.hydra/` (config.yaml, hydra.yaml, overrides.yaml) into the run dir when it
starts. On resume the run's own record must survive, so `hydra_args` asks Hydra not to write
it, and `record` writes the resume's overrides beside it (`.hydra/resume-<time>.yaml`).

`claim` takes the run dir before anything is written: an exclusive `flock` on its
`.w2v-run.lock` file, held while the run lasts and released by the kernel however the process
ends (kill -9 leaves no stale lock); the command line takes it before Hydra writes `.hydra/`
(`before_hydra`), so a refused run does not overwrite the record of the run it was refused for.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from w2v import checkpoint as ckpt
from w2v.atomic import atomic_write_text, in_use
from w2v.cli import check_folder, leaf_values
from w2v.config import Config, absolute_path
from w2v.errors import W2VError, unfinished
from w2v.sources import RUN_DIR_MARKS

# Settings a resume may change: they do not change what is trained. Entries ending in "."
# cover a whole group. Everything else must equal the run's.
HARMLESS = (
    "trainer.resume", "trainer.threads", "trainer.progress", "trainer.log_points",
    "trainer.log_seconds", "trainer.eval_every", "trainer.eval_epochs", "trainer.ckpt_every",
    "trainer.sync_every", "data.cache_dir", "eval.", "export.", "trainer.overwrite",
)
GROUPS = ("data", "model", "trainer", "eval", "export")
LOCK = RUN_DIR_MARKS[1]  # the file `claim` locks (a corpus folder's listing skips run dirs)
# What Hydra (and `claim`) write into a run dir at start; a run dir holding only these has no
# output.
HYDRA_RECORD = (".hydra", "train.log", LOCK)
# A run's outputs: a new run in a run dir holding any of these would mix with that run.
OUTPUTS = ("checkpoints", "vectors.pt", "vectors.txt", "vectors.bin", "metrics.json", "tb")
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


@dataclass
class Resume:
    path: Path  # the checkpoint
    config: Config  # the run's config, with the harmless changes applied
    position: ckpt.Position
    finished: bool  # nothing left to do: the last epoch is done and metrics.json written
    changes: list[str] = field(default_factory=list)  # "trainer.threads: 2 -> 4"
    metrics: dict | None = None  # metrics.json of a finished run


def prepare(cfg: Config, run_dir: str | Path, named: set[str] | None = None) -> Resume:
    """The run `cfg.trainer.resume` continues, with cfg's harmless settings applied.

    named: the settings the user gave (the CLI's overrides); only those are compared, the
    rest comes from the checkpoint. None compares every setting (train() called directly)."""
    run_dir = Path(run_dir)
    path = ckpt.resolve(cfg.trainer.resume, run_dir)
    saved, position = ckpt.peek(path)
    config, changes = reconcile(cfg, saved, named, path)
    if named is not None and not _covers(named, "data.path"):
        check_corpus(config, run_dir, path)
    metrics_path = run_dir / "metrics.json"
    finished = (position.epoch >= config.trainer.epochs and metrics_path.is_file()
                and all(p.is_file() for p in vectors(run_dir, config)))
    metrics = None
    if finished:
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a damaged metrics.json: finish the run again
            finished = False
    return Resume(path, config, position, finished, changes, metrics)


def vectors(run_dir: Path, cfg: Config) -> list[Path]:
    """The vectors a finished run has written (export.*): a run missing one is not finished."""
    names = ["vectors.pt", "vectors.txt" if cfg.export.text else "",
             "vectors.bin" if cfg.export.binary else ""]
    return [run_dir / n for n in names if n]


def check_corpus(config: Config, run_dir: Path, path: Path) -> None:
    """A resume reads the corpus a run dir's own record (.hydra/config.yaml) names, not one
    a checkpoint names alone: a checkpoint from elsewhere could name any local file. The
    record is this run dir's, or, where it has none (a checkpoint resumed by its path into a
    new run dir), that of the run dir the checkpoint sits in (<run>/checkpoints/step-N.pt)."""
    wanted = config.data.path
    if wanted is None:  # a Hub dataset: no local file is read
        return
    record = run_dir
    if not (run_dir / ".hydra" / "config.yaml").is_file() and path.parent.name == "checkpoints":
        record = path.parent.parent
    recorded = recorded_data_path(record)
    if recorded == wanted:
        return
    names = f"names data.path={recorded}" if recorded else "names no data.path"
    raise W2VError(
        f"{path} would read data.path={wanted}, but the run dir's record "
        f"({record / '.hydra' / 'config.yaml'}) {names}: a resume reads only the corpus "
        f"its run dir's record names; give data.path={wanted} to read it, or resume in the "
        "run dir the checkpoint came from")


def recorded_data_path(run_dir: Path) -> str | None:
    """data.path in the run dir's .hydra/config.yaml, made absolute from the directory the
    run started in (.hydra/hydra.yaml's runtime.cwd); None without a record."""
    hydra = Path(run_dir) / ".hydra"
    try:
        record = OmegaConf.to_container(OmegaConf.load(hydra / "config.yaml"))
        value = (record.get("data") or {}).get("path")
        if not isinstance(value, str):
            return None
        if not os.path.isabs(os.path.expanduser(value)) and (hydra / "hydra.yaml").is_file():
            started = OmegaConf.load(hydra / "hydra.yaml").hydra.runtime.cwd
            value = os.path.join(started, value)
    except (OSError, ValueError, AttributeError, OmegaConfBaseException):
        return None
    return absolute_path(value)


def reconcile(cfg: Config, saved: dict, named: set[str] | None,
              path: Path | str = "the checkpoint") -> tuple[Config, list[str]]:
    """The saved config with cfg's values for the harmless settings among `named`; a
    contradicting setting is a W2VError that names it."""
    schema = OmegaConf.structured(Config)
    known = _known(saved, OmegaConf.to_container(schema))
    have = leaf_values(_container(OmegaConf.merge(schema, known)))
    want = leaf_values(_container(OmegaConf.structured(cfg)))
    keys = set(want) if named is None else {k for k in want if _covers(named, k)}
    keys.add("trainer.resume")  # always this attempt's
    applied, changes, refused = dict(have), [], []
    for key in sorted(keys):
        if want[key] == have.get(key):
            continue
        if _harmless(key):
            applied[key] = want[key]
            if key != "trainer.resume":
                changes.append(f"{key}: {have.get(key)!r} -> {want[key]!r}")
        else:
            refused.append(f"{key}={want[key]!r} (the run has {have.get(key)!r})")
    if refused:
        raise W2VError(
            f"cannot resume from {path} with {', '.join(refused)}: a resumed run keeps its "
            "corpus, vocabulary, model and schedule (only threads, logging, progress, "
            "evaluation, exports and checkpoint cadence may change); drop the override, or "
            "start a new run in another hydra.run.dir"
        )
    merged = OmegaConf.merge(schema, _unflatten(applied))
    try:
        return OmegaConf.to_object(merged), changes
    except W2VError as err:
        raise W2VError(f"the config saved in {path} is not valid here: {err}") from None


def named_keys(overrides: list[str], composed: Any, defaults: Any) -> set[str]:
    """The settings a command line gives: every key its overrides name (a group choice such
    as `model=cbow` names the whole group) and every value that differs from the defaults
    (what `+experiment=...` sets)."""
    named = set()
    for text in overrides:
        key = text.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra"):
            continue
        named.add(f"{key}." if key in GROUPS else key)
    now, base = leaf_values(_container(composed)), leaf_values(_container(defaults))
    named |= {k for k, v in now.items() if base.get(k, object()) != v}
    return named


def hydra_args(argv: list[str]) -> list[str]:
    """The command line for Hydra. A resume continues in the run's own dir: a checkpoint path
    given without hydra.run.dir resumes in the run dir it belongs to (<run>/checkpoints/),
    not in a new outputs/ folder. It keeps the run's own `.hydra/` record (Hydra would
    overwrite config.yaml with the resume's overrides alone), so Hydra writes none."""
    resume = _resume_value(argv)
    if resume is None or any(a.startswith(("-m", "--multirun")) for a in argv):
        return argv
    extra = []
    run_dir = _run_dir_of(resume)
    if run_dir is not None and not any(a.startswith("hydra.run.dir=") for a in argv):
        extra.append(f"hydra.run.dir={hydra_quoted(str(run_dir))}")
    if not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append("hydra.output_subdir=null")
    return [*argv, *extra]


def _resume_value(argv: list[str]) -> str | None:
    """The trainer.resume a command line gives (the last one), or None."""
    value = None
    for a in argv:
        if a.lstrip("+").startswith("trainer.resume="):
            value = a.split("=", 1)[1]
    return None if value in (None, "", "null") else value.strip("'\"")


def _run_dir_of(resume: str) -> Path | None:
    """The run dir a checkpoint path belongs to (<run>/checkpoints/step-N.pt), or None."""
    path = Path(resume).expanduser()
    if resume == "latest" or not path.is_file() or path.parent.name != "checkpoints":
        return None
    return path.resolve().parent.parent


def hydra_quoted(value: str) -> str:
    """`value` as a Hydra override value: as it is where Hydra's grammar reads it back
    unchanged, else in single quotes (a multirun job dir's name holds '=' and ',')."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(f"k={value}")
        if not parsed.is_sweep_override() and parsed.value() == value:
            return value
    except HydraException:
        pass
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(prog: str, run_dir: str | Path) -> str:
    """The shell command that continues the run in `run_dir` in place."""
    arg = f"hydra.run.dir={hydra_quoted(str(run_dir))}"
    if shlex.quote(arg) != arg and not set(arg) & set('"$`\\!'):
        return f'{prog} trainer.resume=latest "{arg}"'  # reads better than shlex's '"'"'
    return f"{prog} trainer.resume=latest {shlex.quote(arg)}"


def record(run_dir: str | Path, resume: Resume, overrides: list[str]) -> Path:
    """Write this resume's overrides beside the run's record, `.hydra/resume-<time>.yaml`;
    a run dir without a record (a checkpoint resumed elsewhere) gets `.hydra/config.yaml`."""
    folder = Path(run_dir) / ".hydra"
    if not (folder / "config.yaml").is_file():
        atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(resume.config))
    path = folder / f"resume-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    entry = {"checkpoint": str(resume.path), "overrides": list(overrides),
             "applied": resume.changes}
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(entry)))
    return path


_HELD: dict[str, int] = {}  # run dirs this process has claimed: their lock files' descriptors


@contextlib.contextmanager
def claimed(run_dir: str | Path, resuming: bool, overwrite: bool) -> Iterator[None]:
    """`claim` for the block; released after it unless it was held before (the command line
    claims before Hydra starts, for the whole process)."""
    fresh = not Path(run_dir).exists()
    taken = claim(run_dir, resuming, overwrite)
    try:
        yield
    except BaseException:
        if taken and fresh:  # the folder claim made goes when nothing was written in it
            release(run_dir)
            _discard(Path(run_dir))
        raise
    finally:
        if taken:
            release(run_dir)


def continues(resume: str | None, run_dir: str | Path) -> bool:
    """Whether `trainer.resume` continues the run in `run_dir` (latest, or one of its own
    checkpoints): a checkpoint from elsewhere starts its continuation in run_dir, which must
    then hold no other run."""
    if resume in (None, "", "null"):
        return False
    return resume == "latest" or Path(resume).resolve().parent == (
        Path(run_dir) / "checkpoints").resolve()


def claim(run_dir: str | Path, resuming: bool, overwrite: bool) -> bool:
    """Take `run_dir` for this process's run: lock it (one run at a time), refuse another
    run's outputs unless resuming that run (`continues`; overwrite: remove them), and remove
    the temporary files a killed run left. Returns whether this call took the lock (False:
    held already)."""
    run_dir = Path(run_dir)
    fresh = not run_dir.exists()
    taken = _lock(run_dir)
    try:
        refuse_symlinks(run_dir)
        if not resuming:
            _one_run(run_dir, overwrite)
        remove_stale_temps(run_dir)
    except BaseException:
        if taken:
            release(run_dir)
            if fresh:
                _discard(run_dir)  # the folder made for the claim alone
        raise
    return taken


def release(run_dir: str | Path) -> None:
    fd = _HELD.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


def _lock(run_dir: Path) -> bool:
    key = os.path.realpath(run_dir)
    if key in _HELD:
        return False
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise W2VError(f"cannot lock the run dir {run_dir} ({run_dir / LOCK}: {err.strerror}); "
                       "remove it if it is a symlink, or choose a writable hydra.run.dir"
                       ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise W2VError(f"{run_dir} is in use by another w2v run that is still running; wait "
                       "for it to end, or choose another hydra.run.dir") from None
    except OSError:  # a filesystem without locks: run unlocked, as before locks existed
        pass
    _HELD[key] = fd
    return True


def _one_run(run_dir: Path, overwrite: bool) -> None:
    """A run dir holds one run: another run's outputs are refused, or removed (overwrite)."""
    found = [name for name in OUTPUTS if _holds(run_dir / name)]
    if not found:
        return
    if not overwrite:
        raise W2VError(
            f"{run_dir} holds another run ({', '.join(found)}); continue it with "
            "trainer.resume=latest, choose another hydra.run.dir, or replace it with "
            "trainer.overwrite=true")
    for name in (*found, "train.log"):
        _remove(run_dir / name)
    for path in (run_dir / ".hydra").glob("resume-*.yaml"):
        _remove(path)


def _holds(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(path.iterdir())  # an empty checkpoints/ holds no run


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def refuse_symlinks(folder: str | Path) -> None:
    """A run writes its files itself: a symlink planted where one goes (.hydra/config.yaml,
    train.log, tb/projector_config.pbtxt...) would have it write through the link to the
    link's target. Links to folders (checkpoints/ on a larger disk) are the user's choice."""
    for parent, _, files in os.walk(folder):
        for name in files:
            path = Path(parent) / name
            if path.is_symlink():
                raise W2VError(
                    f"{path} is a symlink (to {os.readlink(path)}): a run writes its own "
                    "files and would write through it; remove the link, or choose another "
                    "hydra.run.dir")


def remove_stale_temps(run_dir: str | Path) -> list[Path]:
    """Remove the atomic writer's temporary files (`.<name>.<random>.tmp`) under `run_dir`
    that no live process holds: what a killed run left. Symlinks are not followed."""
    removed = []
    for folder, _, files in os.walk(run_dir):
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(".tmp") and not path.is_symlink() \
                    and not in_use(path):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


def before_hydra(argv: list[str]) -> list[str]:
    """The command line's claim on its run dir, taken before Hydra writes `.hydra/` into it
    (a refused run must not overwrite the record of the run it is refused for); then the
    command line for Hydra (`hydra_args`). A run dir left to Hydra's default (a new
    timestamped folder) is claimed by train() itself."""
    run_dir = _given(argv, "hydra.run.dir")
    # Hydra's flags (-m, --cfg job: no single run) and a dir Hydra resolves (${now:...}) are
    # left to train()'s claim.
    plain = run_dir and "${" not in run_dir and not any(a.startswith("-") for a in argv)
    if plain and os.environ.get("RANK", "0") == "0":
        overwrite = (_given(argv, "trainer.overwrite") or "").lower() in ("true", "yes", "on")
        check_folder(Path(run_dir))  # a file, a read-only folder: one line before the claim
        fresh = not Path(run_dir).exists()
        claim(run_dir, continues(_given(argv, "trainer.resume"), run_dir), overwrite)
        if fresh:
            _discard_at_exit(Path(run_dir))
    return hydra_args(argv)


def _discard_at_exit(run_dir: Path) -> None:
    """The folder the claim made goes when the process ends with nothing written in it, by
    Ctrl-C before Hydra starts (errors.stop_at_once) or an error Hydra reports; `_discard`
    leaves a folder holding anything else alone, so this stays for the whole process."""
    _PENDING.enter_context(unfinished(lambda: _discard(run_dir)))
    atexit.register(_discard, run_dir)


_PENDING = contextlib.ExitStack()  # `unfinished` cleanups kept for the process's lifetime


def _given(argv: list[str], key: str) -> str | None:
    for a in reversed(argv):
        if a.lstrip("+").startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def _resuming(argv: list[str]) -> bool:
    return _given(argv, "trainer.resume") not in (None, "", "null")


@contextlib.contextmanager
def discard_if_unused(run_dir: str | Path) -> Iterator[None]:
    """On failure, remove the run dir when it holds only what Hydra wrote at start (.hydra/,
    train.log): a run that failed or was interrupted before writing anything leaves no
    empty run folder. Only those files are removed, never anything else."""
    try:
        with unfinished(lambda: _discard(Path(run_dir))):  # Ctrl-C: errors.stop_at_once
            yield
    except BaseException:
        _discard(Path(run_dir))
        raise


def _discard(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if not run_dir.is_dir() or any(p.name not in HYDRA_RECORD for p in run_dir.iterdir()):
            return
        hydra = run_dir / ".hydra"
        if hydra.is_dir():
            if any(p.name not in HYDRA_FILES for p in hydra.iterdir()):
                return
            for p in hydra.iterdir():
                p.unlink()
            hydra.rmdir()
        (run_dir / "train.log").unlink(missing_ok=True)
        (run_dir / LOCK).unlink(missing_ok=True)
        run_dir.rmdir()


# ---- config trees as flat {"group.key": value} -----------------------------------------------


def _container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def _known(saved: dict, schema: dict) -> dict:
    """The saved config without keys this version no longer has (e.g. a removed setting)."""
    out = {}
    for key, value in saved.items():
        if key in schema:
            both = isinstance(value, dict) and isinstance(schema[key], dict)
            out[key] = _known(value, schema[key]) if both else value
    return out


def _unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return tree


def _covers(named: set[str], key: str) -> bool:
    return key in named or any(n.endswith(".") and key.startswith(n) for n in named)


def _harmless(key: str) -> bool:
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS)
