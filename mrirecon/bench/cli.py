"""``mrirecon bench`` arguments: the command line's strings -> :func:`~mrirecon.bench.mri.run_bench`
or :func:`~mrirecon.bench.ct.run_ct_bench` (``--challenge ct``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mrirecon.bench.table import BenchTable
from mrirecon.pipeline.schema import CalibrateConfig


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
            if name.strip() in out and out[name.strip()] != value.strip():  # the last one won
                raise ValueError(f"--weights: {name.strip()} given twice ({out[name.strip()]} and "
                                 f"{value.strip()}); one method, one set of weights")
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
    photons: float | None = None,
    remove_oversampling: bool = False,
) -> BenchTable:
    """The ``mrirecon bench`` subcommand with its string arguments (``--weights m=PATH``,
    ``--set method.param=value``, ``--methods a,b``) converted for :func:`run_bench` or, for
    ``challenge="ct"``, :func:`run_ct_bench`. Options that do not apply to the challenge are
    refused with an error naming them, never ignored."""
    from mrirecon.core.config import from_dict
    from mrirecon.pipeline.validate import check_calibrate

    params, calib = parse_sets(sets)
    if challenge == "ct":
        from mrirecon.bench.ct import VIEW_MASK, ct_accelerations, run_ct_bench

        if mask_type is not None and mask_type != VIEW_MASK:
            raise ValueError(f"--mask-type {mask_type}: CT keeps every k-th view ({VIEW_MASK}, k = "
                             "--accelerations); fastMRI mask types apply to the MRI challenges")
        if center_fractions is not None:
            raise ValueError("--center-fractions applies to MRI challenges, not --challenge ct")
        if calib:
            raise ValueError(f"--set calibrate.{next(iter(calib))}: CT has no coil calibration")
        if remove_oversampling:
            raise ValueError("--remove-oversampling crops MRI readouts; CT sinograms have none")
        return run_ct_bench(data, ct_accelerations(accelerations), methods,
                            weights=parse_weights(weights), params=params, output_dir=output,
                            photons=photons, max_volumes=max_volumes, resume=resume,
                            progress=progress, device=device, verbose=True)
    from mrirecon.bench.mri import run_bench

    if photons is not None:
        raise ValueError("--photons applies to --challenge ct (a dose for CT sinograms), not "
                         f"--challenge {challenge}")
    calibration = from_dict(CalibrateConfig, calib, source="--set", prefix="calibrate")
    check_calibrate(calibration, "--set")  # run's checks: crop=5 was lowered to 1 without a word
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
        remove_oversampling=remove_oversampling,
    )
