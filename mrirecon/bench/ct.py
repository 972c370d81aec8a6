"""CT benchmark table: methods x sparse-view factors on LoDoPaB-layout data (``--challenge ct``).

Every ``observation_<part>_<NNN>.hdf5`` file is one volume and must have its ground truth
``ground_truth_<part>_<NNN>.hdf5`` (one without is refused naming the missing file); its
samples (slices) run through the CT pipeline's stages
(:class:`~mrirecon.pipeline.stages_ct.CTStages`) with the same streaming runner as ``mrirecon
run``, from every ``factor``-th view (the acceleration), optionally at a lower dose
(``photons``: the pipeline's dose reduction, seeded per file and slice: binomial thinning of
data that hold Poisson noise, e.g. LoDoPaB's 4096 photons, fresh Poisson noise on noise-free
data; :func:`~mrirecon.pipeline.stages_ct.undersample`). Metrics are the
fastMRI definitions per volume on attenuation normalised like LoDoPaB's ground truth
(``mu / MU_MAX``, non-negative), computed as the pipeline computes them. Learned methods are
shipped weight names or checkpoint paths; they see the unit-norm projector they were trained
with. Records, resume and the table are those of the MRI benchmark (:mod:`mrirecon.bench.table`):
``results.jsonl``, ``bench_table.csv``, ``bench_table.md`` and ``bench_volumes.csv``, where
the "mask" of a record is the kept views; the data warnings and notes ``mrirecon run`` gives per
slice, and a learned model's data outside its card's training range, are logged and kept in each
record (``data_warnings``, ``data_notes``,
:mod:`mrirecon.bench.messages`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
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
    method_record,
    reference_warnings,
    run_benchmark,
    scored,
    unreadable_error,
)
from mrirecon.bench.messages import RangeMessages, log_lines
from mrirecon.bench.methods import (CT_DEFAULTS, build_methods, check_settings, classical_methods,
                                    learned_methods, method_weights_id)
from mrirecon.bench.table import BenchTable, config_fingerprint, encode_mask
from mrirecon.pipeline import stream
from mrirecon.pipeline.ct_consistency import dose_note
from mrirecon.pipeline.schema import PipelineConfig, UndersampleConfig
from mrirecon.pipeline.stages_ct import CTStages
from mrirecon.pipeline.stream import Method
from mrirecon.pipeline.slice_messages import SliceMessages

#: What a CT record's ``mask_type`` says: every ``factor``-th view is kept, from view 0.
VIEW_MASK = "sparse_view"


def ct_accelerations(values: Iterable[float]) -> list[float]:
    """Sparse-view factors must be integers >= 1."""
    out = []
    for v in values:
        if v < 1 or v != int(v):
            raise ValueError(f"--challenge ct: accelerations are sparse-view factors (integers >= 1), "
                             f"got {v}")
        out.append(float(v))
    return out


def pipeline_config(num_views: int, factor: float, photons: float | None) -> PipelineConfig:
    """The CT benchmark at one sparse-view factor as a pipeline config. The factor must divide
    the view count: 9x of 60 views kept every 10th view and 100x kept 1 (a 60x row), both
    labelled with the factor asked for."""
    if factor != int(factor) or num_views % int(factor) or int(factor) > num_views:
        raise ValueError(f"run_ct_bench: sparse-view factor {factor:g} does not divide the "
                         f"{num_views} views of the data (keeping every {factor:g}th view must "
                         f"leave a whole number of views); use a divisor of {num_views}")
    views = num_views // int(factor)
    return PipelineConfig(name=f"bench-ct-{factor:g}x", modality="ct",
                          undersample=UndersampleConfig(enabled=True, views=views, photons=photons))


_Volume = tuple[int, int, float | None]  # (slices, views, data photons)


def _volumes(root: Path, max_volumes: int | None
             ) -> tuple[list[Path], dict[Path, _Volume], dict[Path, ValueError]]:
    """``(files, {file: (slices, views, data photons)}, {file: the reader's error})`` of the
    first ``max_volumes`` observation files, in order (``data photons``: the dose of the noise
    the data hold, ``None``: none). Every one must have its ground truth, as every MRI bench
    volume must have its target: one without is refused naming the missing file (a part missing
    one was dropped whole, exit 0, or refused with "no ground_truth files" while the others were
    there). A part with no ground truth at all (LoDoPaB's challenge part beside the others) is
    left out with a warning.

    Each file is read alone, as ``mrirecon run`` and the scoring read it
    (``LoDoPaBFiles(root, part, only=N)``), and checked against the first readable file of its
    part as ``LoDoPaBFiles(root, part)`` checks it (:meth:`~mrirecon.io.lodopab.LoDoPaBFiles.check_joins`: another geometry,
    scale or dose is refused naming both). A file that cannot be read (truncated, not HDF5, its
    ground truth damaged) is left to the plan with the reader's error, which skips it and lists
    it under the table (it stopped the benchmark before any volume was scored: exit 2)."""
    from mrirecon.io.lodopab import LoDoPaBFiles, lodopab_file_name, parse_name, reference_file_name

    if not root.is_dir():  # was "no observation_<part>_NNN.hdf5 files in" a file, too
        raise FileNotFoundError(f"run_ct_bench: data folder {root} "
                                f"{'is a file' if root.exists() else 'does not exist'}; pass the "
                                "folder that holds the observation_*.hdf5 files")
    named = {p: n for p in root.glob("observation_*_[0-9][0-9][0-9].hdf5")
             if (n := parse_name(p.name)) is not None}  # the reader's reading
    parts = sorted({n[1] for n in named.values()})
    if not parts:
        raise FileNotFoundError(f"run_ct_bench: no observation_<part>_NNN.hdf5 files in {root}")
    order: list[Path] = []
    out: dict[Path, _Volume] = {}
    unreadable: dict[Path, ValueError] = {}
    missing: list[Path] = []
    unscored: list[str] = []
    for part in parts:
        if max_volumes is not None and len(order) >= max_volumes:
            break
        files = sorted(p for p, n in named.items() if n[1] == part)
        judged = {p: (root / lodopab_file_name("ground_truth", part, named[p][2])).exists()
                  for p in files}
        if not any(judged.values()):
            unscored.append(part)  # a part without any (LoDoPaB's challenge part): not scored
            continue
        first = None
        for path in files:
            if max_volumes is not None and len(order) >= max_volumes:
                break
            order.append(path)
            if not judged[path]:
                missing.append(path)
            try:
                alone = LoDoPaBFiles(root, part, only=named[path][2])
                out[path] = (int(alone.counts[0]), alone.geometry.num_views, alone.data_photons)
            except (ValueError, OSError) as exc:
                if first is not None:  # a file of another geometry or scale: refused as before
                    first.check_joins_attrs(path)
                unreadable[path] = unreadable_error(path, exc)
                continue
            if first is None:
                first = alone
            else:
                first.check_joins(alone)
    if unscored and order:
        log.warning("run_ct_bench: %s: part%s %s hold%s no ground_truth_<part>_NNN.hdf5 file at all "
                    "(a challenge part?): not scored", root, "s" if len(unscored) > 1 else "",
                    ", ".join(unscored), "" if len(unscored) > 1 else "s")
    if not order:
        raise FileNotFoundError(
            f"run_ct_bench: none of the observation files in {root} has its ground truth (parts "
            f"{', '.join(unscored)}); the benchmark scores against the "
            "ground_truth_<part>_NNN.hdf5 files (a test set without them cannot be scored)")
    if missing and len(missing) == len(order):
        raise FileNotFoundError(
            f"run_ct_bench: none of the {len(order)} observation file(s) in {root} has its "
            f"ground truth (e.g. {reference_file_name(missing[0].name)}); the benchmark scores "
            "against the ground_truth_<part>_NNN.hdf5 files (a test set without them cannot be "
            "scored)")
    if missing:
        names = ", ".join(reference_file_name(p.name) for p in missing[:4])
        many, have = len(missing) > 1, len(order) - len(missing)
        raise FileNotFoundError(
            f"run_ct_bench: {root}: {names}{', ...' if len(missing) > 4 else ''} "
            f"{'are' if many else 'is'} missing, while the other {have} observation "
            f"file{'s have' if have > 1 else ' has'} theirs; every volume is scored against its "
            f"ground truth: add {'them' if many else 'it'}, or move {missing[0].name}"
            f"{' and the others without one' if many else ''} out of the folder")
    return order, out, unreadable


def _kept_views(num_views: int, factor: float) -> torch.Tensor:
    """``(num_views,)`` bool: the views :func:`pipeline_config`'s undersampling keeps."""
    views = max(1, num_views // int(factor))
    mask = torch.zeros(num_views, dtype=torch.bool)
    if views < num_views:
        mask[:: num_views // views] = True
    else:
        mask[:] = True
    return mask


def _score_volume(path: Path, factor: float, methods: list[Method], bar, *, num_views: int,
                  photons: float | None, data_photons: float | None,
                  device: str, reported: Sequence[str] = ()) -> dict[str, dict]:
    from mrirecon.io.lodopab import MU_MAX_PER_MM, reference_file_name

    config = pipeline_config(num_views, factor, photons)
    solves = MethodSolves(reported)  # the methods the user set: unconverged solves said
    stages = solves.watch(CTStages(config, device=device))
    said = SliceMessages()  # the data warnings of `mrirecon run` (the same for every method)
    ranges = RangeMessages(config, methods)  # learned models: data outside the card's range

    def on_slice(i, s) -> None:
        said.add(i, *stages.data_messages(s))
        ranges.add(i, s)

    run = stream.stream_volume(stages, path, methods, progress=False, bar=bar, previews=False,
                               on_slice=on_slice)
    warned, told = said.lines(path.name, run.slices)
    own = {m.name: SliceMessages() for m in methods}  # per method: its reconstructions' warnings
    for m in methods:
        for i, w in [*run.output_messages.get(m.name, {}).items(),
                     *solves.messages(m.name).items()]:
            own[m.name].add(i, w, {})
    own_lines = {name: ranges.lines(path.name, name, run.slices) + msgs.lines(path.name, run.slices)[0]
                 for name, msgs in own.items()}  # the card's training range first
    log_lines(f"bench ct {factor:g}x", {m.name: (own_lines[m.name] + warned, told) for m in methods})
    if run.reference is None:
        raise ValueError(f"run_ct_bench: {path} has no ground truth for every slice")
    reference = run.reference / MU_MAX_PER_MM
    notes = reference_warnings(path, reference_file_name(path.name) or "ground truth", reference,
                               {m.name: run.outputs[m.name] / MU_MAX_PER_MM for m in methods})
    mask = _kept_views(num_views, factor)
    dose = dose_note(data_photons, UndersampleConfig(enabled=True, photons=photons))
    out = {}
    for m in methods:
        pred = run.outputs[m.name] / MU_MAX_PER_MM
        out[m.name] = {
            **method_record(run, m, used_calibration=False),
            **scored("run_ct_bench", path, m.name, reference.double(), pred.double(), crop=False),
            "mask_type": VIEW_MASK,
            "photons": photons,
            "data_photons": data_photons,  # the dose of the noise the data hold (None: none)
            "dose": dose,  # how photons was reached (binomial thinning / Poisson noise)
            "mask_width": num_views,
            "mask": encode_mask(mask),
            "reference_notes": notes,
            # mrirecon run's warnings: the model card's training range, per-slice data warnings
            "data_warnings": own_lines[m.name] + warned,
            "data_notes": told,
            "prediction": pred.numpy(),
        }
    return out


def run_ct_bench(data_dir: str | os.PathLike, accelerations: Iterable[float] = (6,),
                 methods: str | Sequence[str] = ("fbp", "sirt", "tv_ct"),
                 weights: Mapping[str, str | os.PathLike] | None = None,
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 output_dir: str | os.PathLike | None = None, *, photons: float | None = None,
                 max_volumes: int | None = None, resume: bool = True, progress: bool = True,
                 device: str | torch.device = "cpu", verbose: bool = False,
                 on_record: RecordCallback | None = None) -> BenchTable:
    """Benchmark CT ``methods`` at sparse-view factors ``accelerations`` on ``data_dir``.

    Arguments as :func:`~mrirecon.bench.mri.run_bench`; ``photons`` lowers the dose to that
    incident photon count as the pipeline does (binomial thinning of noisy data, refused above
    a file's own dose before anything runs; Poisson noise on noise-free data). Classical
    parameters are merged over :data:`CT_DEFAULTS`.
    Returns the :class:`~mrirecon.bench.table.BenchTable` (challenge ``"ct"``).
    """
    from mrirecon import recon
    from mrirecon.models.registry import available_models
    from mrirecon.training.weights import available_weights

    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)
             if m and m.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"run_ct_bench: give each method once, got {names}")
    accs = check_accelerations(ct_accelerations(accelerations), "run_ct_bench")
    weights, params = dict(weights or {}), {k: dict(v) for k, v in (params or {}).items()}
    check_settings(names, weights, params, "run_ct_bench")
    for m in names:  # one of the other modality is refused by build_methods, saying so
        if m not in recon.available() and m not in available_weights() and not (
                m in available_models() and m in weights):
            models = [n for n in learned_methods("ct") if n not in available_weights()]
            shipped = [n for n in learned_methods("ct") if n in available_weights()]
            raise ValueError(f"run_ct_bench: unknown method {m!r}; classical: "
                             f"{', '.join(classical_methods('ct'))}; learned: shipped weights "
                             f"{', '.join(shipped) or '(none)'}, or a model with --weights "
                             f"NAME=PATH ({', '.join(models)})")
    files, volumes, unreadable = _volumes(Path(data_dir), max_volumes)
    if photons is not None:  # the pipeline's rule, checked for every file before any runs
        from mrirecon.sampling import check_thinning

        for path, v in volumes.items():
            if v[2] is not None:
                check_thinning(v[2], photons, f"run_ct_bench: {Path(path).name}: --photons")
        added = UndersampleConfig(enabled=True, photons=photons)
        for note in dict.fromkeys(dose_note(v[2], added) for v in volumes.values()):
            log.info("run_ct_bench: --photons: %s", note)
    device = resolve_device(device)
    run_methods = build_methods(names, recon.available(), weights, params, CT_DEFAULTS, device,
                                "run_ct_bench", modality="ct")

    def fingerprint(m: Method, factor: float) -> str:
        return config_fingerprint({"method": m.name, "params": m.config.params,
                                   "weights": method_weights_id(m, weights), "challenge": "ct",
                                   "factor": factor, "photons": photons,
                                   # noisy data: thinned, no longer given added noise
                                   **({"dose": "thinning"} if photons is not None else {}),
                                   # a GPU's records are not a CPU run's (time per slice)
                                   **({"device": torch.device(device).type}
                                      if torch.device(device).type != "cpu" else {})})

    plan = BenchPlan("ct", run_methods, accs, files,
                     {(m, a): fingerprint(run_methods[m], a) for m in names for a in accs},
                     {p: volumes[p][0] if p in volumes else 0 for p in files}, unreadable)

    def score(path, factor, pending, bar):
        return _score_volume(path, factor, pending, bar, num_views=volumes[path][1],
                             photons=photons, data_photons=volumes[path][2], device=device,
                             reported=[m for m in names if params.get(m)])

    return run_benchmark(plan, score, output_dir=output_dir, resume=resume, progress=progress,
                         verbose=verbose, on_record=on_record)


__all__ = ["ct_accelerations", "run_ct_bench"]
