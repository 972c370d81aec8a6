"""Noise prewhitening: decorrelate the receive channels and give them unit noise variance.

With the noise covariance ``Psi = L L^H`` (Cholesky), ``L^-1 y`` has noise covariance
identity (``E[n n^H] = I``, i.e. unit *complex* variance per channel; ISMRMRD tools scale
by an extra ``sqrt(2)`` to get unit variance per real/imaginary part). Prewhitened data can
then be reconstructed as if the coils had independent unit-variance noise; the coil maps
must be estimated from (or transformed with) the same whitened data.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

#: What the errors below offer the pipeline's user.
_REMEDY = "or set preprocess.prewhiten=false to reconstruct without prewhitening"


def noise_covariance(noise: Tensor) -> Tensor:
    """Sample noise covariance ``noise noise^H / (samples - 1)``.

    Parameters
    ----------
    noise
        Noise-only samples ``(coils, ...)`` (e.g. a noise pre-scan ``(coils, samples)``),
        complex, zero mean by assumption (the mean is not removed). Divided by ``samples - 1``
        as ismrmrd-python-tools' ``calculate_prewhitening`` and MRIReco.jl's ``covariance`` do
        (for zero-mean noise ``samples`` would be unbiased: ``n / (n - 1)`` apart).

    Returns
    -------
    Tensor
        Hermitian positive semi-definite ``(coils, coils)``.
    """
    if not isinstance(noise, Tensor) or noise.ndim < 2 or not noise.is_complex():
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(
            f"noise_covariance: noise must be a complex tensor (coils, samples), got {got}"
        )
    x = noise.reshape(noise.shape[0], -1)
    n = x.shape[1]
    if n < 2:
        raise ValueError(f"noise_covariance: need at least 2 noise samples per coil, got {n}")
    return (x @ x.mH) / (n - 1)


def whitening_matrix(cov: Tensor) -> Tensor:
    """Lower-triangular ``W = L^-1`` with ``cov = L L^H``, so ``W cov W^H = I``.

    Parameters
    ----------
    cov
        Hermitian positive definite noise covariance ``(coils, coils)``.
    """
    _check_cov(cov)
    dead = _check_channels("whitening_matrix", cov)
    if dead:
        raise ValueError(f"whitening_matrix: coil{'s' * (len(dead) > 1)} "
                         f"{', '.join(map(str, dead))} of {cov.shape[0]} have no noise (zero "
                         "variance: dead channels), so no whitening matrix exists; prewhiten() "
                         "whitens the other coils and leaves dead ones zero")
    chol, info = torch.linalg.cholesky_ex(cov)
    _check_info("whitening_matrix", int(info), list(range(cov.shape[0])))
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def _check_channels(name: str, cov: Tensor) -> list[int]:
    """Channels whose noise variance (``cov``'s diagonal) is zero: a dead channel, whose zero
    row and column failed the Cholesky factorisation as "not positive definite (failed at 6)".
    NaN / Inf are refused naming the channels (they failed the same way)."""
    finite = torch.isfinite(cov)
    if not bool(finite.all()):
        bad = (~finite.diagonal()).nonzero().flatten().tolist() or \
            (~finite.all(1)).nonzero().flatten().tolist()
        raise ValueError(f"{name}: the noise covariance holds NaN or Inf (the noise samples of "
                         f"coil{'s' * (len(bad) > 1)} {', '.join(map(str, bad))}): a damaged "
                         f"noise scan; repair it, {_REMEDY}")
    return (cov.diagonal().real == 0).nonzero().flatten().tolist()


def _check_info(name: str, info: int, channels: list[int]) -> None:
    """Refuse a covariance of ``channels`` whose Cholesky factorisation failed (``info``: the
    order of the first leading minor not positive definite), naming the coil whose noise the
    coils before it explain."""
    if info == 0:
        return
    coil = channels[info - 1]
    why = (f"the noise of coil {coil} is (within rounding) a combination of the noise of the "
           "coils before it (duplicated channels, or too short a noise scan)" if info > 1 else
           f"coil {coil}'s noise variance is not positive")
    raise ValueError(f"{name}: noise covariance is not positive definite: {why}; {_REMEDY}")


def _check_cov(cov: Tensor) -> None:
    if not isinstance(cov, Tensor) or cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        got = tuple(cov.shape) if isinstance(cov, Tensor) else type(cov).__name__
        raise ValueError(f"prewhiten: covariance must be a square (coils, coils) tensor, got {got}")


def prewhiten(kspace: Tensor, cov: Tensor | None = None, *, noise: Tensor | None = None) -> Tensor:
    """Prewhiten multi-channel data with the Cholesky factor of the noise covariance.

    Parameters
    ----------
    kspace
        Data ``(coils, ...)`` (k-space, images or noise), complex.
    cov
        Noise covariance ``(coils, coils)``; give exactly one of ``cov`` and ``noise``.
    noise
        Noise samples ``(coils, ...)``; the covariance is :func:`noise_covariance` of them.

    Returns
    -------
    Tensor
        ``L^-1 kspace`` over the coil axis, same shape and dtype as ``kspace``. A channel
        without noise (zero variance) and without data (a dead coil) is left zero and the
        others are whitened, with a warning; one without noise but with data is refused, as
        are NaN / Inf noise and fewer noise samples per coil than coils (a singular covariance).
    """
    if (cov is None) == (noise is None):
        raise ValueError("prewhiten: give exactly one of cov= and noise=")
    if cov is None:
        n = noise[0].numel() if isinstance(noise, Tensor) and noise.ndim >= 2 else None
        if n is not None and n < 2:  # was noise_covariance's bare "need at least 2 ..."
            raise ValueError(f"prewhiten: the noise scan holds {n} sample(s) per coil for "
                             f"{noise.shape[0]} coils: a noise covariance needs at least 2 (tens "
                             f"of times the coil count for a good estimate); acquire a longer "
                             f"noise scan, {_REMEDY}")
        cov = noise_covariance(noise)
    _check_cov(cov)
    c = kspace.shape[0]
    if cov.shape[0] != c:
        raise ValueError(f"prewhiten: covariance is for {cov.shape[0]} coils, data has {c} coils")
    dead = _check_channels("prewhiten", cov)
    live = [i for i in range(c) if i not in dead]
    flat = kspace.reshape(c, -1)
    if dead:
        _dead_channels(flat, dead, c)
    samples = None if noise is None else noise[0].numel()
    if samples is not None and samples < len(live):  # rank <= samples: always singular
        raise ValueError(f"prewhiten: the noise scan holds {samples} samples per coil for "
                         f"{len(live)}{' live' * bool(dead)} coils: a covariance of fewer "
                         "samples than coils is singular (at least as many are needed, tens of "
                         f"times more for a good estimate); acquire a longer noise scan, {_REMEDY}")
    if not dead:  # as before: the data's every channel whitened
        chol, info = torch.linalg.cholesky_ex(cov.to(kspace.dtype))
        _check_info("prewhiten", int(info), live)
        return torch.linalg.solve_triangular(chol, flat, upper=False).reshape(kspace.shape)
    index = torch.tensor(live, dtype=torch.long, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov[index][:, index].to(kspace.dtype))
    _check_info("prewhiten", int(info), live)
    out = torch.zeros_like(flat)  # the dead channels stay all zero, as the pipeline reports them
    out[index.to(flat.device)] = torch.linalg.solve_triangular(chol, flat[index.to(flat.device)],
                                                              upper=False)
    return out.reshape(kspace.shape)


def prewhiten_scan(kspace: Tensor, reference: Tensor | None = None, *, noise: Tensor
                   ) -> tuple[Tensor, Tensor | None]:
    """Prewhiten a scan's k-space and its separate parallel-imaging reference with the same
    noise scan: the one prewhitening rule of ``mrirecon run``'s ``preprocess`` stage and of
    training on acquired data (:class:`~mrirecon.training.data_acquired.AcquiredMRISet`), so
    that a model trained on a file's slices meets them whitened alike at inference.

    Parameters
    ----------
    kspace
        ``(coils, ...)`` complex k-space of the imaging lines.
    reference
        ``(coils, ...)`` the separate reference scan (``KSpace.calibration``), or ``None``. It
        gets the data's whitening (a reference left out of it no longer matches the data's
        coils: the maps and GRAPPA kernel from it mix the channels wrongly).
    noise
        ``(coils, samples)`` noise scan (:func:`prewhiten`'s ``noise``).

    Returns
    -------
    tuple
        ``(L^-1 kspace, L^-1 reference or None)``, shapes and dtypes kept.
    """
    white = prewhiten(kspace, noise=noise)
    return white, None if reference is None else prewhiten(reference, noise=noise)


def _dead_channels(flat: Tensor, dead: list[int], coils: int) -> None:
    """Channels without noise are whitened away (left zero) where the data hold nothing in
    them either (a dead channel: warned), and refused where they do (their noise is unknown)."""
    named = ", ".join(map(str, dead))
    held = [i for i in dead if bool((flat[i] != 0).any())]
    if held:
        raise ValueError(f"prewhiten: coil{'s' * (len(held) > 1)} {', '.join(map(str, held))} of "
                         f"{coils} hold{'s' * (len(held) == 1)} data but no noise in the noise "
                         f"scan (all zero there), so their noise cannot be whitened; {_REMEDY}")
    one = len(dead) == 1
    warnings.warn(f"prewhiten: coil{'s' * (not one)} {named} of {coils} hold{'s' * one} no noise "
                  f"and no data (dead channel{'s' * (not one)}): the other coils are whitened, "
                  f"and {'it stays' if one else 'they stay'} zero",
                  stacklevel=3)
