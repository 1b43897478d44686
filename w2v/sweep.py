"""The end of a multirun sweep: one table comparing its jobs.

    python -m w2v.train -m model=skipgram,cbow model.dim=50,100

Each job runs in `<sweep dir>/<job number>_<its overrides>/` (conf/config.yaml:
hydra.sweep.subdir, Hydra's override_dirname through `job_dir_name`; paths are left out of
the name, as hydra.job.config.override_dirname.exclude_keys lists). When the sweep ends,
MultirunTable (a Hydra callback, conf/config.yaml's hydra.callbacks) writes multirun.csv and
multirun.md into the sweep dir and prints the table: per job, the settings the sweep varied,
final loss, words/s and each evaluation suite's main score (analogy accuracy, similarity
Spearman), read from the job's .hydra/overrides.yaml and metrics.json.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from w2v.atomic import atomic_write_text

RESOLVER = "w2v.job_dir"
# A job dir's name is at most this many bytes (a file name's limit is 255; a long override
# list is cut, its job number keeping it unique).
NAME_BYTES = 200
NO_NUM = 1 << 30  # a job dir not named by its number sorts last


def job_dir_name(num: Any, override_dirname: str) -> str:
    """`<num>_<overrides>` (`1_model.dim=100,model=cbow`): numbered so names stay unique and
    in sweep order; a '/' in a value (a path) becomes '_' so each job is one folder."""
    name = f"{num}_{override_dirname}" if override_dirname else str(num)
    name = name.replace(os.sep, "_").replace("\0", "_")
    return name.encode()[:NAME_BYTES].decode(errors="ignore")


def register_resolver() -> None:
    """`${w2v.job_dir:...}` for conf/config.yaml's hydra.sweep.subdir."""
    OmegaConf.register_new_resolver(RESOLVER, job_dir_name, replace=True)


class MultirunTable(Callback):
    """Hydra callback: the sweep's comparison table at its end (hydra.callbacks in
    conf/config.yaml). Jobs are those this process ran (on_job_end), else the job dirs found
    in the sweep dir (a launcher that runs jobs in other processes). Hydra calls it in single
    runs too: Callback's other hooks do nothing."""

    def __init__(self) -> None:
        self.job_dirs: list[Path] = []

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_dirs.append(Path(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = [read_job(d) for d in (self.job_dirs or find_job_dirs(sweep_dir))]
        if not jobs:
            return
        header, rows = table(jobs, sweep_dir)
        atomic_write_text(sweep_dir / "multirun.csv", to_csv(header, rows))
        markdown = to_markdown(header, rows)
        atomic_write_text(sweep_dir / "multirun.md", markdown)
        print(f"\nmultirun: {len(jobs)} jobs in {sweep_dir} (multirun.csv, multirun.md)\n"
              f"{markdown}", end="", flush=True)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs under sweep_dir (each holds .hydra/overrides.yaml), in job order."""
    dirs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(dirs, key=_job_num)


def _job_num(job_dir: Path) -> tuple[int, str]:
    head = job_dir.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else NO_NUM, job_dir.name)


def read_job(job_dir: Path) -> dict:
    """A job's overrides ({key: value}) and metrics (empty when it wrote no metrics.json)."""
    overrides = {}
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        for text in OmegaConf.to_container(OmegaConf.load(path)) or []:
            key, _, value = str(text).partition("=")
            overrides[key] = value
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    return {"dir": job_dir, "overrides": overrides, "metrics": metrics}


def table(jobs: list[dict], sweep_dir: Path) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: job, the swept settings (the overrides whose values differ between
    jobs; all of a lone job's), final_loss, words/s, each suite's main score, dir."""
    keys = list(dict.fromkeys(k for j in jobs for k in j["overrides"]))
    swept = [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]
    scores = list(dict.fromkeys(
        k for j in jobs for k in j["metrics"]
        if k.count("/") == 3 and k.endswith(("/accuracy", "/spearman"))))
    header = ["job", *(swept or ["overrides"]), "final_loss", "words/s",
              *(k.split("/")[2] for k in scores), "dir"]
    rows = []
    for index, job in enumerate(jobs):
        o, m = job["overrides"], job["metrics"]
        num = _job_num(job["dir"])[0]
        num = index if num == NO_NUM else num
        settings = [o.get(k, "") for k in swept] if swept else [
            " ".join(f"{k}={v}" for k, v in o.items())]
        rows.append([num, *settings, m.get("final_loss"), m.get("words_per_sec"),
                     *(m.get(k) for k in scores), _relative(job["dir"], sweep_dir)])
    return header, rows


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    """The table for reading: numbers rounded, the job dir left to multirun.csv."""
    shown = header[:-1]
    lines = ["| " + " | ".join(shown) + " |",
             "| " + " | ".join("---:" if _numeric(h, header) else "---" for h in shown) + " |"]
    for row in rows:
        cells = [_cell(h, v) for h, v in zip(shown, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _numeric(column: str, header: list[str]) -> bool:
    return column == "job" or header.index(column) >= header.index("final_loss")


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "n/a"  # no metrics.json: the job did not finish
    if column == "words/s":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")
