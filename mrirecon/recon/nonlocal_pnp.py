"""Non-local priors by plug-and-play: PnP-ADMM / PnP-HQS with a non-local-means (Buades et al.
2005) or BM3D (Dabov et al. 2007) denoiser, for any LinearOperator (MRI or CT).

Problem (implicitly): ``min_x 1/2||A x - y||^2 + g(x)`` where the prox of ``g`` is replaced by
a denoiser (Venkatakrishnan et al. 2013). The data step is
``argmin_x 1/2||A x - y||^2 + rho/2 ||x - v||^2``, solved by CG on ``A^H A + rho I``.

Parameter continuation (Chan, Wang & Elgendy 2017): ``rho_k = rho_0 gamma^k`` and the
denoiser's noise level ``sigma_k = sigma_0 gamma^(-k/2)`` (the prox of ``g / rho_k`` is a
denoiser at ``sigma^2 ~ 1 / rho_k``). With ``gamma > 1`` the iteration is a fixed-point
iteration with shrinking steps and converges for bounded denoisers; ``gamma = 1`` is plain PnP.

Noise level from the data: unless ``sigma`` is given, ``sigma_0 = sigma_scale * sigma_hat``,
where ``sigma_hat`` is the robust (median absolute deviation) noise estimate of Donoho &
Johnstone on the finest diagonal wavelet sub-band (``skimage.restoration.estimate_sigma``) of
the initial least-squares image ``x_0`` (CG on ``A^H A x = A^H y``), one value per slice. For
complex images it is the mean of the real and imaginary parts' estimates. Undersampling
artefacts that reach the finest scale raise ``sigma_hat`` as noise does, which is what the
first iterations must remove.

Complex images (MRI): NLM denoises the real and imaginary parts as the two channels of one
image (patch distances summed over both, so both parts share the weights and the phase is
treated consistently); BM3D denoises real and imaginary parts separately.

Defaults (``rho = 1``, ``sigma_scale = 3``) were chosen on a 4x multi-coil Shepp-Logan phantom
(coil maps with unit RSS); on sparse-view CT (16-60 views) ``rho = 0.1``, ``sigma_scale = 1``
work better: CT's ``A^H A`` has a wide spectrum, so ``rho`` relative to its largest eigenvalue
pulls weakly towards the data on most components and a strong denoiser then over-smooths.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.recon.variational import batch_dims_of
from mrirecon.solvers import cg, max_eigenvalue
from mrirecon.solvers.convergence import report_unconverged
from mrirecon.solvers.pnp import pnp_admm_step, pnp_hqs_step
from mrirecon.core.checks import (check_iterations, check_start, check_tolerance, count_problem,
                                   positive_problem)
from mrirecon.recon.checks import check_data
from mrirecon.recon.registry import package_problem

Callback = Callable[[int, Tensor, float], None]
Denoiser = Callable[[np.ndarray, float], np.ndarray]
METHODS = ("admm", "hqs")
#: The smallest NLM ``patch_size``: scikit-image runs 0 as 1, and 1-pixel patches compare single
#: noisy values, which pulls a flat region's mean down by 4 % (0.960 on a unit square with
#: noise 0.05; 0.998 with 3 x 3 patches); PnP compounded it to 14.6 dB on a 4x brain slice
#: (5 x 5 patches: 24.7 dB, zero-filled 19.0 dB). An even size runs as the next odd one.
MIN_NLM_PATCH = 2


def _to_channels(x: np.ndarray) -> np.ndarray:
    """Complex ``(H, W)`` -> real ``(H, W, 2)``; real stays ``(H, W)``."""
    return np.stack([x.real, x.imag], axis=-1) if np.iscomplexobj(x) else x


def _from_channels(x: np.ndarray, complex_: bool) -> np.ndarray:
    return x[..., 0] + 1j * x[..., 1] if complex_ else x


def pnp_settings_problem(params: dict) -> tuple[str, str] | None:
    """``(setting, what is wrong)`` for a ``pnp_nlm`` / ``pnp_bm3d`` setting that
    :func:`plug_and_play` or :func:`nlm_denoiser` refuses, as far as the settings alone tell
    (a ``patch_size`` larger than the image is refused when the image is known), or ``None``.

    The registry's ``settings_problem`` of both methods, so a pipeline refuses these at load
    (``rho=0``, ``gamma=0.5``, ``method=foo`` loaded and failed every input), and the check the
    functions run. A noise level of 0 (``sigma``, ``sigma_scale``) made the denoiser return its
    input, a prior that does nothing (the plain least-squares image, no word); ``patch_size=0``
    ran as 1 and ``patch_distance=0`` searched no neighbour."""
    method = params.get("method")
    if method is not None and method not in METHODS:
        return "method", f"must be one of {', '.join(METHODS)}, got {method!r}"
    for key, what in (("rho", "the data step's penalty relative to ||A||^2"),
                      ("sigma", "the denoiser's first noise level; 0 switches the prior off; "
                                "null estimates it from the data"),
                      ("sigma_scale", "multiplies the estimated noise level; 0 switches the "
                                      "prior off")):
        if (problem := positive_problem(params.get(key))) is not None:
            return key, f"{problem} ({what})"
    gamma = params.get("gamma")
    if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and not gamma >= 1:
        return "gamma", f"must be >= 1 (the continuation factor of rho), got {gamma!r}"
    for key, least, what in (("patch_size", MIN_NLM_PATCH, "the NLM patch side in pixels; 1 "
                              "compares single pixels and biases the image"),
                             ("patch_distance", 1, "the NLM search radius in pixels")):
        if key in params and (problem := count_problem(params[key], least)):
            return key, f"{problem} ({what})"
    return None


def _check_settings(who: str, **params: object) -> None:
    if (bad := pnp_settings_problem(params)) is not None:
        raise ValueError(f"{who}: {bad[0]} {bad[1]}")


def _check_patch_fits(who: str, patch_size: int, shape) -> None:
    """An NLM patch at most the image's smaller side (``shape``'s last two axes): 200 on
    128 x 128 ran, 15.8 dB against the zero-filled image's 17.5."""
    if patch_size > min(shape[-2:]):
        raise ValueError(f"{who}: patch_size {patch_size} exceeds the image size "
                         f"{shape[-2]} x {shape[-1]}")


def nlm_denoiser(h: float = 0.8, patch_size: int = 5, patch_distance: int = 6) -> Denoiser:
    """Non-local means (``skimage.restoration.denoise_nl_means``, fast mode) as ``f(img, sigma)``.

    ``img`` is one 2-D slice ``(H, W)``, real or complex (real and imaginary parts as two
    channels of one NLM). The filter strength is ``h * sigma`` with the noise variance
    subtracted from patch distances (``sigma`` passed on), as scikit-image recommends.

    Parameters
    ----------
    h
        Filter strength relative to ``sigma``.
    patch_size, patch_distance
        Patch side (pixels, ``>= 2`` and at most the image's smaller side) and search radius
        (pixels, ``>= 1``).

    Raises
    ------
    ValueError
        ``patch_size < 2`` or ``patch_distance < 1`` (:func:`pnp_settings_problem`); a
        ``patch_size`` larger than the image, when called on it.
    """
    _check_settings("nlm_denoiser", patch_size=patch_size, patch_distance=patch_distance)
    # imported on use: scikit-image's restoration pulls in scipy.stats, seconds of start-up for
    # every pipeline that never calls NLM
    from skimage.restoration import denoise_nl_means

    def denoise(img: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return img
        _check_patch_fits("nlm_denoiser", patch_size, img.shape)
        chan = _to_channels(img)
        out = denoise_nl_means(chan, h=h * sigma, sigma=sigma, patch_size=patch_size,
                               patch_distance=patch_distance, fast_mode=True,
                               channel_axis=-1 if chan.ndim == 3 else None)
        return _from_channels(out, np.iscomplexobj(img))

    return denoise


def bm3d_denoiser() -> Denoiser:
    """BM3D (PyPI ``bm3d``, Makinen et al. 2020) as ``f(img, sigma)`` on one 2-D slice.

    Complex slices: real and imaginary parts are denoised separately with the same ``sigma``.

    Raises
    ------
    ImportError
        If the ``bm3d`` package is not installed.
    """
    if (why := package_problem("pnp_bm3d")) is not None:
        raise ImportError(why)
    import bm3d

    def one(part: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(bm3d.bm3d(part, sigma_psd=sigma), dtype=part.dtype)

    def denoise(img: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return img
        if np.iscomplexobj(img):
            return one(np.ascontiguousarray(img.real), sigma) + 1j * one(np.ascontiguousarray(img.imag), sigma)
        return one(img, sigma)

    return denoise


def estimate_noise_level(x: Tensor) -> Tensor:
    """Per-slice noise standard deviation of images ``(..., H, W)`` (Donoho-Johnstone MAD).

    Returns
    -------
    Tensor
        Real tensor ``x.shape[:-2]`` (for complex images the mean over real and imaginary
        parts' estimates).
    """
    from skimage.restoration import estimate_sigma

    arr = x.detach().cpu().numpy().reshape(-1, *x.shape[-2:])
    out = []
    for img in arr:
        if not np.any(img != img.flat[0]):  # constant: no noise (skimage gives NaN and a warning)
            out.append(0.0)
            continue
        chan = _to_channels(img)
        out.append(float(estimate_sigma(chan, channel_axis=-1 if chan.ndim == 3 else None,
                                        average_sigmas=True)))
    return torch.tensor(out, dtype=x.real.dtype).reshape(x.shape[:-2])


def _apply(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """Apply a 2-D numpy denoiser slice by slice with per-slice ``sigma``."""
    arr = x.detach().cpu().numpy().reshape(-1, *x.shape[-2:])
    sig = sigma.reshape(-1).tolist() if sigma.numel() > 1 else [float(sigma)] * arr.shape[0]
    out = np.stack([denoiser(img, s) for img, s in zip(arr, sig)])
    return torch.from_numpy(out.astype(arr.dtype)).reshape(x.shape).to(x.device)


def plug_and_play(
    y: Tensor,
    op: LinearOperator,
    denoiser: Denoiser,
    *,
    iterations: int = 30,
    method: str = "admm",
    rho: float = 1.0,
    gamma: float = 1.05,
    sigma: float | None = None,
    sigma_scale: float = 3.0,
    cg_iterations: int = 10,
    init_iterations: int = 10,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """PnP-ADMM or PnP-HQS with a numpy denoiser ``f(img2d, sigma)`` and CG data steps.

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)`` or sinogram ``(..., views, detectors)``.
    op
        Forward operator ``A`` on images ``(..., H, W)``.
    denoiser
        ``f(img, sigma) -> img`` on one 2-D numpy slice (see :func:`nlm_denoiser`).
    iterations
        Outer iterations.
    method
        ``"admm"``: ``x = prox_f(z - u)``, ``z = D(x + u)``, ``u += x - z``;
        ``"hqs"``: ``z = D(x)``, ``x = prox_f(z)``.
    rho
        Initial penalty relative to ``||A||^2`` (``rho_0 = rho * lambda_max(A^H A)`` per slice,
        so the same value serves MRI and CT).
    gamma
        Continuation factor ``>= 1`` (see the module docstring).
    sigma
        Initial denoiser noise level in image units; ``None`` estimates it from the data.
    sigma_scale
        Multiplier of the estimated level.
    cg_iterations
        CG iterations per data step (warm started).
    init_iterations
        CG iterations of the least-squares start image (``0``: start from ``A^H y``).
    tolerance
        Stop when every slice has converged to it (``0`` disables): ADMM's primal residual
        ``||x - z||`` and change of ``z`` relative to ``max(||x||, ||z||)`` (not before the
        second iteration), HQS's relative change of ``x``.
    x0
        Start image (overrides the least-squares start).
    callback
        ``callback(iteration, x, relative_change)`` (of ``x``, over the whole batch).

    Returns
    -------
    Tensor
        Image ``(..., H, W)``, complex for MRI and real for CT.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"plug_and_play: op must be a LinearOperator, got {type(op).__name__}")
    check_iterations("plug_and_play", iterations=iterations, cg_iterations=cg_iterations)
    check_tolerance("plug_and_play", tolerance=tolerance)
    _check_settings("plug_and_play", method=method, rho=rho, gamma=gamma, sigma=sigma,
                    sigma_scale=sigma_scale)
    aty = op.H(y)
    nb = batch_dims_of(op, aty)
    x0 = check_start("plug_and_play", x0, aty, y)
    if x0 is None:
        x0 = cg(op.gram, aty, iterations=init_iterations, batch_dims=nb) if init_iterations else aty
    x = x0.clone()
    sig0 = estimate_noise_level(x) * sigma_scale if sigma is None else torch.full(x.shape[:-2], float(sigma))
    if sigma is None and not bool((sig0 > 0).all()):
        # a constant start (x0 of zeros) gave NaN, which turned the denoiser off without a word
        raise ValueError("plug_and_play: the noise level cannot be estimated from the start image "
                         "(no noise measurable in some slice: a constant or noise-free start, "
                         "e.g. an x0 of zeros or a phantom): give sigma, or leave x0 unset to "
                         "start from the CG solution")
    rho_k = rho * max_eigenvalue(op.gram, aty, batch_dims=nb)  # (..., 1, 1)
    z, u = x.clone(), torch.zeros_like(x)

    def data_step(v: Tensor, r: Tensor, start: Tensor) -> Tensor:
        return cg(lambda t: op.gram(t) + r * t, aty + r * v, start, iterations=cg_iterations,
                  batch_dims=nb)

    for it in range(iterations):
        sig_k = sig0 * gamma ** (-it / 2)
        x_old, z_old = x, z

        def prox(v: Tensor, start: Tensor, r: Tensor = rho_k) -> Tensor:
            return data_step(v, r, start)

        def denoise(v: Tensor, s: Tensor = sig_k) -> Tensor:
            return _apply(denoiser, v, s)

        # the iterations shared with the learned models (mrirecon.solvers.pnp); the scaled
        # dual u = lambda / rho follows rho_{k+1} = gamma rho_k
        if method == "admm":
            x, z, u = pnp_admm_step(x, z, u, prox, denoise, gamma=gamma)
        else:
            x, z = pnp_hqs_step(x, prox, denoise)
        rho_k = rho_k * gamma
        scale = float(torch.linalg.vector_norm(x))
        rel = float(torch.linalg.vector_norm(x - x_old)) / scale if scale > 0 else 0.0
        if callback is not None:
            callback(it, x, rel)
        if tolerance > 0 and _converged(method, it, x, x_old, z, z_old, nb, tolerance):
            break
    else:
        if tolerance > 0:  # stopped at the limit: say so (as the solvers do)
            change, scale = _change_and_scale(method, x, x_old, z, z_old, nb)
            worst = float(torch.where(scale > 0, change / torch.where(scale > 0, scale, 1),
                                      change).max())
            report_unconverged(f"plug_and_play ({method})", iterations, worst, tolerance,
                               "relative change")
    return x


def _converged(method: str, it: int, x: Tensor, x_old: Tensor, z: Tensor, z_old: Tensor,
               batch_dims: int, tolerance: float) -> bool:
    """Whether every slice (the axes after ``batch_dims``) meets ``tolerance``.

    ADMM: the primal residual ``||x - z||`` and the change of ``z`` below ``tolerance`` times
    ``max(||x||, ||z||)``, as :func:`~mrirecon.solvers.admm` tests, and never on the first
    iteration: from ``z = x0``, ``u = 0`` its x-update reproduces ``x0`` (a relative change of
    2e-5), so any tolerance above that returned the start image. HQS: the relative change of
    ``x``. Per slice, so a bright slice does not stop a dim one of its batch early."""
    if method == "admm" and it == 0:
        return False
    change, scale = _change_and_scale(method, x, x_old, z, z_old, batch_dims)
    return bool((change <= tolerance * scale).all())


def _change_and_scale(method: str, x: Tensor, x_old: Tensor, z: Tensor, z_old: Tensor,
                      batch_dims: int) -> tuple[Tensor, Tensor]:
    """Per slice: what :func:`_converged` compares with ``tolerance`` times what."""
    dims = tuple(range(batch_dims, x.ndim))

    def norm(v: Tensor) -> Tensor:
        return torch.linalg.vector_norm(v, dim=dims)

    if method == "admm":
        return torch.maximum(norm(x - z), norm(z - z_old)), torch.maximum(norm(x), norm(z))
    return norm(x - x_old), norm(x)


def pnp_nlm(
    y: Tensor,
    op: LinearOperator,
    *,
    iterations: int = 30,
    method: str = "admm",
    rho: float = 1.0,
    gamma: float = 1.05,
    sigma: float | None = None,
    sigma_scale: float = 3.0,
    h: float = 0.8,
    patch_size: int = 5,
    patch_distance: int = 6,
    cg_iterations: int = 10,
    init_iterations: int = 10,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Plug-and-play with non-local means (scikit-image) for MRI or CT.

    See :func:`plug_and_play` for the iteration and parameters and :func:`nlm_denoiser` for
    ``h``, ``patch_size``, ``patch_distance``; the noise level is set from the data (module
    docstring). Complex images: real and imaginary parts are the two channels of one NLM.

    Returns
    -------
    Tensor
        Image ``(..., H, W)``.
    """
    check_data("pnp_nlm", y, op)  # as run: NaN, all zero, real k-space, a flipped sinogram
    _check_settings("pnp_nlm", method=method, rho=rho, gamma=gamma, sigma=sigma,
                    sigma_scale=sigma_scale, patch_size=patch_size, patch_distance=patch_distance)
    image = getattr(op, "domain_shape", None)  # else the denoiser says so on the first image
    if image is not None and len(image) >= 2:  # before the start-up iterations, not after them
        _check_patch_fits("pnp_nlm", patch_size, image)
    return plug_and_play(y, op, nlm_denoiser(h, patch_size, patch_distance), iterations=iterations,
                         method=method, rho=rho, gamma=gamma, sigma=sigma, sigma_scale=sigma_scale,
                         cg_iterations=cg_iterations, init_iterations=init_iterations,
                         tolerance=tolerance, x0=x0, callback=callback)


def pnp_bm3d(
    y: Tensor,
    op: LinearOperator,
    *,
    iterations: int = 20,
    method: str = "admm",
    rho: float = 1.0,
    gamma: float = 1.05,
    sigma: float | None = None,
    sigma_scale: float = 3.0,
    cg_iterations: int = 10,
    init_iterations: int = 10,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Plug-and-play with BM3D (PyPI ``bm3d``) for MRI or CT; slower than NLM (about a second
    per 128 x 128 slice and iteration, twice that for complex images).

    See :func:`plug_and_play`; complex images: real and imaginary parts denoised separately.
    The ``bm3d`` package computes in single precision: complex128 / float64 data give results
    of that dtype but float32's accuracy (about 1e-7 relative, where the other methods keep
    float64's).
    """
    check_data("pnp_bm3d", y, op)  # as run: NaN, all zero, real k-space, a flipped sinogram
    _check_settings("pnp_bm3d", method=method, rho=rho, gamma=gamma, sigma=sigma,
                    sigma_scale=sigma_scale)
    return plug_and_play(y, op, bm3d_denoiser(), iterations=iterations, method=method, rho=rho,
                         gamma=gamma, sigma=sigma, sigma_scale=sigma_scale,
                         cg_iterations=cg_iterations, init_iterations=init_iterations,
                         tolerance=tolerance, x0=x0, callback=callback)
