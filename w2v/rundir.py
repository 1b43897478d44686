"""A run's directory: continuing the run it holds (resume), and leaving nothing when a run
fails before writing anything.

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
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from w2v import checkpoint as ckpt
from w2v.atomic import atomic_write_text
from w2v.config import Config
from w2v.errors import W2VError, unfinished

# Settings a resume may change: they do not change what is trained. Entries ending in "."
# cover a whole group. Everything else must equal the run's.
HARMLESS = (
    "trainer.resume", "trainer.threads", "trainer.progress", "trainer.log_points",
    "trainer.log_seconds", "trainer.eval_every", "trainer.eval_epochs", "trainer.ckpt_every",
    "trainer.sync_every", "data.cache_dir", "eval.", "export.",
)
GROUPS = ("data", "model", "trainer", "eval", "export")
# What Hydra writes into a run dir at start; a run dir holding only these has no output.
HYDRA_RECORD = (".hydra", "train.log")
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
    metrics_path = run_dir / "metrics.json"
    finished = position.epoch >= config.trainer.epochs and metrics_path.is_file()
    metrics = None
    if finished:
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a damaged metrics.json: finish the run again
            finished = False
    return Resume(path, config, position, finished, changes, metrics)


def reconcile(cfg: Config, saved: dict, named: set[str] | None,
              path: Path | str = "the checkpoint") -> tuple[Config, list[str]]:
    """The saved config with cfg's values for the harmless settings among `named`; a
    contradicting setting is a W2VError that names it."""
    schema = OmegaConf.structured(Config)
    known = _known(saved, OmegaConf.to_container(schema))
    have = _leaves(_container(OmegaConf.merge(schema, known)))
    want = _leaves(_container(OmegaConf.structured(cfg)))
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
    now, base = _leaves(_container(composed)), _leaves(_container(defaults))
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


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
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
