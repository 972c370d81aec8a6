"""The source distribution carries a working test tree (MANIFEST.in).

Without MANIFEST.in setuptools put only the top-level ``tests/test_*.py`` into the sdist: no
``tests/helpers.py``, ``conftest.py``, fixtures or test subfolders (8 files that failed to
collect: ModuleNotFoundError tests.helpers), and no docs, notebooks, Makefile or
environment.yml, which the README and the tests name. Packagers (conda-forge) test from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

# what .gitignore leaves out of a checkout (and a build of the copy must not meet)
_NOT_SOURCE = (".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist",
               ".pytest_cache", ".ipynb_checkpoints", "runs", "demo_out", "*.partial.pt")
TREES = ("mrirecon", "tests", "docs", "notebooks", "benchmarks")
FILES = ("pyproject.toml", "README.md", "LICENSE", "Makefile", "environment.yml", "MANIFEST.in")


def _files(root: Path, top: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / top).rglob("*") if p.is_file()}


def test_the_sdist_holds_the_test_tree_docs_and_build_files(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    # pyproject's build-system needs setuptools >= 77 (license expressions); pip builds in an
    # isolated environment that has it, this test with the venv's own (a Python 3.10 / 3.11 venv
    # starts with 65 or so)
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77, the build-system requirement")
    src = tmp_path / "src"  # a copy: the build writes mrirecon.egg-info into the source tree
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
         "print(b.build_sdist(sys.argv[1]))", str(tmp_path / "dist")],
        cwd=src, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    sdist = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
    names = {n for n, m in members.items() if m.isfile()}
    expected = set(FILES)
    for top in TREES:
        expected |= _files(src, top)
    assert {"tests/helpers.py", "tests/conftest.py", "tests/robustness/conftest.py",
            "tests/fixtures/varnet_tiny_fastmri.pt", "docs/architecture.md"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"{len(missing)} files missing from the sdist, e.g. {missing[:10]}"
    # ./pipelines links to the package's YAML files: the sdist holds them as files there too
    shipped = {p.name for p in (src / "mrirecon" / "pipelines").glob("*.yaml")}
    assert shipped and {f"pipelines/{n}" for n in shipped} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
