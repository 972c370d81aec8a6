"""Dictionary-learning reconstruction, DLMRI-style (Ravishankar & Bresler 2011), for any
LinearOperator (MRI or CT).

Problem::

    min_{x, D, alpha}  1/2 ||A x - y||^2 + nu/2 ||P x - D alpha||^2
    s.t. ||alpha_j||_0 <= sparsity,  ||d_k||_2 = 1

with ``P`` the overlapping patch extraction (:class:`PatchOperator`, adjoint = overlap-add),
``D`` a patch dictionary and ``alpha_j`` the sparse code of patch ``j``. Every outer iteration
alternates (block coordinate descent):

1. sparse coding by batched orthogonal matching pursuit (:func:`omp`; a patch keeps its old
   code when OMP's greedy code fits worse, so this step never increases the objective);
2. one sweep of approximate K-SVD (Rubinstein, Zibulevsky & Elad 2008) over all atoms on all
   patches (each atom and its coefficients are the exact rank-1 fit on the atom's support);
3. the image by CG on ``(A^H A + nu P^H P) x = A^H y + nu P^H D alpha`` (warm started).

Patches are real vectors: ``p*p`` pixels for CT, real and imaginary parts stacked (``2 p*p``)
for complex MRI images, so the dictionary is real. The dictionary starts from the overcomplete
2-D DCT (block-diagonal over real and imaginary parts for complex images). All slices of a
batch share one dictionary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.recon.variational import batch_dims_of
from mrirecon.solvers import cg, max_eigenvalue

Callback = Callable[[int, Tensor, float], None]


class PatchOperator(LinearOperator):
    """Overlapping ``p x p`` patches at stride ``s``: ``(..., H, W) -> (..., n_patches, p*p)``.

    Patch ``j`` starts at row ``s * (j // n_W)`` and column ``s * (j % n_W)`` with
    ``n_H = (H - p) // s + 1`` (likewise ``n_W``); entries are in row-major order. The adjoint
    adds the patches back at their places (overlap-add); ``P^H P`` is the diagonal of patch
    counts per pixel. Real or complex.

    Parameters
    ----------
    image_shape
        ``(H, W)``.
    patch_size, stride
        ``p`` and ``s`` (pixels).
    """

    def __init__(self, image_shape: tuple[int, int], patch_size: int = 6, stride: int = 1) -> None:
        h, w = (int(v) for v in image_shape)
        if not 1 <= patch_size <= min(h, w) or stride < 1:
            raise ValueError(f"PatchOperator: need 1 <= patch_size <= min{(h, w)} and stride >= 1, "
                             f"got patch_size={patch_size}, stride={stride}")
        self.grid = ((h - patch_size) // stride + 1, (w - patch_size) // stride + 1)
        super().__init__((h, w), (self.grid[0] * self.grid[1], patch_size * patch_size))
        self.image_shape, self.patch_size, self.stride = (h, w), patch_size, stride

    def _real(self, fn, t: Tensor) -> Tensor:
        if t.is_complex():
            return torch.complex(fn(t.real), fn(t.imag))
        return fn(t)

    def _forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-2]

        def f(r: Tensor) -> Tensor:
            cols = F.unfold(r.reshape(-1, 1, *self.image_shape), self.patch_size, stride=self.stride)
            return cols.transpose(1, 2).reshape(*lead, *self.range_shape)
        return self._real(f, x)

    def _adjoint(self, p: Tensor) -> Tensor:
        lead = p.shape[:-2]

        def f(r: Tensor) -> Tensor:
            cols = r.reshape(-1, *self.range_shape).transpose(1, 2)
            out = F.fold(cols, self.image_shape, self.patch_size, stride=self.stride)
            return out.reshape(*lead, *self.image_shape)
        return self._real(f, p)


def overcomplete_dct(patch_size: int, atoms_per_axis: int, dtype=torch.float64) -> Tensor:
    """Overcomplete separable 2-D DCT dictionary ``(p*p, k*k)`` with unit-norm columns.

    1-D atoms ``cos(pi j i / k)`` for ``i < p``, ``j < k`` (mean removed for ``j > 0``), as in
    Elad & Aharon's K-SVD denoising; the 2-D atoms are their Kronecker products (row-major
    patches). The first atom is constant.
    """
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
    n, _d = signals.shape
    k = dictionary.shape[1]
    gram = dictionary.T @ dictionary
    xd = signals @ dictionary  # (n, K) correlations with the signals
    codes = torch.zeros(n, k, dtype=signals.dtype, device=signals.device)
    support = torch.zeros(n, 0, dtype=torch.long, device=signals.device)
    residual = signals
    norm_x = torch.linalg.vector_norm(signals, dim=1)
    active = norm_x > 0
    rows = torch.arange(n, device=signals.device)
    eps = 1e-12 * torch.diagonal(gram).max()
    for _ in range(min(sparsity, k)):
        corr = (residual @ dictionary).abs()
        corr[rows[:, None], support] = -1.0
        new = corr.argmax(dim=1)
        cand = torch.cat([support, new[:, None]], dim=1)
        g = gram[cand[:, :, None], cand[:, None, :]]
        g = g + eps * torch.eye(cand.shape[1], dtype=g.dtype, device=g.device)
        coef = torch.linalg.solve(g, xd[rows[:, None], cand].unsqueeze(-1)).squeeze(-1)
        support = cand  # finished rows keep their codes; their support is no longer used
        codes[active] = 0
        codes[rows[active, None], cand[active]] = coef[active]
        residual = signals - codes @ dictionary.T
        rnorm = torch.linalg.vector_norm(residual, dim=1)
        active = active & (rnorm > max(tolerance, 1e-14) * norm_x)
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
    return torch.cat([p.real, p.imag], dim=-1) if p.is_complex() else p


def _from_real(v: Tensor, complex_: bool) -> Tensor:
    if not complex_:
        return v
    half = v.shape[-1] // 2
    return torch.complex(v[..., :half], v[..., half:])


def dlmri_objective(y: Tensor, op: LinearOperator, x: Tensor, patches: PatchOperator,
                    dictionary: Tensor, codes: Tensor, nu: float) -> Tensor:
    """``1/2||A x - y||^2 + nu/2 ||P x - D alpha||^2`` (``codes`` ``(n_all, K)`` over all
    slices' patches in order)."""
    px = _to_real(patches(x)).reshape(-1, dictionary.shape[0])
    return 0.5 * (op(x) - y).abs().pow(2).sum() + 0.5 * nu * (px - codes @ dictionary.T).pow(2).sum()


def dlmri(
    y: Tensor,
    op: LinearOperator,
    *,
    nu: float = 0.03,
    patch_size: int = 6,
    stride: int = 1,
    atoms_per_axis: int = 8,
    sparsity: int = 5,
    outer_iterations: int = 10,
    cg_iterations: int = 10,
    init_iterations: int = 10,
    x0: Tensor | None = None,
    callback: Callback | None = None,
    objective: list | None = None,
) -> Tensor:
    """DLMRI-style dictionary-learning reconstruction (module docstring) for MRI or CT.

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)`` or sinogram ``(..., views, detectors)``.
    op
        Forward operator on images ``(..., H, W)``.
    nu
        Weight of the patch-fit term relative to the data term: the absolute weight is
        ``nu * lambda_max(A^H A) / (patch_size / stride)^2`` (largest over slices), so the same
        value serves MRI and CT (``(p/s)^2`` is the number of patches covering an inner pixel).
    patch_size, stride
        Patch side and step (pixels).
    atoms_per_axis
        The initial DCT dictionary has ``atoms_per_axis^2`` atoms (twice that for complex).
    sparsity
        Non-zeros per patch code.
    outer_iterations
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
    if nu <= 0 or sparsity < 1:
        raise ValueError(f"dlmri: need nu > 0 and sparsity >= 1, got nu={nu}, sparsity={sparsity}")
    aty = op.H(y)
    nb = batch_dims_of(op, aty)
    complex_ = aty.is_complex()
    x = x0.clone() if x0 is not None else (
        cg(op.gram, aty, max_iterations=init_iterations, batch_dims=nb) if init_iterations else aty)
    P = PatchOperator(aty.shape[-2:], patch_size, stride).to(aty.device)
    real_dtype = aty.real.dtype
    dct = overcomplete_dct(patch_size, atoms_per_axis, real_dtype).to(aty.device)
    D = torch.block_diag(dct, dct) if complex_ else dct
    nu_abs = nu * float(max_eigenvalue(op.gram, aty, batch_dims=nb).max()) / (patch_size / stride) ** 2
    codes = None
    for it in range(outer_iterations):
        X = _to_real(P(x)).reshape(-1, D.shape[0])
        new = omp(X, D, sparsity)
        if codes is not None:  # keep a patch's old code where greedy OMP fits worse
            worse = (torch.linalg.vector_norm(X - new @ D.T, dim=1)
                     > torch.linalg.vector_norm(X - codes @ D.T, dim=1))
            new[worse] = codes[worse]
        D, codes = ksvd_sweep(X, D, new)
        fit = _from_real((codes @ D.T).reshape(*x.shape[:-2], *P.range_shape[:-1], D.shape[0]), complex_)
        rhs = aty + nu_abs * P.H(fit)
        x_old = x
        x = cg(lambda t: op.gram(t) + nu_abs * P.gram(t), rhs, x, max_iterations=cg_iterations,
               batch_dims=nb)
        if objective is not None:
            objective.append(float(dlmri_objective(y, op, x, P, D, codes, nu_abs)))
        if callback is not None:
            scale = float(torch.linalg.vector_norm(x))
            callback(it, x, float(torch.linalg.vector_norm(x - x_old)) / scale if scale > 0 else 0.0)
    return x
