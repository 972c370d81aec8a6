"""Which mrirecon code made an input's outputs: the identity ``--resume`` compares.

``--resume`` skips an input only when the code that runs now is the code that made its outputs
(:func:`run_state.previous_run`); each status record holds :func:`code_identity`. Without it an
upgrade that fixes an image without changing the config schema kept the old image (e18c59a's
receiver DC-offset fix: -9.26 dB kept, 20.26 dB when run again) and ``provenance.json`` named the
new commit for an output the old code made.

What counts is the package's Python source, ``mrirecon/**/*.py``: the code that turns an input
into outputs, and the code of the reconstructions a user registered from outside mrirecon
(``recon.register``; :func:`mrirecon.recon.registry.registered_code`): a registered function
edited and registered again reran nothing, and its old images and scores were kept (the bench
row and ``metrics.csv`` of version 1, 22.61 / 23.20 dB, where version 2 gives 20.05 dB). The rest that shapes a result is compared already, input by input: a pipeline's
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
import sys
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
def package_sha256() -> str:
    """:func:`source_sha256` of the mrirecon package that runs, computed once per process
    (about 240 files, 2.6 MB: 10-25 ms)."""
    import mrirecon

    return source_sha256(Path(mrirecon.__file__).resolve().parent)


def registered_code() -> dict[str, str]:
    """``{name: sha256}`` of the reconstructions registered from outside mrirecon, read anew on
    each call (a registration may change at any time); empty when ``mrirecon.recon`` was never
    imported, since then nothing can have been registered."""
    registry = sys.modules.get("mrirecon.recon.registry")
    return registry.registered_code() if registry is not None else {}


def combined_sha256(package: str, registered: dict[str, str]) -> str:
    """The code identity of ``package`` (:func:`package_sha256`) with the ``registered``
    functions' checksums: the package's own checksum when there are none, so that the records
    of runs without a registered function stay valid across this change."""
    if not registered:
        return package
    h = hashlib.sha256(package.encode())
    for name, sha in sorted(registered.items()):
        h.update(f"\0{name}\0{sha}".encode())
    return h.hexdigest()


def code_sha256() -> str:
    """The identity of the code that makes outputs now: :func:`package_sha256` (cached) with
    the checksums of the registered reconstructions (:func:`registered_code`, recomputed on
    each call: a few dictionary lookups). Compared by ``--resume`` (status records, through
    :func:`code_identity`) and part of the bench's record keys."""
    return combined_sha256(package_sha256(), registered_code())


def code_identity() -> dict:
    """The fields a status record holds about the code that made its outputs: ``code_sha256``
    (compared by ``--resume``), ``git_commit`` (for information, as in ``provenance.json``) and,
    when there are any, ``registered_code`` (:func:`registered_code`, so that the log line can
    name the registered function that changed)."""
    registered = registered_code()
    fields = {"code_sha256": code_sha256(), "git_commit": _commit()}
    return {**fields, "registered_code": registered} if registered else fields


def other_code(prev: dict) -> str | None:
    """What made the outputs of status record ``prev`` when it was other code than this
    process runs (for the log line: its commit and source checksum, and this code's; or the
    registered reconstructions whose code differs when the package is the same), or ``None``
    when the code is the same."""
    then = prev.get("code_sha256")
    if then == code_sha256():
        return None
    registered = registered_code()
    before = prev.get("registered_code")
    before = before if isinstance(before, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in before.items()) else {}
    if then is not None and then == combined_sha256(package_sha256(), before):
        changed = sorted(k for k in {*before, *registered} if before.get(k) != registered.get(k))
        return (f"other code of the registered reconstruction{'s' if len(changed) > 1 else ''} "
                f"{', '.join(changed)} (recon.register; the mrirecon package is the same)")
    now = f"{_commit_text(_commit())}, source sha256 {code_sha256()[:12]}"
    if then is None:
        return f"an earlier mrirecon version, which recorded no code identity; this is {now}"
    return (f"other mrirecon code ({_commit_text(prev.get('git_commit'))}, source sha256 "
            f"{then[:12]}); this is {now}")


def _commit() -> str:
    from mrirecon.pipeline.run_files import _git_commit

    return _git_commit()


def _commit_text(commit) -> str:
    known = isinstance(commit, str) and commit and commit != "unknown"
    return f"commit {commit}" if known else "commit unknown"
