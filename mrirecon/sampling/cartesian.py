"""fastMRI-compatible Cartesian column masks (same seed and width => the reference's mask).

Masks select k-space *columns* (phase-encoding lines). For a native complex k-space tensor
``(..., H, W)`` the undersampled axis is the last one, ``W`` (the reference works on the real
view ``(..., H, W, 2)`` and calls the same axis ``shape[-2]``).

Every mask function owns a NumPy ``RandomState`` created from ``seed``. A call with
``seed=None`` advances that state (training: fresh masks); a call with a seed (an int or a
tuple of ints, e.g. :func:`file_seed`) draws from a fresh ``RandomState(seed)`` and leaves the
owned one untouched (validation/test: every slice of a volume shares one mask); the numbers are
those of fastMRI's reseed-and-restore (``temp_seed``). The order of random draws matches
``fastmri.data.subsample`` 0.3.0 exactly: first the (centre fraction, acceleration) choice,
then the draw of the acceleration mask.

One mask function may be shared by threads: a seeded call touches no shared state, and the
unseeded calls take the instance's lock, so each draws one whole mask from the stream in turn.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mrirecon.core.checks import check_seed

Seed = int | tuple[int, ...] | None

#: The largest mask seed: the mask functions seed a numpy ``RandomState`` (as fastMRI's), which
#: takes ``[0, 2**32 - 1]``; ``undersample.fixed_seed`` and a training config's ``seed`` too.
MAX_MASK_SEED = 2**32 - 1


def file_seed(file_name: str | os.PathLike) -> tuple[int, ...]:
    """The fastMRI seed of a file: ``tuple(map(ord, name))`` of its base name.

    Parameters
    ----------
    file_name
        A file name (``"file1000000.h5"``) or a path, whose last component is used.
    """
    name = os.path.basename(os.fspath(file_name))
    if not name:
        raise ValueError(f"file_seed: no file name in {file_name!r}")
    return tuple(map(ord, name))


def _check_offset(who: str, offset, period: int) -> None:
    """The regular pattern's start column must lie in ``[0, period)``: a larger one silently
    dropped columns (offset 200 of a 4x mask on 128 columns sampled 10 of them, 12.8x)."""
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or not 0 <= offset < period:
        raise ValueError(f"{who}: offset must be an integer in [0, {period}) for this acceleration, "
                         f"got {offset!r}")


def acceleration_problem(acceleration: float) -> str | None:
    """Why a retrospective Cartesian mask cannot be drawn at ``acceleration``, or ``None``. 1
    keeps every column (fastMRI's ``equispaced_fraction`` mask then drops the last one: 32 of 33
    columns, labelled 1x; ``run`` warned that ``undersample.enabled`` was false). The rule of
    ``mrirecon run`` (:func:`~mrirecon.pipeline.validate.validate_pipeline`), ``mrirecon bench``
    and ``simulate mri``."""
    if not (isinstance(acceleration, numbers.Real) and math.isfinite(acceleration)
            and acceleration > 1):
        return (f"must be a finite number above 1, got {acceleration!r} (1 would keep every "
                "column, which is no undersampling)")
    return None


def center_fraction_problem(fraction: float, acceleration: float) -> str | None:
    """Why centre fraction ``fraction`` cannot go with ``acceleration`` (said after the
    fraction), or ``None``: the centre band alone keeps ``1 / acceleration`` of the columns or
    more, so the mask keeps more than the factor says (the bench labelled a 2x mask "8x"). The
    rule of :func:`~mrirecon.pipeline.validate.validate_pipeline` and ``mrirecon bench``."""
    if not (isinstance(fraction, numbers.Real) and math.isfinite(fraction) and 0 < fraction <= 1):
        return f"must be in (0, 1], got {fraction!r}"
    if fraction * acceleration >= 1:
        return (f"keeps at least 1 / {acceleration:g} of the columns in the centre band alone, so "
                f"no mask reaches acceleration {acceleration:g}; use a fraction below "
                f"{1 / acceleration:.3g}")
    return None


class MaskFunction:
    """Base class: centre band of low frequencies OR a subclass-specific acceleration mask.

    Parameters
    ----------
    center_fractions
        Fractions of columns kept around the centre; one pair (fraction, acceleration) is
        drawn per call.
    accelerations
        Nominal acceleration factors, same length as ``center_fractions`` unless
        ``allow_any_combination``.
    allow_any_combination
        Draw fraction and acceleration independently (``rng.choice`` on each list).
    seed
        Seed of the internal ``numpy.random.RandomState`` (``None``: from OS entropy).

    Notes
    -----
    Subclasses implement :meth:`_acceleration_mask`; :meth:`_sample` may be overridden when
    the centre band itself depends on the acceleration (``MagicFractionMask``); both draw from
    ``self.rng``. A seeded call runs them on a shallow copy whose ``rng`` is a fresh
    ``RandomState(seed)``; unseeded calls run them under the instance's lock (dropped when
    pickled or copied, a new one made on unpickling).
    """

    name = "base"

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: int | None = None,
    ) -> None:
        center_fractions = list(center_fractions)
        accelerations = list(accelerations)
        if not center_fractions or not accelerations:
            raise ValueError(f"{type(self).__name__}: center_fractions and accelerations must be non-empty")
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError(
                f"{type(self).__name__}: {len(center_fractions)} center_fractions but "
                f"{len(accelerations)} accelerations; they must match unless allow_any_combination"
            )
        for cf in center_fractions:
            if not 0 <= cf <= 1:
                raise ValueError(f"{type(self).__name__}: center fraction must be in [0, 1], got {cf}")
        for acc in accelerations:
            if not (acc >= 1 and math.isfinite(acc)):
                raise ValueError(f"{type(self).__name__}: acceleration must be finite and >= 1, got {acc}")
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.allow_any_combination = bool(allow_any_combination)
        check_seed(type(self).__name__, seed, MAX_MASK_SEED + 1)
        self.rng = np.random.RandomState(seed)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_lock", None)  # a lock cannot be pickled; the copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(center_fractions={self.center_fractions}, "
            f"accelerations={self.accelerations}, allow_any_combination={self.allow_any_combination})"
        )

    # -- public API -------------------------------------------------------------------------

    def __call__(self, num_cols: int, seed: Seed = None, offset: int | None = None) -> Tensor:
        """A boolean column mask ``(num_cols,)``.

        Parameters
        ----------
        num_cols
            Number of k-space columns ``W``.
        seed
            Per-call seed (int or tuple of ints); ``None`` advances the internal generator.
        offset
            Start column of the regular pattern (equispaced / magic masks); random if ``None``.
        """
        mask, _ = self.sample_vector(num_cols, seed=seed, offset=offset)
        return mask

    def sample_vector(
        self, num_cols: int, seed: Seed = None, offset: int | None = None
    ) -> tuple[Tensor, int]:
        """Boolean mask ``(num_cols,)`` and the number of fully sampled centre columns."""
        try:
            whole = float(num_cols).is_integer()
        except (TypeError, ValueError, OverflowError):
            whole = False
        if isinstance(num_cols, (bool, str, bytes)) or not whole:  # 368.7 was truncated to 368 without a word
            raise ValueError(f"{type(self).__name__}: num_cols must be a whole number of k-space "
                             f"columns, got {num_cols!r}")
        num_cols = int(num_cols)
        if num_cols < 1:
            raise ValueError(f"{type(self).__name__}: num_cols must be >= 1, got {num_cols}")
        too_high = [a for a in self.accelerations if a > num_cols]
        if too_high:  # 1e20: numpy's "high is out of bounds for int64", or an all-zero mask
            raise ValueError(f"{type(self).__name__}: acceleration {too_high[0]:g} is above the "
                             f"number of k-space columns, {num_cols}: a mask keeps about "
                             f"num_cols / acceleration of them, so the acceleration must be at "
                             f"most {num_cols}")
        if seed is None:  # one whole mask from the shared stream at a time
            with self._lock:
                center, accel, num_low = self._sample(num_cols, offset)
        else:
            center, accel, num_low = self._seeded(seed)._sample(num_cols, offset)
        mask = np.logical_or(center != 0, accel != 0)
        return torch.from_numpy(mask), int(num_low)

    def sample(
        self, shape: Sequence[int], seed: Seed = None, offset: int | None = None
    ) -> tuple[Tensor, int]:
        """Mask broadcast over a complex k-space of ``shape`` ``(..., H, W)``, fastMRI-style.

        Returns
        -------
        mask
            Boolean ``(1, ..., 1, W)`` with ``len(shape)`` axes (the reference's
            ``(1, ..., W, 1)`` without the trailing real/imaginary axis).
        num_low_frequencies
            Number of fully sampled centre columns.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ValueError(f"{type(self).__name__}.sample: shape must be (..., H, W), got {shape}")
        vec, num_low = self.sample_vector(shape[-1], seed=seed, offset=offset)
        return vec.reshape((1,) * (len(shape) - 1) + (shape[-1],)), num_low

    def _seeded(self, seed: Seed) -> MaskFunction:
        """A shallow copy drawing from a fresh ``RandomState(seed)``: the numbers fastMRI's
        ``rng.seed(seed)`` gives, without touching ``self.rng`` (reseeding and restoring the
        shared generator mixed concurrent calls' masks and lost the unseeded stream)."""
        check_seed(type(self).__name__, seed, MAX_MASK_SEED + 1)
        worker = copy.copy(self)
        worker.rng = np.random.RandomState(seed)
        return worker

    # -- template methods -------------------------------------------------------------------

    def _choose_acceleration(self) -> tuple[float, float]:
        if self.allow_any_combination:
            return self.rng.choice(self.center_fractions), self.rng.choice(self.accelerations)
        choice = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[choice], self.accelerations[choice]

    def _sample(self, num_cols: int, offset: int | None) -> tuple[np.ndarray, np.ndarray, int]:
        center_fraction, acceleration = self._choose_acceleration()
        num_low = round(num_cols * center_fraction)
        center = center_mask(num_cols, num_low)
        accel = self._acceleration_mask(num_cols, acceleration, offset, num_low)
        return center, accel, num_low

    def _acceleration_mask(
        self, num_cols: int, acceleration: float, offset: int | None, num_low: int
    ) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _acceleration_mask")


def center_mask(num_cols: int, num_low: int) -> np.ndarray:
    """Boolean ``(num_cols,)`` with ``num_low`` columns set from ``(num_cols - num_low + 1) // 2``."""
    if not 0 <= num_low <= num_cols:
        raise ValueError(f"center_mask: num_low {num_low} not in [0, {num_cols}]")
    mask = np.zeros(num_cols, dtype=bool)
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = True
    return mask


def _as_step(acceleration: float, who: str) -> int:
    step = int(round(float(acceleration)))
    if step != acceleration or step < 1:
        raise ValueError(f"{who}: acceleration must be a positive integer, got {acceleration}")
    return step


class RandomMask(MaskFunction):
    """Centre band plus columns kept independently with probability
    ``(N / acc - N_low) / (N - N_low)``, so that ``N / acc`` columns are kept on average."""

    name = "random"

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        if num_cols == num_low:
            raise ValueError(f"RandomMask: the centre band covers all {num_cols} columns")
        prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
        return self.rng.uniform(size=num_cols) < prob


class EquispacedMask(MaskFunction):
    """Centre band plus every ``acc``-th column from a (random) offset in ``[0, acc)``.

    The true acceleration is lower than ``acc`` because of the centre band.
    """

    name = "equispaced"

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        step = _as_step(acceleration, "EquispacedMask")
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        _check_offset(type(self).__name__, offset, round(acceleration))
        mask = np.zeros(num_cols, dtype=bool)
        mask[offset::step] = True
        return mask


class EquispacedFractionMask(MaskFunction):
    """Centre band plus columns ``round(offset + k * adj)`` with
    ``adj = acc (N_low - N) / (N_low acc - N)``, so that about ``N / acc`` columns are kept.

    The rounding makes the spacing slightly irregular; this is deliberate and matches the
    masks of the public fastMRI multi-coil data.
    """

    name = "equispaced_fraction"

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        denom = num_low * acceleration - num_cols
        if denom == 0:
            raise ValueError(
                f"EquispacedFractionMask: centre band {num_low} times acceleration {acceleration} "
                f"equals num_cols {num_cols}; no room for outer columns"
            )
        adjusted = (acceleration * (num_low - num_cols)) / denom
        if adjusted <= 0:
            raise ValueError(
                f"EquispacedFractionMask: centre band {num_low} of {num_cols} columns already "
                f"exceeds acceleration {acceleration}"
            )
        if offset is None:
            offset = self.rng.randint(0, high=round(adjusted))
        _check_offset(type(self).__name__, offset, round(adjusted))
        mask = np.zeros(num_cols, dtype=bool)
        samples = np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.uint)
        mask[samples] = True
        return mask


class MagicMask(MaskFunction):
    """Offset equispaced sampling that exploits conjugate symmetry (Defazio, arXiv:1912.01101).

    The positive and negative halves of k-space are sampled every ``acc`` columns with
    different offsets so that, under conjugate symmetry, they complement each other.
    """

    name = "magic"

    def _acceleration_mask(self, num_cols, acceleration, offset, num_low):
        step = _as_step(acceleration, type(self).__name__)
        if offset is None:
            offset = self.rng.randint(0, high=acceleration)
        _check_offset(type(self).__name__, offset, acceleration)
        if offset % 2 == 0:
            offset_pos, offset_neg = offset + 1, offset + 2
        else:
            offset_pos, offset_neg = offset + 2, offset - 1
        poslen = (num_cols + 1) // 2
        neglen = num_cols - poslen
        positive = np.zeros(poslen, dtype=bool)
        negative = np.zeros(neglen, dtype=bool)
        positive[offset_pos::step] = True
        negative[offset_neg::step] = True
        return np.fft.fftshift(np.concatenate((positive, negative[::-1])))


class MagicFractionMask(MagicMask):
    """:class:`MagicMask` whose centre band and spacing are adjusted towards ``N / acc``
    columns: ``N_low`` is clipped to ``[1, round(N / acc)]`` and the spacing is
    ``round(N / (round(N / acc) - N_low))`` (fastMRI's ``MagicMaskFractionFunc``). The spacing
    counts the band's columns as if the equispaced lines missed it, but some of them fall inside
    it, so the mask keeps about 5-8 % fewer than ``N / acc`` columns: 85-86 of 368 at 4x (an
    achieved acceleration of 4.3), 43-45 of 368 at 8x. :class:`EquispacedFractionMask` keeps
    ``N / acc`` to a column."""

    name = "magic_fraction"

    def _sample(self, num_cols, offset):
        center_fraction, acceleration = self._choose_acceleration()
        num_low = round(num_cols * center_fraction)
        target = round(num_cols / acceleration)
        num_low = max(min(num_low, target), 1)
        remaining = target - num_low
        if remaining <= 0:
            raise ValueError(
                f"MagicFractionMask: centre band of {num_low} columns already reaches the "
                f"{target} columns targeted for acceleration {acceleration} at width {num_cols}"
            )
        adjusted = round(num_cols / remaining)
        center = center_mask(num_cols, num_low)
        accel = self._acceleration_mask(num_cols, adjusted, offset, num_low)
        return center, accel, num_low


MASK_TYPES: dict[str, type[MaskFunction]] = {
    cls.name: cls
    for cls in (RandomMask, EquispacedMask, EquispacedFractionMask, MagicMask, MagicFractionMask)
}


def create_mask_for_mask_type(
    mask_type: str,
    center_fractions: Sequence[float],
    accelerations: Sequence[float],
    *,
    allow_any_combination: bool = False,
    seed: int | None = None,
) -> MaskFunction:
    """Build a mask function by name: ``random``, ``equispaced``, ``equispaced_fraction``,
    ``magic`` or ``magic_fraction`` (the reference's names)."""
    try:
        cls = MASK_TYPES[mask_type]
    except KeyError:
        raise ValueError(
            f"create_mask_for_mask_type: unknown mask type {mask_type!r}; expected one of "
            f"{sorted(MASK_TYPES)}"
        ) from None
    return cls(center_fractions, accelerations, allow_any_combination=allow_any_combination, seed=seed)


def apply_mask(
    kspace: Tensor,
    mask_fn: MaskFunction,
    *misplaced: object,
    seed: Seed = None,
    padding: tuple[int, int] | None = None,
    offset: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Undersample k-space columns like ``fastmri.data.transforms.apply_mask``.

    ``seed``, ``padding`` and ``offset`` are keyword-only: fastMRI's positional order is
    ``(data, mask_func, offset, seed, padding)``, and a ported positional call
    ``apply_mask(k, mask_fn, None, seed)`` read into another order drew an unseeded mask and
    took the seed tuple as padding (1 of 368 columns kept, fastMRI's 91). Positional extras
    raise a ``TypeError`` that says so.

    Parameters
    ----------
    kspace
        Complex k-space ``(..., H, W)``; columns are the last axis.
    mask_fn
        The mask function.
    seed
        Per-call seed, e.g. ``file_seed(name)`` so all slices of a volume share a mask.
    padding
        ``(left, right)`` from the ISMRMRD header: columns ``< left`` and ``>= right`` were
        never acquired and are removed from the mask.
    offset
        Offset of the regular pattern (equispaced / magic masks).

    Returns
    -------
    masked
        ``kspace`` with unsampled columns set to (+0) zero, same shape and dtype.
    mask
        Boolean ``(1, ..., 1, W)`` broadcastable against ``kspace``.
    num_low_frequencies
        Number of fully sampled centre columns.
    """
    if misplaced:
        raise TypeError(
            f"apply_mask: seed, padding and offset are keyword-only, got {len(misplaced)} more "
            "positional argument(s) after mask_fn (fastMRI's apply_mask takes them positionally "
            "as offset, seed, padding, in another order than this one's): write "
            "apply_mask(kspace, mask_fn, seed=..., padding=..., offset=...)")
    if not isinstance(kspace, Tensor) or kspace.ndim < 2:
        raise ValueError("apply_mask: kspace must be a tensor (..., H, W)")
    mask, num_low = mask_fn.sample(tuple(kspace.shape), seed=seed, offset=offset)
    mask = mask.to(kspace.device)
    if padding is not None:
        left, right = int(padding[0]), int(padding[1])
        if not 0 <= left <= right <= kspace.shape[-1]:
            raise ValueError(
                f"apply_mask: padding {padding} must satisfy 0 <= left <= right <= W={kspace.shape[-1]}"
            )
        mask = mask.clone()
        mask[..., :left] = False
        mask[..., right:] = False
    masked = torch.where(mask, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))
    return masked, mask, num_low
