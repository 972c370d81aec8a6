"""Reconstructions by name: ``run("l1_wavelet", y, op, lam=0.002)`` and ``available()``.

Every entry is called as ``fn(y, op, **params)``; the registry checks the parameter names
against the function's signature first, so a typo fails before any work with a message that
lists the valid names. Entries that do not need an operator (``zero_filled_rss``, ``grappa``)
accept and ignore ``op``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import param_problem
from mrirecon.core.names import (UnknownNameError, accepts_deprecated_names, canonical_params,
                                 closest_name, did_you_mean, pip_name)
from mrirecon.functional import ifft2c, rss
from mrirecon.recon import ct, mri
from mrirecon.recon.checks import check_measurements, is_kspace_operator, measurements_checked
from mrirecon.recon.grappa import grappa
from mrirecon.solvers.convergence import reported


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
    #: ``(setting, problem)`` of values the function refuses that a pipeline refuses at load
    #: (``fbp``'s filter names); ``None`` when fine
    settings_problem: Callable[[dict], tuple[str, str] | None] | None = None
    #: import names of the optional packages the function imports when it runs
    #: (:func:`package_problem`; the pip names: :func:`mrirecon.core.names.pip_name`)
    needs: tuple[str, ...] = ()

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
    "l1_wavelet": Entry(mri.l1_wavelet, True, "MRI: FISTA on 1/2||Ax-y||^2 + lam||Wx||_1",
                        needs=("pywt",)),
    "tv": Entry(mri.tv, True, "MRI: isotropic TV-regularised least squares (ADMM/PDHG)", mri.TV_SETTINGS),
    "grappa": Entry(grappa_rss, False, "MRI: GRAPPA k-space completion + RSS"),
    "fbp": Entry(ct.fbp, True, "CT: filtered back-projection",
                 settings_problem=ct.fbp_settings_problem),
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


#: Parameters of a reconstruction that the reconstruct stage decides, not a config, beyond
#: ``x0`` and ``callback``: GRAPPA's ``mask`` (the operator's), EPLL's ``batch_dims`` (each
#: slice is its own problem; ``batch_dims=3`` loaded and failed every input with "IndexError:
#: too many indices for tensor of dimension 2")
STAGE_SUPPLIED: dict[str, tuple[str, ...]] = {"grappa": ("mask",), "epll": ("batch_dims",)}


def settable_parameters(name: str) -> dict:
    """``{name: default}`` of the parameters of reconstruction ``name`` that a config or
    ``--set`` may give: its keyword parameters less those the reconstruct stage supplies itself
    (``x0``, ``callback`` and :data:`STAGE_SUPPLIED`: GRAPPA's ``mask``, EPLL's ``batch_dims``).
    ``mrirecon run`` and ``mrirecon bench`` check against this one list: the bench listed
    ``callback`` as valid and then failed with an internal error on
    ``--set l1_wavelet.callback=1``."""
    from mrirecon.core.config import signature_params

    supplied = {"x0", "callback", *STAGE_SUPPLIED.get(name, ())}
    return {k: v for k, v in signature_params(_lookup(name).fn, 2)[0].items() if k not in supplied}


def settings_problem(name: str, params: dict) -> tuple[str, str] | None:
    """``(setting, problem)`` of the first value in ``params`` (the settings a run merges for
    one slice) that reconstruction ``name`` refuses, known before any data are read; ``None``
    when fine. ``mrirecon run`` asks it at load and ``mrirecon bench`` before it scores (the
    bench took ``--set epll.sigmas=0.05`` and failed every volume)."""
    entry = _lookup(name)
    return entry.settings_problem(params) if entry.settings_problem is not None else None


def canonical_parameters(name: str, params: dict) -> dict:
    """``params`` of the reconstruction ``name`` with the deprecated spellings of
    :mod:`mrirecon.core.names` renamed (``FutureWarning``), e.g. before merging them with
    defaults that already use the new names."""
    return canonical_params(params, _lookup(name).parameters(), name)


def describe(name: str) -> str:
    """One-line summary and parameter names of a registered reconstruction."""
    entry = _lookup(name)
    return f"{name}: {entry.summary}; parameters: {', '.join(entry.parameters()) or '(none)'}"


def installed(module: str) -> bool:
    """Whether the package ``module`` (an import name) can be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; a module without a spec
        return False


def package_problem(name: str) -> str | None:
    """Why the reconstruction ``name`` cannot run here: an optional package it imports is not
    installed (``pnp_bm3d`` without ``bm3d``, ``l1_wavelet`` without PyWavelets), with the
    install line; ``None`` when it can. ``mrirecon run`` and ``mrirecon bench`` ask it at load,
    :func:`run` first: ``pnp_bm3d`` was left out of the registry without ``bm3d`` ("unknown
    method 'pnp_bm3d' (did you mean 'pnp_nlm'?)") and a missing PyWavelets failed each input
    after it was read."""
    missing = [pip_name(m) for m in _lookup(name).needs if not installed(m)]
    if not missing:
        return None
    return (f"{name} needs the Python package {', '.join(missing)}, which is "
            f"not installed (pip install {' '.join(missing)})")


def register(name: str, fn: Callable[..., Tensor], *, needs_op: bool = True, summary: str = "",
             overwrite: bool = False,
             settings_by_method: Mapping[str, tuple[str, ...]] | None = None,
             settings_problem: Callable[[dict], tuple[str, str] | None] | None = None,
             needs: Iterable[str] = ()) -> None:
    """Add a reconstruction ``fn(y, op, **params)`` under ``name`` (``settings_by_method``: as
    :attr:`Entry.settings_by_method`, for a function with a ``method`` parameter;
    ``settings_problem``: as :attr:`Entry.settings_problem`, ``(setting, problem)`` of the
    values ``fn`` refuses, so that a pipeline refuses them at load, not per input; ``needs``:
    import names of the optional packages ``fn`` imports, :func:`package_problem`)."""
    if settings_problem is not None and not callable(settings_problem):
        raise TypeError(f"register: settings_problem for {name!r} must be callable, got "
                        f"{type(settings_problem).__name__}")
    names = () if isinstance(needs, str) else tuple(needs)
    if isinstance(needs, str) or not all(isinstance(m, str) for m in names):
        raise TypeError(f"register: needs for {name!r} must be import names (e.g. "
                        f"needs=(\"pywt\",)), got {needs!r}")
    if not callable(fn):
        raise TypeError(f"register: fn for {name!r} must be callable, got {type(fn).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register: {name!r} is already registered (pass overwrite=True)")
    if len(inspect.signature(fn).parameters) < 2:
        raise ValueError(f"register: {name!r} must take (y, op, **params)")
    _REGISTRY[name] = Entry(fn, needs_op, summary or (fn.__doc__ or "").strip().split("\n")[0],
                            settings_by_method, settings_problem, names)


def _lookup(name: str) -> Entry:
    if not isinstance(name, str):  # None was "unknown reconstruction None", a list unhashable
        raise TypeError(f"name must be a reconstruction name (a str, one of recon.available()), "
                        f"got {type(name).__name__}")
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown reconstruction {name!r}{did_you_mean(name, _REGISTRY)}; "
                               f"available: {', '.join(available())}")
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
        With a ``tolerance > 0``, a solver that stops at its iteration limit short of it logs
        one warning (logger ``mrirecon.solvers``) for the reconstruction
        (:mod:`mrirecon.solvers.convergence`).

    Raises
    ------
    UnknownNameError
        Unknown name (a ``ValueError`` and a ``KeyError``; the message suggests the closest
        name and lists the available ones).
    ImportError
        An optional package the reconstruction needs is not installed (:func:`package_problem`).
    TypeError
        ``name`` is no string; unknown or missing parameter (the message suggests the closest
        and lists the valid ones), or no ``op`` where one is needed.
    ValueError
        A parameter value out of range (iteration counts < 1, NaN/Inf or negative ``lam``,
        ``rho``, tolerances outside ``[0, 1)``, ...), or ``y`` with NaN/Inf values, empty or all zero, k-space
        undersampled with another mask than ``op``'s (:mod:`mrirecon.recon.checks`); a
        sinogram whose sign is flipped is refused by the CT methods themselves (FBP and methods
        that would return the negated image warn instead).
    """
    entry = _lookup(name)
    if (missing := package_problem(name)) is not None:
        raise ImportError(missing)
    params = check_params(name, params)
    if entry.needs_op and op is None:
        raise TypeError(f"{name}: needs a forward operator op (got None)")
    if isinstance(y, Tensor):
        check_measurements(name, y, op, kspace=_kspace_method(entry, op))
    # the method's own checks of y: done (but for its sign rule); solves that stop at their
    # iteration limit short of a tolerance: one warning for the reconstruction, or the record
    # of an enclosing convergence_record (the pipeline's)
    with measurements_checked(y), reported(name):
        return entry.fn(y, op, **params)


def _kspace_method(entry: Entry, op: LinearOperator | None) -> bool:
    """Whether ``y`` is MRI k-space: an MRI-only reconstruction, or an MRI operator."""
    return entry.modality == "mri" or is_kspace_operator(op)


def check_params(name: str, params: dict) -> dict:
    """``params`` of the reconstruction ``name`` checked as :func:`run` checks them (names,
    required ones, values) and with deprecated spellings renamed; raises like :func:`run`."""
    entry = _lookup(name)
    valid = entry.parameters()
    params = canonical_params(params, valid, name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        close = [(closest_name(u, valid), u) for u in unknown]
        hints = ", ".join(f"{c!r} for {u!r}" for c, u in close if c is not None)
        raise TypeError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}"
            + (f"; did you mean {hints}?" if hints else "")
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
