"""Non-Cartesian multi-coil MRI operator ``A = W^(1/2) N S`` (NUFFT SENSE).

``S`` multiplies an image ``(..., H, W)`` by coil maps ``(..., C, H, W)``, ``N`` is the
orthonormally scaled NUFFT onto the trajectory (:func:`mrirecon.functional.nufft.nufft`,
normalised coordinates in ``[-0.5, 0.5)``), and ``W`` optional non-negative sample weights
(e.g. density compensation; ``A^H A = S^H N^H W N S``).

The weights are part of the operator, so the data must carry them too: a solver on ``A``
fits ``A x`` to the data it is given, and the density-weighted least-squares problem
``||W^(1/2) (N S x - y)||^2`` of raw samples ``y`` is ``||A x - W^(1/2) y||^2``. Pass
``op.weighted(y)`` (``y * sqrt(w)``), not ``y``. SigPy's ``SenseRecon(y, weights=w)`` weights
``y`` itself; ported as ``cg_sense(y, nufft_sense(maps, traj, w))`` the raw samples solve
another problem without error (NRMSE 5.7 against SigPy, radial 64 x 64 with ramp weights), and
no solver can tell: weighted and raw samples are both plausible data.

The normal operator uses Toeplitz embedding: ``N^H W N`` is a convolution with the
point-spread function of the weighted trajectory, whose circulant embedding on the
``(2H, 2W)`` grid is diagonalised by the FFT. Its (real) transfer function is computed once, at
construction, by one type-1 NUFFT; each ``gram`` call is then one zero-padded FFT pair per coil.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import broadcasts_to
from mrirecon.functional.nufft import (checked_eps, checked_trajectory, default_eps, nufft,
                                       nufft_adjoint, point_spread_kernel)
from mrirecon.operators.mri import MapsSupport, _checked_maps, check_batch_axes, coil_reduce


def _owned(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A copy of ``t`` in ``dtype`` that the operator alone holds, as a normal tensor (with a
    version counter, so the NUFFT's plans stay cached under ``torch.inference_mode``). The
    caller's trajectory was kept itself: editing it afterwards changed ``op(x)`` and ``op.H``
    but not the Toeplitz kernel of ``op.gram`` (0.36 apart)."""
    with torch.inference_mode(False):
        return t.to(dtype, copy=True).contiguous()


class NufftSense(MapsSupport, LinearOperator):
    """Multi-coil non-Cartesian operator ``W^(1/2) N S``; see the module docstring.

    Parameters
    ----------
    maps
        ``(..., C, H, W)`` complex coil sensitivities; leading axes are slices (or ``1``) and
        broadcast against the image's leading axes.
    trajectory
        ``(*K, 2)`` normalised k-space coordinates (e.g. ``(spokes, samples, 2)``), shared by
        all slices and coils.
    weights
        Optional non-negative sample weights ``w`` broadcastable to ``K``; the operator is then
        ``W^(1/2) N S``, so its data are the weighted samples ``op.weighted(y) = sqrt(w) y``,
        not the raw ``y`` (unlike ``sigpy.mri.app.SenseRecon(weights=w)``, which weights ``y``
        itself); :meth:`unweighted` undoes it.
    eps
        NUFFT tolerance (default by the maps' precision, see
        :data:`mrirecon.functional.nufft.DEFAULT_EPS`).
    toeplitz
        Use the Toeplitz-embedded gram (default); ``False`` falls back to ``A^H A``.

    Shapes: image ``(..., H, W)``, k-space ``(..., C, *K)``.

    ``op.to(torch.complex128)`` moves the maps to complex128 and the trajectory, weights and
    Toeplitz kernel to float64 (:mod:`mrirecon.core.kinds`; they became complex and
    ``A x`` failed with "nufft: trajectory must be real"), and a default ``eps`` to the new
    precision's; the trajectory and kernel keep the values they were stored with (float32 for
    complex64 maps), so for results accurate to complex128 build the operator from
    ``maps.to(torch.complex128)``.
    """

    def __init__(self, maps: Tensor, trajectory: Tensor, weights: Tensor | None = None, *,
                 eps: float | None = None, toeplitz: bool = True) -> None:
        if not isinstance(maps, Tensor) or maps.ndim < 3 or not maps.is_complex():
            raise ValueError(f"nufft_sense: maps must be complex (..., C, H, W), got "
                             f"{getattr(maps, 'shape', type(maps).__name__)}")
        maps = _checked_maps(maps, "nufft_sense")  # NaN maps gave a NaN zero-filled image
        c, h, w = maps.shape[-3:]
        trajectory = checked_trajectory(trajectory, (h, w), "nufft_sense")
        trajectory = trajectory.to(torch.float64).contiguous()
        kshape = tuple(trajectory.shape[:-1])
        super().__init__((h, w), (c, *kshape))
        self.image_shape = (h, w)
        self.kshape = kshape
        self.eps = checked_eps(eps, maps.dtype, "nufft_sense")
        self.register_buffer("maps", maps)
        self.register_buffer("trajectory", _owned(trajectory, maps.real.dtype))
        if weights is not None:
            # complex weights are refused before the cast to float64, which kept their real part
            # (numpy: without a word)
            if weights.is_complex() if isinstance(weights, Tensor) else np.iscomplexobj(weights):
                raise ValueError(f"nufft_sense: weights must be real, finite and >= 0, got "
                                 f"{getattr(weights, 'dtype', 'complex')} values (the imaginary "
                                 "part would be dropped; pass weights.real or weights.abs() if "
                                 "that is meant)")
            weights = torch.as_tensor(weights, dtype=torch.float64)
            if (weights < 0).any() or not torch.isfinite(weights).all():
                raise ValueError("nufft_sense: weights must be real, finite and >= 0")
            if not broadcasts_to(tuple(weights.shape), kshape):  # was a broadcast RuntimeError
                raise ValueError(f"nufft_sense: weights must have the shape {kshape} of the "
                                 f"trajectory's samples (trajectory {tuple(trajectory.shape)}) or "
                                 f"broadcast to it, got {tuple(weights.shape)}")
            weights = torch.broadcast_to(weights, kshape).contiguous()
            self.register_buffer("weights", _owned(weights, maps.real.dtype))
            self.register_buffer("_sqrt_weights", _owned(weights.sqrt(), maps.real.dtype))
        else:
            self.weights = None
            self._sqrt_weights = None
        self.toeplitz = bool(toeplitz)
        if self.toeplitz:
            kernel = point_spread_kernel(trajectory, (h, w), weights)
            self.register_buffer("kernel", kernel.to(maps.real.dtype).to(maps.device))
        else:
            self.kernel = None
        self._built = True
        self._check_unedited("nufft_sense")  # records the versions as built

    def __setattr__(self, name: str, value) -> None:
        """The trajectory and weights are fixed once built: the Toeplitz kernel and
        ``sqrt(weights)`` are made from them (a replaced trajectory left the gram 0.50 off
        ``A^H A``, replaced weights changed nothing, both without a word)."""
        if name in _FIXED and self.__dict__.get("_built"):
            raise AttributeError(
                f"NufftSense.{name} cannot be replaced: the operator's Toeplitz kernel and "
                "sqrt(weights) were made from it; build a new operator, nufft_sense(op.maps, "
                "trajectory, weights, eps=op.eps) (op.with_maps(maps) keeps the trajectory and "
                "weights and takes new maps)")
        super().__setattr__(name, value)

    def _check_unedited(self, who: str) -> None:
        """Refuse a trajectory or weights edited in place since the operator was built (their
        version counters; a move by ``.to()`` makes new tensors, which are recorded afresh)."""
        seen = self.__dict__.setdefault("_versions", {})
        for name in _FIXED:
            t = getattr(self, name)
            if t is None or t.is_inference():
                continue
            if seen.get(name, (None,))[0] != id(t):
                seen[name] = (id(t), t._version)
            elif seen[name][1] != t._version:
                raise ValueError(
                    f"{who}: op.{name} was edited in place after the operator was built; its "
                    "Toeplitz kernel and sqrt(weights) are from the old values. Build a new "
                    "operator: nufft_sense(op.maps, trajectory, weights, eps=op.eps)")

    @property
    def num_coils(self) -> int:
        return self.maps.shape[-3]

    def _apply(self, fn, recurse: bool = True):
        """Real buffers stay real (``LinearOperator._apply``, :mod:`mrirecon.core.kinds`); a
        default ``eps`` follows the maps' new precision."""
        before = self.maps.dtype
        out = super()._apply(fn, recurse)
        if self.maps.dtype != before and self.eps == default_eps(before):
            self.eps = default_eps(self.maps.dtype)
        return out

    def weighted(self, y: Tensor) -> Tensor:
        """The raw samples ``y`` ``(..., C, *K)`` as this operator's data: ``sqrt(w) y`` (``y``
        itself when the operator has no weights). ``cg_sense(op.weighted(y), op)`` solves the
        density-weighted problem that ``sigpy.mri.app.SenseRecon(y, weights=w)`` solves."""
        sw = self._sqrt_weights
        return y if sw is None else y * sw

    def unweighted(self, y: Tensor) -> Tensor:
        """The samples without the operator's ``W^(1/2)`` weighting: ``y / sqrt(w)`` where
        ``w > 0`` and 0 where ``w = 0`` (``y`` itself when the operator has no weights)."""
        sw = self._sqrt_weights
        if sw is None:
            return y
        return y * torch.where(sw > 0, 1 / sw.clamp_min(torch.finfo(sw.dtype).tiny), torch.zeros_like(sw))

    def _check_input(self, v: Tensor, core: int, who: str) -> None:
        """Batch axes that fit the maps'; and a warning, once per operator, when ``v`` has more
        precision than the operator: complex128 data through complex64 maps came out complex128
        but accurate to 7e-6 (eps and trajectory of the maps' precision), 8.6e-13 with
        complex128 maps, without a word."""
        check_batch_axes(self, v, core, who)
        self._check_unedited(who)
        wide = torch.promote_types(v.dtype, self.maps.dtype)
        if wide != self.maps.dtype and not getattr(self, "_warned_precision", False):
            self._warned_precision = True
            warnings.warn(f"{who}: {v.dtype} input through an operator built from "
                          f"{self.maps.dtype} maps: the NUFFT runs at eps={self.eps:g} on a "
                          f"{self.trajectory.dtype} trajectory, so the {wide} result is accurate "
                          f"to about {self.eps:g}, not to {wide}'s precision; build it from "
                          f"maps.to({wide}) for that", UserWarning, stacklevel=2)

    def _forward(self, x: Tensor) -> Tensor:
        self._check_input(x, 2, self.name)
        k = nufft(self.maps * x.unsqueeze(-3), self.trajectory, eps=self.eps)
        return k if self._sqrt_weights is None else k * self._sqrt_weights

    def _adjoint(self, y: Tensor) -> Tensor:
        self._check_input(y, 1 + len(self.kshape), f"{self.name}.H")
        if self._sqrt_weights is not None:
            y = y * self._sqrt_weights
        return coil_reduce(self.maps, nufft_adjoint(y, self.trajectory, self.image_shape, eps=self.eps))

    def _gram(self, x: Tensor) -> Tensor:
        self._check_input(x, 2, f"{self.name}.gram")
        if not self.toeplitz:
            return self._adjoint(self._forward(x))
        return coil_reduce(self.maps, toeplitz_apply(self.maps * x.unsqueeze(-3), self.kernel))

    # pieces for models working on coil images (sensitivities estimated by a network)
    def expand(self, x: Tensor) -> Tensor:
        """``S x``: coil images of an image."""
        return self.maps * x.unsqueeze(-3)

    def reduce(self, coil_images: Tensor) -> Tensor:
        """``S^H``: coil combination with the maps."""
        return coil_reduce(self.maps, coil_images)

    def with_maps(self, maps: Tensor) -> NufftSense:
        """Same trajectory and weights, new sensitivities (the kernel is reused); the maps are
        checked as :func:`nufft_sense` checks them (NaN or all-zero maps, another grid)."""
        maps = _checked_maps(maps, "NufftSense.with_maps")
        if tuple(maps.shape[-2:]) != tuple(self.image_shape):
            raise ValueError(f"NufftSense.with_maps: maps {tuple(maps.shape)} must be on the "
                             f"operator's image grid {tuple(self.image_shape)}")
        new = NufftSense.__new__(NufftSense)
        LinearOperator.__init__(new, self.domain_shape, (maps.shape[-3], *self.kshape))
        new.image_shape, new.kshape, new.eps, new.toeplitz = (self.image_shape, self.kshape,
                                                              self.eps, self.toeplitz)
        new.register_buffer("maps", maps)
        new.register_buffer("trajectory", self.trajectory)
        for name in ("weights", "_sqrt_weights", "kernel"):
            value = getattr(self, name)
            if value is None:
                setattr(new, name, None)
            else:
                new.register_buffer(name, value)
        new._built = True
        new._check_unedited("NufftSense.with_maps")
        return new


_FIXED = ("trajectory", "weights")


def toeplitz_apply(coil_images: Tensor, kernel: Tensor) -> Tensor:
    """``N^H W N`` on images ``(..., H, W)`` by the circulant embedding ``kernel`` ``(2H, 2W)``:
    one zero-padded 2-D FFT pair on the ``(2H, 2W)`` grid per image, then the crop.

    (Pruned variants, 1-D FFTs that skip the zero rows, measured slower than the library's
    multi-dimensional FFT on the padded grid.)
    """
    h, w = coil_images.shape[-2:]
    z = torch.fft.fft2(coil_images, s=(2 * h, 2 * w))
    z = z.mul_(kernel)
    return torch.fft.ifft2(z)[..., :h, :w]


def empty_readouts(y: Tensor) -> Tensor:
    """``(..., readouts)`` bool: the readouts of samples ``y`` ``(..., coils, readouts,
    samples)`` that hold no sample in any coil (their centre sample too). A measured readout
    always holds some signal or noise; an exactly zero one was lost (a file writes lost spokes
    as zeros), and taken as measured it pulls the image towards zero k-space there (10 of 40
    spokes: 28 % error, 0.03 % with them dropped)."""
    return ~(y != 0).any(-1).any(-2)


def empty_sample_runs(y: Tensor) -> tuple[int, int]:
    """``(leading, trailing)``: how many samples at the start and at the end of every readout
    of ``y`` ``(..., readouts, samples)`` are zero in every readout and coil (``(0, 0)`` for
    all-zero ``y``, which the callers refuse by itself)."""
    held = (y != 0).reshape(-1, y.shape[-1]).any(0).nonzero().flatten()
    if not len(held):
        return 0, 0
    return int(held[0]), int(y.shape[-1] - 1 - held[-1])


def listed(indices, limit: int = 5) -> str:
    """``"0, 4, 8, 12, 16, ..."``: the first ``limit`` of ``indices``."""
    values = [int(i) for i in indices]
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")


def sample_runs_message(y: Tensor, done: str) -> str | None:
    """What :func:`empty_sample_runs` finds in ``y``, as a sentence ending in ``done`` (what
    became of those samples), or ``None``."""
    lead, trail = empty_sample_runs(y)
    n = y.shape[-1]
    runs = ([f"0..{lead - 1}"] if lead else []) + ([f"{n - trail}..{n - 1}"] if trail else [])
    if not runs:
        return None
    return (f"readout samples {' and '.join(runs)} (of {n}) are zero in every readout and coil: "
            f"not measured? {done}")


def nufft_sense(maps: Tensor, trajectory: Tensor, weights: Tensor | None = None, *,
                eps: float | None = None, toeplitz: bool = True) -> NufftSense:
    """The non-Cartesian multi-coil operator ``W^(1/2) N S``; see :class:`NufftSense`.

    With ``weights`` the operator's data are the weighted samples, not the raw ones (SigPy's
    ``SenseRecon(weights=w)`` weights them itself)::

        op = nufft_sense(maps, trajectory, weights)
        x = cg_sense(op.weighted(y), op)   # y: raw samples (..., C, *K)
    """
    return NufftSense(maps, trajectory, weights, eps=eps, toeplitz=toeplitz)
