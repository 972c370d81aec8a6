"""Small batched kernels shared by the calibration methods (private to ``mrirecon.calib``).

- :func:`power_iteration`: the dominant eigenvector of many small Hermitian matrices at once,
  equal to ``num_iter`` steps of the plain power method but computed by repeated squaring
  (``log2(num_iter)`` batched matrix products instead of ``num_iter`` matrix-vector products).
- :func:`box_smooth`: a centred box (moving-average) filter over chosen axes with
  half-sample-symmetric edges, the same as ``scipy.ndimage.uniform_filter(mode="reflect")``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.core.magnitude import sum_abs2


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.real.dtype if x.is_complex() else x.dtype).tiny


def _column_norms(x: Tensor) -> Tensor:
    """Euclidean norms ``(n, 1, 1)`` of ``(n, c, 1)`` vectors, also of tiny ones: where the sum
    of squares may have underflowed (a norm below ``sqrt(tiny) / eps``, 9e-13 in float32) it is
    taken of the vector divided by its largest entry. The direct sum elsewhere, so results
    there are bit for bit those of ``sqrt(sum |x|^2)``. (The Walsh maps of a noise-free
    image's background, coil images near 1e-12, had squares of 1e-46, flushed to zero: the
    vectors were divided by float32's tiny and came out 4e15 long.)"""
    direct = sum_abs2(x, -2, keepdim=True).sqrt()
    real = x.real.dtype if x.is_complex() else x.dtype
    small = direct < torch.finfo(real).tiny ** 0.5 / torch.finfo(real).eps
    if not bool(small.any()):
        return direct
    top = x.abs().amax(dim=-2, keepdim=True)
    scaled = top * sum_abs2(x / top.clamp_min(_tiny(x)), -2, keepdim=True).sqrt()
    return torch.where(small, scaled, direct)


def _unit_columns(x: Tensor) -> Tensor:
    """Normalise ``(n, c, 1)`` vectors to unit Euclidean norm (zero stays zero)."""
    return x / _column_norms(x).clamp_min(_tiny(x))


def _unit_trace(p: Tensor) -> Tensor:
    """Scale PSD matrices ``(n, c, c)`` to unit trace (trace >= largest eigenvalue > 0), in
    place (a real scale on the real view: a third of the time of a complex product)."""
    tr = torch.diagonal(p, dim1=-2, dim2=-1).real.sum(-1)
    scale = tr.clamp_min(_tiny(p)).reciprocal()
    if p.is_complex():
        torch.view_as_real(p).mul_(scale[:, None, None, None])
    else:
        p.mul_(scale[:, None, None])
    return p


#: Cost of a batched ``(c, c) @ (c, 1)`` product relative to a ``(c, c) @ (c, c)`` one, measured
#: at c = 8 and 15 (about 0.2 for both: the small matrix-vector products run far below the
#: products' peak); used only to choose how far to square, never changes the result.
_MATVEC_COST = 0.2
#: Products with unnormalised ``P^(2^s)`` before the vectors are rescaled: ``P`` has unit trace,
#: so its largest eigenvalue is at least ``1 / c`` and a vector shrinks by at most ``c^-4``
#: between rescalings - far from float32's underflow.
_RESCALE_EVERY = 4


def _squarings(k: int) -> int:
    """Number ``s`` of squarings that minimises ``s + _MATVEC_COST * (k // 2^s + popcount(k mod 2^s))``
    (in units of one batched ``(c, c)`` product) for ``k`` power steps."""
    best, best_cost = 0, _MATVEC_COST * k
    s = 1
    while (1 << s) <= k:
        q, r = divmod(k, 1 << s)
        cost = s + _MATVEC_COST * (q + r.bit_count())
        if cost < best_cost:
            best, best_cost = s, cost
        s += 1
    return best


def power_iteration(
    mats: Tensor, num_iter: int, start: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Dominant eigenpair of a batch of Hermitian positive semi-definite matrices.

    Mathematically identical to ``num_iter`` steps of the power method
    ``y = A x; lam = ||y||; x = y / lam`` started from ``start`` (default: all ones), as in
    SigPy's ``PowerMethod``; the result after ``num_iter`` steps is ``x`` and ``lam``.
    ``A^(num_iter - 1) x0`` is formed as ``(P^(2^s))^q`` times the binary expansion of the
    remainder, with ``P = A / tr(A)`` and its powers ``P^2, P^4, ..`` from ``s`` repeated
    squarings (each renormalised to unit trace); ``s`` is chosen to minimise the work
    (``s`` batched ``(c, c)`` products against ``q + popcount(r)`` matrix-vector products: two
    squarings and eight products for SigPy's 30 steps, instead of 29 products). Directions
    are exact; only the scale is renormalised, which keeps float32 free of under/overflow.

    Parameters
    ----------
    mats
        Hermitian PSD matrices, shape ``(n, c, c)``, real or complex.
    num_iter
        Number of power-method steps to reproduce (>= 1).
    start
        Start vectors ``(n, c)``; default all ones.

    Returns
    -------
    vectors
        Unit-norm dominant eigenvectors, shape ``(n, c)`` (zero where the matrix is zero).
    values
        ``||A x||`` of the last step, shape ``(n,)`` (the dominant eigenvalue once converged).
    """
    if mats.ndim != 3 or mats.shape[-1] != mats.shape[-2]:
        raise ValueError(
            f"power_iteration: mats must have shape (n, c, c), got {tuple(mats.shape)}"
        )
    if num_iter < 1:
        raise ValueError(f"power_iteration: num_iter must be >= 1, got {num_iter}")
    n, c, _ = mats.shape
    if start is None:
        x = mats.new_ones((n, c, 1))
    else:
        if start.shape != (n, c):
            raise ValueError(
                f"power_iteration: start must have shape {(n, c)}, got {tuple(start.shape)}"
            )
        x = start.to(mats.dtype).unsqueeze(-1)
    k = num_iter - 1
    s = _squarings(k)
    powers = [_unit_trace(mats.clone())] if k else []
    for _ in range(s):
        powers.append(_unit_trace(powers[-1] @ powers[-1]))
    q, r = divmod(k, 1 << s)
    steps = ([powers[s]] * q if q else []) + [powers[b] for b in range(s) if r >> b & 1]
    for i, p in enumerate(steps):
        x = p @ x
        if (i + 1) % _RESCALE_EVERY == 0:
            x = _unit_columns(x)
    if steps:
        x = _unit_columns(x)
    y = mats @ x
    values = _column_norms(y)[:, 0, 0]
    vectors = y[..., 0] / values.clamp_min(_tiny(y)).unsqueeze(-1)
    return vectors, values


def symmetric_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a half-sample-symmetric extension (``d c b a | a b c d | d c b a``)."""
    idx = torch.arange(-before, n + after, device=device)
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def box_smooth(x: Tensor, size: int | tuple[int, ...], dims: tuple[int, ...] = (-2, -1)) -> Tensor:
    """Moving average over ``dims`` with a box of ``size`` samples per axis.

    Equal to ``scipy.ndimage.uniform_filter(x, size, mode="reflect")`` applied to the real and
    imaginary parts over those axes (edges extended half-sample symmetrically; an even box
    covers ``size // 2`` samples before and ``size - 1 - size // 2`` after the centre).

    Parameters
    ----------
    x
        Real or complex tensor of any shape.
    size
        Box width in samples (int for every axis in ``dims`` or one per axis), each >= 1.
    dims
        Axes to smooth.
    """
    sizes = (size,) * len(dims) if isinstance(size, int) else tuple(size)
    if len(sizes) != len(dims) or any(int(s) < 1 for s in sizes):
        raise ValueError(f"box_smooth: size must be >= 1 per axis of {dims}, got {size}")
    out = x
    for dim, s in zip(dims, sizes):
        s = int(s)
        if s == 1:
            continue
        n = out.shape[dim]
        before, after = s // 2, s - 1 - s // 2
        idx = symmetric_index(n, before, after, out.device)
        ext = out.index_select(dim, idx)
        out = ext.unfold(dim if dim >= 0 else ext.ndim + dim, s, 1).sum(-1) / s
    return out
