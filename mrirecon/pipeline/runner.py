"""The pipeline runner: inputs -> per-file streaming through the stages -> outputs, report.

Each input file is processed slice by slice (only the reconstructed, cropped slices of the
current volume are kept), its outputs are written atomically, and a small status record marks it
done so ``resume`` skips it. A failing file is logged and recorded; the others still run.
Under ``torchrun`` the inputs are sharded across ranks (same command, more processes).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import logging
import os
import platform
import subprocess
import time
import traceback
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from mrirecon.core.device import resolve_device
from mrirecon.io.atomic import atomic_write_text
from mrirecon.core.config import to_dict
from mrirecon.pipeline.inputs import (INPUT_SUFFIXES, _warn_dicom_beside,  # noqa: F401
                                      check_name_lengths, expand_inputs, input_list, output_names)
from mrirecon.pipeline.output_files import (SUPERSEDED, commit_outputs, drop_superseded,
                                            few, fingerprint, moved_by_commit, set_aside)
from mrirecon.pipeline.report import VolumeResult, display_name, write_report
from mrirecon.pipeline.run_state import (check_other_inputs, lock_output, paired_reference,
                                         previous_run, read_status, remove_orphans,
                                         remove_other_inputs,
                                         remove_stale_file, remove_stale_outputs,
                                         sha256, status_path, status_record, weights_sha256)
from mrirecon.pipeline.schema import PipelineConfig

log = logging.getLogger("mrirecon.pipeline")


def config_sha256(config: PipelineConfig) -> str:
    """Checksum of the effective configuration (after overrides): what ``--resume`` compares."""
    text = json.dumps(to_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    """The package's git commit for the provenance (once per process: a subprocess)."""
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def _versions_cached() -> tuple[tuple[str, str], ...]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("mrirecon", "torch", "numpy", "h5py", "pydicom", "nibabel", "sigpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return tuple(out.items())


def _versions() -> dict[str, str]:
    """Versions for the provenance; read once per process (the package metadata scan cost
    ~70 ms per run, paid per file by a script that runs one file at a time)."""
    return dict(_versions_cached())


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library, looked up once (``find_library`` runs ``ldconfig``: ~3.5 ms a call,
    paid twice per slice before)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_memory() -> bool:
    """Return the heap's free pages to the OS (``malloc_trim(0)``); call between slices.

    glibc keeps freed per-slice buffers (tens of MB) in a fragmented heap, so peak RSS grew
    with the number of slices (measured: 654 MiB for 4 slices, 2261 MiB for 40 of
    15 x 640 x 368). Trimming once per slice returns them; allocations inside a slice still
    reuse the heap. (A fixed ``M_MMAP_THRESHOLD`` of 1 MiB, used before, bounded memory too
    but made every large tensor a fresh mmap with page faults on first touch: E2E-VarNet at
    640 x 320 took 2.1x the CPU time.) No-op off glibc.
    """
    libc = _libc()
    try:
        return bool(libc.malloc_trim(0)) if libc is not None else False
    except AttributeError:
        return False


def volume_stem(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _env_int(name: str, default: int) -> int:
    """An integer environment variable (``RANK``, ``WORLD_SIZE``); an error names it."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:  # was "invalid literal for int() with base 10: 'x'", naming no variable
        raise ValueError(f"{name} in the environment must be an integer, got {text!r}") from None


def run_pipeline(config: PipelineConfig, inputs: list[str] | str | os.PathLike,
                 output: str | Path, *, resume: bool = False, device: str | None = None,
                 progress: bool = True, config_text: str = "", rank: int | None = None,
                 world: int | None = None, replace_others: bool = False,
                 config_warnings: list[str] | None = None) -> int:
    """Run ``config`` on ``inputs``, writing under ``output``; returns the exit code (0 = all ok).

    ``rank``/``world`` default to the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``). The
    output folder is locked for the run (per rank): a second run into it is refused. An output
    folder that holds outputs of inputs not in ``inputs`` is refused, or, with
    ``replace_others`` (``run --prune``; the demo, which owns its folders), those outputs are
    deleted. ``config_warnings`` (the config's, logged at load) go into ``provenance.json``;
    without them (a call from Python) the settings that change nothing are judged here, as at
    load. ``config_text`` (the report's Configuration) defaults to the config as YAML.
    """
    from mrirecon.pipeline.validate import tables_of_the_method, validate_pipeline

    if not isinstance(config, PipelineConfig):  # a dict: AttributeError deep inside
        raise TypeError(f"run_pipeline: config must be a PipelineConfig, got "
                        f"{type(config).__name__}: load one with mrirecon.pipeline.definitions."
                        "load_pipeline(name_or_path, overrides)[0], or build it from the "
                        "dataclasses of mrirecon.pipeline.schema")
    inputs = input_list(inputs)
    # a method changed in code after loading: its tables dropped, with a warning in the record
    config, dropped = tables_of_the_method(config)
    config = validate_pipeline(config)  # also for configs built in code, before any input is read
    if config_warnings is None:
        config_warnings = _code_config_warnings(config)
    config_warnings = [*dropped, *config_warnings]
    for msg in dropped:
        log.warning("%s", msg)
    if not config_text:
        import yaml

        config_text = yaml.safe_dump(to_dict(config), sort_keys=False)
    output = Path(output)
    if world is None:
        world = _env_int("WORLD_SIZE", 1)
        if rank is None and world > 1 and "RANK" not in os.environ:
            # WORLD_SIZE=2 alone ran as rank 0: half of the inputs processed, exit 0
            raise ValueError(f"WORLD_SIZE={world} is set in the environment but RANK is not (torchrun "
                             "sets both): this process would take only its share of the inputs; "
                             "unset WORLD_SIZE, or set RANK")
    rank = _env_int("RANK", 0) if rank is None else rank
    if world < 1 or not 0 <= rank < world:  # RANK=3 WORLD_SIZE=2 left in the environment ran 0 files
        raise ValueError(f"rank {rank} of world size {world} (RANK / WORLD_SIZE in the environment?): "
                         "need 0 <= RANK < WORLD_SIZE")
    created = not output.exists()
    check_output(output)
    check_run_files(output, "" if world == 1 else f".rank{rank}")
    lock = lock_output(output, rank, world)
    try:
        return _run_locked(config, inputs, output, resume=resume, device=device, progress=progress,
                           config_text=config_text, rank=rank, world=world,
                           replace_others=replace_others, config_warnings=list(config_warnings))
    except BaseException:
        if created and all(p.name in lock.names for p in output.iterdir()):
            for name in lock.names:  # a refused run leaves no empty folder behind
                (output / name).unlink(missing_ok=True)
            output.rmdir()
        raise
    finally:
        lock.close()


def _code_config_warnings(config: PipelineConfig) -> list[str]:
    """The settings of a config passed from Python (without the warnings of
    ``load_pipeline_warned``, which the CLI hands over) that change nothing, logged
    (:func:`mrirecon.pipeline.inert.inert_warnings`): those that differ from the shipped
    pipeline it was loaded from, or, for a file of one's own or a config built in code, from
    the schema's defaults, as ``mrirecon run`` judges them."""
    from mrirecon.pipeline.definitions import PIPELINES, load_pipeline
    from mrirecon.pipeline.inert import inert_warnings

    source, base = config.pipeline_file, None
    shipped = source is not None and Path(source).parent == PIPELINES.resolve()
    if shipped:
        base = load_pipeline(source)[0]
    origin = (f"the config passed to run_pipeline (loaded from {source})" if shipped
              else source or "the config passed to run_pipeline")
    warned = inert_warnings(config, [], origin, shipped, base)
    for msg in warned:
        log.warning("%s", msg)
    return warned


def _run_locked(config: PipelineConfig, inputs: list[str], output: Path, *, resume: bool,
                device: str | None, progress: bool, config_text: str, rank: int, world: int,
                replace_others: bool = False, config_warnings: list[str] = ()) -> int:
    """:func:`run_pipeline` while it holds the output folder's lock."""
    import shutil

    from mrirecon.pipeline.volume import process_volume, warn_unscored

    release_memory()
    dev = resolve_device(device or config.device)
    files = expand_inputs(inputs, exclude=output)
    names = output_names(files)
    check_name_lengths(config, files, names, output)
    mine = list(zip(files, names))[rank::world]
    log.info("pipeline %s (%s): %d input(s), %d on rank %d/%d, device %s", config.name,
             config.pipeline_file or "a config built in code", len(files), len(mine), rank,
             world, dev)
    t_start = time.time()
    if replace_others:
        pruned = remove_other_inputs(output, names)
        if pruned:
            log.info("pruned the outputs of %d earlier input(s) under names this run does not "
                     "write: %s%s", len(pruned),
                     ", ".join(pruned[:5]), " ..." if len(pruned) > 5 else "")
    else:
        check_other_inputs(output, names, resume=resume, files=files)
    if resume:
        remove_orphans(output, before=t_start)
    model = _load_model(config, dev)
    weights = weights_sha256(config)
    # replaced weights (same path, other content) must not count as the same run
    config_hash = config_sha256(config) if not weights else hashlib.sha256(
        (config_sha256(config) + json.dumps(weights, sort_keys=True)).encode()).hexdigest()
    results: list[VolumeResult] = []
    hashes: dict[str, str] = {}
    references: dict[str, str] = {}
    staging = output / ".staging" / f"{rank}-{os.getpid()}"
    for path, name in _progress(mine, progress, "files"):
        status_file = status_path(output, name)
        result = VolumeResult(input=str(path), name=name)
        t0 = time.perf_counter()
        try:
            input_hash = hashes[str(path)] = sha256(path)
            ref = paired_reference(path)
            if ref is not None:  # a replaced reference changes the metrics: part of the input
                references[str(ref)] = sha256(ref)
                input_hash = hashlib.sha256((input_hash + references[str(ref)]).encode()).hexdigest()
        except OSError as e:
            hashes.setdefault(str(path), f"unreadable: {e.strerror or e}")
            result.status, result.error = "failed", f"{path}: cannot read the input ({e.strerror or e})"
            log.error("failed on %s: %s", path, result.error)
            _set_aside(read_status(status_file, output), status_file, output, result)
            results.append(result)
            continue
        old = read_status(status_file, output)
        prev = previous_run(old, path, input_hash, config_hash, output) if resume else None
        if prev is not None:
            log.info("skipping %s (finished in an earlier run)", path)
            known = {f.name for f in fields(VolumeResult)}
            results.append(VolumeResult(**{**{k: v for k, v in prev.items() if k in known},
                                           "status": "skipped"}))
            continue
        stage = staging / "v"
        try:
            shutil.rmtree(stage, ignore_errors=True)
            process_volume(config, path, stage, result, model=model, device=dev, progress=progress,
                           name=name)
            commit_outputs(stage, output, result)
            result.status = "ok"
            remove_stale_outputs(old, result, output)
            drop_superseded(output, name, "this run wrote it again")
            written = fingerprint([*result.outputs.values(), *result.figures], output)
        except Exception as e:  # one bad file must not stop the batch
            result.status = "failed"
            result.error = f"{type(e).__name__}: {e}"
            log.error("failed on %s: %s", path, result.error)
            log.debug("%s", traceback.format_exc())
            placed = moved_by_commit(stage, output, [*result.outputs.values(), *result.figures])
            result.metrics, result.outputs, result.figures = {}, {}, []
            _set_aside(old, status_file, output, result, placed)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result.seconds = time.perf_counter() - t0
        results.append(result)
        if result.status == "ok":
            record = status_record(result, output, input_sha256=input_hash,
                                   config_sha256=config_hash, input_abspath=os.path.abspath(path),
                                   output_files=written)
            atomic_write_text(status_file, json.dumps(record, indent=1))
    try:
        (output / ".staging").rmdir()  # only when empty (no other rank still working)
    except OSError:
        pass
    warn_unscored(config, results)  # an input without a reference among scored ones
    _write_run_files(config, output, files, results, t_start, rank, world, config_text, dev,
                     hashes, references=references, weights=weights, config_warnings=config_warnings)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        log.error("%d of %d file(s) failed", len(failed), len(results))
    return 1 if failed else 0


def _set_aside(old: dict | None, status_file: Path, output: Path, result: VolumeResult,
               placed: list[str] = ()) -> None:
    """A failed input keeps no outputs under its usual names (:func:`output_files.set_aside`):
    an earlier run's stayed as if current (the reconstruction of k-space since zeroed, beside
    ``metrics.csv`` listing the input as failed); the warning names what moved."""
    try:
        moved = set_aside(old, status_file, output, result.name, result.error, placed)
    except OSError as e:
        moved = []
        log.error("%s: could not set aside the outputs of %s (%s)", output, result.name, e)
    if moved:
        result.warn(f"{display_name(result)} failed, so the outputs under its name (written "
                    "before this failure) were moved out of the way, to "
                    f"{output / SUPERSEDED}, rather than stand as this run's: "
                    + few(moved, 5))


def check_output(output: Path) -> None:
    """The output folder exists (created) and is writable, or a user error naming it."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file, not a folder; pass a folder path")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--output {output}: cannot create the folder ({e.strerror or e}); "
                         "pass a writable location") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise ValueError(f"--output {output} is not writable; pass a writable folder")


def check_run_files(output: Path, suffix: str = "") -> None:
    """Nothing of another kind where the run files go (``provenance.json``, ``report.html``,
    ``metrics.csv``, ``suffix`` ``.rankN`` when distributed; the ``.status`` folder), or a user
    error before any input is read. A folder at ``report.html`` failed the run after every input
    was processed, with a bare "[Errno 21] Is a directory" and no ``metrics.csv``."""
    for name, label in ((f"provenance{suffix}.json", "provenance record"),
                        (f"report{suffix}.html", "report"), (f"metrics{suffix}.csv", "metric table"),
                        (".status", "status records' folder"),
                        (SUPERSEDED, "folder of the outputs of failed inputs")):
        path, folder = output / name, name in (".status", SUPERSEDED)
        if path.exists() and path.is_dir() != folder:
            what = "a folder" if path.is_dir() else "a file"
            raise ValueError(f"--output {output}: {what} named {name} is in the way of the run's "
                             f"{label}; move it away (nothing was run)")


def _load_model(config: PipelineConfig, device: str):
    from mrirecon import recon

    method = config.reconstruct.method
    if method in recon.available():
        return None
    from mrirecon.models.registry import available_models, build_model

    if method not in available_models():
        raise ValueError(
            f"reconstruct.method: unknown method {method!r}; classical: {', '.join(recon.available())}; "
            f"learned: {', '.join(available_models())}"
        )
    if config.reconstruct.weights:  # shipped name, .pt with a card, state dict or fastMRI VarNet
        from mrirecon.training.weights import load_model

        model = load_model(method, config.reconstruct.params, config.reconstruct.weights)
    else:
        log.warning("reconstruct.weights is empty: %s runs with untrained weights", method)
        model = build_model(method, **config.reconstruct.params)
    from mrirecon.models.inference import ready_for_inference
    from mrirecon.pipeline.param_tables import check_model_table

    check_model_table(model, config.reconstruct)  # each entry's settings change per slice
    return ready_for_inference(model, device)


def _progress(items, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not enabled, leave=False)


def _write_run_files(config, output: Path, files, results, t_start, rank, world, config_text, dev,
                     hashes: dict[str, str] | None = None, *, references: dict[str, str] | None = None,
                     weights: dict[str, str] | None = None, config_warnings: list[str] = ()):
    suffix = "" if world == 1 else f".rank{rank}"
    hashes = hashes or {}
    provenance = {
        "pipeline": config.name,
        "pipeline_file": config.pipeline_file,  # the file that ran (None: built in code)
        "config": to_dict(config),
        "config_sha256": config_sha256(config),
        "config_warnings": list(config_warnings),  # settings that change nothing (pipeline/inert.py)
        "device": dev,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "seconds": round(time.time() - t_start, 3),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "rank": rank,
        "world_size": world,
        "inputs": {str(p): hashes.get(str(p)) or _sha256_or_error(p) for p in files[rank::world]},
        "references": references or {},
        "weights": weights or {},
        "files": [asdict(r) for r in results],
    }
    atomic_write_text(output / f"provenance{suffix}.json", json.dumps(provenance, indent=1))
    _remove_other_worlds_run_files(output, rank, world)
    ok = [r for r in results if r.metrics and r.status in ("ok", "skipped")]
    summary = {}
    for m in sorted({k for r in ok for k in r.metrics}):
        vals = np.array([r.metrics[m] for r in ok if m in r.metrics])
        summary[m] = (float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
    if config.report.enabled:
        write_report(output / f"report{suffix}.html", title=f"mrirecon — {config.name}",
                     config_text=config_text, results=results, summary=summary,
                     config_warnings=list(config_warnings))
    else:
        remove_stale_file(output / f"report{suffix}.html")
    if not ok:  # an earlier run's table must not stand for this one
        remove_stale_file(output / f"metrics{suffix}.csv")
    else:
        metric_names = sorted(summary)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", *metric_names])
        for r in ok:
            writer.writerow([csv_safe(display_name(r))] +
                            [f"{r.metrics.get(m, float('nan')):.6g}" for m in metric_names])
        atomic_write_text(output / f"metrics{suffix}.csv", buf.getvalue())


#: The run files a run writes, ``{suffix}`` ``""`` (plain) or ``.rank<r>`` (distributed).
RUN_FILES = ("provenance{suffix}.json", "report{suffix}.html", "metrics{suffix}.csv")


def _remove_other_worlds_run_files(output: Path, rank: int, world: int) -> None:
    """Delete the run files of runs of another world size, which describe outputs this run has
    replaced (each beside the others, exit 0: a plain run's metrics.csv said cg_sense beside
    rank files saying zero_filled for the same files, and a 3-rank run's ``.rank2`` files
    listed an input a 2-rank resume also listed). A plain run removes every ``.rank<r>`` file;
    rank 0 of a distributed run removes the plain ones and those of ranks >= its world size.
    The output lock keeps runs of another world size out while this one runs."""
    if world > 1 and rank != 0:
        return
    names = []
    for pattern in RUN_FILES:
        stem, ext = pattern.split("{suffix}")
        for p in output.glob(pattern.format(suffix=".rank*")):
            m = re.fullmatch(re.escape(stem) + r"\.rank(\d+)" + re.escape(ext), p.name)
            if m and (world == 1 or int(m.group(1)) >= world):
                names.append(p.name)
        if world > 1:
            names.append(pattern.format(suffix=""))
    for name in names:
        remove_stale_file(output / name)


def _sha256_or_error(path: Path) -> str:
    try:
        return sha256(path)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"


def csv_safe(text: str) -> str:
    """A cell that spreadsheets show as text: a leading ``= + - @`` or tab/CR (a formula in
    Excel/LibreOffice) gets a ``'`` prefix; control characters become ``?``."""
    text = "".join(c if c >= " " or c == "\t" else "?" for c in str(text))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
