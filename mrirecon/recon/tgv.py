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

Both solvers work on the stacked primal variable ``u = (x, v_H, v_W)`` of shape
``(..., 3, H, W)``:

* ``method="pdhg"``: Chambolle-Pock with the three dual blocks ``[A x, grad x - v, E v]``
  (diagonal Pock-Chambolle steps for CT, scalar steps from ``||A||`` otherwise);
* ``method="admm"``: the split ``z = K u = (grad x - v, E v)`` (:class:`~mrirecon.operators.
  tgv.TGVSplit`; with ``x >= 0`` also ``x``), the prox two group soft thresholds (and the
  projection onto ``x >= 0``), the u-update a few warm-started CG steps on
  ``[A^H A, 0; 0, 0] + rho K^H K`` jointly in ``(x, v)``, with ``rho`` relative to ``||A||^2``
  as :func:`~mrirecon.recon.ct.tv_ct`'s. The CG moves the low frequencies that PDHG's explicit
  steps crawl through (see :func:`tgv` for the measured comparison).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import (check_method_settings, check_start, check_tolerance,
                                   checked_weight, positive_problem)
from mrirecon.recon.checks import check_data
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.operators import FiniteDifference
from mrirecon.operators.tgv import TGVBlock, TGVSplit
from mrirecon.recon.variational import admm_settings, batch_dims_of, relative_penalty
from mrirecon.solvers import (
    admm,
    diagonal_preconditioners,
    group_soft_threshold,
    least_squares_x_update,
    max_eigenvalue,
    pdhg,
    project_nonnegative,
)
from mrirecon.solvers.prox_extra import prox_group_l21_conjugate, prox_l2_squared_conjugate

#: ``||[grad, -I]|| <= sqrt(||grad||^2 + 1) = 3`` and ``||E|| <= sqrt(8)`` (2-D differences)
GRAD_MINUS_V_NORM = 3.0
SYM_GRAD_NORM = math.sqrt(8.0)

#: ADMM's penalty relative to ``||A||^2`` and CG iterations per u-update. Measured (one
#: thread): on CT (128 x 128, 30 views, lam 5) 0.01 and 0.03 converge alike, 0.1 and 0.001
#: slower; on MRI (640 x 320, 8 coils, 4x, lam 1e-3 at a unit image peak) 0.03 leads at 30
#: iterations, 0.1 at 100, 0.01 trails both, 1 is slower than PDHG. 2 CG steps are 10 % cheaper
#: per iteration than 3 and converge a little slower per second; 5 gain nothing per second.
ADMM_RHO, ADMM_CG_ITERATIONS = 0.03, 3
#: PDHG's scalar-step dual/primal balance
STEP_RATIO = 0.5
#: The settings only one of ``tgv``'s solvers reads (the other refuses them)
TGV_SETTINGS = {"admm": ("rho", "cg_iterations"), "pdhg": ("preconditioned", "step_ratio")}

Callback = Callable[[int, Tensor, float], None]


def tgv_settings_problem(params: dict) -> tuple[str, str] | None:
    """``(setting, what is wrong)`` for a :func:`tgv` ``ratio``, ``rho`` or ``step_ratio`` it
    refuses (0: the finite, non-negative values :func:`~mrirecon.core.checks.param_problem`
    lets through), or ``None``: the registry's ``settings_problem``, so a pipeline refuses them
    at load (``ratio=0`` loaded and failed every input), and the check :func:`tgv` runs."""
    for key, what in (("ratio", "alpha0 / alpha1, the second-order weight relative to lam"),
                      ("rho", "ADMM's penalty relative to ||A||^2"),
                      ("step_ratio", "PDHG's dual/primal step balance")):
        if (problem := positive_problem(params.get(key))) is not None:
            return key, f"{problem} ({what})"
    return None


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
        Stacked primal variable ``(..., 3, H, W)``: ``torch.cat([x.unsqueeze(-3), v], -3)`` for
        ``x, v = tgv(..., return_v=True)``.
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
    method: str = "admm",
    rho: float | None = None,
    cg_iterations: int | None = None,
    preconditioned: bool | None = None,
    step_ratio: float | None = None,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    callback: Callback | None = None,
    return_v: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """TGV²-regularised least squares by ADMM (default) or PDHG (Chambolle & Pock 2011), for MRI
    or CT.

    Minimises ``1/2||A x - y||^2 + lam ||grad x - v||_{2,1} + ratio*lam ||E v||_{F,1}`` over the
    image ``x`` and the vector field ``v`` (see the module docstring). ``ratio = alpha0 /
    alpha1 = 2`` is the usual choice (Knoll et al. 2011; Bredies et al. 2010 use 1-3); with
    ``ratio -> inf`` TGV becomes TV.

    ADMM costs 2-3 PDHG iterations per iteration and needs far fewer (one thread, 2 shared
    cores). CT, 8 slices 128 x 128, 30 of 180 views, lam 5: ADMM's objective after 100
    iterations (15 s) is within 0.6 % of the minimum, below PDHG's after 1000 (64 s, 4 % above;
    after 100, 54 %); at lam 10 already 30 ADMM iterations (4.3 s) are below 1000 PDHG ones
    (59 s). MRI, 640 x 320, 8 coils, 4x, lam 1e-3: ADMM after 100
    iterations (34 s) is below PDHG after 300 (55 s); near the minimum the two are alike (PDHG
    after 1000, 179 s, 0.15 % below ADMM after 300, 98 s, at ``rho`` 0.1).

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
        Solver limits (PDHG: ``tolerance`` on the relative change of ``u``; ADMM: on its
        primal residual and the change of ``z``, relative to ``||K u||``), each slice of a
        batch by itself: the batch stops when its slowest slice has converged.
    nonneg
        Constrain ``x >= 0``; default: for real images (CT) yes, complex (MRI) no. ADMM returns
        its x-iterate projected onto the constraint (equal to it at convergence).
    method
        ``"admm"`` or ``"pdhg"`` (module docstring).
    rho, cg_iterations
        ADMM only: the penalty relative to ``||A||^2`` (20 power-iteration steps on one image
        per call, per slice with per-slice coil maps: :func:`~mrirecon.recon.variational.
        relative_penalty`; default ``ADMM_RHO``) and the CG iterations per u-update (default
        ``ADMM_CG_ITERATIONS``).
    preconditioned
        PDHG only: Pock & Chambolle diagonal steps from ``|K|`` (needs a non-negative ``A``, as
        CT projectors are); default: for real images yes. Otherwise scalar steps from ``||A||``
        (power iteration, the largest over slices), ``||[grad, -I]|| <= 3``, ``||E|| <=
        sqrt(8)``: ``sigma_i = step_ratio / ||K_i||`` and ``tau = 0.99 / ||sum_i sigma_i
        K_i^H K_i||`` (power iteration).
    step_ratio
        PDHG with scalar steps only: scales the dual steps (and inversely the primal one);
        default ``STEP_RATIO`` = 0.5, which suits images of magnitude ~1 (data scaled as the
        MRI pipeline does); on the piecewise-affine test phantom it reaches in 100 iterations
        the error ``step_ratio=1`` reaches in 150. PDHG is not a descent method: with ratios
        below about 0.75 the objective overshoots during the first ~10 iterations there (it
        decreased monotonically with 0.75 and 1).
    x0
        Start image (zeros by default); ``v`` starts at ``grad x0``.
    callback
        ``callback(iteration, x, value)`` after each iteration, as every
        :func:`mrirecon.recon.run` method calls it: ``iteration`` from 0, ``x`` the image
        ``(..., H, W)`` as :func:`tgv` would return it then (ADMM's projected onto ``x >= 0``
        with ``nonneg``), ``value`` a float: PDHG's relative change of ``u = (x, v)`` or ADMM's
        relative primal residual (the quantities ``tolerance`` is checked on). Before
        2026-12-07 it was ``callback(iteration, u, residual)`` with the stacked ``u = (x, v_H,
        v_W)`` ``(..., 3, H, W)`` (a callback written for the other methods broadcast it
        against an image without an error).
    return_v
        Also return ``v`` ``(..., 2, H, W)`` (not through :func:`mrirecon.recon.run`, which
        returns images only and refuses it).

    Returns
    -------
    Tensor or (Tensor, Tensor)
        The image ``(..., H, W)`` (and ``v``).
    """
    def on_image(it: int, u: Tensor, value: object) -> None:  # nonneg None: for real images
        x = u[..., 0, :, :]
        project = method == "admm" and (not x.is_complex() if nonneg is None else nonneg)
        callback(it, project_nonnegative(x) if project else x, float(value))

    u = _tgv_state(y, op, lam, ratio, iterations, nonneg, method, rho, cg_iterations,
                   preconditioned, step_ratio, tolerance, x0, None if callback is None else on_image)
    x = u[..., 0, :, :]
    return (x, u[..., 1:, :, :]) if return_v else x


def _tgv_state(y, op, lam, ratio, iterations, nonneg, method, rho, cg_iterations, preconditioned,
               step_ratio, tolerance, x0, callback) -> Tensor:
    """:func:`tgv`'s solve: the stacked ``u = (x, v)`` ``(..., 3, H, W)``; ``callback(it, u,
    value)`` sees ``u`` itself (ADMM's x unprojected), e.g. for :func:`tgv_objective`."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"tgv: op must be a LinearOperator, got {type(op).__name__}")
    check_data("tgv", y, op, nonneg=nonneg)  # as run: NaN, all zero, a flipped sinogram (x >= 0)
    check_method_settings("tgv", method, TGV_SETTINGS, " (ADMM is the default since 2026-12-05)",
                          rho=rho, cg_iterations=cg_iterations, preconditioned=preconditioned,
                          step_ratio=step_ratio)
    lam = checked_weight("tgv", "lam", lam)  # NaN / inf passed `lam < 0`
    check_tolerance("tgv", tolerance=tolerance)  # >= 1: zeros, or the start
    ratio = checked_weight("tgv", "ratio", ratio)
    if (bad := tgv_settings_problem(dict(ratio=ratio, rho=rho, step_ratio=step_ratio))):
        raise ValueError(f"tgv: {bad[0]} {bad[1]}")
    aty = op.H(y)
    real = not aty.is_complex()
    nonneg = real if nonneg is None else nonneg
    if nonneg and not real:
        raise ValueError("tgv: nonneg=True needs a real-valued operator (CT), got complex images")
    x0 = check_start("tgv", x0, aty, y)
    x_start = torch.zeros_like(aty) if x0 is None else x0  # check_start: aty's dtype
    u0 = torch.cat([x_start.unsqueeze(-3), FiniteDifference(2)(x_start)], dim=-3)
    if method == "admm":
        rho, cg_iterations = admm_settings("tgv", rho, cg_iterations, ADMM_RHO,
                                           ADMM_CG_ITERATIONS, iterations)
        u = _tgv_admm(y, op, aty, u0, lam, ratio, nonneg, rho, cg_iterations, iterations,
                      tolerance, callback)
    else:
        preconditioned = real if preconditioned is None else preconditioned
        step_ratio = STEP_RATIO if step_ratio is None else step_ratio
        if preconditioned and not real:
            raise ValueError("tgv: preconditioned=True needs a non-negative real operator (CT), "
                             "got complex images; use preconditioned=False")
        u = _tgv_pdhg(y, op, aty, u0, lam, ratio, nonneg, preconditioned, step_ratio,
                      iterations, tolerance, callback)
    return u


def _with_image(u: Tensor, transform: Callable[[Tensor], Tensor]) -> Tensor:
    """``u = (x, v)`` with ``transform`` applied to ``x`` (kept as ``(..., 1, H, W)``)."""
    return torch.cat([transform(u[..., :1, :, :]), u[..., 1:, :, :]], dim=-3)


def _tgv_admm(y, op, aty, u0, lam, ratio, nonneg, rho, cg_iterations, iterations, tolerance,
              callback) -> Tensor:
    """ADMM on ``z = TGVSplit u``; returns ``u`` (``x`` projected when ``nonneg``)."""
    nb = batch_dims_of(op, aty)
    K = TGVSplit(image=nonneg)

    def prox(z: Tensor, t: float) -> Tensor:
        parts = [group_soft_threshold(z[..., :2, :, :], lam * t, dim=-3),
                 group_soft_threshold(z[..., 2:5, :, :], ratio * lam * t, dim=-3)]
        return torch.cat(parts + ([project_nonnegative(z[..., 5:, :, :])] if nonneg else []),
                         dim=-3)

    update = least_squares_x_update(op @ TGVBlock("image"), y, K, cg_iterations=cg_iterations,
                                    batch_dims=nb)
    u = admm(update, prox, K, u0, relative_penalty(op, aty, nb, rho), iterations=iterations,
             tolerance=tolerance, batch_dims=nb, callback=callback)
    return _with_image(u, project_nonnegative) if nonneg else u


def _tgv_pdhg(y, op, aty, u0, lam, ratio, nonneg, preconditioned, step_ratio, iterations,
              tolerance, callback) -> Tensor:
    """PDHG on the blocks ``[A x, grad x - v, E v]``; returns ``u``."""
    image = TGVBlock("image")
    blocks = [op @ image, TGVBlock("grad"), TGVBlock("sym")]
    proxes = [
        lambda p, s: prox_l2_squared_conjugate(p, s, y),
        lambda p, s: prox_group_l21_conjugate(p, s, lam, dim=-3),
        lambda p, s: prox_group_l21_conjugate(p, s, ratio * lam, dim=-3),
    ]
    g = (lambda u, t: _with_image(u, project_nonnegative)) if nonneg else None
    # the tolerance holds per slice (a bright slice stopped a dim one of its batch early)
    nb = batch_dims_of(op, aty)
    if preconditioned:
        abs_ops = [op @ image, TGVBlock("grad", True), TGVBlock("sym", True)]
        sigmas, tau = diagonal_preconditioners(blocks, u0, abs_ops)
        return pdhg(blocks, proxes, g, u0, sigmas, tau, iterations=iterations,
                    tolerance=tolerance, batch_dims=nb, callback=callback)
    norm_a = float(max_eigenvalue(op.gram, aty, batch_dims=nb).max()) ** 0.5
    sigmas = [step_ratio / max(n, 1e-30) for n in (norm_a, GRAD_MINUS_V_NORM, SYM_GRAD_NORM)]
    return pdhg(blocks, proxes, g, u0, sigmas, iterations=iterations, tolerance=tolerance,
                batch_dims=nb, callback=callback)
