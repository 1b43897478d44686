"""Where the text comes from: `data.path` or a Hub id -> a `datasets` Dataset with a text column.

    python -c "from w2v.config import DataConfig; from w2v.sources import load_text_dataset; \
print(load_text_dataset(DataConfig(path='corpus.txt')))"

Sources (all through the `datasets` library):
- the Hub: `load_dataset(hub_id, hub_config, split=..., revision=...)`, column `text_column`;
- `data.path` (replaces the Hub with any data group): plain text, one row per line (.txt, or
  no/unknown extension, optionally .gz/.bz2/.xz), parquet, json/jsonl (with a text column), a
  directory or glob of one kind of these, or a `save_to_disk` folder. Plain text goes through
  textlines.py, which never holds a long line whole; datasets' own "text" builder (which reads
  each line whole) only unpacks archives. `data.split` applies to Hub ids and save_to_disk
  DatasetDicts; data files have one split.
- `data.streaming=true` reads an IterableDataset instead of building the Arrow cache.

Without network the Hub fails fast: one short socket probe (skipped when HF_HUB_OFFLINE is
set), then the local datasets cache in offline mode, then a W2VError naming `data.path`.

`source_fingerprint` identifies a source without reading it (the corpus cache key), so this
module imports `datasets` and pyarrow only when it loads: a run whose corpus is cached never
imports them.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from w2v.config import DataConfig
from w2v.errors import W2VError, one_line

if TYPE_CHECKING:  # `datasets` costs ~1 s to import; a cached corpus never needs it.
    import datasets

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT = 3.0  # seconds; a plain offline load_dataset retries for ~24 s instead

_COMPRESSION = {".gz", ".bz2", ".xz"}
_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
_DISK_MARKS = {"state.json", "dataset_info.json", "dataset_dict.json"}
# What marks a run dir (Hydra's record; w2v's lock, rundir.LOCK): its files are no corpus.
RUN_DIR_MARKS = (".hydra", ".w2v-run.lock")


# --- which files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalSource:
    """Resolved `data.path`: data files of one builder kind, or a save_to_disk folder."""

    path: str
    builder: str  # "text", "parquet", "json", or "disk" (load_from_disk)
    files: tuple[Path, ...]  # the data files (for "disk": the folder's state/info json files)


def resolve_local(path: str) -> LocalSource:
    """Expand `data.path` (file, directory, glob, save_to_disk folder) without reading data."""
    p = Path(path).expanduser()
    if p.is_dir() and _is_saved_dataset(p):
        marks = sorted(q for q in p.rglob("*.json") if q.name in _DISK_MARKS)
        return LocalSource(path, "disk", tuple(marks))
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and not _hidden(q.relative_to(p))
                       and not _in_run_dir(q, p))
        where = f"directory data.path={path!r}"
    elif p.is_file():
        files = [p]
        where = ""
    elif glob.has_magic(path):
        # The folder the pattern starts in: run dirs below it are skipped.
        base = Path(os.path.dirname(os.path.expanduser(path).split("*")[0].split("?")[0]
                                    .split("[")[0]))
        files = sorted(Path(q) for q in glob.glob(os.path.expanduser(path), recursive=True))
        files = [q for q in files if q.is_file() and not _in_run_dir(q, base)]
        where = f"glob data.path={path!r}"
    else:
        raise W2VError(f"data.path={path!r} does not exist; give a file, directory or glob")
    if not files:
        raise W2VError(f"{where} matches no files; give a file, directory or glob of data files")
    kinds = {_builder_for(f) for f in files}
    if len(kinds) > 1:
        raise W2VError(
            f"{where} mixes file kinds ({', '.join(sorted(kinds))}); point data.path at files "
            "of one kind (a glob such as 'dir/*.txt')"
        )
    return LocalSource(path, kinds.pop(), tuple(f.resolve() for f in files))


def _is_saved_dataset(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def _in_run_dir(f: Path, base: Path) -> bool:
    """Whether `f` is a run's output (train.log, vectors.txt...): a folder between `base`
    and it is a run dir. A run dir inside the corpus folder must not train on itself."""
    for folder in f.parents:
        if folder == base or folder == folder.parent:
            return False
        if any((folder / mark).exists() for mark in RUN_DIR_MARKS):
            return True
    return False


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _builder_for(f: Path) -> str:
    suffixes = [s.lower() for s in f.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    return _BUILDERS.get(suffixes[-1] if suffixes else "", "text")


def source_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What identifies the source, cheaply (no `datasets` call): the cache key's first part.

    Local files: resolved paths, sizes and mtimes. save_to_disk folders: their state.json
    files (which carry the dataset's fingerprint). Hub: id, config, split, revision.
    """
    if cfg.path is None:
        if cfg.hub_id is None:
            raise W2VError("no data source: set data.path (a local corpus) or data.hub_id")
        return {"hub_id": cfg.hub_id, "hub_config": cfg.hub_config, "split": cfg.split,
                "revision": cfg.revision}
    src = resolve_local(cfg.path)
    if src.builder == "disk":
        digest = hashlib.sha256()
        for f in src.files:
            digest.update(str(f.relative_to(Path(cfg.path).expanduser())).encode())
            digest.update(f.read_bytes())
        return {"disk": str(Path(cfg.path).expanduser().resolve()), "split": cfg.split,
                "state": digest.hexdigest()}
    files = []
    for f in src.files:
        st = f.stat()
        files.append([str(f), st.st_size, st.st_mtime_ns])
    return {"builder": src.builder, "files": files}


def describe_source(cfg: DataConfig) -> str:
    if cfg.path is not None:
        return cfg.path
    return ":".join(str(x) for x in (cfg.hub_id, cfg.hub_config, cfg.split) if x is not None)


# --- loading -----------------------------------------------------------------------------------


def load_text_dataset(
    cfg: DataConfig, progress: bool = True
) -> datasets.Dataset | datasets.IterableDataset:
    """The corpus as a `datasets` Dataset (IterableDataset with data.streaming), column checked."""
    import datasets

    with _datasets_progress(progress):
        ds = _load_local(resolve_local(cfg.path), cfg) if cfg.path else _load_hub(cfg)
    if ds.features is not None:  # streamed json may not know its columns until read
        check_text_column(ds.features, cfg.text_column, describe_source(cfg))
    assert isinstance(ds, (datasets.Dataset, datasets.IterableDataset))
    return ds


def check_text_column(features: Any, column: str, source: str) -> None:
    """Raise a W2VError unless `column` exists and holds strings."""
    names = list(features)
    if column not in names:
        raise W2VError(
            f"{source} has no column data.text_column={column!r}; its columns are: "
            f"{', '.join(names) or '(none)'}"
        )
    feature = features[column]
    dtype = getattr(feature, "dtype", None)
    if dtype not in ("string", "large_string"):
        texts = [n for n in names if getattr(features[n], "dtype", None) in ("string",
                                                                             "large_string")]
        hint = f"text columns: {', '.join(texts)}" if texts else "it has no text column"
        raise W2VError(
            f"column data.text_column={column!r} of {source} is {feature}, not text; {hint}"
        )


def _load_local(src: LocalSource, cfg: DataConfig):
    import datasets

    try:
        if src.builder == "disk":
            ds = datasets.load_from_disk(str(Path(src.path).expanduser()))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise W2VError(
                        f"data.split={cfg.split!r} is not in the saved DatasetDict {src.path}; "
                        f"its splits are: {', '.join(ds)}"
                    )
                ds = ds[cfg.split]
            return ds.to_iterable_dataset() if cfg.streaming else ds
        if src.builder == "text" and not _archives(src.files):
            return _load_text_lines(src, cfg)
        # Archives (zip, tar, zstd, ...) that datasets' "text" builder unpacks. It reads each
        # line whole, so their lines are not bounded. keep_linebreaks: a trailing "\n" is
        # whitespace to the tokenizer, and keeping it saves the builder a copy of every line.
        kwargs = ({"encoding_errors": "replace", "keep_linebreaks": True}
                  if src.builder == "text" else {})
        return datasets.load_dataset(
            src.builder,
            data_files=[str(f) for f in src.files],
            split="train",
            streaming=cfg.streaming,
            **kwargs,
        )
    except W2VError:
        raise
    except Exception as err:  # the user's files: name them rather than show a traceback
        # datasets wraps the real problem ("An error occurred while generating the dataset"):
        # report the innermost cause (permission denied, a JSON parse error, ...).
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        empty = src.builder != "disk" and all(f.stat().st_size == 0 for f in src.files)
        if empty or type(cause).__name__ == "SchemaInferenceError":  # not one row in any file
            raise _empty(src) from err
        hint = "; make the files readable (chmod +r)" if isinstance(cause, PermissionError) else ""
        raise W2VError(
            f"cannot read data.path={src.path!r} as {src.builder}: {one_line(cause)}{hint}"
        ) from err


def _archives(files: tuple[Path, ...]) -> bool:
    """Whether any file is an archive that only datasets' text builder unpacks."""
    from w2v.textlines import compression

    return any(compression(f) not in (None, "gzip", "bz2", "xz") for f in files)


def _load_text_lines(src: LocalSource, cfg: DataConfig):
    from w2v.textlines import load_text_lines

    if all(f.stat().st_size == 0 for f in src.files):
        raise _empty(src)
    ds = load_text_lines(src.files, source_fingerprint(cfg)["files"], cfg.streaming)
    if not cfg.streaming and ds.num_rows == 0:  # compressed files holding nothing
        raise _empty(src)
    return ds


def _empty(src: LocalSource) -> W2VError:
    return W2VError(
        f"data.path={src.path!r} is empty (no rows); point data.path at a non-empty corpus"
    )


def _load_hub(cfg: DataConfig):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    name = f"data.hub_id={cfg.hub_id!r}" + (f" (config {cfg.hub_config!r})" if cfg.hub_config
                                            else "")
    env_offline = bool(datasets.config.HF_HUB_OFFLINE)
    host = urlparse(datasets.config.HF_ENDPOINT).hostname or "huggingface.co"
    unreachable = not env_offline and not hub_reachable(datasets.config.HF_ENDPOINT)
    if unreachable:
        log.warning("the Hugging Face Hub (%s) is unreachable; trying the local datasets cache",
                    host)
    try:
        with _hub_offline(env_offline or unreachable):
            return datasets.load_dataset(
                cfg.hub_id, cfg.hub_config, split=cfg.split, revision=cfg.revision,
                streaming=cfg.streaming,
            )
    except DatasetNotFoundError as err:
        raise W2VError(
            f"{name} is not on the Hugging Face Hub ({one_line(err)}); check the id, or set "
            "data.path to a local copy"
        ) from err
    except (ConnectionError, OSError) as err:
        why = f"cannot reach {host}" if unreachable else "offline mode (HF_HUB_OFFLINE)"
        if not (unreachable or env_offline):
            why = f"download failed ({one_line(err)})"
        raise W2VError(
            f"{name} cannot be loaded: {why}, and it is not in the local datasets cache; "
            "set data.path to a local copy (txt, parquet, json, or a save_to_disk folder)"
        ) from err
    except ValueError as err:  # unknown config name or split
        raise W2VError(
            f"{name} split data.split={cfg.split!r}: {one_line(err)}; check data.hub_config "
            "and data.split"
        ) from err


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """One TCP connection to the Hub's host, bounded by `timeout` including the DNS lookup."""
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    ok: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    # getaddrinfo ignores socket timeouts, so the probe runs in a thread we stop waiting for.
    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Offline mode for one load: what HF_HUB_OFFLINE=1 does, set after import."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()
