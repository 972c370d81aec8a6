"""Which mrirecon code made an input's outputs: the identity ``--resume`` compares.

``--resume`` skips an input only when the code that runs now is the code that made its outputs
(:func:`run_state.previous_run`); each status record holds :func:`code_identity`. Without it an
upgrade that fixes an image without changing the config schema kept the old image (e18c59a's
receiver DC-offset fix: -9.26 dB kept, 20.26 dB when run again) and ``provenance.json`` named the
new commit for an output the old code made.

What counts is the package's Python source, ``mrirecon/**/*.py``: the code that turns an input
into outputs. The rest that shapes a result is compared already, input by input: a pipeline's
YAML through the effective config it resolves to (``config_sha256``), a model's ``.pt`` and its
card through :func:`run_state.weights_sha256`. Counting every shipped YAML and card as well would
only reprocess every folder when an unrelated pipeline's YAML or card is edited. The git commit
is recorded beside it for information, not compared: a commit that changes only documentation or
tests is the same code, and a ``<commit>-dirty`` checkout is not one fixed code.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

log = logging.getLogger("mrirecon.pipeline")


def source_sha256(root: Path) -> str:
    """SHA-256 over the ``.py`` files under ``root`` (a package folder), in sorted order of their
    paths relative to it (``/``-separated, so the same tree hashes alike on every system): each
    file's path, its size and its bytes. A file renamed, added, removed or edited changes it;
    ``__pycache__``, other file types and hidden folders (``.ipynb_checkpoints``) do not. A file
    that cannot be read enters as its error, so the result is still defined (and differs)."""
    h = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
                   if not any(s.startswith(".") for s in p.relative_to(root).parts[:-1])
                   and p.is_file())
    for rel, p in files:
        try:
            data = p.read_bytes()
        except OSError as e:
            data = f"unreadable: {e.strerror or e}".encode()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """:func:`source_sha256` of the mrirecon package that runs, computed once per process
    (about 240 files, 2.6 MB: 10-25 ms)."""
    import mrirecon

    return source_sha256(Path(mrirecon.__file__).resolve().parent)


def code_identity() -> dict[str, str]:
    """The fields a status record holds about the code that made its outputs: ``code_sha256``
    (compared by ``--resume``) and ``git_commit`` (for information, as in ``provenance.json``)."""
    from mrirecon.pipeline.run_files import _git_commit

    return {"code_sha256": code_sha256(), "git_commit": _git_commit()}


def other_code(prev: dict) -> str | None:
    """What made the outputs of status record ``prev`` when it was other mrirecon code than this
    process runs (for the log line: its commit and source checksum, and this code's), or
    ``None`` when the code is the same."""
    then = prev.get("code_sha256")
    if then == code_sha256():
        return None
    now = f"{_commit_text(code_identity()['git_commit'])}, source sha256 {code_sha256()[:12]}"
    if then is None:
        return f"an earlier mrirecon version, which recorded no code identity; this is {now}"
    return (f"other mrirecon code ({_commit_text(prev.get('git_commit'))}, source sha256 "
            f"{then[:12]}); this is {now}")


def _commit_text(commit) -> str:
    known = isinstance(commit, str) and commit and commit != "unknown"
    return f"commit {commit}" if known else "commit unknown"
