"""The inputs of a run: paths, folders and glob patterns -> input files, and their output names.

:func:`expand_inputs` turns ``--input`` values (files, folders of HDF5 files, DICOM series
folders, BART ``.cfl`` arrays given by name, glob patterns; one path from Python) into input paths, :func:`output_names` gives each
its output name, and :func:`check_name_lengths` refuses names the output file system cannot
hold, all before any input is read (:func:`mrirecon.pipeline.runner.run_pipeline`).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
from pathlib import Path

from mrirecon.data.dataset import DATA_SUFFIXES, list_data_files
from mrirecon.io.atomic import NAME_MAX
from mrirecon.pipeline.run_files import RUN_FILES
from mrirecon.pipeline.schema import PipelineConfig

log = logging.getLogger("mrirecon.pipeline")


def _any_dicom(entries: list[Path]) -> bool:
    from mrirecon.io.dicom_read import looks_like_dicom  # pydicom only when a folder needs it

    return any(looks_like_dicom(f) for f in entries)


def _warn_dicom_beside(folder: Path, others: list[Path]) -> None:
    """Say that the DICOM files among ``others`` (the non-HDF5 files of an input folder whose HDF5
    files are the inputs) are not read: a series is read from a folder of its own, and a series
    loose beside HDF5 files was dropped without a word (exit 0, one input fewer)."""
    if not others:
        return
    from mrirecon.io.dicom_read import looks_like_dicom  # pydicom only when a folder needs it

    dicom = [f.name for f in others if looks_like_dicom(f)]
    if dicom:
        log.warning("input folder %s: %d DICOM file(s) beside its HDF5 files are not read (%s): a "
                    "DICOM series is read from a folder of its own; move them into a subfolder "
                    "and pass that as an input too", folder, len(dicom),
                    ", ".join(dicom[:3]) + (", ..." if len(dicom) > 3 else ""))


def input_list(inputs, who: str = "run_pipeline") -> list[str]:
    """``inputs`` as a list of path strings: one path (``"data/ct"``, ``Path(...)``) is a list
    of one (a string was taken apart character by character: "input d does not exist");
    anything else that is no path is a ``TypeError`` naming the argument."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    try:
        items = list(inputs)
    except TypeError:
        raise TypeError(f"{who}: inputs must be a path or a list of paths (files, folders or glob "
                        f"patterns), got {type(inputs).__name__}") from None
    bad = [i for i in items if not isinstance(i, (str, os.PathLike))]
    if bad:
        raise TypeError(f"{who}: inputs must be paths (str or pathlib.Path), got "
                        f"{type(bad[0]).__name__} {bad[0]!r}")
    return [os.fspath(i) for i in items]


def run_writes(path: str | Path, output: Path) -> bool:
    """Whether ``path`` is something a run into ``output`` writes: the output folder itself, a
    run file at its top level (``provenance.json``, ``report.html``, ``metrics.csv``, their
    ``.rank<r>`` forms, the ``.lock`` files) or anything inside the folders a run writes
    (:data:`~mrirecon.pipeline.run_state.RUN_FOLDERS`, ``.staging``). A user's files beside them
    (the data of ``--input 'IN/*.h5' --output IN``) are not: every one of them was dropped
    ("0 input(s)", exit 0, and ``--prune`` then deleted every earlier output)."""
    from mrirecon.pipeline.run_state import RUN_FOLDERS

    p = Path(os.path.abspath(path))
    for root in {Path(os.path.abspath(output)), Path(os.path.realpath(output))}:
        for here in {p, Path(os.path.realpath(p.parent)) / p.name}:
            if here == root:
                return True
            if root not in here.parents:
                continue
            rel = here.relative_to(root).parts
            if rel[0] in (*RUN_FOLDERS, ".staging") or (len(rel) == 1
                                                         and _RUN_FILE.fullmatch(rel[0])):
                return True
    return False


#: The files a run writes at the top of its output folder (``run_files.RUN_FILES``, the lock).
_RUN_FILE = re.compile("|".join([*(r"(\.rank\d+)?".join(map(re.escape, name.split("{suffix}")))
                                   for name in RUN_FILES), r"\.lock(\.rank\d+|\.join)?"]))


def expand_inputs(inputs: list[str], exclude: Path | None = None) -> list[Path]:
    """Files, folders (their HDF5 files, or a DICOM series folder) and glob patterns -> paths.

    ``exclude``: the run's output folder; what a pattern matches there that the run writes
    (:func:`run_writes`: ``--input 'in/*' --output in/out`` matches ``in/out``; ``--input
    'IN/*/*.h5' --output IN`` the run's own ``reconstructions/*.h5``) is never an input, and a
    pattern that matches nothing else is refused, saying so. The user's files beside those
    folders are inputs."""
    out: list[Path] = []
    for item in input_list(inputs, "expand_inputs"):
        if not item:  # "$IN" with IN unset: the working directory's files were read
            raise ValueError("input '' is an empty path (an unset shell variable?): pass the "
                             "data files, folders or glob patterns (. for the current folder; "
                             "nothing was run)")
        item = os.path.expanduser(item)
        pattern = any(c in item for c in "*?[") and not os.path.lexists(item)  # 'scan[1].h5' is a name
        matches = sorted(glob.glob(item)) if pattern else [item]
        if not matches:
            raise FileNotFoundError(f"input {item!r} matches no file")
        own = [m for m in matches if pattern and exclude is not None and run_writes(m, exclude)]
        if own and len(own) == len(matches):
            raise ValueError(
                f"input {item!r} matches only what this run writes into --output {exclude} "
                f"({len(own)} match(es): {', '.join(own[:3])}{', ...' if len(own) > 3 else ''}): "
                "a run's outputs are never its inputs; pass the data's own files or folder "
                "(nothing was run)")
        if own:
            log.info("input %r: %d match(es) that this run writes into --output %s are not "
                     "inputs: %s%s", item, len(own), exclude, ", ".join(own[:3]),
                     " ..." if len(own) > 3 else "")
        if pattern:
            matches = _without_unnamed_bart_arrays(item, matches)
        for m in matches:
            p = Path(m)
            if m in own:
                continue
            if p.is_dir():
                entries = sorted(p.iterdir())
                # a dangling link stays in: it fails by name ("cannot read the input")
                files = list_data_files(p, log=log, what="input folder",
                                        advice=f"pass them as inputs too, e.g. '{p}/*'")
                subfolders = [f.name for f in entries if f.is_dir()]
                others = [f.name for f in entries if f.is_file()]
                bart = [f.name for f in entries if f.suffix.lower() == ".cfl" and f.is_file()]
                if files:
                    out.extend(files)
                    _warn_dicom_beside(p, [f for f in entries if f.is_file() and f.suffix.lower()
                                           not in DATA_SUFFIXES])
                    if bart:
                        taken = sorted({Path(b).stem for b in bart} & {f.stem for f in files})
                        log.warning("input folder %s: %d BART array(s) beside its HDF5 files are "
                                    "not read (%s): pass BART k-space by name (--input %s)%s",
                                    p, len(bart), ", ".join(bart[:3]) + (", ..." if len(bart) > 3
                                                                         else ""), p / "NAME.cfl",
                                    f", in a run of its own (another --output) for {taken[0]}.cfl,"
                                    f" whose outputs would take the name {taken[0]} of "
                                    f"{taken[0]}'s HDF5 file's" if taken else "")
                elif bart and not _any_dicom(entries):
                    # sens.cfl, pattern.cfl or reco.cfl would be read as k-space: never guessed
                    raise FileNotFoundError(
                        f"input folder {p} holds BART arrays ({', '.join(bart[:5])}"
                        f"{', ...' if len(bart) > 5 else ''}) and no HDF5 or DICOM files: a "
                        "folder's BART arrays are not inputs (coil maps, patterns and images "
                        f"look like k-space to a reader); pass the k-space array by name: "
                        f"--input {p / 'NAME.cfl'}")
                elif subfolders and not _any_dicom(entries):
                    # a study folder (README, DICOMDIR, series in subfolders) is no series itself
                    raise FileNotFoundError(
                        f"input folder {p} holds no HDF5 or DICOM files, only "
                        + (f"{len(others)} other file(s) ({', '.join(others[:3])}) and " if others else "")
                        + f"subfolders ({', '.join(subfolders[:5])}), which are not searched: pass "
                        f"them as inputs, e.g. '{p}/*'")
                elif others:
                    out.append(p)  # a DICOM series folder
                else:
                    raise FileNotFoundError(f"input folder {p} holds no HDF5 or DICOM files")
            elif p.is_file():
                if p.suffix.lower() == ".hdr" and p.with_suffix(".cfl").is_file():
                    p = p.with_suffix(".cfl")  # one BART array: NAME.hdr and NAME.cfl ('scan.*')
                out.append(p)
            elif p.exists():  # a FIFO, socket or device would block or never end: never open it
                raise ValueError(f"input {p} is not a regular file or folder (FIFO, socket or "
                                 "device); pass the data files themselves")
            elif (cfl := p.with_name(p.name + ".cfl")).is_file():
                out.append(cfl)  # BART's tools name an array NAME: NAME.hdr + NAME.cfl
            elif p.is_symlink():  # the link itself is there: was "does not exist"
                raise FileNotFoundError(f"input {p} is a symbolic link {_broken_link(p)}; point it "
                                        "at the data (or pass the data's own path)")
            elif p.with_name(p.name + ".hdr").is_file():  # half a BART array: say which half
                raise FileNotFoundError(f"input {p}: {p.name}.hdr is there but {p.name}.cfl (the "
                                        "array's data) is missing: a BART array is NAME.hdr "
                                        "beside NAME.cfl")
            else:
                raise FileNotFoundError(f"input {p} does not exist")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if exclude is not None:
        _refuse_what_the_run_writes(unique, exclude)
    _check_dicom_slices(unique)
    return unique


def _broken_link(p: Path) -> str:
    """What is wrong with the symbolic link ``p`` that leads to nothing readable: a loop (``a ->
    b -> a``, or one through too many links) or a target that does not exist."""
    try:
        p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        return "loop (it leads back to itself)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "loop (it leads back to itself)"
    return f"to {os.readlink(p)}, which does not exist"


def _without_unnamed_bart_arrays(item: str, matches: list[str]) -> list[str]:
    """``matches`` of the pattern ``item`` without the BART arrays (``.cfl`` / ``.hdr``) when its
    last part names no file but only wildcards and bracket classes (``'g2/*'``, ``'g2/*.*'``,
    ``'g2/[a-z]*'``): such a pattern is a
    folder's listing, and a folder's BART arrays are not inputs (``'g2/*'`` reconstructed coil
    maps and coil images as k-space, exit 0). ``'g2/ksp*'``, ``'g2/*.cfl'`` name what they take.
    Refused when nothing else matched, else said."""
    last = re.sub(r"\[[^\]]*\]", "", os.path.basename(item))  # a bracket class names no file
    if last.translate(str.maketrans("", "", "*?.")):
        return matches
    bart = [m for m in matches if Path(m).suffix.lower() in (".cfl", ".hdr")]
    if not bart:
        return matches
    names = sorted({Path(m).with_suffix(".cfl").name for m in bart})
    text = (f"input {item!r} matches BART arrays ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''}), which a pattern of wildcards alone does not "
            "take (coil maps, patterns and images look like k-space to a reader): name the "
            f"k-space array (--input {Path(os.path.dirname(item) or '.') / 'NAME.cfl'}), or "
            f"'{Path(os.path.dirname(item) or '.') / '*.cfl'}' for every array")
    rest = [m for m in matches if m not in bart]
    if not rest:
        raise FileNotFoundError(text + " (nothing was run)")
    log.warning("%s; they are not inputs", text)
    return rest


def _refuse_what_the_run_writes(files: list[Path], output: Path) -> None:
    """Refuse, before any work, an input that lies where the run into ``output`` writes: one
    that :func:`run_writes` names (given by its path, not only matched by a pattern), or one
    inside a folder the run writes into once links are resolved (``OUT/reconstructions`` a link
    to the data's folder), where each input's outputs go. ``cd study; mrirecon run ct_fbp
    --input dicom/series1 --output .`` replaced the scanner's series by the export, and
    ``--input study/reconstructions/scan.h5 --output study`` the k-space by its reconstruction
    (exit 0). The output folder itself as an input (a DICOM series folder) is not refused: the
    run writes beside its files, never over them."""
    from mrirecon.pipeline.run_state import RUN_FOLDERS

    roots = {Path(os.path.abspath(output)), Path(os.path.realpath(output))}
    folders = [(sub, Path(os.path.realpath(Path(output) / sub))) for sub in (*RUN_FOLDERS,
                                                                              ".staging")]
    for p in files:
        here, real = Path(os.path.abspath(p)), Path(os.path.realpath(p))
        if here in roots or real in roots:
            continue
        if run_writes(p, output):
            ways = (here, real, Path(os.path.realpath(here.parent)) / here.name)
            place = next((Path(output) / way.relative_to(root).parts[0] for way in ways
                          for root in roots if root in way.parents), Path(output))
        else:
            place = next((Path(output) / sub for sub, folder in folders
                          if real == folder or folder in real.parents), None)
        if place is not None:
            raise ValueError(
                f"input {p} lies in {place}{os.sep if place.name in RUN_FOLDERS else ''}, which "
                f"this run into --output {output} writes: the input would be overwritten by (or "
                "moved aside for) the run's outputs; move the data out of that folder, or pass "
                "another --output (nothing was run)")


def _check_dicom_slices(files: list[Path]) -> None:
    """Say once that inputs which are DICOM slice files (``'SERIES/*.dcm'``, or the shell's
    expansion of it) are no inputs: a series is read from its folder. When they are all the
    inputs, the run is refused naming the folders (each slice failed with "... is not a
    folder"); beside other inputs they fail one by one, naming their folder."""
    maybe = [p for p in files if p.suffix.lower() not in DATA_SUFFIXES and p.is_file()]
    if not maybe:
        return
    from mrirecon.io.dicom_read import looks_like_dicom  # pydicom only when an input needs it

    folders: dict[Path, list[str]] = {}
    for p in maybe:
        if looks_like_dicom(p):
            folders.setdefault(p.parent, []).append(p.name)
    if not folders:
        return
    count = sum(len(names) for names in folders.values())
    if count == 1:
        from mrirecon.io.dicom_files import not_a_series_folder

        folder, (name,) = next(iter(folders.items()))
        text = f"input {not_a_series_folder(folder / name)}"
        if len(files) == 1:
            raise ValueError(text + " (nothing was run)")
        log.warning("%s; it fails as an input", text)
        return
    shown = "; ".join(f"{folder}: {len(names)} ({', '.join(names[:3])}"
                      f"{', ...' if len(names) > 3 else ''})"
                      for folder, names in list(folders.items())[:5])
    text = (f"{count} input(s) are DICOM slice files, one file per slice of a series ({shown}"
            f"{'; ...' if len(folders) > 5 else ''}): a DICOM series is read from its folder; "
            f"pass the folder instead, e.g. --input {next(iter(folders))}")
    if count == len(files):
        raise ValueError(text + " (nothing was run)")
    log.warning("%s; each of them fails as an input", text)


def output_names(files: list[Path]) -> list[str]:
    """One output name per input: its path relative to the inputs' common folder, without the
    file suffix (``a/same.h5``, ``b/same.h5`` -> ``a/same``, ``b/same``; a single folder's files
    -> their stems). Two inputs that would still share a name are refused before any work, and
    so are names that differ only in case (``T1.h5``, ``t1.h5`` from a case-sensitive share):
    on the case-insensitive disks of macOS and Windows the second overwrote the first's outputs
    (compared case-folded: ``str.casefold``)."""
    if not files:
        return []
    absolute = [Path(os.path.abspath(p)) for p in files]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    names = []
    for p in absolute:
        rel = p.relative_to(root)
        rel = rel if p.is_dir() else rel.with_name(p.stem)
        names.append(rel.as_posix())
    seen: dict[str, tuple[str, Path]] = {}
    for name, p in zip(names, files):
        key = name.casefold()
        if key in seen:
            first, other = seen[key]
            named = (f"{name!r}" if first == name else f"{first!r} and {name!r} (one name on a "
                     "case-insensitive disk: macOS, Windows)")
            raise ValueError(f"inputs {other} and {p} would both write outputs named {named}; "
                             "rename one or run them separately")
        seen[key] = (name, p)
    return names


def check_name_lengths(config: PipelineConfig, files: list[Path], names: list[str],
                       output: Path) -> None:
    """Refuse, before any work, an input whose outputs would have a file name longer than the
    output folder's file system allows (the input's name plus ``.nii.gz``, ``.json`` of its
    status record, ...): each failed with "File name too long" after its reconstruction."""
    suffixes = [".json"]  # the status record, always
    suffixes += [s for fmt, s in (("hdf5", ".h5"), ("nifti", ".nii.gz")) if fmt in config.export.formats]
    if config.adapt.enabled and config.adapt.save_weights:
        suffixes += [".yaml"]
    longest = max(suffixes, key=len)
    pathconf = getattr(os, "pathconf", None)  # Unix-only: every run died on Windows without it
    try:
        limit = NAME_MAX if pathconf is None else pathconf(output, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    for path, name in zip(files, names):
        last = name.rsplit("/", 1)[-1] + longest
        if len(os.fsencode(last)) > limit:
            raise ValueError(f"input {path}: its outputs would be named {last[:24]}...{last[-24:]} "
                             f"({len(os.fsencode(last))} bytes), longer than the {limit} bytes a "
                             f"file name may have in {output}; rename the input (shorter)")
