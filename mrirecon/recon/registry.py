"""Reconstructions by name: ``run("l1_wavelet", y, op, lam=0.002)`` and ``available()``.

Every entry is called as ``fn(y, op, **params)``; the registry checks the parameter names
against the function's signature first, so a typo fails before any work with a message that
lists the valid names. Entries that do not need an operator (``zero_filled_rss``, ``grappa``)
accept and ignore ``op``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import finite_and_nonzero, param_problem
from mrirecon.core.names import accepts_deprecated_names, canonical_params
from mrirecon.functional import ifft2c, rss
from mrirecon.recon import ct, mri
from mrirecon.recon.grappa import grappa
from mrirecon.sampling.agreement import held_span, mask_disagreement


@dataclass(frozen=True)
class Entry:
    """A registered reconstruction: the function, whether it needs ``op``, a one-line summary."""

    fn: Callable[..., Tensor]
    needs_op: bool
    summary: str
    #: settings only one value of the ``method`` parameter reads (``tv``, ``tv_ct``, ``tgv``), so
    #: that a pipeline refuses the others' at load
    #: (:func:`mrirecon.core.checks.check_method_settings`)
    settings_by_method: Mapping[str, tuple[str, ...]] | None = None

    @property
    def modality(self) -> str:
        """``"mri"``, ``"ct"`` or ``"mri/ct"``: the summary's prefix (``"MRI: ..."``), the one
        record of which data a reconstruction takes."""
        return self.summary.split(":", 1)[0].strip().lower()

    def parameters(self) -> list[str]:
        """Keyword parameters accepted after ``(y, op)``."""
        params = list(inspect.signature(self.fn).parameters.values())[2:]
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def required(self) -> list[str]:
        params = list(inspect.signature(self.fn).parameters.values())[2:]
        return [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@accepts_deprecated_names
def grappa_rss(
    y: Tensor,
    op: LinearOperator | None = None,
    calib: Tensor | int = 24,
    kernel_size: tuple[int, int] = (5, 5),
    lam: float = 0.01,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """GRAPPA k-space completion followed by RSS coil combination.

    Parameters
    ----------
    y
        Undersampled k-space ``(coils, H, W)`` or ``(slices, coils, H, W)``.
    op
        Optional; when it carries a column mask (``SenseOperator``, ``Sampling``) and ``mask``
        is not given, that mask marks the acquired samples.
    calib, kernel_size, lam, mask
        See :func:`mrirecon.recon.grappa.grappa` (``calib`` int: ACS band width).

    Returns
    -------
    Tensor
        Magnitude image ``(H, W)`` or ``(slices, H, W)``.
    """
    if mask is None and op is not None:
        from mrirecon.core import HasSamplingMask, capability

        found = capability(op, HasSamplingMask)
        m = None if found is None else found.mask
        if isinstance(m, Tensor) and m.ndim <= 2:
            mask = m.expand(y.shape[-2:]) if m.ndim == 2 else m
    if y.ndim == 4:
        filled = torch.stack([grappa(s, calib, kernel_size, lam, mask=mask) for s in y])
    else:
        filled = grappa(y, calib, kernel_size, lam, mask=mask)
    return rss(ifft2c(filled), dim=-3)


_REGISTRY: dict[str, Entry] = {
    "zero_filled": Entry(mri.zero_filled, True, "MRI: A^H y (coil-combined with the maps)"),
    "zero_filled_rss": Entry(mri.zero_filled_rss, False, "MRI: RSS of the zero-filled coil images"),
    "cg_sense": Entry(mri.cg_sense, True, "MRI: CG on the (Tikhonov) normal equations"),
    "l1_wavelet": Entry(mri.l1_wavelet, True, "MRI: FISTA on 1/2||Ax-y||^2 + lam||Wx||_1"),
    "tv": Entry(mri.tv, True, "MRI: isotropic TV-regularised least squares (ADMM/PDHG)", mri.TV_SETTINGS),
    "grappa": Entry(grappa_rss, False, "MRI: GRAPPA k-space completion + RSS"),
    "fbp": Entry(ct.fbp, True, "CT: filtered back-projection"),
    "sirt": Entry(ct.sirt, True, "CT: SIRT with row/column-sum normalisation"),
    "tv_ct": Entry(ct.tv_ct, True, "CT: TV-regularised least squares, x >= 0, by ADMM (or PDHG)",
                   ct.TV_CT_SETTINGS),
}


def available() -> list[str]:
    """Sorted names accepted by :func:`run`."""
    return sorted(_REGISTRY)


def needs_operator(name: str) -> bool:
    """Whether the reconstruction ``name`` uses the forward operator (``False`` for
    ``zero_filled_rss`` and ``grappa``, which work on k-space alone)."""
    return _lookup(name).needs_op


def parameters(name: str) -> list[str]:
    """Keyword parameters accepted by ``run(name, y, op, **params)``."""
    return _lookup(name).parameters()


def canonical_parameters(name: str, params: dict) -> dict:
    """``params`` of the reconstruction ``name`` with the deprecated spellings of
    :mod:`mrirecon.core.names` renamed (``FutureWarning``), e.g. before merging them with
    defaults that already use the new names."""
    return canonical_params(params, _lookup(name).parameters(), name)


def describe(name: str) -> str:
    """One-line summary and parameter names of a registered reconstruction."""
    entry = _lookup(name)
    return f"{name}: {entry.summary}; parameters: {', '.join(entry.parameters()) or '(none)'}"


def register(name: str, fn: Callable[..., Tensor], *, needs_op: bool = True, summary: str = "",
             overwrite: bool = False,
             settings_by_method: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Add a reconstruction ``fn(y, op, **params)`` under ``name`` (``settings_by_method``: as
    :attr:`Entry.settings_by_method`, for a function with a ``method`` parameter)."""
    if not callable(fn):
        raise TypeError(f"register: fn for {name!r} must be callable, got {type(fn).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register: {name!r} is already registered (pass overwrite=True)")
    if len(inspect.signature(fn).parameters) < 2:
        raise ValueError(f"register: {name!r} must take (y, op, **params)")
    _REGISTRY[name] = Entry(fn, needs_op, summary or (fn.__doc__ or "").strip().split("\n")[0],
                            settings_by_method)


def _lookup(name: str) -> Entry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown reconstruction {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def run(name: str, y: Tensor, op: LinearOperator | None = None, **params) -> Tensor:
    """Run the reconstruction ``name`` on measurements ``y`` with operator ``op``.

    Parameters
    ----------
    name
        One of :func:`available`: MRI ``zero_filled``, ``zero_filled_rss``, ``cg_sense``,
        ``l1_wavelet``, ``tv``, ``tgv``, ``grappa``, ``epll``, ``dlmri``, ``pnp_nlm``,
        ``pnp_bm3d``; CT ``fbp``, ``sirt``, ``tv_ct``.
    y
        k-space ``(..., coils, H, W)`` or sinogram ``(..., views, detectors)``.
    op
        Forward operator (``sense(maps, mask)``, ``ParallelBeam(geometry)``, ...); may be
        ``None`` for ``zero_filled_rss`` and ``grappa``.
    **params
        Keyword parameters of that reconstruction (e.g. ``lam``, ``iterations``). The
        deprecated spellings of :mod:`mrirecon.core.names` (``max_iterations``, ``lamda``, ...)
        are renamed with a ``FutureWarning``; giving an old and a new name together is an error.

    Raises
    ------
    KeyError
        Unknown name (the message lists the available ones).
    TypeError
        Unknown or missing parameter (the message lists the valid ones), or no ``op`` where
        one is needed.
    ValueError
        A parameter value out of range (iteration counts < 1, NaN/Inf or negative ``lam``,
        ``rho``, tolerances, ...), or ``y`` with NaN/Inf values, empty or all zero.
    """
    entry = _lookup(name)
    params = check_params(name, params)
    if entry.needs_op and op is None:
        raise TypeError(f"{name}: needs a forward operator op (got None)")
    if isinstance(y, Tensor):
        if not y.is_complex() and _kspace_method(entry, op):
            raise TypeError(
                f"{name}: y is real ({y.dtype}, shape {tuple(y.shape)}), but MRI k-space is "
                "complex: a real y has lost its phase (abs(), .real, or a cast such as "
                "astype(float32)) and would give a wrong image without error; pass the complex "
                "k-space (torch.view_as_complex for real pairs (..., 2))")
        finite, nonzero = finite_and_nonzero(y)
        if not finite:
            bad = ~torch.isfinite(torch.view_as_real(y) if y.is_complex() else y)
            raise ValueError(f"{name}: y holds {int(bad.sum())} NaN or Inf values")
        if not nonzero:
            raise ValueError(f"{name}: y is empty or all zero; there is nothing to reconstruct")
        _check_mask(name, y, op)
        _check_readouts(name, y, op)
    return entry.fn(y, op, **params)


def _check_readouts(name: str, y: Tensor, op: LinearOperator | None) -> None:
    """Warn of readouts of ``y`` on a ``nufft_sense`` operator that hold no sample in any coil
    (lost spokes written as zeros: 10 of 40 gave 28 % error, 0.03 % with them dropped, no word)
    and of samples zero at the start or end of every readout: the operator takes them as
    measured zeros. (The pipeline drops them; here ``op`` is the caller's.) Readouts the
    operator's weights give no weight are measured by nothing and left alone. A Cartesian mask
    column that holds no data passes ``_check_mask`` without a word."""
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
        warnings.warn(
            f"{name}: {n} of {lost.numel()} readouts of y hold no sample in any coil (readouts "
            f"{listed(lost.nonzero().flatten())}): lost? nufft_sense takes them as measured zeros "
            "(10 of 40 spokes: 28 % error, 0.03 % with them dropped); drop them from y and from "
            "the trajectory (and weights): y[..., keep, :] with nufft_sense(maps, "
            "trajectory[keep])",
            stacklevel=3)
    if n < lost.numel():
        held = flat[..., ~lost.to(flat.device), :]
        msg = sample_runs_message(held, "they are reconstructed as measured zeros; drop them from "
                                        "y and from the trajectory")
        if msg:
            warnings.warn(f"{name}: {msg}", stacklevel=3)


#: A 2-D mask's samples inside ``y``'s span may hold exact zeros by chance (quantised k-space
#: whose faint outer samples round to 0 in every coil) up to this share before ``y`` counts as
#: undersampled with another mask (a Poisson-disc or variable-density mask of another seed,
#: fftshifted or transposed, leaves 45-75 % of them empty). Column masks allow none.
CHANCE_ZEROS = 0.01


def _check_mask(name: str, y: Tensor, op: LinearOperator | None) -> None:
    """Refuse k-space undersampled with another mask than ``op``'s: data where the mask drops
    them while the mask keeps samples inside ``y``'s span that hold none (the pipeline's
    ``reconcile_mask`` rule, :func:`mrirecon.sampling.agreement.mask_disagreement`; the span
    leaves out zero padding at the edges). Column masks ``(..., 1, W)`` are judged by column, 2-D
    masks ``(..., H, W)`` (Poisson-disc, variable density) by sample. Fully sampled ``y``
    (retrospective undersampling by ``op``) and ``y`` masked by ``op``'s own mask pass. An
    fftshifted or flipped column mask gave 13-18 instead of 25 dB, a 2-D mask of another seed
    or fftshifted 21 or 12 instead of 56 dB, no error."""
    from mrirecon.core import HasSamplingMask, capability
    from mrirecon.operators.mri import SenseOperator

    found = None if op is None else capability(op, HasSamplingMask)
    mask = None if found is None else found.mask
    if not isinstance(mask, Tensor) or mask.ndim < 2 or y.ndim < 2 or mask.shape[-1] != y.shape[-1]:
        return  # non-Cartesian operators: not judged here
    columns = mask.shape[-2] == 1
    if not columns and mask.shape[-2] != y.shape[-2]:
        return
    held = y != 0
    if columns:
        held = held.any(dim=-2, keepdim=True)  # (..., [coils,] 1, W)
    if isinstance(found, SenseOperator) and held.ndim >= 3:
        held = held.any(dim=-3)  # any coil
    held, keep = torch.broadcast_tensors(held, mask.to(held.device).bool())
    h, w = held.shape[-2:]
    held, keep = held.reshape(-1, h, w), keep.reshape(-1, h, w)
    span = held_span(held, dims=1 if columns else 2)
    empty, dropped = mask_disagreement(held, keep, span)
    n_empty, n_dropped = empty.sum((-2, -1)), dropped.sum((-2, -1))
    allowed = 0 if columns else CHANCE_ZEROS * (keep & span).sum((-2, -1))
    bad = ((n_empty > allowed) & (n_dropped > 0)).nonzero().flatten()
    if not len(bad):
        return
    i = int(bad[0])
    where = f" (sample {i} of {held.shape[0]})" if held.shape[0] > 1 else ""
    if columns:
        raise ValueError(
            f"{name}: y does not fit the operator's mask{where}: {int(n_dropped[i])} column(s) "
            f"of y hold data that the mask drops (first: {int(dropped[i, 0].nonzero()[0])}) and "
            f"{int(n_empty[i])} column(s) the mask keeps hold none (first: "
            f"{int(empty[i, 0].nonzero()[0])}): y was undersampled with another mask (fftshifted, "
            "flipped, another seed or acceleration?); build op with the mask of y")
    raise ValueError(
        f"{name}: y does not fit the operator's 2-D mask{where}: {int(n_dropped[i])} "
        f"sample(s) of y hold data that the mask drops and {int(n_empty[i])} of the "
        f"{int(keep[i].sum())} the mask keeps hold none: y is sampled at "
        f"{float(held[i].float().mean()):.1%} of the {h} x {w} grid, the operator's mask at "
        f"{float(keep[i].float().mean()):.1%}: y was undersampled with another mask "
        "(fftshifted, transposed, another seed or acceleration?); build op with the mask of y")


def _kspace_method(entry: Entry, op: LinearOperator | None) -> bool:
    """Whether ``y`` is MRI k-space: an MRI-only reconstruction, or an MRI operator."""
    from mrirecon.operators.mri import SenseOperator
    from mrirecon.operators.nufft import NufftSense

    return entry.modality == "mri" or isinstance(op, (SenseOperator, NufftSense))


def check_params(name: str, params: dict) -> dict:
    """``params`` of the reconstruction ``name`` checked as :func:`run` checks them (names,
    required ones, values) and with deprecated spellings renamed; raises like :func:`run`."""
    entry = _lookup(name)
    valid = entry.parameters()
    params = canonical_params(params, valid, name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}"
        )
    missing = [p for p in entry.required() if p not in params]
    if missing:
        raise TypeError(f"{name}: missing required parameter(s) {', '.join(missing)}; "
                        f"valid: {', '.join(valid)}")
    defaults = {p.name: p.default for p in inspect.signature(entry.fn).parameters.values()}
    for key, value in params.items():
        problem = param_problem(key, value, defaults.get(key, inspect.Parameter.empty))
        if problem:
            raise ValueError(f"{name}: {key} {problem}")
    return params
