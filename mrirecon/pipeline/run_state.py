"""What a pipeline run knows about earlier runs into the same output folder, and its lock.

* the output folder's lock (two runs into one folder mixed their outputs): :func:`lock_output`,
  from :mod:`mrirecon.io.output_lock`;
* per-input status records (``.status/<name>.json``, paths relative to the output folder) and the
  ``--resume`` decision: same input file and content (its LoDoPaB reference included), same
  effective config and weights (:func:`weights_sha256`), same mrirecon code
  (:mod:`~mrirecon.pipeline.code_identity`), outputs still there;
* removal of what an earlier run wrote and this one does not (stale outputs and run files) and of
  orphaned temporary files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from mrirecon.core.processes import pid_alive
from mrirecon.io.atomic import feed_file
from mrirecon.io.output_lock import (OutputLock, job_identity, lock_output,  # noqa: F401
                                     locked_output)  # the output folder's lock (runner)
from mrirecon.pipeline.code_identity import code_identity, other_code
from mrirecon.pipeline.output_files import few, remove_old_folder
from mrirecon.pipeline.report import VolumeResult
from mrirecon.pipeline.schema import PipelineConfig

log = logging.getLogger("mrirecon.pipeline")


def sha256(path: Path) -> str:
    """Checksum of a file (or of the sorted files of a folder), streamed in 1 MiB blocks. A
    missing file raises ``FileNotFoundError`` (it was skipped: the SHA-256 of zero bytes,
    e3b0c442..., stood in ``provenance.json`` for an input deleted during the run)."""
    h = hashlib.sha256()
    files = [f for f in sorted(path.iterdir()) if f.is_file()] if path.is_dir() else [path]
    for f in files:
        feed_file(h, f)
    return h.hexdigest()


def file_state(path: Path) -> tuple:
    """What tells whether an input changed on disk: size, modification time (ns) and inode of
    the file, or of each file of a folder (a DICOM series); ``()`` when it is gone."""
    def one(p: Path) -> tuple:
        st = p.stat()
        return st.st_size, st.st_mtime_ns, st.st_ino

    try:
        if path.is_dir():
            return tuple((f.name, *one(f)) for f in sorted(path.iterdir()) if f.is_file())
        return one(path)
    except OSError:
        return ()


def status_path(output: Path, stem: str) -> Path:
    return output / ".status" / f"{stem}.json"


def read_status(status_file: Path, output: Path,
                then: str = "the input is processed again") -> dict | None:
    """An earlier run's status record of one input, its output paths resolved against ``output``
    (they are stored relative to it, so a copied or moved output folder stays consistent); an
    unreadable one is logged with what happens ``then`` and is ``None``.

    Unreadable is also valid JSON whose fields are not of the types a run writes
    (:func:`status_problem`): the record is the one place its fields are checked, so every
    consumer (``--resume``'s decision, the skipped input's result, the removal and setting aside
    of its earlier outputs, the run files) gets a record it can use. ``"outputs": 5`` stopped
    the whole batch with "internal error: AttributeError: 'int' object has no attribute
    'values'", ``"metrics": "bad"`` or ``"name": 7`` under ``--resume`` ended the run with an
    internal ``TypeError`` after every input was processed."""
    if not status_file.is_file():
        return None
    try:
        prev = json.loads(status_file.read_text(encoding="utf-8"))
        if not isinstance(prev, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as e:
        log.warning("%s is unreadable (%s); %s", status_file, e, then)
        return None
    folder = output / ".status"
    name = (status_file.relative_to(folder).as_posix().removesuffix(".json")
            if status_file.is_relative_to(folder) else None)
    problem = status_problem(prev, name)
    if problem:
        log.warning("%s is unreadable (%s); %s", status_file, problem, then)
        return None
    prev["outputs"] = {k: str(output / v) for k, v in prev.get("outputs", {}).items()}
    prev["figures"] = [str(output / f) for f in prev.get("figures", [])]
    return prev


def _number(v, *, integer: bool = False) -> bool:
    """A JSON number (not ``true`` / ``false``), not NaN."""
    kinds = (int,) if integer else (int, float)
    return isinstance(v, kinds) and not isinstance(v, bool) and v == v


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _fingerprint(v) -> bool:  # an output_files entry (output_files.fingerprint)
    return isinstance(v, dict) and _number(v.get("bytes"), integer=True) and v["bytes"] >= 0 \
        and isinstance(v.get("sha256"), str)


#: The fields of a status record that a run reads, what they must be (each may be missing: the
#: records of earlier versions lack some), and the check. Metrics may be +-inf (an exact
#: reconstruction's PSNR), not NaN; ``seconds`` and ``slices`` not negative.
_STATUS_FIELDS = {
    "input": ("a string", lambda v: isinstance(v, str)),
    "input_abspath": ("a string", lambda v: isinstance(v, str)),
    "status": ("a string", lambda v: isinstance(v, str)),
    "error": ("a string", lambda v: isinstance(v, str)),
    "input_sha256": ("a string", lambda v: isinstance(v, str)),
    "config_sha256": ("a string", lambda v: isinstance(v, str)),
    "code_sha256": ("a string", lambda v: isinstance(v, str)),
    "git_commit": ("a string", lambda v: isinstance(v, str)),
    "seconds": ("a number >= 0", lambda v: _number(v) and 0 <= v < float("inf")),
    "slices": ("an integer >= 0", lambda v: _number(v, integer=True) and v >= 0),
    "warnings": ("a list of strings", _strings),
    "notes": ("a list of strings", _strings),
    "figures": ("a list of paths", _strings),
    "adapt": ("a mapping", lambda v: isinstance(v, dict)),
    "threads": ("an integer >= 1 or null", lambda v: v is None or _number(v, integer=True) and v >= 1),
    "device": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "calibration": ("a mapping", lambda v: isinstance(v, dict)),
    "name": ("a string", lambda v: isinstance(v, str)),
}
_STATUS_MAPS = {  # field: (what each value must be, what the field must be, the check)
    "outputs": ("a path", "a mapping of formats to paths", lambda v: isinstance(v, str)),
    "metrics": ("a number (not NaN)", "a mapping of metric names to numbers", _number),
    "output_files": ("{\"bytes\": size, \"sha256\": checksum}",
                     "a mapping of paths to sizes and checksums", _fingerprint),
}


def status_problem(record: dict, name: str | None = None) -> str | None:
    """What makes the fields of a status record (parsed JSON) unusable, naming the field, or
    ``None``; ``name``: the output name the record is filed under (``.status/NAME.json``),
    which its ``name`` field must be (``"../../x"`` skipped the input under another name)."""
    def shown(v) -> str:
        text = json.dumps(v) if not isinstance(v, float) else repr(v)
        return (text if len(text) <= 40 else text[:37] + "...") + f" ({type(v).__name__})"

    for field, (want, ok) in _STATUS_FIELDS.items():
        if field in record and not ok(record[field]):
            return f"field {field} is {shown(record[field])}, expected {want}"
    for field, (want, whole, ok) in _STATUS_MAPS.items():
        if field not in record:
            continue
        if not isinstance(record[field], dict):
            return f"field {field} is {shown(record[field])}, expected {whole}"
        bad = next((k for k, v in record[field].items() if not ok(v)), None)
        if bad is not None:
            return (f"field {field}[{json.dumps(bad)}] is {shown(record[field][bad])}, "
                    f"expected {want}")
    if name is not None and "name" in record and record["name"] != name:
        return (f"field name is {json.dumps(record['name'])}, not {json.dumps(name)}, the output "
                "name the record is filed under")
    return None


def status_record(result: VolumeResult, output: Path, **extra) -> dict:
    """The status record of a finished input: paths relative to ``output``; the code that made
    its outputs (:func:`code_identity.code_identity`: ``code_sha256``, which ``--resume``
    compares, and ``git_commit``); ``extra``: the input's and config's checksums,
    ``output_files`` (:func:`output_files.fingerprint`)."""
    def rel(p: str) -> str:
        return os.path.relpath(p, output)

    record = asdict(result)
    record["outputs"] = {k: rel(v) for k, v in result.outputs.items()}
    record["figures"] = [rel(f) for f in result.figures]
    return {**record, **code_identity(), **extra}


def previous_run(prev: dict | None, path: Path, input_hash: str, config_hash: str,
                 output: Path) -> dict | None:
    """The status of an earlier run if it finished this input, from the same input file and
    content, the same effective config (weights included) and the same mrirecon code (the
    record's ``code_sha256``, :func:`code_identity.code_sha256`; a record without one, of an
    earlier version, is other code), and its outputs in ``output`` are as it wrote them
    (:func:`output_files.output_problems`: sizes and SHA-256 of their files; existence for a
    record without ``output_files``); else ``None`` (the input reruns). Outputs
    deleted, cut short or emptied since were skipped by existence alone: an empty DICOM folder,
    a 0-byte NIfTI and a truncated HDF5 listed in the report as finished; outputs of other code
    were skipped after an upgrade (an image fix that changed no config key kept the old image,
    and ``provenance.json`` named the new commit)."""
    from mrirecon.pipeline.output_files import output_problems

    if prev is None or prev.get("status") != "ok":
        return None
    before = prev.get("input_abspath")  # absolute: a run from another folder compares alike
    if isinstance(before, str) and not same_file(before, path):
        log.warning("the outputs named %s came from %s; processing %s replaces them",
                    prev.get("name"), before, path)
        return None
    if prev.get("input_sha256") != input_hash:
        log.info("%s changed since the earlier run; processing it again", prev.get("input"))
        return None
    made_by = other_code(prev)
    if made_by:
        log.info("the outputs of %s were made by %s; processing %s again", prev.get("name"),
                 made_by, path)
        return None
    if prev.get("config_sha256") != config_hash:
        log.info("the config changed since the earlier run; processing %s again", prev.get("input"))
        return None
    problems = output_problems(prev, output)
    if problems:  # a deleted figure too: the report would link to a missing PNG
        log.warning("%s: reprocessing %s", few(problems, 3, sep="; "), path)
        return None
    return prev


def same_file(before: str, path: Path) -> bool:
    """Whether ``before`` (an input's absolute path recorded by an earlier run) names the file
    ``path`` names now: the same absolute path, the same resolved path (an input folder reached
    through a symbolic link: ``--resume`` reprocessed every input), or the same file on disk
    (device and inode: a bind mount, a hard link), as :func:`check_other_inputs` compares."""
    if before == os.path.abspath(path) or os.path.realpath(before) == os.path.realpath(path):
        return True
    try:
        return os.path.samefile(before, path)
    except (OSError, ValueError):
        return False


class _InputLookup:
    """This run's inputs, found by :func:`same_file`'s rule in constant time per look-up: by
    resolved path, by absolute path, by (device, inode) (a bind mount, a hard link, a
    case-insensitive disk), each input resolved and stat'ed once, each look-up one ``realpath``
    and one ``os.stat``. Where several inputs match, the one a scan of the inputs with
    ``same_file`` found. Was: every earlier record compared with every input through
    ``same_file`` (two ``realpath`` and two ``os.stat`` per pair): refusing 2000 records of
    other inputs took 122 s."""

    def __init__(self, files: list[Path], names: list[str]) -> None:
        self.inputs = [(str(f), n) for f, n in zip(files, names)]
        self.real: dict[str, int] = {}
        self.absolute: dict[str, int] = {}
        self.inode: dict[tuple[int, int], int] = {}
        for i, (f, _) in enumerate(self.inputs):
            self.real[os.path.realpath(f)] = i  # the last one, as a dict of them kept it
            self.absolute.setdefault(os.path.abspath(f), i)
            try:
                st = os.stat(f)
            except (OSError, ValueError):
                continue
            self.inode.setdefault((st.st_dev, st.st_ino), i)

    def find(self, before: str) -> tuple[str | None, str | None]:
        """``(input as passed, its output name)`` of the input that ``before`` (an earlier
        record's absolute path) names, else ``(None, None)``."""
        real = os.path.realpath(before)
        if real in self.real:  # the common case: the earlier check, a dict by resolved path
            return self.inputs[self.real[real]]
        found = [self.absolute.get(before)]
        try:
            st = os.stat(before)
        except (OSError, ValueError):
            pass
        else:
            found.append(self.inode.get((st.st_dev, st.st_ino)))
        found = [i for i in found if i is not None]
        return self.inputs[min(found)] if found else (None, None)


def check_other_inputs(output: Path, names: list[str], *, resume: bool,
                       files: list[Path] | None = None) -> None:
    """Refuse a run into ``output`` when it holds status records of inputs whose output names are
    not ``names`` (all ranks' inputs, ``files``): their outputs would stay on disk while
    ``metrics.csv``, ``report.html`` and ``provenance.json`` list only this run's inputs. A rerun
    of the same inputs (or of more) replaces or adds to them as usual; ``resume`` only changes the
    advice.

    A record whose input (by resolved path) is among ``files`` under another name is told apart:
    output names are paths relative to the inputs' common folder, so ``d1/x.h5`` run alone is
    ``x`` and run with ``d2/y.h5`` is ``d1/x`` (the refusal said ``d1/x.h5`` "is not among this
    run's inputs" while it was passed). It is refused too, saying so, rather than written again
    under its earlier name: a name kept from the folder's history would make the same command
    lay out its outputs differently in a fresh folder and in an old one, and could collide with
    the name of a new input (``x.h5`` beside ``d1/``). Nor are the earlier outputs moved to the
    new name unasked: paths a user or a script already took from the folder (a PACS import, a
    table of files) would stop pointing at them. ``--prune`` deletes the outputs under the
    earlier name and writes the input again under the new one; another ``--output`` keeps them."""
    records = _other_records(output, names)
    if not records:
        return
    passed_now = _InputLookup(files or [], names)
    renamed, others = [], []
    for _, name, prev in records:
        before = prev.get("input_abspath")
        passed, new = passed_now.find(before) if isinstance(before, str) else (None, None)
        if new is not None:  # (as passed now, earlier name, name now, earlier absolute path)
            renamed.append((passed, name, new, before))
        else:
            others.append(f"{prev.get('input')} ({name})" if isinstance(prev.get("input"), str)
                          else name)
    where = f"--resume into {output}: it holds" if resume else f"--output {output} holds"
    if renamed:
        raise ValueError(_renamed_refusal(where, renamed, others, files or [], resume))
    n = len(others)
    listed = few(others, 5)
    inputs, them = f"{n} input{'s' if n > 1 else ''}", "them" if n > 1 else "it"
    not_here = f"{'are' if n > 1 else 'is'} not among this run's inputs: {listed}"
    if resume:
        raise ValueError(
            f"{where} the outputs of {inputs} that {not_here}; --resume "
            "continues a run on the same inputs, and metrics.csv, report.html and provenance.json "
            f"list only this run's: pass {them} again with the new inputs, write to another "
            f"--output, or pass --prune to delete {them} (nothing was run)")
    raise ValueError(
        f"{where} the outputs of {inputs} of an earlier run that {not_here}; this "
        f"run would leave {them} there while metrics.csv, report.html and provenance.json list "
        "only its own inputs: write to another (or an empty) --output, pass "
        f"{them} again with the new inputs (with --resume, finished inputs are skipped), or pass "
        f"--prune to delete {them} (nothing was run)")


def _renamed_refusal(where: str, renamed: list[tuple[str, str, str, str]], others: list[str],
                     files: list[Path], resume: bool) -> str:
    """The refusal of :func:`check_other_inputs` for inputs of this run that an earlier run wrote
    under another output name (``renamed``: ``(input as passed, earlier name, name now, its
    absolute path then)``)."""
    path, old, new, then = renamed[0]
    k = len(renamed)
    parents = Path(then).parents  # the earlier run's common folder: the name's depth up
    root_then = parents[min(len(Path(old).parts), len(parents)) - 1]
    root_now = Path(os.path.commonpath([os.path.abspath(Path(f).parent) for f in files]))
    spans = sorted({Path(os.path.abspath(f)).relative_to(root_now).parts[0] for f in files
                    if Path(os.path.abspath(f)).parent != root_now})
    span = f", as the inputs span {' and '.join(spans)}" if 1 < len(spans) <= 3 else ""
    listed = few([f"{p} as {o} (now {n})" for p, o, n, _ in renamed], 5)
    what = (f"the outputs of {path}, written as {old} by an earlier run; this run would write it "
            f"as {new}" if k == 1 else
            f"the outputs of {k} of this run's inputs under the names an earlier run gave them, "
            f"which this run would change: {listed}")
    them = "it" if k == 1 else "them"
    text = (f"{where} {what}, because output names are paths relative to the inputs' common "
            f"folder, which was {root_then} and is now {root_now}{span}; the outputs under the "
            f"earlier name{'s' if k > 1 else ''} would stay beside the new ones, listed nowhere"
            + ("; --resume cannot reuse them under another name" if resume else ""))
    if others:
        text += f"; it also holds the outputs of {len(others)} input(s) not among this run's " \
                f"inputs: {few(others, 5)}"
    again = f"again as {new}" if k == 1 else "again under the new names"
    return (text + f": pass --prune to delete the earlier outputs (this run then writes {them} "
            f"{again}), write to another --output, "
            "or run the inputs of each folder into an --output of its own (nothing was run)")


def remove_other_inputs(output: Path, names: list[str]) -> list[str]:
    """Delete the outputs and status records of inputs not in ``names`` (``run --prune``; the
    demo, which owns its folders: a quick rerun after a full one keeps 1 of 2 volumes), and what
    was set aside for them (``superseded/``); returns the output names deleted."""
    from mrirecon.pipeline.output_files import drop_superseded, superseded_names

    removed = []
    for record, name, prev in _other_records(output, names):
        remove_stale_outputs(prev, VolumeResult(input="", name=name), output)
        record.unlink(missing_ok=True)
        removed.append(name)
    for name in set(superseded_names(output)) - set(names):
        drop_superseded(output, name, "--prune, and it is not an input of this run")
    return removed


def _other_records(output: Path, names: list[str]) -> list[tuple[Path, str, dict]]:
    """``(record, output name, status)`` of the inputs with a status record in ``output`` whose
    output names are not ``names``."""
    folder = output / ".status"
    if not folder.is_dir():
        return []
    mine = {status_path(output, n) for n in names}
    then = "the input it records (not in this run) is named by its output name"
    return [(r, r.relative_to(folder).with_suffix("").as_posix(),
             read_status(r, output, then) or {})
            for r in sorted(folder.rglob("*.json")) if r not in mine and r.is_file()]


#: The folders under ``--output`` that a run writes into (and only these are searched for the
#: leftovers of killed runs, besides the output folder's own files and ``.staging``).
RUN_FOLDERS = ("reconstructions", "nifti", "dicom", "figures", "adapted", "superseded", ".status")


def remove_orphans(output: Path, before: float, rank: int = 0, world: int = 1) -> int:
    """Delete what interrupted (killed) runs left under ``output``: temporary files of atomic
    writes (``.NAME.*.tmp`` of :mod:`mrirecon.io.atomic`) and staging folders older than
    ``before`` (a time stamp: this run's start), and the ``.NAME.old-PID`` folders in which a
    commit moved an earlier output aside (:func:`output_files.commit_outputs`) when process PID is
    no longer alive (a kill between its two renames left the old DICOM series there for good,
    beside the new one), or the ``.NAME.new-PID`` copy of an output from another file system
    that it had not yet renamed into place. Only the folders a run writes (:data:`RUN_FOLDERS`,
    the output folder's own files) are searched, and only for names the writers make: a user's
    `.notes.tmp` or `.draft.old-12` folder elsewhere under ``output`` is theirs. A plain run
    holds the output folder's lock alone, so everything of that kind is an orphan; a rank of a
    distributed run removes the staging folders of its own rank (rank 0 also those of ranks
    beyond the world size), as the other ranks are working, and no ``.old-PID`` folder (another
    node's process cannot be judged from this machine). Returns how many were removed."""
    import shutil

    removed = 0
    staging = output / ".staging"
    if staging.is_dir():
        for d in staging.iterdir():
            owner = d.name.split("-", 1)[0]
            if world > 1 and not (owner == str(rank) or (rank == 0 and owner.isdigit()
                                                         and int(owner) >= world)):
                continue
            if d.lstat().st_mtime < before:
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
                removed += 1
    from mrirecon.io.atomic import remove_temp_files

    # only where a run writes (the folder may hold a user's own files: `.notes.tmp`, a
    # `.chapter1.old-12` folder), and only names the writers make (io.atomic.TEMP_NAME)
    removed += len(remove_temp_files(output, before))
    for sub in RUN_FOLDERS:
        removed += len(remove_temp_files(output / sub, before, recursive=True))
    for dirpath, dirnames, _ in (w for sub in RUN_FOLDERS if world == 1
                                 for w in os.walk(output / sub)):
        for d in list(dirnames):  # a distributed run leaves them: another node's PID is not
            pid = _old_pid(d)     # one this machine can judge
            p = Path(dirpath) / d
            if pid is not None and pid != os.getpid() and not pid_alive(pid) and not p.is_symlink():
                dirnames.remove(d)  # not walked
                if not remove_old_folder(p):
                    continue
                removed += 1
                what, verb = (("a copy of an output from another file system", "rename")
                              if d.endswith(f".new-{pid}") else
                              ("an earlier output moved aside", "delete"))
                log.info("removed %s: %s by a run (pid %d) that was stopped before it could %s "
                         "it", p, what, pid, verb)
    removed += _remove_mpl_folders(output) if world == 1 else 0
    if removed:
        log.info("removed %d leftover(s) of interrupted runs (temporary files, staging or "
                 "moved-aside folders) under %s", removed, output)
    return removed


def _remove_mpl_folders(output: Path) -> int:
    """Delete the ``.matplotlib-PID-XXXXXXXX`` folders (:func:`mrirecon.mpl.import_matplotlib`'s
    configuration folder on a read-only root) of processes no longer alive: one killed
    before its exit handler ran left its font cache in the output folder."""
    import re
    import shutil

    removed = 0
    for p in output.glob(".matplotlib-*-*"):
        m = re.fullmatch(r"\.matplotlib-(\d+)-\w{8}", p.name)
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed += not p.exists()
    return removed


def _old_pid(name: str) -> int | None:
    """PID of a ``.NAME.old-PID`` folder name (or ``.NAME.new-PID``: a copy from another file
    system cut short, :func:`output_files.rename_across`), else ``None``."""
    for tag in (".old-", ".new-"):
        head, sep, pid = name.rpartition(tag)
        if name.startswith(".") and sep and head and pid.isdigit():
            return int(pid)
    return None




def has_other_inputs(output: Path, names: list[str]) -> bool:
    """Whether ``output`` holds outputs (or set-aside outputs) of inputs not in ``names``: what
    ``run --prune`` deletes."""
    from mrirecon.pipeline.output_files import superseded_names

    return bool(_other_records(output, names)) or bool(set(superseded_names(output)) - set(names))


def weights_sha256(config: PipelineConfig) -> dict[str, str]:
    """``{path: sha256}`` of the learned method's weights file and its card (empty for classical
    methods and untrained models): part of what ``--resume`` compares and of ``provenance.json``."""
    from mrirecon import recon

    rc = config.reconstruct
    if rc.method in recon.available():
        return {}
    from mrirecon.io.weights import resolve_weights

    name = rc.weights
    if not name:
        from dataclasses import replace  # a method that is itself a shipped weights name

        return weights_sha256(replace(config, reconstruct=replace(rc, weights=rc.method)))
    try:
        pt = resolve_weights(name, "reconstruct.weights")
    except (FileNotFoundError, ValueError):
        return {}
    from mrirecon.training.weights import card_path

    card = card_path(pt)  # beside a link's target too, as the card is read
    files = [pt] + ([card] if card.is_file() else [])
    return {str(f): sha256(f) for f in files}


def bart_header(path: Path) -> Path | None:
    """The header ``NAME.hdr`` read with a BART array input ``NAME.cfl`` (its dimensions: a
    rewritten header, as ``bart reshape`` makes, changes the data read), else ``None``."""
    if path.suffix.lower() != ".cfl":
        return None
    from mrirecon.io.bart_cfl import cfl_paths

    hdr = cfl_paths(path)[0]
    return hdr if hdr.is_file() else None


def paired_reference(path: Path) -> Path | None:
    """The LoDoPaB-layout reference scored with ``observation_<part>_NNN.hdf5``: its
    ``ground_truth_<part>_NNN.hdf5`` beside it (``None`` for other inputs or when absent)."""
    from mrirecon.io.lodopab import reference_file_name

    name = reference_file_name(path.name)
    return path.with_name(name) if name and path.with_name(name).is_file() else None


def remove_stale_outputs(old: dict | None, result: VolumeResult, output: Path) -> None:
    """Delete what an earlier run wrote for this input and this run did not write again (a format
    no longer exported, figures of slices no longer shown, adapted weights not saved): they stayed
    under their usual names, listed nowhere."""
    from mrirecon.pipeline.output_files import remove_inside

    if not old:
        return
    now = {os.path.abspath(p) for p in [*result.outputs.values(), *result.figures]}
    root = os.path.abspath(output)
    for p in [*old.get("outputs", {}).values(), *old.get("figures", [])]:
        if os.path.abspath(p) not in now and remove_inside(p, root):
            log.info("removed %s (written for %s by an earlier run, not by this one)", p,
                     result.name)
    name, top = old.get("name") or result.name, os.path.abspath(output / "figures")
    figures = Path(os.path.abspath(output / "figures" / str(name)))
    if (name and old.get("figures") and figures.parent.is_relative_to(top) and figures.is_dir()
            and not figures.is_symlink()):
        try:  # its folder too, when no figure is left in it (--prune; png no longer exported)
            figures.rmdir()
        except OSError:  # not empty: this run's figures, or a user's files
            pass


def remove_stale_file(path: Path, why: str = "and this run writes none") -> None:
    """Delete a run file an earlier run wrote and this one does not (it described that run);
    ``why``, logged, says what this run writes instead (a run that has not ended yet may still
    write its own)."""
    if path.exists():
        path.unlink()
        log.info("removed %s: it described an earlier run, %s", path.name, why)
