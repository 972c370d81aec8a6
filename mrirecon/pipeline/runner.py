"""The pipeline runner: inputs -> per-file streaming through the stages -> outputs, report.

Each input file is processed slice by slice (only the reconstructed, cropped slices of the
current volume are kept), its outputs are written atomically, and a small status record marks it
done so ``resume`` skips it. A failing file is logged and recorded; the others still run.
Under ``torchrun`` the inputs are sharded across ranks (same command, more processes).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from mrirecon.core.config import to_dict
from mrirecon.core.device import resolve_device
from mrirecon.core.memory import release_memory
from mrirecon.io.atomic import atomic_write_text, file_in_the_way
from mrirecon.io.errors import disk_error
from mrirecon.pipeline.inputs import (check_name_lengths, expand_inputs, input_list,
                                      output_names)
from mrirecon.pipeline.output_files import (SUPERSEDED, commit_outputs, drop_superseded,
                                            few, fingerprint, moved_by_commit, set_aside)
from mrirecon.pipeline.report import VolumeResult, display_name
from mrirecon.pipeline.run_files import RunFiles, config_sha256
from mrirecon.pipeline.run_state import (bart_header, check_other_inputs, file_state,
                                         has_other_inputs, locked_output, paired_reference, previous_run, read_status,
                                         remove_orphans, remove_other_inputs,
                                         remove_stale_outputs, sha256, status_path, status_record,
                                         weights_sha256)
from mrirecon.pipeline.schema import PipelineConfig
from mrirecon.threads import env_int, rank_and_world

log = logging.getLogger("mrirecon.pipeline")


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
    load; the warnings about the model itself (untrained weights, no card, no training range)
    join them (:func:`_load_model`). ``config_text`` (the report's Configuration) defaults to
    the config as YAML.
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
    loaded = config.load_warnings  # validated, its notes logged, by load_pipeline: unchanged,
    said = loaded is not None and loaded[0] == config_sha256(config)  # not logged again
    # also for configs built in code, before any input is read
    config = validate_pipeline(config, quiet=said)
    if config_warnings is None and loaded is not None and loaded[0] == config_sha256(config):
        config_warnings = list(loaded[1])  # logged by load_pipeline, as loaded: not again
    elif config_warnings is None:
        config_warnings = _code_config_warnings(config)
    config_warnings = [*dropped, *config_warnings]
    for msg in dropped:
        log.warning("%s", msg)
    if not config_text:
        import yaml

        config_text = yaml.safe_dump(to_dict(config), sort_keys=False)
    output = Path(output)
    if rank is None and world is None:  # the environment's, by the rule train uses too
        rank, world = rank_and_world()
    elif rank is None:  # a world given in code: only the rank from the environment
        rank = env_int("RANK", 0)
    elif world is None:
        world = env_int("WORLD_SIZE", 1)
    if world < 1 or not 0 <= rank < world:  # RANK=3 WORLD_SIZE=2 left in the environment ran 0 files
        raise ValueError(f"rank {rank} of world size {world} (RANK / WORLD_SIZE in the environment?): "
                         "need 0 <= RANK < WORLD_SIZE")
    def prepare(folder: Path) -> None:  # checked (and created) before the lock is taken
        check_output(folder)
        check_run_files(folder, "" if world == 1 else f".rank{rank}")

    # ranks of one job (one config) join; a refused run leaves no empty folder behind: neither
    # the output folder nor the parents check_output created for it (locked_output)
    with locked_output(output, prepare=prepare, rank=rank, world=world, job=config_sha256(config)):
        return _run_locked(config, inputs, output, resume=resume, device=device,
                           progress=progress, config_text=config_text, rank=rank, world=world,
                           replace_others=replace_others, config_warnings=list(config_warnings))


def _code_config_warnings(config: PipelineConfig) -> list[str]:
    """The settings of a config passed from Python (without the warnings of
    ``load_pipeline_warned``, which the CLI hands over) that change nothing, logged
    (:func:`mrirecon.pipeline.inert.inert_warnings`): those that differ from the shipped
    pipeline it was loaded from, or, for a file of one's own or a config built in code, from
    the schema's defaults, as ``mrirecon run`` judges them."""
    from mrirecon.pipeline.definitions import is_shipped_pipeline, load_pipeline
    from mrirecon.pipeline.inert import inert_warnings

    source, base = config.pipeline_file, None
    shipped = source is not None and is_shipped_pipeline(source)
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
    """:func:`run_pipeline` while it holds the output folder's lock.

    The run files never describe outputs that are no longer there: before this run first
    changes the output folder (a commit, a set-aside, a prune) they are replaced by this run's,
    marked ``"status": "running"`` (:meth:`RunFiles.invalidate`; a SIGKILL cannot be caught);
    a run that stops early (Ctrl-C, SIGTERM, an error) writes them for what finished, marked
    ``"interrupted"``. An interrupted rerun left the earlier run's ``metrics.csv``, report and
    provenance describing images it had replaced (32.2 dB listed for a 24.1 dB image)."""
    release_memory()
    dev = resolve_device(device or config.device)
    files = expand_inputs(inputs, exclude=output)
    if not files:  # ran with "0 input(s)", exit 0 and a "complete" provenance (--prune: emptied)
        raise ValueError(f"no inputs (inputs={inputs!r}): pass the data files, folders or glob "
                         "patterns to reconstruct (nothing was run)")
    names = output_names(files)
    check_name_lengths(config, files, names, output)
    mine = list(zip(files, names))[rank::world]
    log.info("pipeline %s (%s): %d input(s), %d on rank %d/%d, device %s", config.name,
             config.pipeline_file or "a config built in code", len(files), len(mine), rank,
             world, dev)
    t_start = time.time()
    if not replace_others:
        check_other_inputs(output, names, resume=resume, files=files)
    run = RunFiles(config, output, files, t_start, rank, world, config_text, dev,
                   list(config_warnings))
    try:
        if replace_others and has_other_inputs(output, names):
            run.invalidate()
            pruned = remove_other_inputs(output, names)
            if pruned:
                log.info("pruned the outputs of %d earlier input(s) under names this run does "
                         "not write: %s%s", len(pruned),
                         ", ".join(pruned[:5]), " ..." if len(pruned) > 5 else "")
        # every run: a killed one's leftovers stayed after a plain rerun (only --resume did this)
        remove_orphans(output, before=t_start, rank=rank, world=world)
        _run_inputs(config, mine, output, run, resume=resume, device=dev, progress=progress)
        from mrirecon.pipeline.volume import warn_unscored

        warn_unscored(config, run.results)  # an input without a reference among scored ones
    except BaseException as err:
        run.stopped(err)
        raise
    run.write("complete")
    failed = [r for r in run.results if r.status == "failed"]
    from mrirecon.pipeline.job_end import wait_for_other_ranks

    wait_for_other_ranks(1 if failed else 0, world)  # torchrun would stop them at our exit 1
    if failed:
        done = len(run.results) - len(failed)
        log.error("%d of %d file(s) failed%s", len(failed), len(run.results),
                  f"; the other {done} finished" if done else
                  f": none finished, so no metrics{'' if world == 1 else f'.rank{rank}'}.csv was "
                  "written (the report lists the failures)")
    return 1 if failed else 0


class _InputProblem(Exception):
    """An input's failure whose message is the whole error (no exception type before it)."""


def _gone(path: Path) -> str:
    return f"{path}: no such file (deleted or moved after the run listed its inputs?)"


def _changed(paths: tuple[Path | None, ...], state: tuple) -> str:
    """The error for an input (or a file read with it: its paired reference, a BART array's
    header) whose size, modification time or inode differ from ``state`` (taken before it was
    read); ``""`` when they do not."""
    for p, before in zip(paths, state):
        if p is not None and file_state(p) != before:
            return (f"{p} changed while it was being read (overwritten or replaced?); run again "
                    "(none of this input's outputs were written)")
    return ""


def _input_error(err: Exception, path: Path, paths: tuple[Path | None, ...], state: tuple,
                 stage: Path, output: Path) -> str:
    """The error of an input that failed with ``err``: a file deleted or overwritten meanwhile
    is said to be so (h5py's raw "errno = 2" text, or a mask check blaming the data layout for
    a volume mixing old and new slices), a full disk names the output file (not its staged
    copy)."""
    if not os.path.lexists(path):
        return _gone(path)
    changed = _changed(paths, state)
    if changed:
        return changed
    if isinstance(err, _InputProblem):
        return str(err)
    disk = disk_error(err)
    if disk:
        return disk.replace(str(stage), str(output))
    return f"{type(err).__name__}: {err}"


def _run_inputs(config: PipelineConfig, mine: list[tuple[Path, str]], output: Path,
                run: RunFiles, *, resume: bool, device: str, progress: bool) -> None:
    """Process this rank's inputs (``(path, output name)``), appending to ``run.results``."""
    rank = run.rank
    model, said = _load_model(config, device)
    run.config_warnings.extend(said)  # the model's own: provenance.json and the report's head
    weights = run.weights = weights_sha256(config)
    # replaced weights (same path, other content) must not count as the same run
    config_hash = config_sha256(config) if not weights else hashlib.sha256(
        (config_sha256(config) + json.dumps(weights, sort_keys=True)).encode()).hexdigest()
    staging = output / ".staging" / f"{rank}-{os.getpid()}"
    try:
        _each_input(config, mine, output, run, resume=resume, device=device, progress=progress,
                    model=model, config_hash=config_hash, staging=staging)
        run.current = None
    finally:
        try:
            (output / ".staging").rmdir()  # only when empty (no other rank still working)
        except OSError:
            pass


def _each_input(config: PipelineConfig, mine: list[tuple[Path, str]], output: Path,
                run: RunFiles, *, resume: bool, device: str, progress: bool, model,
                config_hash: str, staging: Path) -> None:
    """The loop of :func:`_run_inputs`."""
    import shutil

    from mrirecon.pipeline.volume import process_volume

    results, hashes = run.results, run.hashes
    for path, name in _progress(mine, progress, "files"):
        run.current = path
        status_file = status_path(output, name)
        result = VolumeResult(input=str(path), name=name)
        t0 = time.perf_counter()
        ref, header = paired_reference(path), bart_header(path)
        read_with = (path, ref, header)
        # size, mtime and inode before the first read: compared after the last (F7)
        state = tuple(file_state(p) if p is not None else None for p in read_with)
        try:
            input_hash = hashes[str(path)] = sha256(path)
            # a replaced reference changes the metrics, a rewritten header (bart reshape) the
            # data: part of the input
            for extra, record in ((ref, run.references), (header, run.headers)):
                if extra is not None:
                    record[str(extra)] = sha256(extra)
                    input_hash = hashlib.sha256((input_hash + record[str(extra)]).encode()
                                                ).hexdigest()
        except OSError as e:
            hashes.setdefault(str(path), f"unreadable: {e.strerror or e}")
            result.status = "failed"
            result.error = (_gone(path) if not os.path.lexists(path)
                            else f"{path}: cannot read the input ({e.strerror or e})")
            log.error("failed on %s: %s", path, result.error)
            old = read_status(status_file, output)
            if old:
                run.invalidate()
            _set_aside(old, status_file, output, result)
            results.append(result)
            continue
        old = read_status(status_file, output)
        prev = previous_run(old, path, input_hash, config_hash, output) if resume else None
        if prev is not None:
            log.info("skipping %s (finished in an earlier run)", path)
            known = {f.name for f in fields(VolumeResult)}
            # fields checked by read_status; a record of an earlier version may lack some
            kept = VolumeResult(**{"input": str(path), "name": name,
                                   **{k: v for k, v in prev.items() if k in known},
                                   "status": "skipped"})
            if (made := _made_otherwise(kept, device)) is not None:
                kept.note(made)  # kept (a resume keeps work), but not as this run would make it
            results.append(kept)
            continue
        stage = staging / "v"
        try:
            shutil.rmtree(stage, ignore_errors=True)
            process_volume(config, path, stage, result, model=model, device=device,
                           progress=progress, name=name)
            changed = _changed(read_with, state)
            if changed:  # overwritten in place while read: a volume of old and new slices
                raise _InputProblem(changed)
            run.invalidate()  # before the first change to the output folder
            commit_outputs(stage, output, result)
            result.status = "ok"
            result.threads, result.device = torch.get_num_threads(), device  # what made them
            remove_stale_outputs(old, result, output)
            drop_superseded(output, name, "this run wrote it again")
            written = fingerprint([*result.outputs.values(), *result.figures], output)
        except Exception as e:  # one bad file must not stop the batch
            result.status = "failed"
            result.error = _input_error(e, path, read_with, state, stage, output)
            if not os.path.lexists(path):
                hashes[str(path)] = f"unreadable: {os.strerror(errno.ENOENT)}"
            log.error("failed on %s: %s", path, result.error)
            log.debug("%s", traceback.format_exc())
            placed = moved_by_commit(stage, output, [*result.outputs.values(), *result.figures])
            result.metrics, result.outputs, result.figures = {}, {}, []
            if old or placed:
                run.invalidate()
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


def _made_otherwise(kept: VolumeResult, device: str) -> str | None:
    """The note of an input ``--resume`` skips whose outputs were made under another thread
    count or device than this run's (its status record's ``threads`` / ``device``), else
    ``None``. The outputs are kept (a resume keeps finished work), but ``provenance.json``'s
    ``threads`` and ``device`` are this run's: a 1-thread result was listed under
    ``"threads": 2`` (PSNR 23.7746 beside a 2-thread run's 23.7635)."""
    now = (torch.get_num_threads(), device)
    made = (kept.threads, kept.device)
    if made == now:
        return None

    def said(threads, dev) -> str:
        return (f"--threads {threads if threads is not None else '(not recorded)'} on device "
                f"{dev if dev is not None else '(not recorded)'}")

    return (f"{display_name(kept)}: --resume kept the outputs an earlier run made with "
            f"{said(*made)}; this run has {said(*now)}, under which they may differ (at "
            "rounding level for the thread count, more for another device); they were not "
            "made again (run without --resume to make them under this run's settings)")


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
    if file_in_the_way(output) == output:  # a file above: mkdir's error names it
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


def _load_model(config: PipelineConfig, device: str) -> tuple[Any, list[str]]:
    """``(model, warnings)``: the learned model of ``config`` ready on ``device`` (``None``
    for a classical method) and what is said of the model itself, each logged once: untrained
    weights (``reconstruct.weights`` empty), weights without a model card, a card without
    ``training_range`` (:func:`~mrirecon.pipeline.model_range.unchecked_range`). The runner
    adds them to the run's ``config_warnings`` (``provenance.json``, the report's head); they
    reached only the console, and the report showed the metrics without a caveat."""
    from mrirecon import recon

    method = config.reconstruct.method
    if method in recon.available():
        return None, []
    from mrirecon.models.registry import available_models, build_model

    if method not in available_models():
        raise ValueError(
            f"reconstruct.method: unknown method {method!r}; classical: {', '.join(recon.available())}; "
            f"learned: {', '.join(available_models())}"
        )
    said: list[str] = []
    if config.reconstruct.weights:  # shipped name, .pt with a card, state dict or fastMRI VarNet
        from mrirecon.training.weights import load_model

        try:
            model = load_model(method, config.reconstruct.params, config.reconstruct.weights,
                               warned=said)  # weights without a card: logged there
        except (FileNotFoundError, ValueError) as err:  # named "load_model:", not the key
            from mrirecon.core.config import ConfigError

            if isinstance(err, ConfigError):
                raise
            raise ConfigError(config.pipeline_file or "", "reconstruct.weights",
                              str(err).removeprefix("load_model: ")) from None
    else:
        said.append(f"reconstruct.weights is empty: {method} runs with untrained weights "
                    "(initialised with init_seed 0 unless reconstruct.params sets one)")
        log.warning("%s", said[-1])
        # seeded: unseeded, two identical runs differed by 4.8-6.3 % and drew from the caller's
        # global random stream
        model = build_model(method, **{"init_seed": 0, **config.reconstruct.params})
    from mrirecon.models.inference import ready_for_inference
    from mrirecon.pipeline.model_range import unchecked_range
    from mrirecon.pipeline.param_tables import check_model_table

    if (note := unchecked_range(model)) is not None:  # a card without training_range
        said.append(note)
        log.warning("%s", note)
    # each entry's settings change per slice: checked as reconstruct.params, range-warned
    said.extend(check_model_table(model, config.reconstruct, config.pipeline_file or ""))
    return ready_for_inference(model, device), said


def _progress(items, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not enabled, leave=False)
