"""Further proximal maps for the classical priors (TGV, dictionary learning).

Same convention as :mod:`mrirecon.solvers.prox`: ``prox_{t g}(v) = argmin_x t g(x) + 1/2
||x - v||^2``; complex tensors are vectors of ``C^n = R^{2n}`` (moduli in the norms).

* :func:`prox_l2_squared_conjugate` - the dual step of a least-squares data term in PDHG;
* :func:`prox_group_l21_conjugate` - the dual step of ``weight * ||.||_{2,1}`` (TV, TGV);
* :func:`hard_threshold` - the prox of ``t ||x||_0``;
* :func:`project_sparse` - projection onto vectors with at most ``k`` non-zeros per group.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.solvers.prox import project_group_l2_ball


def prox_l2_squared_conjugate(p: Tensor, step: float | Tensor, data: Tensor) -> Tensor:
    """Prox of ``step f*`` for ``f(z) = 1/2 ||z - data||^2``: ``(p - step data) / (1 + step)``.

    ``f*(p) = 1/2 ||p||^2 + Re<p, data>``, so its prox is closed form. This is the dual update
    of the data block ``1/2 ||A x - y||^2`` in primal-dual methods.

    Parameters
    ----------
    p
        Dual variable, same shape as ``data`` (real or complex).
    step
        Dual step ``sigma > 0`` (scalar or tensor broadcastable to ``p``).
    data
        Measurements ``y``.
    """
    return (p - step * data) / (1 + step)


def prox_group_l21_conjugate(p: Tensor, step: float | Tensor, weight: float | Tensor,
                             dim: int | tuple[int, ...]) -> Tensor:
    """Prox of ``step g*`` for ``g = weight ||.||_{2,1}`` (groups along ``dim``), any ``step``.

    ``g*`` is the indicator of ``{||p_group||_2 <= weight}``, so the prox is the projection of
    every group onto the L2 ball of radius ``weight`` (independent of ``step``). With groups of
    gradient vectors this is the dual step of isotropic TV; with groups of symmetric-matrix
    entries (Frobenius norm) that of TGV's second-order term.
    """
    del step  # the prox of an indicator does not depend on the step
    return project_group_l2_ball(p, weight, dim)


def hard_threshold(x: Tensor, step: float | Tensor) -> Tensor:
    """Prox of ``step ||x||_0`` (number of non-zeros): keep entries with ``|x|^2 > 2 step``.

    Parameters
    ----------
    x
        Real or complex tensor.
    step
        Non-negative scalar or tensor broadcastable to ``x``. At ``|x|^2 = 2 step`` both
        ``0`` and ``x`` are minimisers; this function returns ``0`` there.
    """
    return x * (x.abs().pow(2) > 2 * step)


def project_sparse(x: Tensor, k: int, dim: int = -1) -> Tensor:
    """Euclidean projection onto ``{z : at most k non-zeros along dim}`` (per group).

    Keeps the ``k`` entries of largest modulus in every slice along ``dim`` and zeroes the rest
    (ties resolved by ``torch.topk``). This is the exact projection onto the (non-convex)
    sparsity set and the sparse-coding step for an orthonormal dictionary.

    Parameters
    ----------
    x
        Real or complex tensor.
    k
        Number of entries to keep, ``0 <= k``; ``k >= x.shape[dim]`` returns ``x``.
    dim
        Axis along which sparsity is counted.
    """
    if k < 0:
        raise ValueError(f"project_sparse: k must be >= 0, got {k}")
    n = x.shape[dim]
    if k >= n:
        return x.clone()
    if k == 0:
        return torch.zeros_like(x)
    idx = torch.topk(x.abs(), k, dim=dim).indices
    keep = torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter(dim, idx, True)
    return x * keep
