"""``provenance.json``'s ``git_commit``: the commit of the mrirecon code that ran, never that of a
repository the installed package happens to lie in (a user's analysis project with its venv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import mrirecon
from tests.helpers import fresh_python
from mrirecon.pipeline import run_files

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    # the machine's git configuration left out: a global commit.gpgsign, hooks path or template
    # would make the commit fail or differ from one machine to the next
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(root), "-c", "user.email=u@example.org", "-c",
                           "user.name=u", "-c", "commit.gpgsign=false", *args], check=True,
                          capture_output=True, text=True, env=env).stdout.strip()


def _repo(root: Path, project: str) -> str:
    """A git repository at ``root`` whose pyproject names ``project``; its HEAD commit."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{project}"\nversion = "0.1.0"\n')
    _git(root, "init", "-q")
    _git(root, "add", "pyproject.toml")
    _git(root, "commit", "-q", "-m", "first")
    return _git(root, "rev-parse", "HEAD")


def test_an_installed_copy_inside_a_users_repository_does_not_report_its_commit(tmp_path):
    """The audit's repro: the package in ``.venv/lib/python3.11/site-packages`` of a user's
    repository. git asked there printed the user's HEAD as mrirecon's commit."""
    user_head = _repo(tmp_path / "analysis", "my-analysis")
    site = tmp_path / "analysis" / ".venv" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(Path(mrirecon.__file__).parent, site / "mrirecon",
                    ignore=shutil.ignore_patterns("*.pt", "__pycache__", "fixtures"))
    out = fresh_python(f"import sys; sys.path.insert(0, {str(site)!r})\n"
                       "import mrirecon\n"
                       "from mrirecon.pipeline.run_files import _git_commit\n"
                       "print(mrirecon.__file__); print(_git_commit())").splitlines()
    assert out[0] == str(site / "mrirecon" / "__init__.py")
    assert user_head not in out[1]
    # the commit the installed metadata records (none for this suite's editable install)
    import importlib.metadata as md

    try:
        recorded = json.loads(md.distribution("mrirecon").read_text("direct_url.json") or "{}")
    except md.PackageNotFoundError:
        recorded = {}
    assert out[1] == recorded.get("vcs_info", {}).get("commit_id", "unknown")


def test_a_checkout_reports_its_head_and_whether_it_was_edited(tmp_path):
    root = tmp_path / "mrirecon-src"
    head = _repo(root, "mrirecon")
    (root / "notes.txt").write_text("untracked files change no code that ran\n")
    index = (root / ".git" / "index").stat().st_mtime_ns
    assert run_files._source_commit(root) == head
    (root / "pyproject.toml").write_text('[project]\nname = "mrirecon"\nversion = "0.2.0"\n')
    assert run_files._source_commit(root) == head + "-dirty"
    # the checkout is only read (git describe --dirty would rewrite its index)
    assert (root / ".git" / "index").stat().st_mtime_ns == index


def test_a_repository_of_another_project_is_not_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(run_files, "_recorded_vcs_commit", lambda: None)
    root = tmp_path / "other"
    _repo(root, "mrirecon-plugins")
    assert run_files._source_commit(root) == "unknown"
    assert run_files._source_commit(tmp_path / "no-repo") == "unknown"


class _Dist:
    def __init__(self, text: str | None) -> None:
        self.text = text

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self.text


@pytest.mark.parametrize("direct_url, expected", [
    ({"url": "https://example.org/mrirecon.git",
      "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef0123456789abcdef01234567"}},
     "0123456789abcdef0123456789abcdef01234567"),
    ({"url": "file:///src/mrirecon", "dir_info": {"editable": False}}, "unknown"),
    (None, "unknown"),  # installed from an index: no direct_url.json
    ("{not json", "unknown"),
])
def test_an_install_reports_the_commit_pip_recorded(tmp_path, monkeypatch, direct_url, expected):
    import importlib.metadata as md

    text = direct_url if direct_url is None or isinstance(direct_url, str) else json.dumps(
        direct_url)
    monkeypatch.setattr(md, "distribution", lambda name: _Dist(text))
    assert run_files._source_commit(tmp_path / "site-packages") == expected
