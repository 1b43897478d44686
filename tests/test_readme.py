"""README.md and docs/ stay true: every w2v command in their code blocks still parses, every
relative link resolves (to a file, and to a heading when it names one), and the README stays a
front door of at most MAX_README_LINES lines.

Commands are checked without running anything: `python -m w2v.train` / `w2v.data` arguments
go through `w2v.cli.precheck` (the overrides composed into the config, every key, option, type
and range checked, as the real command does before Hydra starts), a multirun line once per
combination of its sweep values, `--help` through the page it prints; `w2v.query`,
`w2v.evaluate` and `w2v.export` arguments through their own `parse_cli`. One real
`python -m w2v.train ... --cfg job` shows that the in-process check agrees with the command.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 300
ENTRY_POINTS = ("train", "data", "query", "evaluate", "export")
# Commands that cannot be checked here, each with the reason (a substring of the command).
SKIP: dict[str, str] = {}


# --- commands ------------------------------------------------------------------------------


def code_lines(text: str) -> list[str]:
    """The lines of a page's shell code blocks: ``` fences (not ```python ones) and blocks
    indented 4 spaces after a blank line, with `\\` continuations joined."""
    lines, out = text.splitlines(), []
    fence: str | None = None
    indented = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else line.strip()[3:].strip()
            continue
        if fence is not None:
            if fence not in ("python", "py"):
                out.append(line)
            continue
        if line.startswith("    ") and (indented or i == 0 or not lines[i - 1].strip()):
            indented = True
            out.append(line)
        elif line.strip():
            indented = False
    joined: list[str] = []
    for line in out:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    return joined


def w2v_commands(line: str) -> list[tuple[str, list[str]]]:
    """(entry point, arguments) of each w2v command on a shell line: `python -m w2v.<x>`,
    `torchrun ... -m w2v.<x>` or `w2v-<x>`, alone or after `&&`."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    found = []
    for part in (list(g) for sep, g in itertools.groupby(words, lambda w: w == "&&") if not sep):
        for i, word in enumerate(part):
            entry = None
            if word == "-m" and i + 1 < len(part) and part[i + 1].startswith("w2v."):
                entry, args = part[i + 1][4:], part[i + 2:]
            elif i == 0 and word.startswith("w2v-"):
                entry, args = word[4:], part[1:]
            if entry is not None:
                assert entry in ENTRY_POINTS, f"{line}: no entry point w2v.{entry}"
                found.append((entry, args))
                break
    return found


def collect() -> list[tuple[str, str, str, list[str]]]:
    """(page, command line, entry point, arguments) for every w2v command on every page."""
    cases = []
    for page in PAGES:
        for line in code_lines(page.read_text()):
            # Placeholders (`<run>`, `<checkpoint path>`) become one word, a path below.
            line = re.sub(r"<[^<>]+>", "placeholder", line)
            for entry, args in w2v_commands(line):
                cases.append((page.relative_to(REPO).as_posix(), line, entry, args))
    return cases


CASES = collect()


def case_id(case: tuple[str, str, str, list[str]]) -> str:
    page, _, entry, args = case
    text = " ".join([f"w2v.{entry}", *args])
    return f"{Path(page).stem}: {text[:70]}"


def with_paths(args: list[str], tmp: Path) -> list[str]:
    """A run dir is put under `tmp`: the check is of the command, not of this machine's
    folders."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "hydra.run.dir":
            arg = f"{key}={tmp / value.lstrip('/')}"
        out.append(arg)
    return out


def sweeps(overrides: list[str]) -> list[list[str]]:
    """A multirun's overrides -> one list per combination of the sweep values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override():
            prefix = text.split("=", 1)[0]
            choices.append([f"{prefix}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(combo) for combo in itertools.product(*choices)]


def check_hydra(entry: str, args: list[str], capsys) -> None:
    from w2v.cli import hydra_help, precheck
    from w2v.config import register_configs

    usage = __import__(f"w2v.{entry}", fromlist=["USAGE"]).USAGE
    if any(a in ("-h", "--help") for a in args):
        assert hydra_help(usage).startswith("usage: ")
        return
    overrides, multirun, rest = [], False, iter(args)
    for arg in rest:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg == "--cfg":
            next(rest)  # --cfg job: print the config, which precheck composes anyway
        else:
            assert not arg.startswith("-"), f"a flag this test does not know: {arg}"
            overrides.append(arg)
    register_configs()
    for combo in sweeps(overrides) if multirun else [overrides]:
        precheck(combo, usage.prog)


class Phrased:
    """Vectors trained with data.phrases, as query sees them: two words typed with a space
    are one phrase (`new york` -> new_york)."""

    has_phrases = True

    @staticmethod
    def tokenize(text: str) -> list[str]:
        words = text.lower().split()
        return ["_".join(words)] if len(words) == 2 else words


PHRASED = Phrased()


def check_key_value(entry: str, args: list[str], capsys) -> None:
    from w2v.cli import HELP_FLAGS, parse_cli

    module = __import__(f"w2v.{entry}", fromlist=["USAGE"])
    schema = {"query": "QueryArgs", "evaluate": "EvaluateArgs", "export": "ExportArgs"}[entry]
    options = args
    if entry == "query":  # as query.main splits them: key=value options, the rest queries
        options = [a for a in args if re.match(r"^[A-Za-z_]+=", a) or a in HELP_FLAGS]
        for text in (a for a in args if a not in options):
            assert module.parse_query(text, PHRASED)[0], text
    try:
        parse_cli(getattr(module, schema), options, module.USAGE)
    except SystemExit as stop:  # --help prints the page and exits 0
        assert stop.code in (0, None) and capsys.readouterr().out.startswith("usage: ")


def test_pages_have_w2v_commands():
    readme = [c for c in CASES if c[0] == "README.md"]
    assert {entry for _, _, entry, _ in readme} >= {"train", "query", "evaluate", "export"}
    assert any("w2v.train" in line and "&&" in line for _, line, _, _ in readme)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_command_parses(case, tmp_path, monkeypatch, capsys):
    page, line, entry, args = case
    reason = next((why for text, why in SKIP.items() if text in line), None)
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    args = with_paths(args, tmp_path)
    if entry in ("train", "data"):
        check_hydra(entry, args, capsys)
    else:
        check_key_value(entry, args, capsys)


def test_a_broken_command_is_caught(tmp_path, monkeypatch, capsys):
    """The checks above refuse what the commands refuse: a mistyped key, a missing option,
    a wrong type, a bad key=value argument."""
    from w2v.errors import W2VError

    monkeypatch.chdir(tmp_path)
    for entry, args in (("train", ["trainer.epoch=1"]), ("train", ["model=cbwo"]),
                        ("train", ["-m", "model.dim=50,abc"]), ("data", ["data.min_cont=1"]),
                        ("export", ["vectors=v.pt"]), ("query", ["vector=v.pt", "king"]),
                        ("evaluate", ["vectors=v.pt", "eval.restrict_vocab=0"])):
        check = check_hydra if entry in ("train", "data") else check_key_value
        with pytest.raises(W2VError):
            check(entry, args, capsys)


def test_quick_start_command_composes_for_real(tmp_path):
    """The README's offline quick-start training command with `--cfg job`, as a process:
    Hydra composes the config and prints it, training nothing."""
    line = next(line for page, line, entry, _ in CASES
                if page == "README.md" and entry == "train" and "data.path=" in line
                and "&&" in line)
    _, args = w2v_commands(line)[-1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "w2v.train", *args, "--cfg", "job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data:" in done.stdout and "trainer:" in done.stdout
    assert not any(tmp_path.iterdir()), "--cfg job wrote files"


def test_scripts_named_in_code_blocks_exist():
    for page in PAGES:
        for line in code_lines(page.read_text()):
            for script in re.findall(r"(?:^|\s)(scripts/[\w./-]+)", line):
                assert (REPO / script).exists(), f"{page.name}: {script}"


# --- the README's size and the links --------------------------------------------------------


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:2] == ["## Quick start", "## A first hour"], headings


def without_code(text: str) -> str:
    """The page without fenced blocks and inline code (no links or headings there)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercased, punctuation other than - and
    _ removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        base = anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


LINKS = [(page, target) for page in PAGES
         for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text()))
         if not re.match(r"[a-z]+:", target)]


def test_pages_have_links():
    assert len(LINKS) > 20
    linked = {(page.parent / t.split("#")[0]).resolve() for page, t in LINKS if t[0] != "#"}
    assert all(p.resolve() in linked for p in PAGES[1:]), "a docs/ page nothing links to"


@pytest.mark.parametrize("page,target", LINKS,
                         ids=[f"{p.relative_to(REPO)}->{t}" for p, t in LINKS])
def test_link_resolves(page, target):
    path, _, frag = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.name}: {target}: no file {dest}"
    if frag and dest.suffix == ".md":
        assert frag in anchors(dest), f"{page.name}: {target}: no heading #{frag} in {dest.name}"
