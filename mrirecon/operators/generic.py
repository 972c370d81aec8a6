"""Generic operators: identity, diagonal, phase constraint, finite-difference gradient,
orthogonal wavelet."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.functional import (
    center_crop,
    center_pad,
    dwt2,
    forward_difference,
    forward_difference_adjoint,
    idwt2,
)
from mrirecon.functional.wavelet import wavelet_filters


class Identity(LinearOperator):
    """``I x = x`` on any shape."""

    def __init__(self, shape: Sequence[int] | None = None) -> None:
        super().__init__(shape, shape)

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y

    def _gram(self, x: Tensor) -> Tensor:
        return x

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """``I^+ = I``."""
        return y


class Diagonal(LinearOperator):
    """Element-wise multiplication by ``weights`` (broadcast over leading axes).

    The trailing shape of ``weights`` is the operator's domain and range.
    """

    def __init__(self, weights: Tensor) -> None:
        shape = tuple(weights.shape)
        super().__init__(shape, shape)
        self.register_buffer("weights", weights)

    def _forward(self, x: Tensor) -> Tensor:
        return self.weights * x

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.weights.conj() * y

    def _gram(self, x: Tensor) -> Tensor:
        return (self.weights.abs() ** 2) * x

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """``D^+ y``: ``y / w`` where ``w != 0``, zero where ``w == 0``."""
        w = self.weights
        safe = torch.where(w == 0, torch.ones_like(w), w)
        return torch.where(w == 0, torch.zeros((), dtype=y.dtype, device=y.device), y / safe)


class PhaseConstrained(LinearOperator):
    """A real image times a fixed phase: ``P x = p * x`` for real ``x``, ``P^H y = Re(p^* y)``.

    The variable of phase-constrained (homodyne-type) reconstruction: the image is ``rho p``
    with ``rho`` real and ``p`` a known (smooth, unit-modulus) phase, so ``A @ P`` for a
    forward operator ``A`` acts on the real ``rho`` and the solver has half the unknowns. The
    domain is real, so the adjoint is the one of the real inner product on the complex range,
    ``<P x, y>_R = Re sum conj(p x) y = sum x Re(conj(p) y) = <x, P^H y>``.

    Parameters
    ----------
    phase
        Complex ``(..., *shape)``; its trailing ``ndim`` axes are the domain (leading axes
        broadcast against the image's batch axes). Any complex weights are allowed; a phase
        constraint passes a unit-modulus ``p`` (``P^H P = I`` then).
    ndim
        Image axes (2 for ``(H, W)`` images).
    """

    def __init__(self, phase: Tensor, ndim: int = 2) -> None:
        if not isinstance(phase, Tensor) or not phase.is_complex() or phase.ndim < ndim:
            raise ValueError("PhaseConstrained: phase must be a complex tensor with at least "
                             f"{ndim} axes, got {getattr(phase, 'dtype', type(phase).__name__)}")
        shape = tuple(phase.shape[phase.ndim - ndim:])
        super().__init__(shape, shape)
        self.register_buffer("phase", phase)

    def _forward(self, x: Tensor) -> Tensor:
        if x.is_complex():  # the domain is real: a complex x would lose its imaginary part in P^H
            raise TypeError(f"PhaseConstrained: the image must be real (the phase is fixed), got {x.dtype}")
        return self.phase * x

    def _adjoint(self, y: Tensor) -> Tensor:
        return (self.phase.conj() * y).real

    def _gram(self, x: Tensor) -> Tensor:
        return (self.phase.abs() ** 2) * x


class FiniteDifference(LinearOperator):
    """Forward-difference gradient over the last ``ndim`` axes: ``(..., *N) -> (..., ndim, *N)``.

    Neumann boundary (the last difference is zero), as used for isotropic/anisotropic TV.
    ``absolute=True`` gives ``|D|``, the element-wise absolute value of the same matrix (for
    Pock-Chambolle diagonal preconditioners); ``|D|`` and its adjoint share the kernels of
    :mod:`mrirecon.functional.finite_differences`.
    """

    def __init__(self, ndim: int = 2, shape: Sequence[int] | None = None, *,
                 absolute: bool = False) -> None:
        if isinstance(ndim, bool) or not isinstance(ndim, numbers.Integral):
            # a shape given first, as Fourier((H, W)) takes it: "can't multiply sequence by
            # non-int of type 'tuple'" from (None,) * ndim
            hint = (f"; pass the image shape as shape: FiniteDifference({len(ndim)}, "
                    f"shape={tuple(ndim)})"
                    if isinstance(ndim, Sequence) and not isinstance(ndim, str) else "")
            raise TypeError(f"FiniteDifference: ndim (the first argument) is the number of "
                            f"trailing axes to difference, an int, got {ndim!r}{hint}")
        ndim = int(ndim)
        if shape is not None and len(shape) != ndim:
            raise ValueError(f"FiniteDifference: shape {tuple(shape)} must have {ndim} entries")
        dom = tuple(shape) if shape is not None else (None,) * ndim
        super().__init__(dom, (ndim,) + dom)
        self.ndim, self.absolute = ndim, bool(absolute)

    @property
    def name(self) -> str:
        return "|FiniteDifference|" if self.absolute else "FiniteDifference"

    def _forward(self, x: Tensor) -> Tensor:
        dims = range(-self.ndim, 0)
        return torch.stack([forward_difference(x, d, absolute=self.absolute) for d in dims],
                           dim=-self.ndim - 1)

    def _adjoint(self, y: Tensor) -> Tensor:
        parts = torch.unbind(y, dim=-self.ndim - 1)
        out = forward_difference_adjoint(parts[0], -self.ndim, absolute=self.absolute)
        for i, part in enumerate(parts[1:], start=1):
            out = out + forward_difference_adjoint(part, -self.ndim + i, absolute=self.absolute)
        return out


class Wavelet(LinearOperator):
    """Orthogonal periodised 2-D wavelet transform ``(..., H, W) -> (..., H', W')``.

    ``H', W'`` are ``H, W`` rounded up to a multiple of ``2**levels``; the input is zero-padded
    symmetrically first, so the operator is an isometry (``W^H W = I``) and ``W W^H = I`` when no
    padding is needed.

    Parameters
    ----------
    shape
        Image shape ``(H, W)``.
    wavelet
        PyWavelets name of an orthogonal wavelet (default ``"db4"`` as in SigPy's L1-wavelet);
        others, and ``"dmey"`` (its filter is orthonormal only to 2.2e-3), are refused here
        (:func:`~mrirecon.functional.wavelet.wavelet_filters`) whatever ``levels`` is.
    levels
        Decomposition levels; default: as many as the padded size allows (at most 4).
    """

    def __init__(self, shape: Sequence[int], wavelet: str = "db4", levels: int | None = None):
        h, w = (int(s) for s in shape)
        L = len(wavelet_filters(wavelet)[0])  # refuses the name whatever ``levels`` is
        if levels is None:
            levels = 4
            while levels > 1 and min(h, w) >> levels < 2 * L:
                levels -= 1
        if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < 1:
            raise ValueError(f"Wavelet: levels must be an integer >= 1, got {levels!r}")
        levels = int(levels)
        if min(h, w) < 2:  # was: "1 levels need ... 2 pixels ...; give at most 1"
            raise ValueError(f"Wavelet: the image is {h} x {w}, too short for any level (each "
                             "level halves both sides, so they need at least 2 pixels); give an "
                             "image of at least 2 x 2 pixels")
        if 1 << levels > min(h, w):  # was: padded to a multiple of 2**levels without a word
            # (levels 10 turned 32 x 32 into 1024 x 1024; 20 asked for 2**40 pixels)
            raise ValueError(f"Wavelet: {levels} levels need at least 2**{levels} = {1 << levels} pixels "
                             f"per side, the image is {h} x {w}; give at most "
                             f"{min(h, w).bit_length() - 1}")
        step = 2**levels
        ph, pw = -(-h // step) * step, -(-w // step) * step
        super().__init__((h, w), (ph, pw))
        self.wavelet, self.levels = wavelet, int(levels)
        self.shape, self.padded = (h, w), (ph, pw)

    def _forward(self, x: Tensor) -> Tensor:
        if self.padded != self.shape:
            x = center_pad(x, self.padded)
        return dwt2(x, self.wavelet, self.levels)

    def _adjoint(self, y: Tensor) -> Tensor:
        x = idwt2(y, self.wavelet, self.levels)
        return center_crop(x, self.shape) if self.padded != self.shape else x

    def _gram(self, x: Tensor) -> Tensor:
        return x

