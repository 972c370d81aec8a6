"""Non-uniform FFT kernels: the one place a NUFFT backend is called.

Convention (shared by :mod:`mrirecon.sampling.nonuniform` and :mod:`mrirecon.operators.nufft`):
k-space coordinates are *normalised*: cycles per field of view divided by the matrix size, so
the sampled band of an ``(H, W)`` grid is ``[-0.5, 0.5)`` per axis (0.5 is the Nyquist edge of
the image grid; multiply by ``(H, W)`` for cycles per FOV). Coordinate ``[..., 0]`` runs along
``H`` (rows), ``[..., 1]`` along ``W``. Pixel ``n`` sits at position ``n - N // 2``, as for
:func:`~mrirecon.functional.fft2c`, and the transforms are scaled by ``1 / sqrt(H W)``:

    nufft(x, k)_j = (H W)^(-1/2) sum_n x[n] exp(-2 pi i k_j . (n - N // 2))

so that on the Cartesian grid ``k = (m - N // 2) / N`` the NUFFT equals ``fft2c``, and
:func:`nufft_adjoint` is its exact adjoint (the backend's type-1 and type-2 transforms share
one kernel, so the dot test holds to rounding, whatever the tolerance ``eps``).

Backend: FINUFFT (CPU, OpenMP threads = ``torch.get_num_threads()``), chosen by measurement
(``benchmarks/bench_noncartesian.py``); on CUDA tensors cuFINUFFT is used when installed. Both
sit behind :func:`_plan`, the only function that touches a backend, so another one (e.g. a
GPU library) slots in there. Plans (which sort the points once) are cached per trajectory
tensor (and its version: an in-place edit makes a new plan), shape, batch size, precision and
device, and a cached plan is used only while the tensor still holds the coordinates it was made
for (one O(M) comparison: a numpy buffer refilled in place and wrapped again with
``torch.from_numpy`` keeps its address and version, and got the first trajectory's plan, error
1.4); inference tensors, which have no version counter, are not cached. Threads may share the
cache (:class:`~mrirecon.core.caches.BoundedLRU`: one lock around each lookup and store, none
while a plan is built; a raw ``KeyError`` came from threads reconstructing at once). A
trajectory that a plan is made for is checked first (:func:`checked_trajectory`: finite, normalised): NaN or Inf
coordinates crashed the process (FINUFFT segfaults) or gave NaN images, and coordinates in
radians or cycles/FOV were wrapped into the band silently (errors 1.4).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

from mrirecon.core.caches import BoundedLRU, register as register_cache

#: default relative tolerance of the backend by precision (single: well inside the 1e-4 accuracy
#: target; double: tight enough that the Toeplitz gram equals A^H A to ~1e-11)
DEFAULT_EPS = {torch.complex64: 1e-5, torch.complex128: 1e-12}
_CACHE_SIZE = 16


_plans = BoundedLRU(_CACHE_SIZE)
register_cache(_plans.clear)


def default_eps(dtype: torch.dtype) -> float:
    """The default backend tolerance for a complex ``dtype``."""
    return DEFAULT_EPS.get(dtype, 1e-5)


def checked_eps(eps: float | None, dtype: torch.dtype, who: str) -> float:
    """The backend tolerance: :func:`default_eps` for ``None``, else a number in ``(0, 1)``.

    FINUFFT takes anything: 0 or a negative value is raised to machine precision with a warning,
    1 or more gives its crudest kernel (2 points) and NaN some kernel without a word."""
    if eps is None:
        return default_eps(dtype)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
        raise ValueError(f"{who}: eps must be a number in (0, 1) (the NUFFT's relative "
                         f"tolerance, e.g. 1e-6), got {eps!r}")
    return float(eps)


def _check(coords: Tensor, who: str) -> None:
    if not isinstance(coords, Tensor) or coords.ndim < 2 or coords.shape[-1] != 2:
        raise ValueError(f"{who}: trajectory must be a tensor (..., 2), got "
                         f"{getattr(coords, 'shape', type(coords).__name__)}")
    if coords.is_complex():
        raise ValueError(f"{who}: trajectory must be real")


def checked_trajectory(trajectory, shape: tuple[int, int], who: str) -> Tensor:
    """``trajectory`` as a real tensor ``(*K, 2)`` of finite, normalised coordinates, else a
    ``ValueError`` naming ``who``: non-finite coordinates name the first readout (the first
    index of ``K``) holding one, and coordinates beyond ``[-0.5, 0.5]`` (radians, cycles/FOV)
    are refused with the conversion. Shared by every public function that takes a trajectory
    and an image grid (:func:`~mrirecon.operators.nufft.nufft_sense`, the density weights,
    the non-Cartesian coil maps): in another unit they returned weights and maps for another
    k-space without a word."""
    if not isinstance(trajectory, Tensor):
        trajectory = torch.as_tensor(trajectory)
    if trajectory.ndim < 2 or trajectory.shape[-1] != 2 or trajectory.is_complex():
        raise ValueError(f"{who}: trajectory must be real (*K, 2), got {tuple(trajectory.shape)}")
    if trajectory.numel() == 0:  # radial_density failed in torch.max, nufft_sense in cg_sense
        raise ValueError(f"{who}: trajectory {tuple(trajectory.shape)} holds no sample")
    if not trajectory.is_floating_point():
        trajectory = trajectory.to(torch.float64)
    bad = ~torch.isfinite(trajectory).all(-1)
    if bool(bad.any()):
        where = bad.reshape(bad.shape[0], -1).any(-1)
        first = int(where.nonzero()[0])
        raise ValueError(f"{who}: trajectory has non-finite (NaN or Inf) coordinates in "
                         f"{int(where.sum())} of {bad.shape[0]} readout(s) (first: readout {first} "
                         f"of trajectory {tuple(trajectory.shape)}); drop those readouts and their "
                         "samples")
    peak = float(trajectory.abs().max()) if trajectory.numel() else 0.0
    if peak > 0.5 + 1e-6:
        h, w = int(shape[0]), int(shape[1])
        raise ValueError(
            f"{who}: trajectory must be normalised to [-0.5, 0.5) (cycles/FOV divided by the "
            f"matrix size {(h, w)}); got max |k| = {peak:.4g}. Divide coordinates in cycles/FOV "
            f"by (H, W), or in radians (max pi) by 2 pi.")
    return trajectory


def _same_values(a: Tensor, b: Tensor) -> bool:
    """``a`` and ``b`` (same shape and device) hold the same values: ``numpy.array_equal`` on
    the CPU (10 us for 100 000 points against 110 us for ``torch.equal`` on one thread; a plan's
    execution takes milliseconds)."""
    if a.device.type == "cpu" and a.dtype == b.dtype and a.shape == b.shape:
        return bool(np.array_equal(a.numpy(), b.numpy()))
    return a.dtype == b.dtype and torch.equal(a, b)


def _plan(kind: int, coords: Tensor, shape: tuple[int, int], n_trans: int, dtype: torch.dtype,
          eps: float, *, check=None, **opts):
    """A cached backend plan with its points set: ``kind`` 2 (uniform -> points) or 1 (back).

    ``coords`` ``(M, 2)`` normalised; the plan's ``execute`` maps ``(n_trans, H, W)`` to
    ``(n_trans, M)`` (type 2) or back (type 1), unnormalised, with sign ``-1`` for type 2 and
    ``+1`` for type 1. ``check`` (a callable, or ``None`` where the caller checked the
    coordinates) is called before a new plan's points are set: what the backend cannot take
    (NaN, Inf) must never reach it. A cached plan is returned only while ``coords`` holds the
    values it was made for (a snapshot is kept with it).
    """
    device = coords.device
    # small transforms run faster on one thread (no OpenMP start-up and wake-ups)
    work = n_trans * max(coords.shape[0], shape[0] * shape[1])
    threads = 1 if work < 2**17 else torch.get_num_threads()
    # above 1e-5 a 1.25x fine grid with a wider kernel beats the classic 2x grid on CPU
    # (benchmarks/bench_noncartesian.py); at 1e-5 and below (the single-precision default) it
    # runs out of kernel width, so the 2x grid is used
    opts.setdefault("upsampfac", 1.25 if eps > 1e-5 else 2.0)
    # inference tensors (built under torch.inference_mode) carry no version counter, so an
    # in-place edit of one cannot be told from the same coordinates: they are not cached (a
    # cached plan gave the old coordinates' samples, error 1.27); NufftSense keeps a normal copy
    cache = not coords.is_inference()
    key = (kind, coords.data_ptr(), coords._version if cache else -1, tuple(coords.shape), shape,
           n_trans, dtype, str(device), float(eps), threads, tuple(sorted(opts.items())))
    hit = _plans.get(key) if cache else None
    if hit is not None:
        # the same address and version but other values: a numpy buffer refilled in place (its
        # writes bump no version) and wrapped again; the old plan gave the old trajectory's samples
        if _same_values(hit[1], coords.detach()):
            return hit[0]
        _plans.discard(key, hit)
    if check is not None:
        check()
    isign = -1 if kind == 2 else 1
    cdtype = "complex64" if dtype == torch.complex64 else "complex128"
    rdtype = torch.float32 if dtype == torch.complex64 else torch.float64
    # FINUFFT wants points in [-3 pi, 3 pi); modes in CMCL order (-N/2 .. N/2 - 1)
    pts = (2 * math.pi) * coords.detach().to(rdtype)
    if device.type == "cuda":
        try:
            import cufinufft
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError("NUFFT on CUDA tensors needs cufinufft (pip install cufinufft)") from exc
        plan = cufinufft.Plan(kind, shape, n_trans=n_trans, eps=eps, isign=isign, dtype=cdtype,
                              **opts)
        x, y = pts[:, 0].contiguous(), pts[:, 1].contiguous()
    else:
        import finufft

        plan = finufft.Plan(kind, shape, n_trans=n_trans, eps=eps, isign=isign, dtype=cdtype,
                            nthreads=threads, **opts)
        x, y = (np.ascontiguousarray(pts[:, i].numpy()) for i in (0, 1))
    plan.setpts(x, y)
    if not cache:
        plan._mrirecon_points = (x, y)  # the backend reads them at execute
        return plan
    # a snapshot of the coordinates to compare a later hit with; the tensor itself stays alive
    # with its plan, so its data_ptr cannot be reused by another tensor
    _plans.put(key, (plan, coords.detach().clone(), coords, x, y))
    return plan


def _execute(plan, data: Tensor, out_shape: tuple[int, ...]) -> Tensor:
    # a lazy conjugate (x.conj(), autograd's gradient of Re<A x, y>) is resolved: numpy refuses
    # it, and cuFINUFFT would read the unconjugated memory through __cuda_array_interface__
    data = data.detach().resolve_conj().resolve_neg().contiguous()
    if data.device.type == "cuda":  # pragma: no cover - depends on the machine
        out = torch.empty(out_shape, dtype=data.dtype, device=data.device)
        plan.execute(data, out=out)
        return out
    return torch.from_numpy(plan.execute(data.numpy()).reshape(out_shape))


def _checker(coords: Tensor, shape: tuple[int, int], who: str):
    """:func:`checked_trajectory` of ``coords`` ``(*K, 2)``, for :func:`_plan` to call before
    it sets a new plan's points (a cached plan's points were checked when it was made)."""
    return lambda: checked_trajectory(coords.detach(), shape, who)


def _type2(x: Tensor, coords: Tensor, eps: float, who: str = "nufft") -> Tensor:
    h, w = x.shape[-2:]
    batch = x.shape[:-2]
    b = math.prod(batch)
    pts = coords.reshape(-1, 2)
    m = pts.shape[0]
    if b == 0:
        return x.new_zeros((*batch, *coords.shape[:-1]))
    plan = _plan(2, pts, (h, w), b, x.dtype, eps, check=_checker(coords, (h, w), who))
    data = x.reshape(b, h, w) if b > 1 else x.reshape(h, w)
    out = _execute(plan, data, (b, m) if b > 1 else (m,))
    return out.reshape(*batch, *coords.shape[:-1]) / math.sqrt(h * w)


def _type1(y: Tensor, coords: Tensor, shape: tuple[int, int], eps: float,
           who: str = "nufft_adjoint") -> Tensor:
    h, w = shape
    kdims = coords.ndim - 1
    batch = y.shape[: y.ndim - kdims]
    b = math.prod(batch)
    pts = coords.reshape(-1, 2)
    m = pts.shape[0]
    if b == 0:
        return y.new_zeros((*batch, h, w))
    plan = _plan(1, pts, (h, w), b, y.dtype, eps, check=_checker(coords, (h, w), who))
    data = y.reshape(b, m) if b > 1 else y.reshape(m)
    out = _execute(plan, data, (b, h, w) if b > 1 else (h, w))
    return out.reshape(*batch, h, w) / math.sqrt(h * w)


def _prepare(data: Tensor, coords: Tensor, eps: float | None, who: str):
    _check(coords, who)
    if coords.requires_grad and torch.is_grad_enabled():  # its gradient would be dropped silently
        raise ValueError(f"{who}: the trajectory requires grad, but the NUFFT has no derivative "
                         "with respect to the sample positions (only to the data): pass "
                         "trajectory.detach() (a learned trajectory needs its own derivative)")
    if not data.is_complex():
        raise ValueError(f"{who}: data must be complex, got {data.dtype}")
    if data.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"{who}: data must be complex64 or complex128, got {data.dtype}")
    if coords.device != data.device:
        raise ValueError(f"{who}: trajectory on {coords.device}, data on {data.device}")
    return checked_eps(eps, data.dtype, who)


class _Nufft(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coords, eps):
        ctx.save_for_backward(coords)
        ctx.eps, ctx.shape = eps, tuple(x.shape[-2:])
        return _type2(x, coords, eps)

    @staticmethod
    def backward(ctx, grad):
        (coords,) = ctx.saved_tensors
        return nufft_adjoint(grad, coords, ctx.shape, eps=ctx.eps), None, None


class _NufftAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, coords, shape, eps):
        ctx.save_for_backward(coords)
        ctx.eps = eps
        return _type1(y, coords, shape, eps)

    @staticmethod
    def backward(ctx, grad):
        (coords,) = ctx.saved_tensors
        return nufft(grad, coords, eps=ctx.eps), None, None, None


def nufft(x: Tensor, trajectory: Tensor, *, eps: float | None = None) -> Tensor:
    """Forward NUFFT (uniform image -> non-uniform k-space samples).

    Parameters
    ----------
    x
        Complex images ``(..., H, W)`` (complex64 or complex128); leading axes are batched into
        one backend call.
    trajectory
        ``(*K, 2)`` normalised coordinates (see the module docstring), on ``x``'s device.
    eps
        Backend tolerance (default :data:`DEFAULT_EPS` for ``x``'s dtype).

    Returns
    -------
    Tensor
        ``(..., *K)`` samples, same dtype as ``x``. Differentiable; the backward pass is
        :func:`nufft_adjoint`.
    """
    eps = _prepare(x, trajectory, eps, "nufft")
    return _Nufft.apply(x, trajectory, eps)


def nufft_adjoint(y: Tensor, trajectory: Tensor, shape: tuple[int, int], *,
                  eps: float | None = None) -> Tensor:
    """Adjoint NUFFT (non-uniform samples -> uniform image), the exact adjoint of :func:`nufft`.

    Parameters
    ----------
    y
        Complex samples ``(..., *K)``.
    trajectory
        ``(*K, 2)`` normalised coordinates.
    shape
        ``(H, W)`` of the image grid.
    eps
        Backend tolerance.

    Returns
    -------
    Tensor
        ``(..., H, W)``.
    """
    eps = _prepare(y, trajectory, eps, "nufft_adjoint")
    kshape = tuple(trajectory.shape[:-1])
    if tuple(y.shape[y.ndim - len(kshape):]) != kshape:
        raise ValueError(f"nufft_adjoint: samples {tuple(y.shape)} do not end in the trajectory's "
                         f"shape {kshape}")
    shape = (int(shape[0]), int(shape[1]))
    return _NufftAdjoint.apply(y, trajectory, shape, eps)


def point_spread_kernel(trajectory: Tensor, shape: tuple[int, int], weights: Tensor | None = None,
                        *, eps: float = 1e-12) -> Tensor:
    """Fourier transform of the circulant-embedded point-spread function of ``N^H W N``.

    ``(N^H W N x)[n] = sum_n' K[n - n'] x[n']`` with ``K[d] = sum_j w_j exp(2 pi i k_j d) / (H W)``
    for ``|d| < N``. ``K`` is computed once by a type-1 transform onto the ``(2H, 2W)`` grid (in
    FFT order, i.e. circularly embedded; the unused ``d = -N`` lines are zeroed so the embedding
    is Hermitian), and its FFT, which is then real, is returned: ``(2H, 2W)`` float64. Applying
    ``ifft2(fft2(pad(x)) * kernel)`` and cropping gives ``N^H W N x``
    (see :class:`~mrirecon.operators.nufft.NufftSense`).
    """
    _check(trajectory, "point_spread_kernel")
    h, w = int(shape[0]), int(shape[1])
    checked_trajectory(trajectory.detach(), (h, w), "point_spread_kernel")
    pts = trajectory.detach().reshape(-1, 2).to(torch.float64).cpu()
    if weights is None:
        c = torch.ones(pts.shape[0], dtype=torch.complex128)
    else:
        c = torch.as_tensor(weights).detach().to(torch.float64).cpu()
        c = torch.broadcast_to(c, trajectory.shape[:-1]).reshape(-1).to(torch.complex128)
    plan = _plan(1, pts, (2 * h, 2 * w), 1, torch.complex128, eps, modeord=1)
    k = torch.from_numpy(plan.execute(c.contiguous().numpy())) / (h * w)
    k[h, :] = 0  # index h (= -h) never meets |n - n'| < h
    k[:, w] = 0
    kernel = torch.fft.fft2(k)
    return kernel.real.contiguous()


def ndft(x: Tensor, trajectory: Tensor) -> Tensor:
    """Direct (slow, exact) non-uniform DFT with the convention of :func:`nufft`; for tests."""
    h, w = x.shape[-2:]
    pts = trajectory.reshape(-1, 2).to(torch.float64)
    ny = torch.arange(h, dtype=torch.float64) - h // 2
    nx = torch.arange(w, dtype=torch.float64) - w // 2
    phase = pts[:, 0, None, None] * ny[None, :, None] + pts[:, 1, None, None] * nx[None, None, :]
    e = torch.exp(-2j * math.pi * phase).reshape(pts.shape[0], h * w)
    out = x.reshape(-1, h * w).to(torch.complex128) @ e.T / math.sqrt(h * w)
    return out.reshape(*x.shape[:-2], *trajectory.shape[:-1]).to(x.dtype)
