"""Second-order total generalised variation (TGV², Bredies, Kunisch & Pock 2010; Knoll et al.
2011 for MRI) regularised least squares, solved by PDHG for any LinearOperator.

Problem::

    min_{x, v}  1/2 ||A x - y||^2 + alpha1 ||grad x - v||_{2,1} + alpha0 ||E v||_{F,1}

with ``x`` the image ``(..., H, W)`` (complex for MRI, real for CT), ``v`` a vector field
``(..., 2, H, W)``, ``grad`` forward differences with Neumann boundary
(:class:`~mrirecon.operators.FiniteDifference`, component 0 along H, 1 along W) and ``E`` the
symmetrised gradient ``E v = (D^- v + (D^- v)^T) / 2`` built from backward differences
(``D^- = -(D^+)^H``), see :class:`~mrirecon.operators.tgv.SymmetrizedGradient`. Norms are
pixel-wise (complex moduli) and summed: ``||.||_{2,1}`` over the two gradient components,
``||.||_{F,1}`` the Frobenius norm of the symmetric 2x2 matrix. Piecewise-affine images have
``E v = 0`` with ``v = grad x``, so TGV does not staircase ramps as TV does.

PDHG works on the stacked primal variable ``u = (x, v_H, v_W)`` of shape ``(..., 3, H, W)``
with three dual blocks ``[A x, grad x - v, E v]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import check_start
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.operators import FiniteDifference
from mrirecon.operators.tgv import TGVBlock
from mrirecon.recon.variational import batch_dims_of
from mrirecon.solvers import (
    diagonal_preconditioners,
    max_eigenvalue,
    pdhg,
    project_nonnegative,
)
from mrirecon.solvers.prox_extra import prox_group_l21_conjugate, prox_l2_squared_conjugate

#: ``||[grad, -I]|| <= sqrt(||grad||^2 + 1) = 3`` and ``||E|| <= sqrt(8)`` (2-D differences)
GRAD_MINUS_V_NORM = 3.0
SYM_GRAD_NORM = math.sqrt(8.0)

Callback = Callable[[int, Tensor, float], None]


# ------------------------------------------------------------------------------------------
# objective and solver
# ------------------------------------------------------------------------------------------

def tgv_objective(y: Tensor, op: LinearOperator, u: Tensor, lam: float, ratio: float = 2.0) -> Tensor:
    """``1/2||A x - y||^2 + alpha1 ||grad x - v||_{2,1} + alpha0 ||E v||_{F,1}`` at ``u = (x, v)``.

    Parameters
    ----------
    y, op
        Measurements and forward operator.
    u
        Stacked primal variable ``(..., 3, H, W)`` (as passed to :func:`tgv`'s callback).
    lam, ratio
        ``alpha1 = lam``, ``alpha0 = ratio * lam``.

    Returns
    -------
    Tensor
        0-d real tensor (all batch items summed).
    """
    x = u[..., 0, :, :]
    data = 0.5 * (op(x) - y).abs().pow(2).sum()
    first = torch.linalg.vector_norm(TGVBlock("grad")(u), dim=-3).sum()
    second = torch.linalg.vector_norm(TGVBlock("sym")(u), dim=-3).sum()
    return data + lam * first + ratio * lam * second


@accepts_deprecated_names
def tgv(
    y: Tensor,
    op: LinearOperator,
    lam: float,
    *,
    ratio: float = 2.0,
    iterations: int = 200,
    nonneg: bool | None = None,
    preconditioned: bool | None = None,
    step_ratio: float = 0.5,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    callback: Callback | None = None,
    return_v: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """TGV²-regularised least squares by PDHG (Chambolle & Pock 2011) for MRI or CT.

    Minimises ``1/2||A x - y||^2 + lam ||grad x - v||_{2,1} + ratio*lam ||E v||_{F,1}`` over the
    image ``x`` and the vector field ``v`` (see the module docstring). ``ratio = alpha0 /
    alpha1 = 2`` is the usual choice (Knoll et al. 2011; Bredies et al. 2010 use 1-3); with
    ``ratio -> inf`` TGV becomes TV.

    Parameters
    ----------
    y
        Measurements: k-space ``(..., coils, H, W)`` (complex) or sinogram
        ``(..., views, detectors)`` (real). Leading axes beyond ``op``'s range are slices.
    op
        Forward operator ``A`` on images ``(..., H, W)`` (``sense(maps, mask)``,
        ``ct_operator(geometry)``, any :class:`~mrirecon.core.LinearOperator`).
    lam
        ``alpha1``, the first-order weight (absolute, in the units of ``y``; as ``lam`` of
        :func:`~mrirecon.recon.tv`).
    ratio
        ``alpha0 / alpha1``.
    iterations, tolerance
        PDHG limits (``tolerance`` on the relative change of ``u``).
    nonneg
        Constrain ``x >= 0``; default: for real images (CT) yes, complex (MRI) no.
    preconditioned
        Pock & Chambolle diagonal steps from ``|K|`` (needs a non-negative ``A``, as CT
        projectors are); default: for real images yes. Otherwise scalar steps from ``||A||``
        (power iteration, the largest over slices), ``||[grad, -I]|| <= 3``, ``||E|| <=
        sqrt(8)``: ``sigma_i = step_ratio / ||K_i||`` and ``tau = 0.99 / ||sum_i sigma_i
        K_i^H K_i||`` (power iteration).
    step_ratio
        Scalar steps only: scales the dual steps (and inversely the primal one). The default
        0.5 suits images of magnitude ~1 (data scaled as the MRI pipeline does); on the
        piecewise-affine test phantom it reaches in 100 iterations the error ``step_ratio=1``
        reaches in 150. PDHG is not a descent method: with ratios below about 0.75 the
        objective overshoots during the first ~10 iterations there (it decreased monotonically
        with 0.75 and 1).
    x0
        Start image (zeros by default); ``v`` starts at ``grad x0``.
    callback
        ``callback(iteration, u, relative_change)`` with the stacked primal variable
        ``u = (x, v_H, v_W)`` ``(..., 3, H, W)`` (use :func:`tgv_objective` on it).
    return_v
        Also return ``v`` ``(..., 2, H, W)``.

    Returns
    -------
    Tensor or (Tensor, Tensor)
        The image ``(..., H, W)`` (and ``v``).
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"tgv: op must be a LinearOperator, got {type(op).__name__}")
    if lam < 0 or ratio <= 0:
        raise ValueError(f"tgv: need lam >= 0 and ratio > 0, got lam={lam}, ratio={ratio}")
    aty = op.H(y)
    real = not aty.is_complex()
    nonneg = real if nonneg is None else nonneg
    preconditioned = real if preconditioned is None else preconditioned
    if nonneg and not real:
        raise ValueError("tgv: nonneg=True needs a real-valued operator (CT), got complex images")
    if preconditioned and not real:
        raise ValueError("tgv: preconditioned=True needs a non-negative real operator (CT), got "
                         "complex images; use preconditioned=False")
    if step_ratio <= 0:
        raise ValueError(f"tgv: step_ratio must be > 0, got {step_ratio}")
    x0 = check_start("tgv", x0, aty, y)
    x_start = torch.zeros_like(aty) if x0 is None else x0.to(aty.dtype)
    u0 = torch.cat([x_start.unsqueeze(-3), FiniteDifference(2)(x_start)], dim=-3)
    image = TGVBlock("image")
    blocks = [op @ image, TGVBlock("grad"), TGVBlock("sym")]
    proxes = [
        lambda p, s: prox_l2_squared_conjugate(p, s, y),
        lambda p, s: prox_group_l21_conjugate(p, s, lam, dim=-3),
        lambda p, s: prox_group_l21_conjugate(p, s, ratio * lam, dim=-3),
    ]

    def prox_g(u: Tensor, t) -> Tensor:
        return torch.cat([project_nonnegative(u[..., :1, :, :]), u[..., 1:, :, :]], dim=-3)

    g = prox_g if nonneg else None
    if preconditioned:
        abs_ops = [op @ image, TGVBlock("grad", True), TGVBlock("sym", True)]
        sigmas, tau = diagonal_preconditioners(blocks, u0, abs_ops)
        u = pdhg(blocks, proxes, g, u0, sigmas, tau, iterations=iterations,
                 tolerance=tolerance, callback=callback)
    else:
        nb = batch_dims_of(op, aty)
        norm_a = float(max_eigenvalue(op.gram, aty, batch_dims=nb).max()) ** 0.5
        sigmas = [step_ratio / max(n, 1e-30) for n in (norm_a, GRAD_MINUS_V_NORM, SYM_GRAD_NORM)]
        u = pdhg(blocks, proxes, g, u0, sigmas, iterations=iterations,
                 tolerance=tolerance, callback=callback)
    x = u[..., 0, :, :]
    return (x, u[..., 1:, :, :]) if return_v else x
