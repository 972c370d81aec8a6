"""What ``make demo`` installs is enough: every third-party module the package imports belongs to
a runtime dependency in ``pyproject.toml``.

The lean demo install (runtime dependencies only, no test extra) once failed on a fresh machine
because ``mrirecon.recon`` imported scikit-image, then only in the test extra. Imports guarded by
``try: ... except ImportError`` (optional backends such as bm3d or cufinufft) and imports after an
explicit ``ImportError``/``RuntimeError`` message are allowed, so this test reads the source: an
import is optional only when a ``try`` with an ``ImportError`` (or ``Exception``) handler wraps it.
"""

from __future__ import annotations

import ast
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli there
    import tomli as tomllib

from mrirecon.core.names import packages_distributions
from tests.helpers import ROOT

PACKAGE = ROOT / "mrirecon"


def _runtime_distributions() -> set[str]:
    """Runtime dependencies, plus optional extras other than ``test`` (``bm3d``): the code
    checks for those itself and raises a clear ImportError naming the extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, reqs in project.get("optional-dependencies", {}).items():
        if extra != "test":
            requirements += reqs
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                caught = handler.type
                names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError",
                                                            "Exception") for n in names):
                    return True
    return False


def _imports() -> dict[str, list[str]]:
    """``{top-level module: [where, ...]}`` of unguarded absolute imports in the package."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            if _guarded(node, parents):
                continue
            for mod in mods:
                top = mod.split(".")[0]
                found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_import_is_a_runtime_dependency():
    runtime = _runtime_distributions()
    dists = packages_distributions()
    missing = {}
    for top, where in _imports().items():
        if top == "mrirecon" or top in sys.stdlib_module_names or top == "__future__":
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(top, [])}
        if not owners:
            missing[top] = where[:3]  # not installed at all: certainly not declared
        elif not owners & runtime and not any(_provided_by(o, runtime) for o in owners):
            missing[top] = where[:3]
    assert not missing, f"imported but not runtime dependencies (pyproject.toml): {missing}"


def _provided_by(distribution: str, runtime: set[str]) -> bool:
    """Modules that a declared dependency brings for sure (its own requirements)."""
    from importlib.metadata import requires

    for name in runtime:
        try:
            reqs = requires(name) or []
        except Exception:  # noqa: BLE001 - a declared dependency that is not installed here
            continue
        for r in reqs:
            if ";" in r and "extra" in r.split(";", 1)[1]:
                continue  # only in an extra of that dependency
            if re.split(r"[<>=!~\[; (]", r, maxsplit=1)[0].lower().replace("_", "-") == distribution:
                return True
    return False


def test_wheel_ships_the_named_pipelines_and_weights(tmp_path):
    """``mrirecon run mri_cs`` works from a wheel install, not only from a checkout: the
    pipeline YAML files and the weights are package data, found through importlib.resources."""
    import subprocess
    import zipfile

    import shutil

    # built from a copy: setuptools writes build/ and *.egg-info beside the sources, which must
    # not touch the checkout (read-only in some CI, shared by concurrent runs)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "mrirecon",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheel_dir), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheel_dir.glob("mrirecon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"mrirecon/pipelines/{p.name}" for p in (PACKAGE / "pipelines").glob("*.yaml")}
    assert shipped and shipped <= names
    assert {f"mrirecon/weights/{p.name}" for p in (PACKAGE / "weights").glob("*.pt")} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from mrirecon.pipeline.definitions import load_pipeline, pipeline_path\n"
            "import mrirecon\n"
            "print(mrirecon.__file__)\n"
            "print(pipeline_path('mri_cs'))\n"
            "cfg, _ = load_pipeline('mri_cs')\n"
            "print(cfg.reconstruct.method)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    module, path, method = run.stdout.split()
    assert module.startswith(str(site)) and path == str(site / "mrirecon/pipelines/mri_cs.yaml")
    assert method == "l1_wavelet"
