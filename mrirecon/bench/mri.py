"""``mrirecon bench``: the fastMRI-style benchmark of reconstruction methods on a data folder.

For every acceleration, every volume (fastMRI HDF5 file, fully sampled, with targets) and every
method, the benchmark undersamples each slice with the fastMRI mask of that file
(:func:`~mrirecon.sampling.file_seed`: all slices of a volume share one mask), reconstructs it
with the pipeline's stages (:class:`~mrirecon.pipeline.stages_mri.MRIStages`, driven by the
same streaming runner as ``mrirecon run``, :mod:`mrirecon.pipeline.stream`), crops it to the recon size and
scores the volume against ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc``
(single-coil) with the fastMRI metrics (:func:`~mrirecon.metrics.evaluate_volumes`); slices
whose target is all zero while the output is not are left out with a reference note, as
``mrirecon run`` leaves them out. ESPIRiT maps are computed once per slice and shared by every
method that needs them.

Methods are classical reconstructions of :mod:`mrirecon.recon` (``zero_filled``, ``cg_sense``,
``l1_wavelet``, ``tv``, ``zero_filled_rss``, ``grappa``) or learned models of
:mod:`mrirecon.models` (``varnet``, ``modl``, ...; weights from ``weights={method: path}`` or a
shipped weights name used as the method name), run as ``model(y, op)`` under
``torch.inference_mode``.

Scaling: the ``reconstruct`` stage runs classical methods on k-space divided by the slice's
peak zero-filled RSS magnitude (:func:`~mrirecon.pipeline.stages_mri.data_scale`) and scales
the image back, so the ``lam`` of ``l1_wavelet`` and ``tv`` is relative to the image peak and
one default serves every data set.

The per-slice data warnings and notes that ``mrirecon run`` with each method would give (a dead
coil, ESPIRiT's crop lowered, GRAPPA's unfilled columns, partial Fourier) and, for a learned
model, data outside its card's training range are logged and kept in the records
(``data_warnings``, ``data_notes``; :mod:`mrirecon.bench.messages`).

Results are stored per (method, acceleration, volume) in ``results.jsonl`` (see
:mod:`mrirecon.bench.table`), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mrirecon.core.device import resolve_device
from mrirecon.bench.core import (
    BenchPlan,
    MethodSolves,
    RecordCallback,
    check_accelerations,
    log,
    unreadable_error,
    method_record,
    reference_warnings,
    run_benchmark,
    scored,
)
from mrirecon.bench.messages import RangeMessages, log_lines, mri_method_messages
from mrirecon.bench.methods import (
    CHALLENGES,
    DEFAULT_PARAMS,
    build_methods,
    center_fraction_for,
    check_settings,
    default_mask_type,
    needs_maps,
    parse_methods,
    method_weights_id,
)
from mrirecon.bench.table import BenchTable, config_fingerprint, encode_mask
from mrirecon.pipeline import stream
from mrirecon.pipeline.schema import (
    CalibrateConfig,
    PipelineConfig,
    PreprocessConfig,
    UndersampleConfig,
)
from mrirecon.pipeline.slice_mri import column_counts
from mrirecon.pipeline.stages_mri import MRIStages
from mrirecon.pipeline.stream import Method
from mrirecon.pipeline.validate import check_calibrate
from mrirecon.sampling.cartesian import acceleration_problem, center_fraction_problem
from mrirecon.pipeline.slice_messages import SliceMessages
from mrirecon.pipeline.volume import without_blank_reference_slices

# ---- one volume -----------------------------------------------------------------------------


def _check_file(path: Path, challenge: str) -> None:
    """Check the file suits the benchmark (its target is read slice by slice with the k-space,
    by the stream)."""
    from mrirecon.io import FastMRIFile

    with FastMRIFile(path) as f:
        if f.is_multicoil != (challenge == "multicoil"):
            kind = "multi-coil" if f.is_multicoil else "single-coil"
            raise ValueError(
                f"run_bench: {path} holds {kind} k-space {f.shape}, but challenge={challenge!r}"
            )
        if f.mask is not None:
            raise ValueError(
                f"run_bench: {path} is already undersampled (it has a 'mask' dataset, "
                f"acceleration {f.acceleration}); the benchmark needs fully sampled files"
            )
        key = "reconstruction_rss" if challenge == "multicoil" else "reconstruction_esc"
        if f.reference_key != key:
            raise ValueError(f"run_bench: {path} has no target {key!r} (test files cannot be scored)")


def pipeline_config(challenge: str, acceleration: float, mask_type: str, center_fraction: float,
                    calibration: CalibrateConfig, remove_oversampling: bool = False) -> PipelineConfig:
    """The benchmark at one acceleration as a pipeline config: the data as acquired (no coil
    compression; the readout cropped to the header's recon rows only with
    ``remove_oversampling``), fastMRI's mask seeded by the file name."""
    return PipelineConfig(
        name=f"bench-{challenge}-{acceleration:g}x",
        modality="mri",
        preprocess=PreprocessConfig(coil_compression=None, remove_oversampling=remove_oversampling),
        calibrate=calibration,
        undersample=UndersampleConfig(enabled=True, mask=mask_type,
                                      center_fractions=(center_fraction,),
                                      accelerations=(acceleration,), seed="file"),
    )


def _score_volume(path: Path, acceleration: float, methods: list[Method], bar, *, challenge: str,
                  mask_type: str, center_fractions, calibration: CalibrateConfig,
                  device: str, remove_oversampling: bool,
                  reported: Sequence[str] = ()) -> dict[str, dict]:
    """Reconstruct one volume with every pending method; returns per-method records. The
    methods ``reported`` (the user gave their settings) say where a solve stopped short of its
    tolerance (:class:`~mrirecon.bench.core.MethodSolves`)."""
    _check_file(path, challenge)
    cf = center_fraction_for(acceleration, center_fractions)
    config = pipeline_config(challenge, acceleration, mask_type, cf, calibration, remove_oversampling)
    solves = MethodSolves(reported)
    stages = solves.watch(MRIStages(config, device=device, classical=False, per_method_maps=True,
                                    methods=tuple(methods)))
    sampling: dict[str, Any] = {}
    said = {m.name: SliceMessages() for m in methods}  # what `mrirecon run` with m would say
    ranges = RangeMessages(config, methods)  # learned models: data outside the card's range

    def on_slice(i, s) -> None:
        if i == 0:
            sampling.update(mask=s.mask.cpu().clone(), num_low=s.num_low_frequencies,
                            acquirable=column_counts(s)[1])
        ranges.add(i, s)
        for m in methods:
            said[m.name].add(i, *mri_method_messages(stages, s, m))

    run = stream.stream_volume(stages, path, methods, progress=False, bar=bar,
                               on_slice=on_slice, previews=False)
    for m in methods:  # the reconstructions' own warnings, as `mrirecon run` adds them
        for i, warned in [*run.output_messages.get(m.name, {}).items(),
                          *solves.messages(m.name).items()]:
            said[m.name].add(i, warned, {})
    messages = {m: found.lines(path.name, run.slices) for m, found in said.items()}
    messages = {m: (ranges.lines(path.name, m, run.slices) + w, t) for m, (w, t) in messages.items()}
    log_lines(f"bench {challenge} {acceleration:g}x", messages)
    key = "reconstruction_rss" if challenge == "multicoil" else "reconstruction_esc"
    if run.reference_dropped:  # was scored: the output's centre against a target of another grid
        raise ValueError(f"run_bench: {path}: {key}: {run.reference_dropped}; the target must be "
                         "the image on the output's grid (the header's recon size)")
    if run.reference is None:
        raise ValueError(f"run_bench: {path}: {key}: not read with the k-space")
    target = run.reference  # as stored; a narrow file's (recon x, W) cropped to (W, W)
    # as `mrirecon run` with m scores them: a placeholder slice left out, with a word (it was
    # scored with the others: 17.4 dB where `mrirecon run` gave 27.1)
    kept = {m.name: without_blank_reference_slices(target, run.outputs[m.name]) for m in methods}
    notes = reference_warnings(path, key, {m: k[0] for m, k in kept.items()},
                               {m: k[1] for m, k in kept.items()})
    left_out = {m: f"{path.name}: {key} {k[2]}" for m, k in kept.items() if k[2]}
    for msg in dict.fromkeys(left_out.values()):
        log.warning("bench: %s", msg)
    out = {}
    for m in methods:
        pred = run.outputs[m.name].numpy()
        ref_m, pred_m, _ = kept[m.name]
        out[m.name] = {
            **method_record(run, m, needs_maps(m.config.method, m.model)),
            **scored("run_bench", path, m.name, ref_m.numpy(), pred_m.numpy(), crop=True),
            "mask_type": mask_type,
            "center_fraction": cf,
            "num_low_frequencies": sampling["num_low"],
            "mask_width": int(sampling["mask"].numel()),
            "acquirable_columns": sampling["acquirable"],  # the achieved rate's numerator
            "mask": encode_mask(sampling["mask"]),
            "reference_notes": ([left_out[m.name]] if m.name in left_out else []) + notes,
            # mrirecon run's warnings: the model card's training range, per-slice data warnings
            "data_warnings": messages[m.name][0],
            "data_notes": messages[m.name][1],
            "remove_oversampling": remove_oversampling,
            "prediction": pred,
        }
    return out


# ---- the benchmark --------------------------------------------------------------------------


def run_bench(
    data_dir: str | os.PathLike,
    challenge: str = "multicoil",
    accelerations: Iterable[float] = (4, 8),
    methods: str | Sequence[str] = ("zero_filled", "cg_sense", "l1_wavelet"),
    weights: Mapping[str, str | os.PathLike] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike | None = None,
    max_volumes: int | None = None,
    resume: bool = True,
    progress: bool = True,
    *,
    mask_type: str | None = None,
    center_fractions: Mapping[float, float] | None = None,
    calibration: CalibrateConfig | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
    on_record: RecordCallback | None = None,
    remove_oversampling: bool = False,
) -> BenchTable:
    """Benchmark ``methods`` at ``accelerations`` on the fastMRI files of ``data_dir``.

    Parameters
    ----------
    data_dir
        Folder of fully sampled fastMRI ``.h5`` volumes with targets (e.g. the fastMRI
        ``multicoil_val`` folder or a :func:`~mrirecon.data.simulate_mri.simulate_mri_dataset`
        folder); files are taken in name order.
    challenge
        ``"multicoil"`` (target ``reconstruction_rss``) or ``"singlecoil"``
        (``reconstruction_esc``).
    accelerations
        Undersampling factors; centre fraction 0.08 at 4x, 0.04 at 8x, else ``0.32 / acc``
        (``center_fractions`` overrides).
    methods
        Names (sequence or comma-separated string); see
        :func:`~mrirecon.bench.methods.available_methods`.
    weights
        ``{method: path or shipped name}`` for learned models.
    params
        ``{method: {param: value}}``: keyword arguments of the classical method (merged over
        :data:`DEFAULT_PARAMS`) or of ``build_model`` for learned models.
    output_dir
        Folder for ``results.jsonl``, ``bench_table.csv``, ``bench_table.md`` and
        ``bench_volumes.csv``; ``None`` keeps everything in memory (no resume).
    max_volumes
        Use only the first ``max_volumes`` files.
    resume
        Skip (method, acceleration, volume) entries already in ``results.jsonl`` with the same
        settings; ``False`` starts the results file afresh.
    progress
        Show tqdm progress bars (one per acceleration, over volumes x methods x slices).
    mask_type
        fastMRI mask function name; default :func:`default_mask_type` of the challenge.
    calibration
        ESPIRiT settings (default :class:`~mrirecon.pipeline.schema.CalibrateConfig`), checked
        as ``mrirecon run`` checks its ``calibrate`` section; settings other than the defaults
        are refused when no method reads them (only k-space methods or models that estimate
        their own maps; single-coil data, which get constant maps).
    device
        ``"cpu"``, ``"cuda"``, ``"auto"`` or a device.
    verbose
        Print the Markdown table at the end.
    on_record
        ``on_record(record, prediction)`` after each new record is stored; ``prediction`` is the
        ``(slices, h, w)`` reconstruction that was scored, every slice (also one left out of the
        metrics because its reference is all zero: the record's ``reference_notes`` say so).
    remove_oversampling
        Crop k-space to the header's recon rows (an exact readout crop, as the classical and
        plug-and-play pipelines do) before calibration, for every method of this run; default:
        the data as acquired, as fastMRI's models and the learned pipelines see them. Records
        made with it are marked (``remove_oversampling``) and fingerprinted apart.

    Returns
    -------
    BenchTable
        One row per method x acceleration that has results, rows in the given order.
    """
    if challenge not in CHALLENGES:
        raise ValueError(f"run_bench: challenge must be one of {CHALLENGES}, got {challenge!r}")
    names = parse_methods(methods)
    accs = check_accelerations(list(accelerations), "run_bench")
    _check_mask_pairs(accs, center_fractions)
    mask_type = _checked_mask_type(mask_type or default_mask_type(challenge))
    weights, params = dict(weights or {}), {k: dict(v) for k, v in (params or {}).items()}
    check_settings(names, weights, params)
    files = _volumes(data_dir, max_volumes)
    device = resolve_device(device)
    calibration = calibration or CalibrateConfig()
    check_calibrate(calibration, "run_bench")
    from mrirecon import recon

    run_methods = build_methods(names, recon.available(), weights, params, DEFAULT_PARAMS, device)
    _check_calibration_used(calibration, run_methods, challenge)

    def fingerprint(m: Method, acc: float) -> str:
        return config_fingerprint({
            "method": m.name,
            "params": m.config.params,
            "weights": method_weights_id(m, weights),
            "challenge": challenge,
            "mask_type": mask_type,
            "center_fraction": center_fraction_for(acc, center_fractions),
            "calibration": asdict(calibration) if needs_maps(m.name, m.model) else None,
            # only when set, so that results of runs before the option existed still resume
            **({"remove_oversampling": True} if remove_oversampling else {}),
            # records timed on a GPU are not a CPU run's (the time per slice); CPU records keep
            # the fingerprint they had before the device was part of it
            **({"device": torch.device(device).type} if torch.device(device).type != "cpu"
               else {}),
        })

    counts, unreadable = _slice_counts(files)
    plan = BenchPlan(challenge, run_methods, accs, files,
                     {(m, a): fingerprint(run_methods[m], a) for m in names for a in accs},
                     counts, unreadable)

    def score(path, acc, pending, bar):
        return _score_volume(path, acc, pending, bar, challenge=challenge, mask_type=mask_type,
                             center_fractions=center_fractions, calibration=calibration,
                             device=device, remove_oversampling=remove_oversampling,
                             reported=[m for m in names if params.get(m)])

    return run_benchmark(plan, score, output_dir=output_dir, resume=resume, progress=progress,
                         verbose=verbose, on_record=on_record)


def _check_mask_pairs(accelerations: Sequence[float],
                      center_fractions: Mapping[float, float] | None) -> None:
    """Refuse what ``mrirecon run`` refuses at load (:func:`acceleration_problem`,
    :func:`center_fraction_problem`): ``--accelerations 8 --center-fractions 0.5`` kept 32 of 64
    columns in a row labelled 8x, exit 0; 0.25 at 4x failed every volume in
    ``EquispacedFractionMask``'s words; 1 gave a "1x" row from 63 of 64 columns."""
    for acc in accelerations:
        if (why := acceleration_problem(acc)) is not None:
            raise ValueError(f"run_bench: accelerations: {why}; the benchmark scores "
                             "undersampled data, so leave it out")
        cf = center_fraction_for(acc, center_fractions)
        if (why := center_fraction_problem(cf, acc)) is not None:
            raise ValueError(f"run_bench: center_fractions: {cf:g} at acceleration {acc:g}: {why}")


def _check_calibration_used(calibration: CalibrateConfig, methods: Mapping[str, Method],
                            challenge: str) -> None:
    """Refuse ``calibrate`` settings that no method of the run reads, as settings for a method
    that is not run are refused (:func:`~mrirecon.bench.methods.check_settings`): only k-space
    methods (``zero_filled_rss``, ``grappa``) or models that estimate their own maps, or
    single-coil data (constant maps). ``--set calibrate.crop=0.5`` changed nothing, exit 0."""
    from dataclasses import fields

    default = CalibrateConfig()
    changed = [f.name for f in fields(calibration)
               if getattr(calibration, f.name) != getattr(default, f.name)]
    if not changed:
        return
    key = f"calibrate.{changed[0]}"
    if challenge == "singlecoil":
        why = "single-coil data are reconstructed with constant coil maps"
    elif not any(needs_maps(m.config.method, m.model) for m in methods.values()):
        why = f"none of the methods {list(methods)} reconstructs with coil maps"
    else:
        return
    raise ValueError(f"run_bench: {key}: {why}, so the calibration settings would change "
                     f"nothing; remove --set {key}" + ("" if challenge == "singlecoil" else
                                                       ", or add a method that uses coil maps "
                                                       "(cg_sense, l1_wavelet, ...)"))


def _checked_mask_type(mask_type: str) -> str:
    from mrirecon.sampling import MASK_TYPES

    if mask_type not in MASK_TYPES:
        raise ValueError(
            f"run_bench: unknown mask type {mask_type!r}; expected one of {sorted(MASK_TYPES)}"
        )
    return mask_type


def _volumes(data_dir: str | os.PathLike, max_volumes: int | None) -> list[Path]:
    if not Path(data_dir).is_dir():  # was "no fastMRI .h5 files in scan.h5", for a file too
        raise FileNotFoundError(f"run_bench: data folder {data_dir} "
                                f"{'is a file' if Path(data_dir).exists() else 'does not exist'}; "
                                "pass the folder that holds the .h5 files")
    files = sorted(Path(data_dir).glob("*.h5"))
    if not files:
        raise FileNotFoundError(f"run_bench: no fastMRI .h5 files in {data_dir}")
    if max_volumes is not None:
        if max_volumes < 1:
            raise ValueError(f"run_bench: max_volumes must be >= 1, got {max_volumes}")
        files = files[:max_volumes]
    return files


def _slice_counts(files: Sequence[Path]) -> tuple[dict[Path, int], dict[Path, ValueError]]:
    """``({file: slices}, {file: the reader's error})``: a file that cannot be opened (truncated,
    not HDF5, gone) counts 0 slices and is skipped by the plan with that error, as ``mrirecon
    run`` skips it (it stopped the benchmark here, exit 2, nothing scored)."""
    from mrirecon.io import FastMRIFile

    counts, unreadable = {}, {}
    for p in files:
        try:
            with FastMRIFile(p) as f:
                counts[p] = len(f)
        except (ValueError, OSError) as exc:
            counts[p], unreadable[p] = 0, unreadable_error(p, exc)
    return counts, unreadable
