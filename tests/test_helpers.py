"""The shared test helpers themselves: a scan helper that misses an import makes every source-scan
test (layering, argv, held-out separation) pass vacuously."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import imported_modules


def _package(root: Path, source: str) -> Path:
    """``root/mrirecon/training/checkpoint.py`` holding ``source``, in real packages."""
    for folder in (root / "mrirecon", root / "mrirecon" / "training"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    path = root / "mrirecon" / "training" / "checkpoint.py"
    path.write_text(source)
    return path


def test_imported_modules_resolves_from_imports_and_relative_imports(tmp_path):
    path = _package(tmp_path, "\n".join([
        "import os.path",
        "from mrirecon import heldout",
        "from mrirecon.io import heldout_sources as h",
        "from ..heldout import protocol",
        "from . import weights",
        "def f():",
        "    from .loop import train_step as t",  # inside a function too
    ]))
    assert imported_modules(path) == {
        "os.path",
        "mrirecon", "mrirecon.heldout",
        "mrirecon.io", "mrirecon.io.heldout_sources",
        "mrirecon.heldout", "mrirecon.heldout.protocol",
        "mrirecon.training", "mrirecon.training.weights",
        "mrirecon.training.loop", "mrirecon.training.loop.train_step",
    }


def test_imported_modules_resolves_a_package_init_against_itself(tmp_path):
    _package(tmp_path, "")
    init = tmp_path / "mrirecon" / "training" / "__init__.py"
    init.write_text("from .checkpoint import save\nfrom .. import io\n")
    assert imported_modules(init) == {"mrirecon.training.checkpoint", "mrirecon.training.checkpoint.save",
                                      "mrirecon", "mrirecon.io"}


def test_imported_modules_refuses_a_relative_import_above_the_top_package(tmp_path):
    path = _package(tmp_path, "from ...outside import x\n")
    with pytest.raises(ValueError, match="beyond the top-level package"):
        imported_modules(path)
