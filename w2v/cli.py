"""Command-line plumbing for every entry point: --help, key=value arguments, Hydra overrides
checked before Hydra starts, and user errors printed as one line.

    python -m w2v.train --help

The entry points (`train` and `data` under Hydra; `query`, `evaluate`, `export` with plain
key=value arguments) validate the same way: an unknown key is named with the nearest known one
("did you mean trainer.epochs?"), a wrong type or an out-of-range value is one `error:` line
and exit 2, never a traceback. `-h`/`--help` prints the entry point's own usage (for the Hydra
ones: the config groups without the schema nodes, and every key); Hydra's own page is
`--hydra-help`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from w2v.config import Config, config_dir, register_configs
from w2v.errors import INTERRUPTED, INTERRUPTED_CODE, W2VError, one_line

# The Hydra config directory (the defaults list and the groups): the one place it is named.
# The YAML groups: inside the package in a wheel (w2v/conf), the repository's conf/ in a
# checkout (config.config_dir); the one place every entry point takes them from.
CONF_DIR = config_dir()
HELP_FLAGS = ("-h", "--help")
# --help pages: lines of at most HELP_WIDTH characters; descriptions start after the
# key=default column, at most HELP_KEY_WIDTH wide (a longer one has its own line).
HELP_WIDTH = 100
HELP_KEY_WIDTH = 34

F = TypeVar("F", bound=Callable[..., object])
T = TypeVar("T")


def report_errors(fn: F) -> F:
    """Wrap an entry point: a W2VError becomes `error: <message>` on stderr and exit 2;
    Ctrl-C before training has its own handling (a corpus build, a compile) becomes one line
    and exit 130 (128 + SIGINT), as shells report it. What was half-written is removed on the
    way out (atomic writes, the corpus build's temp folder, an empty run dir)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except W2VError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            sys.exit(INTERRUPTED_CODE)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Usage:
    """An entry point's --help page: what it does and how to call it."""

    module: str  # "w2v.export": run as `python -m w2v.export`, or the w2v-export script
    synopsis: str  # the arguments, after the program's name
    about: str
    examples: tuple[str, ...]  # command lines after the program's name

    @property
    def prog(self) -> str:
        script = "w2v-" + self.module.rsplit(".", 1)[-1]
        return script if Path(sys.argv[0]).name == script else f"python -m {self.module}"

    def render(self, sections: Iterable[tuple[str, list[str]]]) -> str:
        lines = [f"usage: {self.prog} {self.synopsis}", "", textwrap.dedent(self.about).strip(),
                 ""]
        for title, body in sections:
            lines += [f"{title}:", *(f"  {b}".rstrip() for b in body), ""]
        lines += ["examples:", *(f"  {self.prog} {e}" for e in self.examples)]
        return "\n".join(lines)


def wants_help(argv: Iterable[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


# --- key=value entry points (query, evaluate, export) ------------------------------------------


def parse_cli(schema: type[T], argv: list[str], usage: Usage) -> T:
    """`key=value` arguments -> an instance of the dataclass `schema`, keys and types checked.

    -h/--help prints the usage with every key and its default, and exits 0."""
    if wants_help(argv):
        print(usage.render([("keys (key=default)", _key_lines(schema))]))
        sys.exit(0)
    hint = f" ({usage.prog} --help lists every key)"
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise W2VError(f"expected key=value arguments, got {bad[0]!r}{hint}")
    given = [a.split("=", 1)[0] for a in argv]
    check_keys(schema, given, hint)
    required = [k for k, v in _defaults(schema).items() if v == MISSING and k not in given]
    if required:
        raise W2VError(f"{required[0]}=... is required (usage: {usage.prog} {usage.synopsis})")
    try:
        conf = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as err:
        raise W2VError(_bad(err, hint)) from None
    return _to_object(conf, hint)


def _bad(err: OmegaConfBaseException, hint: str) -> str:
    key = getattr(err, "full_key", None)  # OmegaConf names the key in its details, not line 1
    return f"bad argument{f' {key}' if key else ''}: {one_line(err)}{hint}"


def _to_object(conf: DictConfig, hint: str) -> Any:
    """The dataclass instance, with every check of the schemas' __post_init__ run."""
    try:
        return OmegaConf.to_object(conf)
    except W2VError as err:
        # OmegaConf re-raises our error with its node details appended: keep our line.
        raise W2VError(one_line(err)) from None
    except OmegaConfBaseException as err:  # e.g. a mandatory value left missing
        raise W2VError(_bad(err, hint)) from None


def check_keys(schema: type, keys: Iterable[str], hint: str = "") -> None:
    """Refuse a key the dataclass `schema` does not have, naming the nearest one it has."""
    for key in keys:
        missing = _unknown_part(schema, key)
        if missing is None:
            continue
        prefix, part, owner = missing
        near = _nearest(schema, key, prefix, part, owner)
        fix = f": did you mean {near}?" if near else ""
        raise W2VError(f"unknown key {key} (Key '{part}' not in '{owner.__name__}'){fix}{hint}")


def _unknown_part(schema: type, key: str) -> tuple[str, str, type] | None:
    """(the known dotted prefix, the first part of `key` the schema lacks, the dataclass
    lacking it), or None when the key is known."""
    node: type | None = schema
    prefix = ""
    for part in key.split("."):
        if node is None:
            return None  # below a value: OmegaConf names what is wrong with it
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return prefix, part, node
        value = _default(fields[part])
        node = type(value) if dataclasses.is_dataclass(value) else None
        prefix += part + "."
    return None


def _nearest(schema: type, key: str, prefix: str, part: str, owner: type) -> str | None:
    """The known key nearest to `key`: the unknown part replaced by a field of its own group
    (trainer.epoch -> trainer.epochs, traner.lr -> trainer.lr), else a key whose last part is
    close to the key's (+lrr -> trainer.lr)."""
    known = _defaults(schema)
    rest = key[len(prefix) + len(part):]
    siblings = [f.name for f in dataclasses.fields(owner)]
    for name in difflib.get_close_matches(part, siblings, n=3, cutoff=0.6):
        if prefix + name + rest in known:
            return prefix + name + rest
    leaves: dict[str, str] = {}
    for k in known:
        leaves.setdefault(k.rsplit(".", 1)[-1], k)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaves), n=1, cutoff=0.75)
    return leaves[close[0]] if close else None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _leaf_fields(schema: type, prefix: str = "") -> Iterable[tuple[str, type, Any]]:
    """(dotted key, the dataclass holding it, its default) for every leaf of `schema`."""
    for f in dataclasses.fields(schema):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(type(value), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, schema, value


def _defaults(schema: type) -> dict[str, Any]:
    """Every leaf key of the dataclass `schema`, dotted, with its default."""
    return {key: value for key, _, value in _leaf_fields(schema)}


def _key_lines(schema: type) -> list[str]:
    """One line per key of a key=value entry point: key, default, what it means."""
    defaults = _defaults(schema)
    required = sorted(defaults, key=lambda k: defaults[k] != MISSING)  # required keys first
    return _described(schema, {k: defaults[k] for k in required})


def _described(schema: type, values: dict[str, Any], per_key: bool = False) -> list:
    """`key=value  description` lines, descriptions aligned (a long key=value gets its
    description on the next line) and wrapped to HELP_WIDTH; per_key: a list of lines per
    key instead of one list."""
    docs = field_docs(schema)
    pairs = [(f"{k}=...", f"(required) {docs.get(k, '')}") if v == MISSING else
             (f"{k}={_shown(v)}", docs.get(k, "")) for k, v in values.items()]
    width = min(max(len(p) for p, _ in pairs), HELP_KEY_WIDTH)
    out = []
    for pair, doc in pairs:
        wrapped = textwrap.wrap(doc, HELP_WIDTH - width - 4, break_on_hyphens=False) or [""]
        lines = [pair] if len(pair) > width else []
        lines.append(f"{'' if lines else pair:<{width}}  {wrapped[0]}".rstrip())
        lines += [" " * (width + 2) + more for more in wrapped[1:]]
        out.append(lines)
    return out if per_key else [line for lines in out for line in lines]


def field_docs(schema: type, prefix: str = "") -> dict[str, str]:
    """Each leaf key of the dataclass `schema`, dotted, with the summary of its attribute
    docstring (the string literal under the field, first paragraph, as one line): the one
    place a setting is described, read by every --help page."""
    docs = {}
    for key, holder, _ in _leaf_fields(schema, prefix):
        docs[key] = _attribute_docs(holder).get(key.rsplit(".", 1)[-1], "")
    return docs


@functools.cache
def _attribute_docs(schema: type) -> dict[str, str]:
    """{field: summary} from the class bodies of `schema` and its dataclass bases (a subclass
    inherits its bases' descriptions); empty where the source cannot be read."""
    docs: dict[str, str] = {}
    for klass in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                summary = inspect.cleandoc(after.value.value).split("\n\n", 1)[0]
                docs[stmt.target.id] = " ".join(summary.split())
    return docs


def _shown(value: Any) -> str:
    if value == MISSING:
        return "(required)"
    env = re.fullmatch(r"\$\{oc\.env:(\w+),(.*)\}", str(value))
    if env:  # ${oc.env:W2V_EVAL_DIR,null}
        return f"${env[1]}, else {env[2]}"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


# --- Hydra entry points (train, data) ----------------------------------------------------------


def run_hydra(app: Callable[[], Any], usage: Usage,
              hydra_args: Callable[[list[str]], list[str]] | None = None) -> None:
    """A Hydra entry point's main: its own --help, the schemas registered, the overrides
    checked (one error line), then Hydra runs `app`, the module's @hydra.main function, on
    the command line (as `hydra_args` rewrites it, when given: train's resume)."""
    argv = sys.argv[1:]
    if wants_help(argv):
        print(hydra_help(usage))
        return
    register_configs()
    from w2v.sweep import register_resolver

    register_resolver()  # hydra.sweep.subdir's job dir names
    # The overrides and the run dir as given are checked first: a mistyped key is that one
    # line, whatever the run dir holds. hydra_args then claims the run dir (train), and a
    # resume may name the run dir its checkpoint belongs to.
    precheck(argv, usage.prog)
    if hydra_args is not None:
        argv = hydra_args(argv)
    sys.argv[1:] = argv
    app()


def precheck(overrides: list[str], prog: str = "python -m w2v.train") -> None:
    """Check a single run's overrides and compose them before Hydra starts, so an unknown key
    or option, a wrong type or an out-of-range value is one `error:` line and exit 2, not
    Hydra's report; then that Hydra can make the run dir (check_run_dir). Multirun sweeps and
    Hydra's own flags are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    if any(a.startswith("-") for a in overrides):
        return
    hint = f" ({prog} --cfg job lists every key)"
    mine = [a for a in overrides if not a.lstrip("+~").startswith("hydra")]
    refuse_unparsable(overrides)
    try:
        check_overrides(mine, hint)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            # One composition gives both the run's config and Hydra's (hydra.run.dir).
            composed = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(composed):
            hydra = composed.pop("hydra")
        to_config(composed)
    except (HydraException, OmegaConfBaseException) as err:
        raise W2VError(one_line(err) + hint) from None
    check_run_dir(hydra)


def check_run_dir(hydra: DictConfig) -> None:
    """Hydra makes the run dir (hydra.run.dir), writes .hydra/ and train.log into it before
    any w2v code runs, and reports a failure there as a traceback (three chained ones for a
    read-only working directory): so the folder must be one that can be made and written.
    An existing folder nothing is written into (w2v.data's `.`) may be read-only."""
    try:
        run_dir = Path(str(hydra.run.dir))
        writes = hydra.output_subdir is not None or "file" in hydra.job_logging.root.handlers
    except Exception:  # an interpolation only Hydra's run can resolve: Hydra checks it then
        return
    check_folder(run_dir, writes)


def check_folder(run_dir: Path, writes: bool = True) -> None:
    """That `run_dir` is a folder, or can be made as one, and can be written when `writes`."""
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise W2VError(f"hydra.run.dir={run_dir}: {existing} is a file, not a folder; set "
                       "hydra.run.dir to a folder")
    if (existing != run_dir or writes) and not os.access(existing, os.W_OK | os.X_OK):
        made = "write into" if existing == run_dir else f"make the run folder {run_dir} in"
        raise W2VError(f"cannot {made} {existing.absolute()}: it is not writable (a read-only "
                       "folder or filesystem); set hydra.run.dir to a writable folder, or run "
                       "from one")


def refuse_unparsable(overrides: list[str]) -> None:
    """An override Hydra's grammar cannot read (a path with non-ASCII letters, `[`, `{`,
    spaces...: Hydra syntax unless quoted) is one line saying how to quote it, not the
    grammar's LexerNoViableAltException or "mismatched input '['"."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            parser.parse_overrides([text])
        except OverrideParseException:
            key, _, value = text.partition("=")
            fix = value.replace("\\", "\\\\").replace('"', '\\"')
            raise W2VError(
                f"cannot read the override {text}: Hydra reads characters such as [ ] {{ }} "
                f"( ) , spaces and non-ASCII letters in a value as syntax; quote the value, "
                f"""e.g. '{key}="{fix}"' in the shell""") from None


def check_overrides(overrides: list[str], hint: str = "") -> None:
    """Group options must exist in conf/ (schema nodes are not options), keys in Config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    options = config_groups()
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if o.is_delete() or o.package is not None:
            continue
        if key in options:
            values = getattr(o.value(), "list", []) if o.is_sweep_override() else [o.value()]
            for value in values:
                if isinstance(value, str) and value not in options[key][0]:
                    raise W2VError(
                        f"{key}={value} is not an option: no '{key}/{value}' in {CONF_DIR}; "
                        f"the {key} options are {', '.join(options[key][0])}"
                    )
            continue
        check_keys(Config, [key], hint)


def config_groups() -> dict[str, tuple[list[str], str | None]]:
    """Each config group in conf/: its options (the YAML files; the schemas registered in
    the ConfigStore are not options) and its default from the defaults list (or None)."""
    defaults: dict[str, str] = {}
    for entry in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))["defaults"]:
        if isinstance(entry, dict):
            defaults.update(entry)
    return {d.name: (sorted(p.stem for p in d.glob("*.yaml")), defaults.get(d.name))
            for d in sorted(CONF_DIR.iterdir()) if d.is_dir()}


def to_config(cfg: DictConfig) -> Config:
    """A composed config -> Config, every range checked by the schemas' __post_init__."""
    try:
        # Hydra lets `+trainer.lrr=0.1` add a key the schema lacks (and to_object would keep it
        # silently): merging into the schema refuses it, as it refuses `trainer.lrr=0.1`.
        conf = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg))
    except OmegaConfBaseException as err:
        raise W2VError(f"bad config: {one_line(err)}") from None
    return _to_object(conf, "")


def hydra_help(usage: Usage) -> str:
    """The --help page of a Hydra entry point: groups and options, keys, examples."""
    groups = []
    # Groups in the defaults list first; the others (+experiment=...) are added to it.
    for name, (options, default) in sorted(config_groups().items(),
                                           key=lambda item: item[1][1] is None):
        shown = [f"{o} (default)" if o == default else o for o in options]
        label = ("" if default else "+") + name + ":"
        groups.append(f"{label:<12} {', '.join(shown)}")
    keys = []
    defaults = leaf_values(OmegaConf.to_container(_default_config(), resolve=False))
    lines = dict(zip(defaults, _described(Config, defaults, per_key=True)))
    for f in dataclasses.fields(Config):
        keys += ["", f"{f.name}.*: {_summary(type(_default(f)))}"]
        keys += [line for k, group in lines.items() if k.startswith(f.name + ".")
                 for line in group]
    hydra = [f"{usage.prog} --cfg job          print the composed config, every key and value",
             f"{usage.prog} -m key=a,b ...     a multirun sweep",
             f"{usage.prog} --hydra-help       Hydra's own flags"]
    return usage.render([("config groups (group=option)", groups),
                         ("keys (key=default, as a bare run has them; groups change some)",
                          keys[1:]),
                         ("Hydra", hydra)])


def _default_config() -> DictConfig:
    """The config a bare run composes (conf/config.yaml's default groups), unresolved."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config")


def leaf_values(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a config tree, dotted."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaf_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _summary(schema: type) -> str:
    doc = inspect.getdoc(schema) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())
