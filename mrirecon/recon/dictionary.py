"""Dictionary-learning reconstruction, DLMRI-style (Ravishankar & Bresler 2011), for any
LinearOperator (MRI or CT).

Problem::

    min_{x, D, alpha}  1/2 ||A x - y||^2 + lam/2 ||P x - D alpha||^2
    s.t. ||alpha_j||_0 <= sparsity,  ||d_k||_2 = 1

with ``P`` the overlapping patch extraction (:class:`~mrirecon.operators.Patches` with
``border="drop"``, adjoint = overlap-add),
``D`` a patch dictionary and ``alpha_j`` the sparse code of patch ``j``. Every outer iteration
alternates (block coordinate descent):

1. sparse coding by batched orthogonal matching pursuit (:func:`omp`; a patch keeps its old
   code when OMP's greedy code fits worse, so this step never increases the objective);
2. one sweep of approximate K-SVD (Rubinstein, Zibulevsky & Elad 2008) over all atoms on all
   patches (each atom and its coefficients are the exact rank-1 fit on the atom's support);
3. the image by CG on ``(A^H A + lam P^H P) x = A^H y + lam P^H D alpha`` (warm started).

Patches are real vectors: ``p*p`` pixels for CT, real and imaginary parts stacked (``2 p*p``)
for complex MRI images, so the dictionary is real. The dictionary starts from the overcomplete
2-D DCT (block-diagonal over real and imaginary parts for complex images). All slices of a
batch share one dictionary.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.functional import channels_to_complex, complex_to_channels
from mrirecon.operators import Patches
from mrirecon.recon.variational import batch_dims_of
from mrirecon.solvers import cg, max_eigenvalue
from mrirecon.core.checks import check_iterations, check_start, count_problem, positive_problem
from mrirecon.recon.checks import check_data

Callback = Callable[[int, Tensor, float], None]


#: The smallest patch side: a 1-pixel patch has no variation, so every atom but the constant
#: one is 0 after the mean removal (and its unit norm divides by 0).
MIN_PATCH = 2


def overcomplete_dct(patch_size: int, atoms_per_axis: int, dtype=torch.float64) -> Tensor:
    """Overcomplete separable 2-D DCT dictionary ``(p*p, k*k)`` with unit-norm columns.

    1-D atoms ``cos(pi j i / k)`` for ``i < p``, ``j < k`` (mean removed for ``j > 0``), as in
    Elad & Aharon's K-SVD denoising; the 2-D atoms are their Kronecker products (row-major
    patches). The first atom is constant.

    Raises
    ------
    ValueError
        ``patch_size < 2``: a 1-pixel patch has no variation, every atom but the constant one
        is 0 after the mean removal and its unit norm divides by 0 (dlmri then failed with a
        NaN "right-hand side" blamed on the data or the coil maps); ``atoms_per_axis < 1``.
    """
    if (problem := count_problem(patch_size, MIN_PATCH)) is not None:
        raise ValueError(f"overcomplete_dct: patch_size {problem}")
    check_iterations("overcomplete_dct", atoms_per_axis=atoms_per_axis)
    i = torch.arange(patch_size, dtype=dtype)[:, None]
    j = torch.arange(atoms_per_axis, dtype=dtype)[None, :]
    d1 = torch.cos(math.pi * i * j / atoms_per_axis)
    d1[:, 1:] = d1[:, 1:] - d1[:, 1:].mean(0, keepdim=True)
    d1 = d1 / torch.linalg.vector_norm(d1, dim=0, keepdim=True)
    return torch.kron(d1, d1)


def omp(signals: Tensor, dictionary: Tensor, sparsity: int, tolerance: float = 0.0) -> Tensor:
    """Batched orthogonal matching pursuit (Pati et al. 1993).

    For every row ``x`` of ``signals``, greedily picks up to ``sparsity`` atoms (the one most
    correlated with the residual each step) and sets the coefficients to the least-squares fit
    on the picked atoms.

    Parameters
    ----------
    signals
        Real ``(n, d)``.
    dictionary
        Real ``(d, K)`` with unit-norm columns.
    sparsity
        Maximum number of non-zeros per code.
    tolerance
        Stop a row early once ``||residual|| <= tolerance * ||x||`` (``0``: always
        ``sparsity`` atoms, unless the residual vanishes).

    Returns
    -------
    Tensor
        Codes ``(n, K)``, at most ``sparsity`` non-zeros per row.
    """
    n, d = signals.shape
    k = dictionary.shape[1]
    gram = dictionary.T @ dictionary
    xd = signals @ dictionary  # (n, K) correlations with the signals
    codes = torch.zeros(n, k, dtype=signals.dtype, device=signals.device)
    support = torch.zeros(n, 0, dtype=torch.long, device=signals.device)
    residual = signals.clone()
    norm_x = torch.linalg.vector_norm(signals, dim=1)
    active = norm_x > 0
    eps = 1e-12 * torch.diagonal(gram).max()
    # a residual at the dtype's rounding level is done: picking atoms on it (float32: 1e-12
    # added to the Gram diagonal is lost) made the Gram of the support singular
    stop = max(tolerance, 1e-14, math.sqrt(d) * torch.finfo(signals.dtype).eps)
    # d independent atoms fit any signal exactly: more steps only pick dependent atoms
    for _ in range(min(sparsity, k, d)):
        rows = active.nonzero().squeeze(1)  # finished rows keep their codes
        corr = (residual[rows] @ dictionary).abs()
        corr[torch.arange(rows.numel(), device=rows.device)[:, None], support[rows]] = -1.0
        cand = torch.cat([support[rows], corr.argmax(dim=1)[:, None]], dim=1)
        g = gram[cand[:, :, None], cand[:, None, :]]
        g = g + eps * torch.eye(cand.shape[1], dtype=g.dtype, device=g.device)
        coef = torch.linalg.solve(g, xd[rows[:, None], cand].unsqueeze(-1)).squeeze(-1)
        support = torch.cat([support, support.new_zeros(n, 1)], dim=1)
        support[rows] = cand  # the other rows' support is no longer used
        codes[rows] = 0
        codes[rows[:, None], cand] = coef
        residual[rows] = signals[rows] - codes[rows] @ dictionary.T
        rnorm = torch.linalg.vector_norm(residual[rows], dim=1)
        active[rows] = rnorm > stop * norm_x[rows]
        if not bool(active.any()):
            break
    return codes


def ksvd_sweep(signals: Tensor, dictionary: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """One sweep of approximate K-SVD over all atoms (supports fixed).

    For atom ``k`` with patches ``S_k`` using it and residual ``E = X_S - D alpha_S + d_k
    g^T``: ``d_k = E g / ||E g||``, ``g = E^T d_k`` (one alternating step of the rank-1 fit;
    each is an exact minimisation, so the fit never gets worse). Unused atoms stay as they are.

    Returns
    -------
    dictionary, codes
        Updated copies.
    """
    dictionary, codes = dictionary.clone(), codes.clone()
    residual = signals - codes @ dictionary.T  # (n, d)
    for k in range(dictionary.shape[1]):
        idx = torch.nonzero(codes[:, k], as_tuple=True)[0]
        if idx.numel() == 0:
            continue
        g = codes[idx, k]
        e = residual[idx] + g[:, None] * dictionary[:, k][None, :]  # (m, d)
        d = e.T @ g
        nd = torch.linalg.vector_norm(d)
        if nd == 0:
            continue
        d = d / nd
        g_new = e @ d
        dictionary[:, k] = d
        codes[idx, k] = g_new
        residual[idx] = e - g_new[:, None] * d[None, :]
    return dictionary, codes


def _to_real(p: Tensor) -> Tensor:
    """Complex patches ``(..., d)`` -> real ``(..., 2d)`` (real parts, then imaginary parts)."""
    return complex_to_channels(p, dim=-1) if p.is_complex() else p


def _from_real(v: Tensor, complex_: bool) -> Tensor:
    return channels_to_complex(v, dim=-1) if complex_ else v


@accepts_deprecated_names
def dlmri_objective(y: Tensor, op: LinearOperator, x: Tensor, patches: Patches,
                    dictionary: Tensor, codes: Tensor, lam: float) -> Tensor:
    """``1/2||A x - y||^2 + lam/2 ||P x - D alpha||^2`` (``codes`` ``(n_all, K)`` over all
    slices' patches in order)."""
    px = _to_real(patches(x)).reshape(-1, dictionary.shape[0])
    fit = (px - codes @ dictionary.T).pow(2).sum()
    return 0.5 * (op(x) - y).abs().pow(2).sum() + 0.5 * lam * fit


def _patch_dim(patch_size: int, complex_: bool) -> int:
    """The real dimension of a patch: ``p*p`` pixels, twice that for complex images."""
    return (2 if complex_ else 1) * patch_size * patch_size


def dlmri_settings_problem(params: dict, complex_: bool | None = None) -> tuple[str, str] | None:
    """``(setting, what is wrong)`` for a :func:`dlmri` setting it refuses, or ``None``.

    The registry's ``settings_problem`` of ``dlmri``, so a pipeline refuses these at load
    (``lam=0`` loaded and failed every input), and the check :func:`dlmri` runs. Without the
    data it cannot tell real (CT) from complex (MRI) patches: ``sparsity`` is judged against
    the larger, complex dimension ``2 p^2`` unless ``complex_`` says which (:func:`dlmri`
    does)."""
    if (problem := positive_problem(params.get("lam"))) is not None:
        return "lam", f"{problem} (the weight of the patch fit)"
    p = params.get("patch_size", inspect.signature(dlmri).parameters["patch_size"].default)
    if (problem := count_problem(p, MIN_PATCH)) is not None:
        return "patch_size", (f"{problem} (a 1-pixel patch has nothing for the dictionary's "
                              "atoms to describe)")
    stride = params.get("stride")
    if stride is not None and (problem := count_problem(stride, 1)) is not None:
        return "stride", f"{problem} (the patch step in pixels)"
    sparsity = params.get("sparsity")
    d = _patch_dim(p, complex_ is not False)
    if count_problem(sparsity, 1) is None and sparsity >= d:
        kind = "real (CT)" if complex_ is False else "complex (MRI)"
        return "sparsity", (f"must be below {d}, the dimension of a {p} x {p} {kind} patch: "
                            f"with {d} atoms a patch can be fit exactly and the "
                            f"dictionary prior does nothing; got {sparsity}")
    return None


@accepts_deprecated_names
def dlmri(
    y: Tensor,
    op: LinearOperator,
    *,
    lam: float = 0.03,
    patch_size: int = 6,
    stride: int = 1,
    atoms_per_axis: int = 8,
    sparsity: int = 5,
    iterations: int = 10,
    cg_iterations: int = 10,
    init_iterations: int = 10,
    x0: Tensor | None = None,
    callback: Callback | None = None,
    objective: list | None = None,
) -> Tensor:
    """DLMRI-style dictionary-learning reconstruction (module docstring) for MRI or CT.

    A stack of slices (leading axes of ``y`` beyond ``op``'s) is not reconstructed slice by
    slice: the slices learn one dictionary from all their patches (and ``lam``'s scale is the
    largest ``||A||^2`` of the batch), so a batched call differs from calls per slice (a slice
    10x dimmer than its neighbour: 43.1 dB batched, 44.3 dB alone). Call it per slice for
    per-slice dictionaries, as the pipeline does.

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)`` or sinogram ``(..., views, detectors)``.
    op
        Forward operator on images ``(..., H, W)``.
    lam
        Weight of the patch-fit term relative to the data term: the absolute weight is
        ``lam * lambda_max(A^H A) / (patch_size / stride)^2`` (largest over slices), so the same
        value serves MRI and CT (``(p/s)^2`` is the number of patches covering an inner pixel).
    patch_size, stride
        Patch side and step (pixels).
    atoms_per_axis
        The initial DCT dictionary has ``atoms_per_axis^2`` atoms (twice that for complex).
    sparsity
        Non-zeros per patch code, below the patch dimension (``p*p``, ``2 p*p`` for complex
        images; :func:`dlmri_settings_problem`).
    iterations
        Alternations of coding, dictionary update and image update.
    cg_iterations
        CG iterations per image update (warm started).
    init_iterations
        CG iterations of the least-squares start image (``0``: start from ``A^H y``).
    x0
        Start image (overrides the least-squares start).
    callback
        ``callback(iteration, x, relative_change)`` after every outer iteration.
    objective
        A list to append the objective to after every outer iteration (for monitoring).

    Returns
    -------
    Tensor
        Image ``(..., H, W)``.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"dlmri: op must be a LinearOperator, got {type(op).__name__}")
    check_data("dlmri", y, op)  # as run: NaN, all zero, real k-space, a flipped sinogram
    check_iterations("dlmri", iterations=iterations, cg_iterations=cg_iterations,
                     sparsity=sparsity, atoms_per_axis=atoms_per_axis)
    aty = op.H(y)
    if (bad := dlmri_settings_problem(dict(lam=lam, patch_size=patch_size, stride=stride,
                                           sparsity=sparsity), aty.is_complex())):
        raise ValueError(f"dlmri: {bad[0]} {bad[1]}")
    nb = batch_dims_of(op, aty)
    complex_ = aty.is_complex()
    x0 = check_start("dlmri", x0, aty, y)
    x = x0.clone() if x0 is not None else (
        cg(op.gram, aty, iterations=init_iterations, batch_dims=nb) if init_iterations else aty)
    P = Patches(tuple(aty.shape[-2:]), patch_size, stride, border="drop").to(aty.device)
    real_dtype = aty.real.dtype
    dct = overcomplete_dct(patch_size, atoms_per_axis, real_dtype).to(aty.device)
    D = torch.block_diag(dct, dct) if complex_ else dct
    lip = float(max_eigenvalue(op.gram, aty, batch_dims=nb).max())  # lambda_max(A^H A)
    lam_abs = lam * lip / (patch_size / stride) ** 2
    codes = None
    for it in range(iterations):
        X = _to_real(P(x)).reshape(-1, D.shape[0])
        new = omp(X, D, sparsity)
        if codes is not None:  # keep a patch's old code where greedy OMP fits worse
            worse = (torch.linalg.vector_norm(X - new @ D.T, dim=1)
                     > torch.linalg.vector_norm(X - codes @ D.T, dim=1))
            new[worse] = codes[worse]
        D, codes = ksvd_sweep(X, D, new)
        fit = _from_real((codes @ D.T).reshape(*x.shape[:-2], *P.range_shape[:-1], D.shape[0]), complex_)
        rhs = aty + lam_abs * P.H(fit)
        x_old = x
        x = cg(lambda t: op.gram(t) + lam_abs * P.gram(t), rhs, x, iterations=cg_iterations,
               batch_dims=nb)
        if objective is not None:
            objective.append(float(dlmri_objective(y, op, x, P, D, codes, lam_abs)))
        if callback is not None:
            scale = float(torch.linalg.vector_norm(x))
            callback(it, x, float(torch.linalg.vector_norm(x - x_old)) / scale if scale > 0 else 0.0)
    return x
