"""The undersampling masks of :func:`mrirecon.data.simulate_mri.simulate_mri_dataset`: the
acceleration and centre fraction checked, and every file's mask (seeded by its name) checked to
keep a calibration band, before any volume is simulated (split from ``simulate_mri.py``)."""

from __future__ import annotations

import numbers

from mrirecon.sampling.cartesian import (acceleration_problem, center_fraction_problem,
                                         create_mask_for_mask_type)

#: Fewest k-space columns a simulated file's mask may keep: a calibration band.
MIN_SIMULATED_COLUMNS = 3


def _centre_fraction(acceleration: float, center_fraction: float | None) -> float:
    """The centre fraction of :func:`simulate_mri_dataset`'s masks at ``acceleration``."""
    return 0.32 / float(acceleration) if center_fraction is None else float(center_fraction)


def _columns_kept(mask_fn, width: int, names: list[str]):
    """The columns ``mask_fn`` keeps of ``width`` in each file of ``names``, lazily (each mask is
    seeded by its file name, as the files are written)."""
    from mrirecon.sampling.cartesian import file_seed

    return (int(mask_fn.sample_vector(width, seed=file_seed(name))[0].sum()) for name in names)


def _largest_hint(size: tuple[int, int], mask_type: str, center_fraction: float | None,
                  names: list[str]) -> str:
    """``": use at most N (...)"`` with ``N`` the largest whole acceleration whose masks keep
    :data:`MIN_SIMULATED_COLUMNS` columns in every file ``names``, or ``""`` when no
    acceleration of 2 or more does. A refusal said "use at most 32" for 32 columns, and 32 (and
    16) were then refused for keeping 1 column (``size`` 32: 11 passes)."""
    from mrirecon.sampling.cartesian import center_fraction_problem, create_mask_for_mask_type

    try:
        width = int(size[-1])
    except (TypeError, ValueError, IndexError):
        return ""
    for acc in range(width, 1, -1):
        cf = _centre_fraction(acc, center_fraction)
        if center_fraction_problem(cf, acc) is not None:
            continue
        mask_fn = create_mask_for_mask_type(mask_type, [cf], [float(acc)])
        if all(n >= MIN_SIMULATED_COLUMNS for n in _columns_kept(mask_fn, width, names)):
            return (f": use at most {acc} (the largest whole acceleration whose masks keep "
                    f"at least {MIN_SIMULATED_COLUMNS} of the {width} columns in every file)")
    return ""


def simulation_mask(acceleration: float | None, center_fraction: float | None, mask_type: str,
                    size, names: list[str]):
    """The mask function of a simulated dataset (``None`` for fully sampled files), refused
    (``ValueError``, naming the largest whole acceleration that passes) when ``acceleration``
    or its centre fraction is invalid, exceeds the ``size[-1]`` columns, or leaves a file of
    ``names`` fewer than :data:`MIN_SIMULATED_COLUMNS` columns."""
    mask_fn = None
    if acceleration is not None:
        if (why := acceleration_problem(acceleration)) is not None:
            raise ValueError(f"simulate_mri: acceleration (--acceleration): {why}; for fully "
                             "sampled files leave it out (acceleration=None)")
        if acceleration > size[-1]:  # 1e20: "high is out of bounds for int64"; 1e308: OverflowError
            raise ValueError(f"simulate_mri: acceleration (--acceleration) {acceleration:g} is "
                             f"above the {size[-1]} k-space columns (--size); a mask keeps about "
                             f"columns / acceleration of them"
                             f"{_largest_hint(size, mask_type, center_fraction, names)}")
        cf = _centre_fraction(acceleration, center_fraction)
        if (why := center_fraction_problem(cf, acceleration)) is not None:
            raise ValueError(f"simulate_mri: center_fraction {cf:g}: {why}")
        mask_fn = create_mask_for_mask_type(mask_type, [cf], [float(acceleration)])
    if mask_fn is not None and isinstance(size[-1], numbers.Integral):  # before any volume
        kept = min(_columns_kept(mask_fn, int(size[-1]), names))
        if kept < MIN_SIMULATED_COLUMNS:  # nothing to reconstruct or calibrate from: no file
            raise ValueError(f"simulate_mri: acceleration {acceleration:g} keeps {kept} of "
                             f"{size[-1]} k-space columns; at least {MIN_SIMULATED_COLUMNS} (a "
                             f"calibration band) are needed"
                             f"{_largest_hint(size, mask_type, center_fraction, names)}, or give "
                             "more columns (--size)")
    return mask_fn
