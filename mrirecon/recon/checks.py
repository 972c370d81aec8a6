"""Checks of the measurements ``y`` that a reconstruction is given, shared by
:func:`mrirecon.recon.run` and the reconstructions called directly (``cg_sense(y, op)``,
``sirt(y, op)``, ...), so that both refuse or warn alike.

* :func:`check_measurements`: NaN / Inf or all-zero ``y``; real or half-precision k-space; k-space
  that does not fit the operator's sampling mask; lost non-Cartesian readouts; a sinogram whose
  sign is flipped.
* :func:`flipped_sign_message`: the sign rule of a CT slice, the one the pipeline's
  ``check_slice`` applies (same threshold, same words after its ``FILE: slice k:`` prefix).

``run`` checks once and calls the method inside :func:`measurements_checked`, where the method's
own call of :func:`check_measurements` on the same ``y`` judges only the sign of a sinogram (which
``run`` leaves to the method: only the method knows whether it keeps ``x >= 0``), with no second
pass over the data for the rest and no warning twice.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from mrirecon.core import LinearOperator, check_trailing_shape
from mrirecon.core.checks import finite_and_nonzero, nonfinite_count
from mrirecon.functional.fft import REAL_PAIRS_HINT
from mrirecon.sampling.agreement import judge_mask

#: A sinogram slice whose mean line integral lies below ``-FLIPPED_SIGN_RMS`` times its rms is
#: sign-flipped (``log(I / I0)`` stored instead of ``-log``): post-log data are >= 0 up to noise,
#: and noise alone averages to ``|mean| ~ rms / sqrt(size)`` (the pipeline's rule).
FLIPPED_SIGN_RMS = 0.05

_CHECKED: ContextVar[object] = ContextVar("mrirecon_recon_checked", default=None)


@contextmanager
def measurements_checked(y: object) -> Iterator[None]:
    """Inside this block :func:`check_measurements` skips ``y`` (``run`` has checked it)."""
    token = _CHECKED.set(y)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def flipped_sign_message(sinogram: Tensor) -> str | None:
    """Why the sinogram slice ``(views, detectors)`` (any leading axes count as one slice) looks
    sign-flipped, or ``None``: its mean line integral is below ``-FLIPPED_SIGN_RMS`` x rms."""
    sino = sinogram.detach().double()
    mean, rms = float(sino.mean()), float(sino.square().mean().sqrt())
    if not mean < -FLIPPED_SIGN_RMS * rms:
        return None
    return (f"the sinogram's mean line integral is negative ({mean:.3g}, rms {rms:.3g}); "
            "post-log data are -log(I / I0) >= 0 up to noise: is the sign flipped "
            "(log(I / I0) stored)?")


def check_measurements(name: str, y: Tensor, op: LinearOperator | None, *, kspace: bool = False,
                       sinogram: str | None = None, arg: str = "y") -> None:
    """Refuse (or warn of) measurements ``y`` that the reconstruction ``name`` would turn into a
    wrong image without a word.

    Parameters
    ----------
    name
        The reconstruction, named in every message.
    y
        k-space ``(..., coils, H, W)`` (``(..., coils, *K)`` non-Cartesian) or a sinogram
        ``(..., views, detectors)``; anything but a tensor is left to the method.
    op
        The forward operator (its sampling mask is compared with ``y``), or ``None``.
    kspace
        ``y`` is MRI k-space: a real ``y`` (lost phase) and ``complex32`` are refused (the
        message names ``op`` when it is a k-space operator, :func:`is_kspace_operator`).
    sinogram
        ``"refuse"`` or ``"warn"``: a slice of ``y`` whose sign looks flipped
        (:func:`flipped_sign_message`) is refused (a method that keeps ``x >= 0`` returns an
        all-zero image; SIRT did, without a word) or warned of (a linear method such as FBP
        returns the negated image; a residual or difference sinogram may be negative);
        ``None``: not judged.
    arg
        The name of ``y`` in the caller's signature (``kspace``, ``sinogram``), for messages.

    Raises
    ------
    TypeError
        Real or half-precision (``complex32``) k-space; a real ``y`` with a CT projector ``op``
        for an MRI method (``kspace``): the method is named as the mistake, not the data.
    ValueError
        NaN / Inf values, empty or all-zero ``y``, k-space undersampled with another mask than
        the operator's, a flipped sinogram (``sinogram="refuse"``).
    """
    if not isinstance(y, Tensor):
        return
    if _CHECKED.get() is y:  # run has checked the rest
        if sinogram is not None and not y.is_complex():
            _check_sign(name, y, sinogram, arg)
        return
    if kspace and not y.is_complex():
        if is_ct_operator(op):  # was "a real y has lost its phase": the mistake is the method
            raise TypeError(
                f"{name}: is an MRI reconstruction, but op is a CT projector "
                f"({type(op).__name__}) and {arg} a real sinogram {tuple(y.shape)}: use a CT "
                "reconstruction (fbp, sirt, tv_ct; recon.describe(name) tells which data a "
                "method takes), or an MRI operator (sense(maps, mask)) with complex k-space")
        what = f" (op {op.name} maps images to it)" if is_kspace_operator(op) else ""
        raise TypeError(
            f"{name}: {arg} is real ({y.dtype}, shape {tuple(y.shape)}), but MRI k-space is "
            f"complex{what}: a real {arg} has lost its phase (abs(), .real, or a cast such as "
            "astype(float32)) and would give a wrong image without error; pass the complex "
            f"k-space ({REAL_PAIRS_HINT})")
    if y.dtype == torch.complex32:  # real halves: the projectors and fbp name them
        raise TypeError(f"{name}: {arg} is {y.dtype} (half precision), which the FFTs here do not "
                        f"take; convert it: {arg}.to(torch.complex64)")
    _check_shape(name, y, op, arg)
    finite, nonzero = finite_and_nonzero(y)
    if not finite:
        raise ValueError(f"{name}: {arg} holds {nonfinite_count(y)} NaN or Inf values")
    if not nonzero:
        raise ValueError(f"{name}: {arg} is empty or all zero; there is nothing to reconstruct")
    if sinogram is not None and not y.is_complex():
        _check_sign(name, y, sinogram, arg)
    _check_mask(name, y, op)
    _check_readouts(name, y, op)


def _check_shape(name: str, y: Tensor, op: LinearOperator | None, arg: str) -> None:
    """``y``'s trailing axes against the data ``op`` maps images to (``op.range_shape``): a
    sinogram of 50 views for a 60-view projector failed in SIRT's first back-projection as
    "ParallelBeam.H: input must have shape (..., 60, 137)", naming neither the method nor y."""
    if not isinstance(op, LinearOperator):
        return
    try:  # the operator's own rule and wording of its trailing shape
        check_trailing_shape(name, arg, y, op.range_shape)
    except ValueError as err:
        shape = str(err).rsplit(" must have shape ", 1)[-1].rsplit(", got ", 1)[0]
        raise ValueError(f"{name}: {arg} has shape {tuple(y.shape)}, but op ({op.name}) maps "
                         f"images to data of shape {shape}: {arg} and op describe different "
                         "acquisitions (another view, coil or matrix count) or "
                         f"{arg}'s axes are in another order") from None


def warn_user(message: str) -> None:
    """``warnings.warn`` attributed to the first caller outside ``mrirecon`` (the user's line,
    whether the check ran in ``run`` or in the method called directly)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


def check_data(name: str, y: Tensor, op: LinearOperator | None, *,
                nonneg: bool | None = None) -> None:
    """:func:`check_measurements` for a method that takes MRI k-space or a sinogram alike
    (``tgv``, ``epll``, ``pnp_nlm``, ``cg_sense`` ...), telling them apart by ``op``: k-space for
    a k-space operator (:func:`is_kspace_operator`), a sinogram (its sign judged by
    :func:`sign_policy` of ``nonneg``) for a CT projector, and for any other operator (a user's
    inpainting or deblurring operator) the data that operator maps to, real ones too."""
    check_measurements(name, y, op, kspace=is_kspace_operator(op),
                       sinogram=sign_policy(nonneg) if is_ct_operator(op) else None)


def is_kspace_operator(op: LinearOperator | None) -> bool:
    """Whether ``op`` maps images to MRI k-space (complex data): a SENSE, NUFFT-SENSE or
    ``Fourier`` operator, an operator that declares a sampling mask
    (:class:`~mrirecon.core.HasSamplingMask`: ``Sampling``, ``single_coil``, a user's class
    that lists it among its bases), or a scaled, summed or composed operator whose range is
    one of theirs (``c * A``, ``A + B``, ``A @ B`` by its outer ``A``).

    An operator of the user's that declares nothing is no k-space operator, whatever its
    attributes are called: an inpainting operator ``y = mask * x`` on a real image was refused
    as "MRI k-space ... lost its phase" for its buffer's name."""
    from mrirecon.core import HasSamplingMask, capability
    from mrirecon.core.operator import ComposedOperator, ScaledOperator, SumOperator
    from mrirecon.operators.mri import Fourier, SenseOperator
    from mrirecon.operators.nufft import NufftSense

    if op is None:
        return False
    if isinstance(op, (SenseOperator, NufftSense, Fourier)) or \
            capability(op, HasSamplingMask) is not None:
        return True
    if isinstance(op, ComposedOperator):  # the range of A @ B is that of A
        return is_kspace_operator(op.outer)
    if isinstance(op, ScaledOperator):
        return is_kspace_operator(op.op)
    if isinstance(op, SumOperator):
        return is_kspace_operator(op.a) or is_kspace_operator(op.b)
    return False


def is_ct_operator(op: LinearOperator | None) -> bool:
    """Whether ``op`` is a CT projector (it has an FBP: ``ParallelBeam``, ``FanBeam``, scaled)."""
    from mrirecon.core import HasFBP, capability

    return op is not None and capability(op, HasFBP) is not None


def sign_policy(nonneg: bool | None) -> str:
    """``"refuse"`` a flipped sinogram for a method that keeps ``x >= 0`` (``nonneg`` true or
    ``None``: its default, or a method whose learned or patch prior expects such images: it
    returned an all-zero image, or a wrong one), ``"warn"`` for ``nonneg=False`` and for methods
    that are odd in ``y`` (FBP, CG, L1-wavelet, TV: the image comes out exactly negated)."""
    return "warn" if nonneg is False else "refuse"


def _check_sign(name: str, y: Tensor, policy: str, arg: str = "y") -> None:
    if y.ndim < 2:
        return
    slices = y.reshape(-1, *y.shape[-2:])
    for i, s in enumerate(slices):
        msg = flipped_sign_message(s)
        if msg is None:
            continue
        where = f" (slice {i} of {slices.shape[0]})" if slices.shape[0] > 1 else ""
        if policy == "refuse":
            raise ValueError(f"{name}: {arg}{where}: {msg} {name} keeps the image >= 0 (or has a "
                             f"prior of such images) and would return an all-zero or wrong image; "
                             f"negate it (-{arg})")
        warn_user(f"{name}: {arg}{where}: {msg} The image comes out negated (negate a measured "
                  f"sinogram: -{arg}; a residual or difference sinogram may be negative)")
        return


def _check_readouts(name: str, y: Tensor, op: LinearOperator | None) -> None:
    """Warn of readouts of ``y`` on a ``nufft_sense`` operator that hold no sample in any coil
    (lost spokes written as zeros: 10 of 40 gave 28 % error, 0.03 % with them dropped, no word)
    and of samples zero at the start or end of every readout: the operator takes them as
    measured zeros. (The pipeline drops them; here ``op`` is the caller's.) Readouts the
    operator's weights give no weight are measured by nothing and left alone."""
    from mrirecon.operators.nufft import (NufftSense, empty_readouts, listed,
                                          sample_runs_message)

    if not isinstance(op, NufftSense) or len(op.kshape) < 2 or y.ndim < len(op.kshape) + 1:
        return
    if tuple(y.shape[-len(op.kshape):]) != tuple(op.kshape):
        return  # the operator names the mismatch
    flat = y.reshape(*y.shape[: y.ndim - len(op.kshape)], -1, op.kshape[-1])  # (..., C, R, S)
    lost = empty_readouts(flat).reshape(-1, flat.shape[-2]).any(0)  # in any slice
    if op.weights is not None:
        lost &= (op.weights.reshape(-1, op.kshape[-1]) != 0).any(-1).to(lost.device)
    n = int(lost.sum())
    if n:
        warn_user(
            f"{name}: {n} of {lost.numel()} readouts of y hold no sample in any coil (readouts "
            f"{listed(lost.nonzero().flatten())}): lost? nufft_sense takes them as measured zeros "
            "(10 of 40 spokes: 28 % error, 0.03 % with them dropped); drop them from y and from "
            "the trajectory (and weights): y[..., keep, :] with nufft_sense(maps, "
            "trajectory[keep])")
    if n < lost.numel():
        held = flat[..., ~lost.to(flat.device), :]
        msg = sample_runs_message(held, "they are reconstructed as measured zeros; drop them from "
                                        "y and from the trajectory")
        if msg:
            warn_user(f"{name}: {msg}")


def _check_mask(name: str, y: Tensor, op: LinearOperator | None) -> None:
    """k-space ``y`` against ``op``'s sampling mask, by the pipeline's ``reconcile_mask`` rule
    (:func:`mrirecon.sampling.agreement.judge_mask`; the span of ``y`` leaves out zero
    padding at the edges). Column masks ``(..., 1, W)`` are judged by column, 2-D masks
    ``(..., H, W)`` (Poisson-disc, variable density) by sample.

    * Data where the mask drops them *and* kept samples that hold none: ``y`` was undersampled
      with another mask (fftshifted, flipped, another seed): refused, as the pipeline refuses a
      mask that does not describe its k-space (13-18 instead of 25 dB, 21 or 12 instead of
      56 dB, no error).
    * Kept samples that hold no data alone (``y`` undersampled, ``op`` built with a denser or
      all-ones mask): a warning, as the pipeline notes them; it drops them from its mask, the
      library cannot (``op`` is the caller's), and the method takes them as measured zeros.
    * Data the mask drops alone: fully sampled ``y`` undersampled by ``op`` (retrospective), or
      by a subset of its mask: ordinary, no word.
    """
    fit = judge_mask(y, op)
    if fit is None:
        return  # non-Cartesian operators: not judged here
    message = fit.mismatch()
    if message is not None:
        raise ValueError(f"{name}: {message}")
    unheld = (fit.n_empty > fit.allowed).nonzero().flatten()
    if not len(unheld):
        return
    i = int(unheld[0])
    where, n_empty, n_keep = fit.where(i), int(fit.n_empty[i]), int(fit.keep[i].sum())
    if fit.columns:
        what = (f"{n_empty} of the {n_keep} column(s) the operator's mask "
                f"keeps hold no data in any coil of y{where} (first: "
                f"{int(fit.empty[i, 0].nonzero()[0])})")
    else:
        what = (f"{n_empty} of the {n_keep} sample(s) the operator's 2-D mask "
                f"keeps hold no data in any coil of y{where}")
    warn_user(f"{name}: {what}: they are reconstructed as measured zeros (y undersampled, op "
              "built with a denser or all-ones mask?); build op with the mask of y")
