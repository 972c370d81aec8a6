"""``mrirecon bench``: the fastMRI-style benchmark of reconstruction methods on a data folder.

For every acceleration, every volume (fastMRI HDF5 file, fully sampled, with targets) and every
method, the benchmark undersamples each slice with the fastMRI mask of that file
(:func:`~mrirecon.sampling.file_seed`: all slices of a volume share one mask), reconstructs it
with the pipeline stages of :mod:`mrirecon.pipeline.stages_mri`, crops it to the recon size and
scores the volume against ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc``
(single-coil) with the fastMRI metrics (:func:`~mrirecon.metrics.evaluate_volumes`). ESPIRiT
maps are computed once per slice and shared by every method that needs them.

Methods are classical reconstructions of :mod:`mrirecon.recon` (``zero_filled``, ``cg_sense``,
``l1_wavelet``, ``tv``, ``zero_filled_rss``, ``grappa``) or learned models of
:mod:`mrirecon.models` (``varnet``, ``modl``, ...; weights from ``weights={method: path}`` or a
shipped weights name used as the method name), run as ``model(y, op)`` under
``torch.inference_mode``.

Scaling: the ``reconstruct`` stage runs classical methods on k-space divided by the slice's
peak zero-filled RSS magnitude (:func:`~mrirecon.pipeline.stages_mri.data_scale`) and scales
the image back, so the ``lam`` of ``l1_wavelet`` and ``tv`` is relative to the image peak and
one default serves every data set.

Results are stored per (method, acceleration, volume) in ``results.jsonl`` (see
:mod:`mrirecon.pipeline.bench_table`), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrirecon import recon
from mrirecon.core.device import resolve_device
from mrirecon.metrics import evaluate_volumes
from mrirecon.pipeline.bench_methods import (
    CHALLENGES,
    DEFAULT_PARAMS,
    center_fraction_for,
    classical_methods,
    default_mask_type,
    load_model,
    needs_maps,
    parse_methods,
)
from mrirecon.pipeline.bench_table import (
    RESULTS_FILE,
    BenchTable,
    ResultsFile,
    build_table,
    config_fingerprint,
    encode_mask,
    write_table,
)
from mrirecon.pipeline.schema import (
    CalibrateConfig,
    PostprocessConfig,
    PreprocessConfig,
    ReconstructConfig,
    UndersampleConfig,
)
from mrirecon.pipeline.stages_mri import (
    MRISlice,
    calibrate,
    make_slice,
    postprocess,
    preprocess,
    reconstruct,
    undersample,
)

RecordCallback = Callable[[dict[str, Any], np.ndarray], None]

# ---- one volume -----------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to(s: MRISlice, device: torch.device) -> MRISlice:
    return replace(
        s,
        kspace=s.kspace.to(device),
        mask=s.mask.to(device),
        maps=None if s.maps is None else s.maps.to(device),
    )


def _reconstruct_slice(
    s: MRISlice, method: str, params: dict, model: nn.Module | None
) -> torch.Tensor:
    """``(h, w)`` float32 magnitude, cropped to the recon size."""
    if model is not None:
        out = reconstruct(s, ReconstructConfig(method=method), model)
        return postprocess(out, PostprocessConfig())
    out = reconstruct(s, ReconstructConfig(method=method, params=params), None)
    return postprocess(out, PostprocessConfig())


def _open_volume(path: Path, challenge: str):
    from mrirecon.io import FastMRIFile

    f = FastMRIFile(path)
    try:
        return f, _checked_target(f, path, challenge)
    except BaseException:
        f.close()
        raise


def _checked_target(f, path: Path, challenge: str) -> np.ndarray:
    """The volume's target ``(slices, h, w)`` after checking the file suits the benchmark."""
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
    target = f.reference(key=key) if f.reference_key == key else None
    if target is None:
        raise ValueError(f"run_bench: {path} has no target {key!r} (test files cannot be scored)")
    return target.numpy()


def _bench_volume(
    path: Path,
    challenge: str,
    acceleration: float,
    pending: list[str],
    settings: dict,
    progress_bar,
) -> dict[str, dict]:
    """Reconstruct one volume with every pending method; returns per-method partial records."""
    f, target = _open_volume(path, challenge)
    device = settings["device"]
    mask_type = settings["mask_type"]
    cf = center_fraction_for(acceleration, settings["center_fractions"])
    ucfg = UndersampleConfig(
        enabled=True,
        mask=mask_type,
        center_fractions=(cf,),
        accelerations=(acceleration,),
        seed="file",
    )
    models = settings["models"]
    need_maps = any(needs_maps(m, models.get(m)) for m in pending)
    slices = {m: [] for m in pending}
    seconds = {m: 0.0 for m in pending}
    calib_seconds, mask, num_low = 0.0, None, None
    try:
        n = len(f)
        for i in range(n):
            ks = f.read_slice(i, with_reference=False)
            s = make_slice(ks, i, path.name, None)
            s = undersample(preprocess(s, settings["preprocess"]), ucfg)
            if mask is None:
                mask, num_low = s.mask.clone(), s.num_low_frequencies
            s = _to(s, device)
            learned_maps = None
            if need_maps:
                _sync(device)
                t0 = time.perf_counter()
                if challenge == "singlecoil":
                    s = replace(s, maps=torch.ones_like(s.kspace))
                else:
                    s = calibrate(s, settings["calibrate"])
                    if any(models.get(m) is not None and needs_maps(m, models[m])
                           and getattr(models[m], "full_fov_maps", True) for m in pending):
                        # learned models get the maps they were trained with: the trainer's
                        # ESPIRiT keeps the whole field of view (crop 0, training/data.py)
                        learned_maps = calibrate(s, replace(settings["calibrate"], crop=0.0)).maps
                _sync(device)
                calib_seconds += time.perf_counter() - t0
            for m in pending:
                model = models.get(m)
                si = s if needs_maps(m, model) else replace(s, maps=None)
                if (model is not None and learned_maps is not None and si.maps is not None
                        and getattr(model, "full_fov_maps", True)):
                    si = replace(si, maps=learned_maps)
                _sync(device)
                t0 = time.perf_counter()
                img = _reconstruct_slice(si, m, settings["params"].get(m, {}), model)
                _sync(device)
                seconds[m] += time.perf_counter() - t0
                slices[m].append(img.detach().cpu())
            if progress_bar is not None:
                progress_bar.set_postfix_str(f"{path.name} slice {i + 1}/{n}", refresh=False)
                progress_bar.update(len(pending))
    finally:
        f.close()
    out = {}
    for m in pending:
        pred = torch.stack(slices[m]).numpy()
        report = evaluate_volumes({path.name: target}, {path.name: pred})
        model = models.get(m)
        used_maps = needs_maps(m, model)
        total = seconds[m] + (calib_seconds if used_maps else 0.0)
        out[m] = {
            "slices": n,
            **{k: float(v[0]) for k, v in report.values.items()},
            "seconds_per_slice": total / n,
            "recon_seconds": seconds[m],
            "calib_seconds": calib_seconds if used_maps else 0.0,
            "num_params": 0 if model is None else sum(p.numel() for p in model.parameters()),
            "mask_type": mask_type,
            "center_fraction": cf,
            "num_low_frequencies": num_low,
            "mask_width": int(mask.numel()),
            "mask": encode_mask(mask),
            "prediction": pred,
        }
    return out


# ---- the benchmark --------------------------------------------------------------------------


def _weights_id(weights: str | os.PathLike | None) -> str | None:
    if weights is None:
        return None
    p = Path(weights)
    if p.is_file():
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return str(weights)


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
        :func:`~mrirecon.pipeline.bench_methods.available_methods`.
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
        ESPIRiT settings (default :class:`~mrirecon.pipeline.schema.CalibrateConfig`).
    device
        ``"cpu"``, ``"cuda"`` or a device.
    verbose
        Print the Markdown table at the end.
    on_record
        ``on_record(record, prediction)`` after each new record is stored; ``prediction`` is the
        ``(slices, h, w)`` reconstruction that was scored.

    Returns
    -------
    BenchTable
        One row per method x acceleration that has results, rows in the given order.
    """
    from mrirecon.sampling import MASK_TYPES

    if challenge not in CHALLENGES:
        raise ValueError(f"run_bench: challenge must be one of {CHALLENGES}, got {challenge!r}")
    names = parse_methods(methods)
    accs = [float(a) for a in accelerations]
    if not accs or any(not a >= 1 for a in accs):
        raise ValueError(
            f"run_bench: accelerations must be numbers >= 1, got {list(accelerations)}"
        )
    mask_type = mask_type or default_mask_type(challenge)
    if mask_type not in MASK_TYPES:
        raise ValueError(
            f"run_bench: unknown mask type {mask_type!r}; expected one of {sorted(MASK_TYPES)}"
        )
    weights, params = dict(weights or {}), {k: dict(v) for k, v in (params or {}).items()}
    stray = sorted(set(weights) - set(names)) + sorted(set(params) - set(names))
    if stray:
        raise ValueError(
            f"run_bench: weights/params given for {stray}, which are not among the methods {names}"
        )
    files = sorted(Path(data_dir).glob("*.h5"))
    if not Path(data_dir).is_dir() or not files:
        raise FileNotFoundError(f"run_bench: no fastMRI .h5 files in {data_dir}")
    if max_volumes is not None:
        if max_volumes < 1:
            raise ValueError(f"run_bench: max_volumes must be >= 1, got {max_volumes}")
        files = files[:max_volumes]
    device = torch.device(resolve_device(device))
    calibration = calibration or CalibrateConfig()

    classical = set(classical_methods())
    models: dict[str, nn.Module] = {}
    run_params: dict[str, dict] = {}
    for m in names:
        if m in classical:
            if m in weights:
                raise ValueError(f"run_bench: {m} is a classical method; it takes no weights")
            given = recon.canonical_parameters(m, params.get(m, {}))  # old names: renamed
            run_params[m] = {**DEFAULT_PARAMS.get(m, {}), **given}
        else:
            models[m] = load_model(m, params.get(m, {}), weights.get(m)).to(device)
            run_params[m] = params.get(m, {})
    settings = {
        "device": device,
        "mask_type": mask_type,
        "center_fractions": center_fractions,
        "models": models,
        "params": run_params,
        "calibrate": calibration,
        "preprocess": PreprocessConfig(coil_compression=None),
    }

    def fingerprint(m: str, acc: float) -> str:
        return config_fingerprint(
            {
                "method": m,
                "params": run_params[m],
                "weights": _weights_id(weights.get(m)),
                "challenge": challenge,
                "mask_type": mask_type,
                "center_fraction": center_fraction_for(acc, center_fractions),
                "calibration": asdict(calibration) if needs_maps(m, models.get(m)) else None,
            }
        )

    fps = {(m, a): fingerprint(m, a) for m in names for a in accs}
    store = ResultsFile(
        Path(output_dir) / RESULTS_FILE if output_dir is not None else os.devnull,
        fresh=not resume or output_dir is None,
    )
    slice_counts = _slice_counts(files)
    for acc in accs:
        todo = {
            p: [m for m in names if store.find(m, acc, p.name, fps[m, acc]) is None] for p in files
        }
        total = sum(len(todo[p]) * slice_counts[p] for p in files)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                desc=f"bench {challenge} {acc:g}x ({', '.join(names)})",
                unit="slice",
                leave=True,
            )
        try:
            for path in files:
                if not todo[path]:
                    continue
                results = _bench_volume(path, challenge, acc, todo[path], settings, bar)
                for m in todo[path]:
                    rec = results[m]
                    pred = rec.pop("prediction")
                    rec.update(method=m, acceleration=acc, volume=path.name, config=fps[m, acc])
                    if output_dir is not None:
                        store.append(rec)
                    else:
                        store.records.append(rec)
                    if on_record is not None:
                        on_record(dict(rec), pred)
        finally:
            if bar is not None:
                bar.close()
    selected = [
        r
        for p in files
        for a in accs
        for m in names
        if (r := store.find(m, a, p.name, fps[m, a])) is not None
    ]
    table = build_table(selected, names, accs, challenge)
    if output_dir is not None:
        write_table(table, output_dir)
    if verbose:
        print(table.to_markdown(), flush=True)
    return table


def _slice_counts(files: Sequence[Path]) -> dict[Path, int]:
    from mrirecon.io import FastMRIFile

    counts = {}
    for p in files:
        with FastMRIFile(p) as f:
            counts[p] = len(f)
    return counts


# ---- command line ---------------------------------------------------------------------------


def parse_weights(items: Iterable[str]) -> dict[str, str]:
    """``["varnet=PATH", "modl=PATH,..."]`` -> ``{"varnet": "PATH", ...}``."""
    out: dict[str, str] = {}
    for item in items or ():
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"--weights: expected method=PATH, got {part!r}")
            name, value = part.split("=", 1)
            out[name.strip()] = value.strip()
    return out


def parse_sets(items: Iterable[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``["l1_wavelet.lam=0.01", "calibrate.crop=0"]`` -> (method params, calibration fields).

    Values are parsed as YAML (numbers, booleans, lists); ``calibrate.*`` sets fields of
    :class:`~mrirecon.pipeline.schema.CalibrateConfig`.
    """
    from mrirecon.core.config import apply_overrides

    tree = apply_overrides({}, list(items or ()), source="--set")
    for key, value in tree.items():
        if not isinstance(value, dict) or not value:
            raise ValueError(f"--set: expected method.param=value, got key {key!r}")
    calib = tree.pop("calibrate", {})
    return tree, calib


def bench_from_cli(
    data: str,
    output: str,
    challenge: str = "multicoil",
    accelerations: Sequence[float] = (4, 8),
    methods: str = "zero_filled,cg_sense,l1_wavelet",
    weights: Sequence[str] = (),
    sets: Sequence[str] = (),
    max_volumes: int | None = None,
    mask_type: str | None = None,
    resume: bool = True,
    progress: bool = True,
    device: str = "cpu",
    center_fractions: Mapping[float, float] | None = None,
) -> BenchTable:
    """The ``mrirecon bench`` subcommand with its string arguments (``--weights m=PATH``,
    ``--set method.param=value``, ``--methods a,b``) converted for :func:`run_bench`."""
    from mrirecon.core.config import from_dict

    params, calib = parse_sets(sets)
    calibration = from_dict(CalibrateConfig, calib, source="--set", prefix="calibrate")
    return run_bench(
        data,
        challenge=challenge,
        accelerations=accelerations,
        methods=methods,
        weights=parse_weights(weights),
        params=params,
        output_dir=output,
        max_volumes=max_volumes,
        resume=resume,
        progress=progress,
        mask_type=mask_type,
        calibration=calibration,
        device=device,
        center_fractions=center_fractions,
    )
