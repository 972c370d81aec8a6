"""Classical MRI reconstructions: zero-filled, CG-SENSE, L1-wavelet, total variation.

Every function takes measured k-space ``y`` and a forward operator ``op`` (a
:class:`~mrirecon.operators.SenseOperator` for multi-coil Cartesian data, or any
:class:`~mrirecon.core.LinearOperator`) and returns the image. Leading axes of ``y`` beyond the
operator's range (slices) are reconstructed as independent problems in one batched run: CG
coefficients, FISTA steps and ADMM penalties are per slice, so ``cg_sense``, ``l1_wavelet`` and
``tv`` (ADMM, the default) equal slice-by-slice calls (with a ``tolerance``, the batch stops when
its slowest slice has converged: no slice stops earlier than it would alone, converged ones may
take a few more iterations). The exception is PDHG with scalar steps (``tv(method="pdhg")``,
``tgv(method="pdhg")`` on MRI): its steps come from the largest ``||A||`` of the batch, so a
slice whose operator has a smaller norm (per-slice coil maps of another scale) takes smaller
steps than alone and, after a fixed number of iterations, differs from its reconstruction alone
(5 % NRMSE after 30 iterations with maps 3x apart); with shared maps they agree to the power
iteration's accuracy (2e-7), and the pipeline reconstructs one slice at a time.

Shapes (multi-coil Cartesian): ``y`` ``(slices, coils, H, W)``, maps ``(slices, coils, H, W)``,
images ``(slices, H, W)`` complex.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import (broadcasts_to, check_method_settings, check_start,
                                  check_tolerance, checked_weight)
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.core.parallel import serial_if_small
from mrirecon.functional import ifft2c, rss
from mrirecon.functional.nufft import nufft_adjoint
from mrirecon.operators import PhaseConstrained, Wavelet
from mrirecon.recon.checks import check_data, check_measurements, warn_user
from mrirecon.recon.variational import admm_settings, batch_dims_of, tv_least_squares
from mrirecon.solvers import cg, fista, max_eigenvalue, soft_threshold

Callback = Callable[[int, Tensor, float], None]


def _check_op(op, who: str, y: Tensor | None = None) -> None:
    """``op`` must be an operator; ``y`` (when given) is checked as ``run`` checks it
    (:func:`mrirecon.recon.checks.check_measurements`: NaN, all zero, real k-space, a mask
    that does not fit it), so that a direct call refuses what ``run`` refuses. These methods are
    odd in ``y``: a flipped sinogram (CT operator) gives the negated image, with a warning."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{who}: op must be a LinearOperator (e.g. sense(maps, mask)), got "
                        f"{type(op).__name__}")
    if y is not None:
        check_data(who, y, op, nonneg=False)


def gridded_coil_images(kspace: Tensor, trajectory: Tensor, shape: tuple[int, int],
                        density: Tensor | None = None) -> Tensor:
    """Density-compensated gridding of non-Cartesian samples ``(..., coils, *K)`` per coil:
    ``N^H (w * y)`` on an image grid ``shape`` (``w`` = 1 without ``density``)."""
    y = kspace if density is None else kspace * density.to(kspace.real.dtype).to(kspace.device)
    return nufft_adjoint(y, trajectory.to(kspace.device), shape)


def data_scale(kspace: Tensor, trajectory: Tensor | None = None,
               shape: tuple[int, int] | None = None, density: Tensor | None = None) -> float:
    """Intensity scale of a k-space slice ``(..., coils, H, W)``: the maximum of its zero-filled
    RSS image (1 if that is zero or not finite); for non-Cartesian samples ``(..., coils, *K)``
    on ``trajectory``, of the gridded RSS image on ``shape`` (:func:`gridded_coil_images`).

    Classical methods run on ``y / scale`` so that regularisation weights (``lam``) mean the
    same on every scanner and scaling convention; multiply the result back by ``scale``. The
    pipeline and the benchmark do this; so should a script that calls :func:`mrirecon.recon.run`
    on raw scanner k-space.
    """
    kspace = kspace.detach()  # a scale, not a graph node (float() of a grad tensor warned)
    if trajectory is None:
        coils = ifft2c(kspace)
    else:
        if shape is None:
            raise ValueError("data_scale: non-Cartesian k-space needs the image shape")
        coils = gridded_coil_images(kspace, trajectory, shape, density)
    # |x|^2 underflows float32 below ~1e-19 (and overflows above ~1e19): take the RSS of the
    # coil images divided by their peak, so that any scanner's units give a usable scale (a
    # scale of 1 for k-space at 1e-20 left lam absolute, and l1_wavelet / cg_sense / the
    # zero-filled RSS returned all-zero images)
    peak = float(coils.abs().max())
    if not 0 < peak < float("inf"):
        return 1.0
    m = float(rss(coils / peak, dim=-3).max()) * peak
    return m if 0 < m < float("inf") else 1.0


def zero_filled(y: Tensor, op: LinearOperator) -> Tensor:
    """Adjoint reconstruction ``A^H y``.

    For a :class:`~mrirecon.operators.SenseOperator` this is the sensitivity-weighted coil
    combination of the zero-filled coil images, ``sum_c conj(S_c) F^H P y_c``.

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)`` (unsampled entries are ignored by ``P``).
    op
        Forward operator.

    Returns
    -------
    Tensor
        Complex image ``(..., H, W)``.
    """
    _check_op(op, "zero_filled", y)
    return op.H(y)


def zero_filled_rss(kspace: Tensor, op: LinearOperator | None = None) -> Tensor:
    """Root-sum-of-squares of the inverse centred FFT of every coil (fastMRI's baseline).

    Parameters
    ----------
    kspace
        Zero-filled multi-coil k-space ``(..., coils, H, W)``.
    op
        Unused (accepted so that every reconstruction has the same call form).

    Returns
    -------
    Tensor
        Real magnitude image ``(..., H, W)``.

    Raises
    ------
    TypeError
        ``kspace`` is no ``torch.Tensor`` (a numpy array: ``torch.from_numpy``).
    ValueError
        ``kspace`` has fewer than 3 axes, or NaN / Inf values.
    """
    if not isinstance(kspace, Tensor):  # a numpy array was told its (right) shape was wrong
        raise TypeError(f"zero_filled_rss: kspace must be a torch.Tensor (..., coils, H, W), got "
                        f"{type(kspace).__module__}.{type(kspace).__name__} "
                        f"{tuple(getattr(kspace, 'shape', ()))}; convert it with "
                        "torch.from_numpy(kspace)")
    if kspace.ndim < 3:
        raise ValueError(f"zero_filled_rss: kspace must be a tensor (..., coils, H, W), got "
                         f"{tuple(kspace.shape)}")
    check_measurements("zero_filled_rss", kspace, None, kspace=True, arg="kspace")  # NaN: an all-NaN image
    return rss(ifft2c(kspace), dim=-3)


@accepts_deprecated_names
def cg_sense(
    y: Tensor,
    op: LinearOperator,
    lam: float = 0.0,
    *,
    iterations: int = 10,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    phase: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """CG-SENSE: ``argmin_x 1/2||A x - y||^2 + lam/2 ||x||^2`` by conjugate gradients.

    Solves the normal equations ``(A^H A + lam I) x = A^H y`` with per-slice CG coefficients
    (same problem as ``sigpy.mri.app.SenseRecon``; with a density-weighted
    :func:`~mrirecon.operators.nufft_sense` pass ``op.weighted(y)``, as SenseRecon's
    ``weights=`` weights the raw samples itself).

    With a ``phase`` (unit-modulus image), the image is ``x = rho * phase`` with ``rho`` real:
    CG on ``Re(phase^* (A^H A + lam) (phase rho)) = Re(phase^* A^H y)``, half the unknowns. This
    is phase-constrained SENSE, the parallel-imaging form of homodyne partial Fourier: a real
    object's k-space is conjugate symmetric, so the lines a partial Fourier acquisition skips
    are determined by the lines opposite them once the (smooth) phase is known from the
    symmetric centre. On simulated 8-coil 128 x 128 brains with 6/8 of the lines it gains
    5.2-7.3 dB PSNR over plain CG-SENSE (37.3-41.4 against 32.1-34.6 dB).

    From BART: ``pics -l2 -r lam -i N`` is ``cg_sense(lam=lam, iterations=N)`` on the same maps
    (the same CG iterates, to 1e-5 in float32; ``pics``' own data scaling cancels, the
    solution being linear in ``y``), ``-r 0`` plain CG-SENSE.

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)``.
    op
        Forward operator; its ``gram`` is used (closed form for ``SenseOperator``).
    lam
        Tikhonov weight ``>= 0``.
    iterations, tolerance
        CG limits (``tolerance`` relative to ``||A^H y||`` per slice).
    x0
        Start (zeros by default; with ``phase``, its real part after removing the phase).
    phase
        Optional unit-modulus image ``(..., H, W)`` that the solution is constrained to
        (partial Fourier; see above), e.g. ``sgn`` of a reconstruction of the symmetric
        centre of k-space.
    callback
        ``callback(iteration, x, relative_residual)``: a float, the largest
        ``||(A^H A + lam) x - A^H y|| / ||A^H y||`` over the slices.

    Returns
    -------
    Tensor
        Complex image ``(..., H, W)``.
    """
    _check_op(op, "cg_sense", y)
    lam = checked_weight("cg_sense", "lam", lam)  # NaN / inf passed `lam < 0`
    check_tolerance("cg_sense", tolerance=tolerance)  # >= 1: zeros, or the start
    aty = op.H(y)
    x0 = check_start("cg_sense", x0, aty, y)
    gram = op.gram if lam == 0 else (lambda x: op.gram(x) + lam * x)
    nb = batch_dims_of(op, aty)
    if phase is None:
        return cg(gram, aty, x0, iterations=iterations, tolerance=tolerance, batch_dims=nb,
                  callback=_relative_residual(callback, aty, nb))
    p = unit_phase(phase, aty.real.dtype, "cg_sense")
    if not broadcasts_to(tuple(p.shape), tuple(aty.shape)):  # was torch's "expanded size" error
        raise ValueError(f"cg_sense: phase must have the shape {tuple(aty.shape)} of the image of "
                         f"y {tuple(y.shape)} (or broadcast to it), got {tuple(p.shape)}")
    p = torch.broadcast_to(p, aty.shape)
    start = None if x0 is None else (p.conj() * x0).real  # check_start: aty's dtype
    rhs = (p.conj() * aty).real
    rho = cg(lambda r: (p.conj() * gram(p * r)).real, rhs, start, iterations=iterations,
             tolerance=tolerance, batch_dims=nb,
             callback=_relative_residual(callback, rhs, nb, image=lambda r: p * r))
    return p * rho


def _relative_residual(callback: Callback | None, rhs: Tensor, nb: int, image=None):
    """``cg``'s ``callback(it, x, residual_norms)`` (a tensor, one per slice, absolute) as the
    other methods call theirs: ``callback(it, image, float)``, the largest relative residual
    ``||A^H A x - A^H y|| / ||A^H y||`` over the slices (``float(r)`` raised for a batch)."""
    if callback is None:
        return None
    norms = torch.linalg.vector_norm(rhs, dim=tuple(range(nb, rhs.ndim))).reshape(-1)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))

    def call(it: int, x: Tensor, residual: Tensor) -> None:
        callback(it, x if image is None else image(x),
                 float((residual.reshape(-1) / norms).max()))
    return call


def _check_step(op: LinearOperator, aty: Tensor, step) -> None:
    """Warn when a given FISTA ``step`` exceeds ``1 / L`` (``L = ||A^H A||``), the bound of its
    convergence: ``step`` 2.5 at ``L`` 1 returned a finite image of 4.7e21 (the true one peaks at
    3.2) without a word. Checked against the operator's bound first; only a step above
    ``1 / bound`` (or an operator without one) costs 30 power iterations, whose estimate is a
    lower bound of ``L``, so the warning is never a false alarm."""
    s = torch.as_tensor(step, dtype=aty.real.dtype, device=aty.device).detach()
    bound = op.gram_bound(aty)
    if bound is not None and bool((s * bound.detach() <= 1).all()):
        return
    lip = max_eigenvalue(op.gram, aty.detach(), batch_dims=batch_dims_of(op, aty), iterations=30)
    worst = float((s * lip).max())
    if worst > 1 + 1e-3:
        warn_user(f"l1_wavelet: step {float(s.max()):g} exceeds 1 / L (at most "
                  f"{1 / float(lip.max()):.4g}: L = ||A^H A|| is at least {float(lip.max()):.4g} "
                  f"by 30 power iterations; step x L >= {worst:.3g}): FISTA converges for step "
                  "<= 1 / L and may diverge to a finite but exploded image; leave step=None "
                  "(1 / the operator's bound) or give a smaller one")


def l1_wavelet_settings_problem(params: dict) -> tuple[str, str] | None:
    """``(setting, what is wrong)`` for an :func:`l1_wavelet` ``wavelet`` that is no orthogonal
    discrete wavelet PyWavelets knows (``None``: fine): the registry's ``settings_problem``, so a
    pipeline refuses it at load (``wavelet: db99``, ``bior2.2`` or ``mexh`` read and calibrated
    every input, then failed each with PyWavelets' words, naming no setting)."""
    name = params.get("wavelet")
    if isinstance(name, str):
        from mrirecon.functional.wavelet import wavelet_filters

        try:
            wavelet_filters(name)
        except ImportError:  # PyWavelets missing: the registry's package check says so
            pass
        except ValueError as err:
            return "wavelet", (f"{err} (orthogonal discrete wavelets: haar, dbN, symN, coifN; "
                               "pywt.wavelist(kind='discrete') lists the names)")
    return None


@accepts_deprecated_names
def l1_wavelet(
    y: Tensor,
    op: LinearOperator,
    lam: float,
    *,
    wavelet: str = "db4",
    levels: int | None = None,
    iterations: int = 100,
    tolerance: float = 0.0,
    step: float | None = None,
    power_iterations: int | None = None,
    restart: bool = False,
    random_shift: bool = True,
    seed: int = 0,
    x0: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """L1-wavelet compressed sensing: ``argmin_x 1/2||A x - y||^2 + lam ||W x||_1`` by FISTA.

    ``W`` is the orthogonal periodised :class:`~mrirecon.operators.Wavelet` (zero-padded to a
    multiple of ``2**levels``), the prox step is ``W^H soft(W v, lam t)``, and the step is
    ``1 / L`` per slice, ``L`` the operator's closed-form bound on ``lambda_max(A^H A)``
    (:meth:`~mrirecon.core.LinearOperator.gram_bound`; for SENSE ``max sum_c |S_c|^2``, 1 for
    ESPIRiT maps, the value BART's ``pics`` assumes) or, for operators without one, 30 power
    iterations. That step is the exact prox of ``lam t ||W x||_1`` only when ``2**levels``
    divides H and W: with padding ``W W^H != I``, and FISTA (``random_shift=False``) stops
    slightly off the minimiser of the objective above (NRMSE 2.7e-3 at 160 x 186, 3 levels,
    padded to 192); sizes divisible by ``2**levels`` or fewer ``levels`` avoid it.

    The algorithm is that of ``sigpy.mri.app.L1WaveletRecon`` (FISTA, same iteration count;
    SigPy estimates ``L`` by 30 power iterations), the problem is not: SigPy's db4 transform is
    zero-padded (``pywt`` mode ``"zero"``, a redundant frame: 23716 coefficients for a 128 x 128
    image against 16384 here), with ``pywt.dwt_max_level`` levels (4 at 128, 5 at 320, against
    3 and 4 here), and without cycle spinning; SigPy's ``||W x||_1`` of the same image is about
    0.86x this one's. So the same ``lam`` (SigPy's ``lamda``) gives another image: NRMSE 0.11 (lam 5e-3)
    and 0.08 (1e-3) against SigPy after 100 iterations, 0.15 and 0.12 between the converged
    minimisers without cycle spinning (128 x 128, 8 coils, 4x, data scaled to unit peak; each
    about 0.14 from the truth), 0.006 at lam 1e-6. ``random_shift=False`` and ``levels=4``
    close little of it (0.15 and 0.10 at 100 iterations): the rest is the transform itself
    (this FISTA with SigPy's transform as prox gives SigPy's result to NRMSE < 1e-4). Tune
    ``lam`` here rather than porting SigPy's value. BART's ``pics -R W:3:0:lam`` is another
    problem too: a redundant Daubechies-2 (``dau2``) transform with every band thresholded, and
    its own data scaling (see :func:`tv`); even at the translated ``lam`` the images are 5-9 %
    apart (NRMSE, 128 x 112, 8 coils).

    With ``random_shift`` (default) every prox is applied to the image circularly shifted by a
    random offset in ``[0, 2**levels)`` per axis and shifted back ("cycle spinning", as in
    Lustig's SparseMRI and BART's ``pics``): the decimated wavelet transform is not shift
    invariant, and averaging over shifts removes its blocky artefacts. It changes the iterates
    (no longer a fixed objective) but not the cost per iteration; on the test phantom it raises
    SSIM by 0.05-0.1 over the fixed transform. Shifts are drawn from ``seed`` (deterministic;
    all slices of a batch get the same shifts). ``random_shift=False`` is the plain FISTA of the
    fixed objective. With the shifts the relative change of the iterates does not fall below
    about 1e-2 (each iteration shrinks in another transform: 8e-3 to 1e-2 after 100 to 1000
    iterations on a 64 x 64 phantom), so a ``tolerance`` below that is never met: the solve runs
    all ``iterations`` and says so (:mod:`mrirecon.solvers.convergence`); stop by tolerance
    with ``random_shift=False`` only.

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)``.
    op
        Forward operator on images ``(..., H, W)``.
    lam
        Weight of the wavelet L1 norm (absolute, in the units of ``y``); not interchangeable
        with SigPy's ``lamda`` (see above).
    wavelet, levels
        Orthogonal wavelet name (PyWavelets) and number of levels (default: up to 4).
    iterations, tolerance
        FISTA limits.
    step
        Fixed step (skips the power iteration); at most ``1 / ||A||^2``.
    power_iterations
        ``None`` (default): the operator's bound when it has one, else 30 power iterations.
        A number forces that many power iterations (SigPy's rule: its estimate is a lower
        bound of ``||A||^2``, slightly larger steps, 30 extra gram applications).
    restart
        Adaptive momentum restart.
    random_shift, seed
        Cycle spinning and the seed of its shifts.
    x0
        Start (zeros by default).
    callback
        ``callback(iteration, x, relative_change)``.

    Returns
    -------
    Tensor
        Complex image ``(..., H, W)``.
    """
    _check_op(op, "l1_wavelet", y)
    lam = checked_weight("l1_wavelet", "lam", lam)  # NaN / inf passed `lam < 0`
    check_tolerance("l1_wavelet", tolerance=tolerance)  # >= 1: zeros, or the start
    aty = op.H(y)
    x0 = check_start("l1_wavelet", x0, aty, y)
    W = Wavelet(aty.shape[-2:], wavelet, levels).to(aty.device)
    if step is None:
        eig = op.gram_bound(aty) if power_iterations is None else None
        if eig is None:
            eig = max_eigenvalue(op.gram, aty, batch_dims=batch_dims_of(op, aty),
                                 iterations=30 if power_iterations is None else power_iterations)
        step = torch.where(eig > 0, 1.0 / torch.where(eig > 0, eig, torch.ones_like(eig)), 1.0)
    else:
        _check_step(op, aty, step)
        nb = batch_dims_of(op, aty)
        if nb and not isinstance(step, Tensor):  # one number for a batch: each system's own
            # stopping rule all the same (one ratio over the whole batch stopped a slice at
            # 1e-2 of another's scale 200 iterations early, 4.3e-2 off its solution)
            step = torch.full(tuple(aty.shape[:nb]) + (1,) * (aty.ndim - nb), float(step),
                              dtype=aty.real.dtype, device=aty.device)
    x = torch.zeros_like(aty) if x0 is None else x0

    def grad_f(v: Tensor) -> Tensor:
        return op.gram(v) - aty

    def prox_fixed(v: Tensor, t) -> Tensor:
        return W.H(soft_threshold(W(v), lam * t))

    gen = torch.Generator().manual_seed(int(seed))
    period = 2**W.levels

    def prox_shifted(v: Tensor, t) -> Tensor:  # cycle spinning
        sh = [int(s) for s in torch.randint(0, period, (2,), generator=gen)]
        out = prox_fixed(torch.roll(v, sh, dims=(-2, -1)), t)
        return torch.roll(out, [-sh[0], -sh[1]], dims=(-2, -1))

    prox = prox_shifted if random_shift else prox_fixed

    def prox_g(v: Tensor, t) -> Tensor:
        # the whole prox (rolls, wavelet pair, shrinkage) of a small image on one intra-op
        # thread, like the wavelet transform itself (core.parallel.SERIAL_MAX): its short
        # elementwise passes are slower on two threads under the passive OpenMP wait
        # (soft_threshold at 320 x 320: 0.57 against 0.39 ms); the gram keeps every thread
        with serial_if_small(v):
            return prox(v, t)

    return fista(grad_f, prox_g, x, step, iterations=iterations, tolerance=tolerance,
                 callback=callback, restart=restart)


#: The settings only one of ``tv``'s solvers reads (the other refuses them)
TV_SETTINGS = {"admm": ("rho", "cg_iterations"), "pdhg": ()}
#: ``tv``'s default ADMM penalty (absolute; 1 until 2026-12-05, see :func:`tv`) and CG
#: iterations per x-update
TV_RHO, TV_CG_ITERATIONS = 0.1, 5


@accepts_deprecated_names
def tv(
    y: Tensor,
    op: LinearOperator,
    lam: float,
    *,
    iterations: int = 50,
    method: str = "admm",
    rho: float | None = None,
    cg_iterations: int | None = None,
    tolerance: float = 0.0,
    x0: Tensor | None = None,
    phase: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Isotropic total variation: ``argmin_x 1/2||A x - y||^2 + lam TV(x)``.

    ``TV(x) = sum_pixels sqrt(|D_row x|^2 + |D_col x|^2)`` with forward differences
    (:class:`~mrirecon.operators.FiniteDifference`) and the complex modulus. Solved by ADMM
    (default: ``z = D x``, ``cg_iterations`` of CG on ``A^H A + rho D^H D`` per x-update) or
    by PDHG on ``[A, D]``, see :func:`~mrirecon.recon.variational.tv_least_squares`. The
    default ``rho = TV_RHO`` = 0.1 suits operators with ``||A|| ~ 1`` (coil maps normalised to
    unit RSS) and data scaled to a unit zero-filled peak (the pipeline's and the benchmark's
    scaling): on 128 x 128 brain slices at 4x and 8x, 100 ADMM iterations end within 2 % of
    the best objective found (ADMM run 1000-3000 iterations; PDHG after 3000 is itself up to
    2.2 % above it at ``lam`` 3e-4) for every ``lam`` from 3e-4 to 3e-2, where the earlier
    default 1 stayed 6-21 % above it for ``lam`` <= 1e-3 (the weights the held-out validation
    chose); the best ``rho`` grows with ``lam`` (about 30 ``lam``), so set it
    for a ``lam`` far outside that range.

    From BART: ``pics -R T:3:0:lam`` weighs the same objective, but ``pics`` first divides the
    data by its own scale ``s_BART`` (``pics -d5`` prints it: "Inverse scaling of the data";
    :func:`data_scale` is the zero-filled RSS peak instead). So BART's ``lam`` is ``tv(y / s,
    op, lam * s_BART / s) * s`` with ``s = data_scale(y)``; or run ``pics -w s`` and keep
    ``lam``. The converged images are 1-3 % apart (NRMSE; the best-matching factor on ``lam``
    is 1, ``tests/calib/test_bart_parity.py``).

    SigPy's ``TotalVariationRecon`` ``lamda`` weighs another regulariser: anisotropic TV
    (``sum |D_row x| + |D_col x|``, up to sqrt(2) times the isotropic norm) with circular
    differences (the last pixel's difference wraps to the first) instead of Neumann ones. So
    the same value regularises more strongly and gives another image: NRMSE 0.03 at ``lam``
    1e-2 and 0.12 at 1e-1 between the converged images (64 x 64 phantom, 6 coils, about 3.4x).
    Tune ``lam`` here rather than porting SigPy's value.

    Parameters
    ----------
    y, op
        k-space and forward operator.
    lam
        TV weight (absolute, in the units of ``y``); not interchangeable with SigPy's
        ``lamda`` (see above).
    iterations, method, tolerance, x0, callback
        Solver settings.
    rho, cg_iterations
        ADMM only (default ``TV_RHO`` and ``TV_CG_ITERATIONS``); refused with
        ``method="pdhg"``, which has no use for them.
    phase
        Optional unit-modulus image ``(..., H, W)``: the image is then ``rho * phase`` with
        ``rho`` real, solved on ``A @ PhaseConstrained(phase)`` with ``lam TV(rho)`` (as
        :func:`cg_sense`'s ``phase``: the samples a partial echo never measured are set by
        conjugate symmetry once the smooth phase is known; ``x0`` loses its imaginary part
        after removing the phase).

    Returns
    -------
    Tensor
        Complex image ``(..., H, W)``.
    """
    _check_op(op, "tv", y)
    check_method_settings("tv", method, TV_SETTINGS, rho=rho, cg_iterations=cg_iterations)
    if method == "admm":
        rho, cg_iterations = admm_settings("tv", rho, cg_iterations, TV_RHO, TV_CG_ITERATIONS,
                                           iterations)
    lam = checked_weight("tv", "lam", lam)  # NaN / inf passed `lam < 0`
    check_tolerance("tv", tolerance=tolerance)  # >= 1: zeros, or the start
    if phase is not None:
        p = unit_phase(phase, y.real.dtype, "tv")
        real_op = op @ PhaseConstrained(p.to(y.device))
        if x0 is not None:  # checked before the phase multiplies it (broadcast otherwise)
            x0 = check_start("tv", x0, op.H(y), y)
        start = None if x0 is None else (p.conj() * x0.to(p.dtype)).real
        rho_img = tv_least_squares(y, real_op, lam, method=method, iterations=iterations,
                                   tolerance=tolerance, rho=rho, cg_iterations=cg_iterations,
                                   x0=start, callback=callback, who="tv")
        return p.to(y.device) * rho_img
    return tv_least_squares(y, op, lam, method=method, iterations=iterations,
                            tolerance=tolerance, rho=rho, cg_iterations=cg_iterations, x0=x0,
                            callback=callback, who="tv")


def unit_phase(phase: Tensor, real: torch.dtype, who: str) -> Tensor:
    """``phase / |phase|`` (1 where it is zero) as the complex dtype of ``real``; a tensor
    that is not finite and complex is refused naming ``who``."""
    cdtype = torch.complex128 if real == torch.float64 else torch.complex64
    if not isinstance(phase, Tensor) or not bool(torch.isfinite(torch.view_as_real(
            phase.to(cdtype).resolve_conj())).all()):
        raise ValueError(f"{who}: phase must be a finite complex tensor (unit modulus)")
    p = phase.to(cdtype)
    return torch.where(p.abs() > 0, p / p.abs().clamp_min(torch.finfo(real).tiny), 1)
