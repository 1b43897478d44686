"""The installed package: declared dependencies, the wheel's contents, and every console script
working from any directory in a fresh environment without the dev extra."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import write_planted_suites

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Declared runtime dependencies that no module of w2v/ imports by name, and why each is needed.
IMPLICIT = {"tensorboard": "torch.utils.tensorboard's SummaryWriter needs it"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9._-]+", spec).group(0))


def package_imports() -> dict[str, list[str]]:
    """Top-level modules that w2v/ imports (anywhere: lazily in functions too), outside the
    standard library and w2v itself -> the files importing them."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "w2v").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "w2v":
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_runtime_dependencies_are_what_the_package_imports():
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    owners = md.packages_distributions()
    imported = {}
    for module, files in package_imports().items():
        assert module in owners, f"{module} (imported by {files}) belongs to no installed package"
        imported[_norm(owners[module][0])] = files
    missing = {d: f for d, f in imported.items() if d not in declared}
    assert not missing, f"imported but not declared in [project.dependencies]: {missing}"
    unused = declared - set(imported) - set(IMPLICIT)
    assert not unused, f"declared but imported by nothing in w2v/: {unused}"
    dev = {_requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert not dev & set(imported), "the package imports a dev-only dependency"


def test_the_wheel_lists_every_package_and_config_file():
    tool = PYPROJECT["tool"]["setuptools"]
    packages = set(tool["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "w2v").rglob("__init__.py")}
    assert on_disk <= packages, f"packages missing from pyproject: {on_disk - packages}"
    assert tool["package-dir"]["w2v.conf"] == "conf"
    globs = tool["package-data"]["w2v.conf"]
    yamls = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    covered = {y for y in yamls if any(Path(y).match(g) for g in globs)}
    assert covered == yamls


# ---- a real wheel in a fresh environment ---------------------------------------------------


def _runtime_closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` pull in, transitively, without any extra."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(md.PackageNotFoundError):  # a platform package not here
            todo += md.distribution(name).requires or []
    return seen


# Written into the venv and run at every start-up (a .pth line): modules of installed
# distributions that w2v does not depend on (the dev extra: gensim, scipy, pytest...) are
# absent, as in an environment without them: `import` raises ModuleNotFoundError and
# importlib.util.find_spec returns None.
GUARD = "import sys\nfor name in {blocked!r}:\n    sys.modules.setdefault(name, None)\n"


def _blocked_modules(closure: set[str]) -> set[str]:
    """Top-level modules whose distributions are all outside the closure; modules that .pth
    files import at start-up (setuptools' hooks, editable finders) stay importable."""
    startup = set()
    for pth in Path(sysconfig.get_paths()["purelib"]).glob("*.pth"):
        for line in pth.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("import "):
                startup |= {m.strip().split(".")[0] for m in line[7:].split(";")[0].split(",")}
    return {module for module, dists in md.packages_distributions().items()
            if not any(_norm(d) in closure for d in dists)
            and module not in startup and module != "w2v"}


def _site_dirs() -> list[str]:
    """The site-packages folders this interpreter imports from (a virtualenv's, and the base
    interpreter's where that virtualenv shares them), in its order."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")
            and Path(p).is_dir()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (no extras, no dev tools importable) into
    a fresh venv that shares the system's site-packages for torch & co."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("w2v", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*run, "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(root / "dist"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((root / "dist").glob("w2v-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([*run, "--python", str(python), "install", "--no-deps",
                           "--ignore-installed", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    requires = [line.split(":", 1)[1].strip() for line in meta.decode().splitlines()
                if line.startswith("Requires-Dist:")]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # torch & co. come from the environment running the tests, whichever it is. (`venv
    # --system-site-packages` shares the *base* interpreter's site-packages: from inside a
    # virtualenv that is not where they are installed.) Plain paths in a .pth file are
    # appended after the venv's own site-packages, so the wheel's w2v comes first, and the
    # .pth files in them (this checkout's editable install among them) are not run.
    (site / "_w2v_test_outer.pth").write_text("\n".join(_site_dirs()) + "\n")
    blocked = _blocked_modules(_runtime_closure(requires))
    (site / "_w2v_test_guard.py").write_text(GUARD.format(blocked=sorted(blocked)))
    (site / "_w2v_test_guard.pth").write_text("import _w2v_test_guard\n")
    home = root / "elsewhere"  # not the checkout: nothing of it on sys.path or as cwd
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "W2V_EVAL_DIR")}
    env["W2V_CACHE"] = str(root / "cache")
    env["HF_DATASETS_CACHE"] = str(root / "hf")

    def cli(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
        exe = argv[0] if argv[0].startswith("-") else str(venv / "bin" / argv[0])
        cmd = [str(python), *argv] if argv[0].startswith("-") else [exe, *argv[1:]]
        return subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True,
                              timeout=timeout)

    return cli, home, root, wheel, blocked


@pytest.mark.slow
def test_the_wheel_ships_the_configs_inside_the_package(installed):
    _, _, _, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "w2v/conf/config.yaml" in names and "w2v/conf/model/cbow.yaml" in names
    assert "w2v/engines/fused.py" in names
    assert not [n for n in names if n.startswith("conf/")]  # no top-level `conf` package


@pytest.mark.slow
def test_installed_without_extras_every_entry_point_works_from_anywhere(installed, planted):
    cli, home, root, _, blocked = installed
    assert {"gensim", "scipy", "pytest"} <= blocked  # the dev extra really is out of reach
    probe = cli("-c", "import w2v, sys; print(w2v.__file__)\n"
                      "try:\n    import scipy\nexcept ModuleNotFoundError:\n    print('no scipy')")
    assert probe.returncode == 0, probe.stderr
    assert "site-packages" in probe.stdout and str(ROOT) not in probe.stdout
    assert "no scipy" in probe.stdout
    # The runtime dependencies are the test environment's own (a virtualenv's, when the tests
    # run in one), not another interpreter's that may lack them or hold other versions.
    import hydra

    probe = cli("-c", "import hydra; print(hydra.__file__)")
    assert probe.stdout.strip() == hydra.__file__, probe.stderr

    write_planted_suites(root / "cache" / "eval", planted)  # the default eval.dir
    common = ["data=local", f"data.path={planted.path}", "data.min_count=1", "model.dim=16",
              "trainer.epochs=1", "trainer.progress=false", "eval.projector_words=0"]
    done = cli("w2v-train", *common, "hydra.run.dir=run1")  # fused engine, numba compiles
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((home / "run1" / "metrics.json").read_text())
    assert "eval/analogy/questions-words/accuracy" in metrics  # default eval.dir found
    assert "done:" in done.stdout and (home / "run1" / "train.log").stat().st_size > 0

    done = cli("-m", "w2v.train", *common, "trainer.engine=autograd", "hydra.run.dir=run2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (home / "run2" / "vectors.pt").is_file()

    done = cli("w2v-evaluate", "vectors=run1/vectors.pt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "analogy/questions-words/accuracy" in done.stdout

    ckpt = sorted((home / "run1" / "checkpoints").glob("step-*.pt"))[-1]
    done = cli("w2v-export", f"checkpoint={ckpt}", "out=exported", "binary=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in (home / "exported").iterdir()} >= {"vectors.pt", "vectors.txt",
                                                                 "vectors.bin"}
    done = cli("w2v-query", "vectors=run1/vectors.pt", "topn=3", planted.word(0, 0))
    assert done.returncode == 0 and f"nearest to {planted.word(0, 0)}" in done.stdout

    done = cli("w2v-data", "data=local", f"data.path={planted.path}", "data.min_count=1",
               "hydra.run.dir=data-run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "types:" in done.stdout
