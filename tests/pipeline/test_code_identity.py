"""The code identity a status record holds and ``--resume`` compares
(``pipeline.code_identity``): a checksum of the package's Python source."""

from __future__ import annotations

import shutil
from pathlib import Path

import mrirecon
from mrirecon.pipeline.code_identity import code_identity, package_sha256, source_sha256


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_source_checksum_follows_the_python_files_only(tmp_path):
    root = _tree(tmp_path / "pkg", {"__init__.py": "", "a.py": "x = 1\n", "sub/b.py": "y = 2\n"})
    first = source_sha256(root)
    assert len(first) == 64 and first == source_sha256(root)
    # what is not source: byte code, other files, a notebook's checkpoint folder
    _tree(root, {"__pycache__/a.cpython-311.pyc": "\0", "weights/card.yaml": "a: 1\n",
                 "README.md": "text", ".ipynb_checkpoints/a-checkpoint.py": "x = 9\n"})
    assert source_sha256(root) == first
    (root / "sub" / "b.py").write_text("y = 3\n")  # one byte edited
    assert source_sha256(root) != first
    (root / "sub" / "b.py").write_text("y = 2\n")
    assert source_sha256(root) == first
    (root / "sub" / "b.py").rename(root / "sub" / "c.py")  # the same bytes under another name
    assert source_sha256(root) != first
    (root / "sub" / "c.py").rename(root / "sub" / "b.py")
    _tree(root, {"sub/new.py": ""})  # an empty module added
    assert source_sha256(root) != first
    (root / "sub" / "new.py").unlink()
    assert source_sha256(root) == first
    # the same bytes split otherwise across the files
    moved = _tree(tmp_path / "moved", {"__init__.py": "", "a.py": "x = 1\ny = 2\n", "sub/b.py": ""})
    assert source_sha256(moved) != first


def test_the_same_code_elsewhere_has_the_same_identity_and_an_edit_changes_it(tmp_path):
    """An installed copy (site-packages) of this checkout's package is the same code."""
    here = Path(mrirecon.__file__).resolve().parent
    copy = tmp_path / "site-packages" / "mrirecon"
    shutil.copytree(here, copy, ignore=shutil.ignore_patterns("*.pt", "__pycache__"))
    same = source_sha256(copy)
    assert same == source_sha256(here)
    f = copy / "pipeline" / "volume.py"
    f.write_text(f.read_text() + "\n# a fix\n")
    assert source_sha256(copy) != same


def test_code_identity_is_computed_once_per_process():
    """Without registered reconstructions (tests/pipeline/test_resume_user_methods.py) the
    identity is the package's checksum, its files read once."""
    package_sha256.cache_clear()
    first = code_identity()
    assert set(first) == {"code_sha256", "git_commit"}
    assert first["code_sha256"] == source_sha256(Path(mrirecon.__file__).resolve().parent)
    assert code_identity() == first
    assert package_sha256.cache_info().misses == 1  # the files read once
