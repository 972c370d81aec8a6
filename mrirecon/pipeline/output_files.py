"""An input's outputs on disk: put in place, described, checked, and set aside when it fails.

* :func:`commit_outputs`: the staged outputs moved into place, nothing replaced that the run did
  not write (:func:`in_the_way`). An output folder on another file system than ``OUT/.staging``
  (a container's bind mount, ``docker -v /pacs:/out/dicom``; a symlink to another disk), where
  no rename can reach, gets a copy beside its destination that is renamed into place
  (:func:`rename_across`), and an earlier series moved aside is put back whenever its
  replacement cannot be renamed in.
* :func:`fingerprint`: ``{path relative to the output folder: {"bytes", "sha256"}}`` of every file
  an input's outputs hold (a DICOM series folder's files one by one; hidden dot-files such as
  ``.DS_Store`` or an interrupted write's ``.NAME.*.tmp`` are left out) and of its figures, kept
  in its status record (``output_files``).
* :func:`output_problems`: what is wrong with them now (deleted, cut short, emptied, rewritten, a
  series that lost or gained files), checked by ``--resume`` before it skips a finished input.
  Sizes are compared first and contents only when every size matches: SHA-256 of the outputs of a
  40-slice 320 x 320 volume (HDF5, NIfTI, 40 DICOM files, PNGs: 40 MB) took 43 ms (about 0.9 GB/s
  on one core), so content is compared rather than modification times, which a copy (``cp -r``,
  ``rsync`` without ``-t``) changes and a rewrite of the same size need not. A status record of an
  earlier version (no ``output_files``) is checked by existence, as that version did.
* :func:`set_aside`: an input that fails keeps nothing under its usual names. What an earlier run
  wrote for it moves to ``OUT/superseded/`` in the same layout (``superseded/reconstructions/x.h5``,
  ``superseded/dicom/x/``), with a record of why (``superseded/.status/x.json``), rather than being
  deleted: the run files (``metrics.csv``, ``report.html``, ``provenance.json``) list the input as
  failed, so its old image must not stand where scripts look for the current one (``glob
  reconstructions/*.h5``), yet it may be the only image of data that has since been overwritten,
  or the result of a transient failure (full disk, lost GPU) of the same data and config, which
  must not be lost. One earlier generation is kept per input: :func:`drop_superseded` deletes it
  when the input is written again (as a rerun replaces outputs) or pruned (``run --prune``).
* :func:`dicom_identity`: what an input's DICOM series keeps of its identity under
  ``export.keep_identity`` when the input is no DICOM series, and what the run says about it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

from mrirecon.io.atomic import atomic_path, atomic_write_text, cut_name, file_sha256
from mrirecon.pipeline.report import VolumeResult

log = logging.getLogger("mrirecon.pipeline")

#: The folder, under the output folder, of the outputs of inputs that failed in a later run.
SUPERSEDED = "superseded"


def remove_inside(path: str | os.PathLike, root: str) -> bool:
    """Delete the file, link or folder tree at ``path`` if it lies strictly inside the folder
    ``root`` (an absolute path); whether something was removed. A record naming a path outside
    the output folder (edited, or of a moved folder) never deletes it."""
    p = os.path.abspath(path)
    if os.path.commonpath([p, root]) != root or p == root:
        return False
    target = Path(p)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    elif target.exists() or target.is_symlink():
        target.unlink(missing_ok=True)
    else:
        return False
    return True


def in_the_way(src: Path, dst: Path) -> bool:
    """Whether ``dst`` holds something a move of ``src`` must not replace: a folder where a file
    goes, or anything but a folder (a file, a link) where a folder goes (a user's file there was
    renamed to a hidden ``.NAME.old-PID`` and kept out of sight)."""
    if src.is_file():
        return dst.is_dir()
    return dst.is_symlink() or (dst.exists() and not dst.is_dir())


def commit_outputs(stage: Path, output: Path, result: VolumeResult) -> None:
    """Move one input's staged outputs (under ``stage``) into place under ``output`` (files by
    rename, folders replaced whole: :func:`replace_folder`; across file systems by a copy that
    is renamed in, :func:`rename_across`) and point ``result`` at them; a path in the way of
    one of them (:func:`in_the_way`) fails the input before any is moved."""
    def final(p: str) -> Path:
        return output / Path(p).relative_to(stage)

    moved: set[Path] = set()
    units = [Path(p) for p in result.outputs.values()]
    units += sorted({Path(f).parent for f in result.figures})  # the figure folder as one unit
    for src in units:  # everything in the way first: a failed move left the outputs moved before
        dst = output / src.relative_to(stage)  # it in place (HDF5 beside a failed input)
        blocked = next((p for p in (dst, *dst.parents) if p != output and output in p.parents
                        and (p.is_file() if p != dst else in_the_way(src, p))), None)
        if blocked is not None:
            kind = "a folder" if blocked.is_dir() else "a file"
            raise FileExistsError(f"{blocked}: {kind} is in the way of this input's output "
                                  f"{dst.relative_to(output)}; move it away (none of this "
                                  "input's outputs were written)")
    for src in units:
        if src in moved:
            continue
        dst = output / src.relative_to(stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and dst.exists():
            replace_folder(src, dst)
        else:
            rename_across(src, dst)
        moved.add(src)
    result.outputs = {k: str(final(v)) for k, v in result.outputs.items()}
    result.figures = [str(final(f)) for f in result.figures]


def beside(dst: Path, what: str) -> Path:
    """The hidden sibling ``.NAME.WHAT-PID`` of ``dst`` (``old``: an earlier output moved aside;
    ``new``: a copy from another file system, before its rename into place), its name cut like
    a temporary file's: it must fit too. ``run_state.remove_orphans`` deletes those of dead
    processes."""
    tag = f".{what}-{os.getpid()}"
    return dst.with_name(f".{cut_name(dst.name, len(tag) + 1)}{tag}")


def replace_folder(src: Path, dst: Path) -> None:
    """The folder ``src`` replaces the folder ``dst`` whole: ``dst`` is renamed aside
    (``.NAME.old-PID``), ``src`` renamed in, the earlier one deleted. When the second rename
    fails (for any reason, an interrupt too) the earlier folder is renamed back before the error
    is raised. Where ``src`` lies on another file system (EXDEV: ``dst``'s folder is a mount
    point, as ``docker -v /pacs:/out/dicom``, or a symlink to another disk), it is first copied
    beside ``dst`` (``.NAME.new-PID``), with the earlier folder still in place, and that copy is
    swapped in the same way; ``src`` is deleted once it is in place. Was: the earlier series
    stayed hidden as ``.NAME.old-PID`` after the EXDEV (not in ``superseded/``), and the next
    run deleted it for good."""
    old = beside(dst, "old")
    if os.path.lexists(old):  # this process's own, left by a failed delete
        remove_old_folder(old)
    try:
        _swap(src, dst, old)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        new = _copy_beside(src, dst)
        try:
            _swap(new, dst, old)
        except BaseException:
            _remove(new)
            raise
        _remove(src)
    remove_old_folder(old)


def _swap(src: Path, dst: Path, old: Path) -> None:
    """``dst`` renamed to ``old``, then ``src`` to ``dst``; ``old`` renamed back when the second
    rename fails."""
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        try:
            os.replace(old, dst)
        except OSError as e:  # something took its place meanwhile: say where it is
            log.error("%s: the earlier output, moved aside to %s, could not be put back (%s); "
                      "move it back yourself before the next run (which deletes it)", dst, old,
                      e.strerror or e)
        raise


def rename_across(src: Path, dst: Path) -> None:
    """``os.replace(src, dst)`` (``dst``: a file, or no folder yet), also where ``dst``'s folder
    lies on another file system than ``src`` (EXDEV, which a rename cannot cross: a mount point
    or a symlink to another disk): then ``src`` is copied beside ``dst`` (a file through
    :func:`~mrirecon.io.atomic.atomic_path`, a folder as ``.NAME.new-PID``), that copy is
    renamed to ``dst`` (one rename on that file system: ``dst`` is never half written) and
    ``src`` is deleted. A failed copy leaves ``src`` as it was and no copy behind."""
    try:
        os.replace(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if src.is_dir() and not src.is_symlink():
        new = _copy_beside(src, dst)
        try:
            os.replace(new, dst)
        except BaseException:
            _remove(new)
            raise
    else:
        with atomic_path(dst, suffix="") as tmp:  # named like its temporary files, removed alike
            if src.is_symlink():
                tmp.unlink()
                os.symlink(os.readlink(src), tmp)
            else:
                shutil.copy2(src, tmp)
    _remove(src)


def _copy_beside(src: Path, dst: Path) -> Path:
    """A copy of the folder ``src`` at ``.NAME.new-PID`` beside ``dst`` (on ``dst``'s file
    system), files with their modes and times; removed again when the copy fails, whose error
    then names ``dst`` (not the hidden copy)."""
    new = beside(dst, "new")
    _remove(new)  # this process's own, left by a failed delete
    try:  # not shutil.copytree: it copies on past a failure and raises shutil.Error, which
        # carries no errno (a full disk must stay ENOSPC, naming dst, for the disk-full message)
        for dirpath, _, filenames in os.walk(src):
            into = new / os.path.relpath(dirpath, src)
            into.mkdir(parents=True, exist_ok=True)
            for f in filenames:
                origin = os.path.join(dirpath, f)
                if os.path.islink(origin):
                    os.symlink(os.readlink(origin), into / f)
                else:
                    shutil.copy2(origin, into / f)
    except BaseException as e:
        _remove(new)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(dst)) from e
        raise
    return new


def _remove(path: Path) -> None:
    """Delete the file, link or folder tree at ``path``, if any (errors ignored)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def remove_old_folder(old: Path) -> bool:
    """Delete ``old``, an earlier output moved aside (``.NAME.old-PID``); where that fails (a
    file in it held open by a viewer or a virus scanner, common on Windows) a warning names it,
    and a later run deletes it once this process has ended (``run_state.remove_orphans``): it
    failed without a word, and the stale series stayed beside the new one (Windows shows
    dot-folders, so a recursive PACS import of ``dicom/`` took both). Returns whether it is gone."""
    shutil.rmtree(old, ignore_errors=True)
    if not os.path.lexists(old):
        return True
    log.warning("%s: the earlier output moved aside could not be deleted (is a file in it open in "
                "a viewer or a virus scanner?); a later run deletes it, or delete it yourself",
                old)
    return False


def _files_under(folder: Path) -> list[Path]:
    """The files of an output folder (a DICOM series), hidden dot-files left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _rel(path: str | Path, output: Path) -> str:
    return Path(os.path.relpath(path, output)).as_posix()


def fingerprint(paths: list[str], output: Path) -> dict[str, dict]:
    """``{path relative to output: {"bytes": size, "sha256": hex}}`` of the files ``paths`` (an
    input's outputs and figures, absolute or relative to the working directory) name; a folder
    stands for its files."""
    out: dict[str, dict] = {}
    for p in map(Path, paths):
        for f in _files_under(p) if p.is_dir() else [p]:
            out[_rel(f, output)] = {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
    return out


def output_problems(prev: dict, output: Path) -> list[str]:
    """What is wrong with the outputs and figures an earlier run wrote for one input (its status
    record ``prev``, paths resolved by :func:`run_state.read_status`), one line each naming the
    file; empty when they are as written. Without ``output_files`` (a record of an earlier
    version), only their existence is checked."""
    outputs, figures = prev.get("outputs", {}), prev.get("figures", [])
    if not isinstance(outputs, dict) or not isinstance(figures, list):
        return ["its status record lists no outputs"]
    paths = [Path(p) for p in [*outputs.values(), *figures]]
    recorded = prev.get("output_files")
    if not isinstance(recorded, dict):
        return [f"{p}: missing" for p in paths if not p.exists()]
    problems: list[str] = []
    to_hash: list[tuple[Path, str]] = []
    for p in paths:
        rel = _rel(p, output)
        if rel in recorded:  # a file
            if not p.is_file():
                there = " (a folder is there now)" if p.is_dir() else ""
                problems.append(f"{p}: missing{there}")
                continue
            expected, now = {rel: recorded[rel]}, {rel}
        else:  # a folder (a DICOM series): its files
            if not p.is_dir():
                problems.append(f"{p}: missing" + (" (a file is there now)" if p.exists() else ""))
                continue
            expected = {k: v for k, v in recorded.items() if k.startswith(rel + "/")}
            now = {_rel(f, output) for f in _files_under(p)}
        lost, gained = sorted(set(expected) - now), sorted(now - set(expected))
        if lost:
            count = (f"all {len(lost)} of its files" if len(lost) == len(expected)
                     else f"{len(lost)} of its {len(expected)} files")
            problems.append(f"{p}: {count} missing ({few([Path(x).name for x in lost])})")
        if gained:
            problems.append(f"{p}: {len(gained)} file(s) the earlier run did not write "
                            f"({few([Path(x).name for x in gained])})")
        for k in sorted(set(expected) & now):
            want, f = expected[k], output / k
            size = f.stat().st_size
            if not isinstance(want, dict) or want.get("bytes") != size:
                was = want.get("bytes") if isinstance(want, dict) else "?"
                problems.append(f"{f}: {size} bytes, was {was} when written")
            else:
                to_hash.append((f, k))
    if problems:  # contents only when everything else is as written (sizes are cheap)
        return problems
    return [f"{output / k}: its content changed since it was written ({f.stat().st_size} bytes, "
            "another SHA-256)" for f, k in to_hash if file_sha256(f) != recorded[k].get("sha256")]


def few(items: list[str], n: int = 3, sep: str = ", ") -> str:
    """The first ``n`` of ``items`` joined by ``sep``, then ``... (k more)``."""
    return sep.join(items[:n]) + (f"{sep}... ({len(items) - n} more)" if len(items) > n else "")


def moved_by_commit(stage: Path, output: Path, outputs: list[str]) -> list[str]:
    """Which of an input's ``outputs`` (paths under ``stage``, or already under ``output`` once
    committed) are in place under ``output`` after a commit that failed part-way (their staged
    copy was moved)."""
    placed = []
    for p in map(Path, outputs):
        try:
            final = output / p.relative_to(stage)
        except ValueError:
            final = p  # committed: already a path under the output folder
            placed.append(str(final))
            continue
        if not p.exists() and (final.exists() or final.is_symlink()):
            placed.append(str(final))
    return placed


def set_aside(old: dict | None, status_file: Path, output: Path, name: str, reason: str,
              also: list[str] = ()) -> list[str]:
    """Move what an earlier run wrote for the input named ``name`` (its status record ``old``,
    paths resolved; plus ``also``, what this run had already put in place) into
    ``output/superseded/`` in the same layout, and its status record to
    ``superseded/.status/NAME.json`` with ``reason`` (the error of this run): the input failed,
    and nothing may stay under its usual names as if current. A path that holds something of
    another kind than the record says (a file where the series folder was) was not written by the
    run and stays. Returns the paths moved, relative to ``output``."""
    paths = [*(old or {}).get("outputs", {}).values(), *(old or {}).get("figures", []), *also]
    recorded = (old or {}).get("output_files")
    root, dest = os.path.abspath(output), output / SUPERSEDED
    mine = {os.path.abspath(p) for p in also}
    targets = []
    for p in dict.fromkeys(os.path.abspath(p) for p in paths if isinstance(p, str)):
        src, rel = Path(p), _rel(p, output)
        if os.path.commonpath([p, root]) != root or p == root or rel.split("/")[0] in (
                SUPERSEDED, ".status") or not (src.exists() or src.is_symlink()):
            continue
        if isinstance(recorded, dict) and p not in mine and (rel in recorded) == src.is_dir():
            log.warning("%s: left where it is: it is not what the earlier run wrote there", src)
            continue
        targets.append((src, rel))
    if not targets:
        status_file.unlink(missing_ok=True)  # a later --resume must process the input again
        return []
    drop_superseded(output, name, "a newer failure sets aside its outputs")
    moved = []
    for src, rel in targets:
        try:
            _move(src, dest / rel)
        except OSError as e:
            log.error("%s: could not be moved to %s (%s); it is not an output of this run",
                      src, dest / rel, e.strerror or e)
            continue
        moved.append(rel)
        if os.path.abspath(src.parent) == os.path.abspath(output / "figures" / name):  # its own
            _rmdir_empty(src.parent)
    try:
        earlier = json.loads(status_file.read_text(encoding="utf-8")) if status_file.is_file() else None
    except (ValueError, OSError):
        earlier = None
    record = {"name": name, "input": (old or {}).get("input"), "set_aside": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z"), "reason": reason, "moved": moved, "earlier_record": earlier}
    try:
        atomic_write_text(dest / ".status" / f"{name}.json", json.dumps(record, indent=1))
    except OSError as e:
        log.error("%s: could not write the record of what was set aside (%s)", dest, e)
    status_file.unlink(missing_ok=True)  # a later --resume must process the input again
    return moved


def _move(src: Path, dst: Path) -> None:
    """``src`` to ``dst``, replacing what is there (an older generation's leftover); across file
    systems (``OUT/dicom`` a mount point, ``OUT/superseded`` not) by a copy
    (:func:`rename_across`)."""
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.exists() or dst.is_symlink():
        dst.unlink()
    for attempt in range(2):  # another rank may remove an empty parent between the two calls
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            rename_across(src, dst)
            return
        except FileNotFoundError:
            if attempt or not (src.exists() or src.is_symlink()):
                raise


def _rmdir_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def drop_superseded(output: Path, name: str, why: str) -> list[str]:
    """Delete what :func:`set_aside` moved aside for the input named ``name`` and its record;
    returns the paths deleted (relative to ``output/superseded``). ``why`` ends the log line."""
    dest = output / SUPERSEDED
    record = dest / ".status" / f"{name}.json"
    if not record.is_file():
        return []
    try:
        moved = json.loads(record.read_text(encoding="utf-8")).get("moved", [])
    except (ValueError, OSError, AttributeError):
        moved = []
    root = os.path.abspath(dest)
    removed = []
    paths = [dest / str(rel) for rel in (moved if isinstance(moved, list) else [])]
    for rel, path in zip(moved if isinstance(moved, list) else [], paths):
        if remove_inside(path, root):
            removed.append(rel)
    record.unlink(missing_ok=True)
    if removed:
        log.info("removed %s under %s (set aside when %s failed in an earlier run): %s",
                 few(removed, 5), dest, name, why)
    _remove_empty_parents([*paths, record], root)
    return removed


def _remove_empty_parents(paths: list[Path], root: str) -> None:
    """Remove the folders that the deletion of ``paths`` left empty: each path's parents up to
    ``root`` (an absolute path; itself too, once empty), deepest first, a folder that is not
    empty kept: a cost of the paths and their depth, not of what else ``root`` holds. Was: a
    walk of all of ``superseded/`` per input dropped, so N walks of N inputs' folders after a
    run in which every input failed (4000 inputs: 150 s)."""
    folders: set[str] = set()
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        while folder not in folders and os.path.commonpath([folder, root]) == root:
            folders.add(folder)
            if folder == root:
                break
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):  # a child's path is longer
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone already
            pass


def superseded_names(output: Path) -> list[str]:
    """The output names of the inputs whose outputs were set aside."""
    folder = output / SUPERSEDED / ".status"
    if not folder.is_dir():
        return []
    return sorted(r.relative_to(folder).with_suffix("").as_posix() for r in folder.rglob("*.json"))


def dicom_identity(keep: bool, name: str, source_dataset, header=None
                   ) -> tuple[dict[str, str] | None, str | None, str | None]:
    """``(patient, warning, note)`` for the DICOM export of input ``name`` under
    ``export.keep_identity`` (``keep``). A DICOM input's ``source_dataset`` keeps its identity in
    the writer (nothing said here). Other inputs (fastMRI, ISMRMRD, LoDoPaB) hold no DICOM
    patient or study attributes: an MRI ``header``'s ``patient_id`` is kept as PatientID, and its
    site and protocol name as InstitutionName / ProtocolName (written by the writer from the
    header); a note says what is kept and what is not, and without any of them the setting has
    nothing to keep (a warning: the series is de-identified as without it). Was: the setting
    was silently ignored for every input."""
    if not keep or source_dataset is not None:
        return None, None, None
    from mrirecon.io.dicom_technique import mr_identity, mr_technique

    patient_id = getattr(header, "patient_id", "") or ""
    # named, never quoted: the note goes to the log, report.html, provenance.json and the
    # .status records, the files people share (a patient ID is the medical record number)
    kept = ["its patient ID (PatientID)"] if patient_id else []
    held: dict = {}
    if header is not None:
        technique = mr_technique(header, keep_identity=True)
        kept += [f"its {what} ({kw})" for what, kw in (
            ("site", "InstitutionName"), ("protocol name", "ProtocolName")) if kw in technique]
        held = mr_identity(header)  # named, not quoted: the values go to the DICOM files only
        if held:
            kept.append(", ".join(held))
    if kept:
        lacking = [kw for kw in ("PatientName", "StudyInstanceUID", "FrameOfReferenceUID")
                   if kw not in held]
        rest = (f"; the header holds no {', '.join(lacking)}: new or empty" if lacking
                else "")
        return ({"PatientID": patient_id} if patient_id else None), None, (
            f"{name}: export.keep_identity: the input is no DICOM series; of its identity the "
            f"DICOM series keeps {' and '.join(kept)} (FrameOfReferenceUID for an image placed "
            f"in the scanner's coordinates){rest}")
    return None, (
        f"{name}: export.keep_identity=true has nothing to keep: the input is no DICOM series "
        "and holds no patient or study attributes, so its DICOM series is de-identified as "
        "without the setting (PatientIdentityRemoved YES, new study and frame-of-reference "
        "UIDs)"), None
