"""Reconstructions by name: ``run("l1_wavelet", y, op, lam=0.002)`` and ``available()``.

Every entry is called as ``fn(y, op, **params)``; the registry checks the parameter names
against the function's signature first, so a typo fails before any work with a message that
lists the valid names. Entries that do not need an operator (``zero_filled_rss``, ``grappa``)
accept and ignore ``op``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import NonFiniteError, nonfinite_count, param_problem
from mrirecon.core.names import (UnknownNameError, accepts_deprecated_names, canonical_params,
                                 closest_name, did_you_mean, pip_name)
from mrirecon.functional import ifft2c, rss
from mrirecon.recon import ct, mri
from mrirecon.recon.checks import (check_measurements, is_ct_operator, is_kspace_operator,
                                   measurements_checked)
from mrirecon.recon.grappa import (CalibrationWidthError, calib_width_message, grappa,
                                   grappa_settings_problem)
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
    #: SHA-256 of the code of a function defined outside mrirecon (:func:`code_checksum`),
    #: part of the code identity ``--resume`` and the bench compare; ``None`` for mrirecon's
    #: own, which the package's source checksum covers
    code_sha256: str | None = None

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


#: ``grappa_rss``'s ``calib`` when none is given, a 24-column band: its errors say it is the default
GRAPPA_CALIB = 24


@accepts_deprecated_names
def grappa_rss(
    y: Tensor,
    op: LinearOperator | None = None,
    calib: Tensor | int = GRAPPA_CALIB,
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
    try:
        if y.ndim == 4:
            filled = torch.stack([grappa(s, calib, kernel_size, lam, mask=mask) for s in y])
        else:
            filled = grappa(y, calib, kernel_size, lam, mask=mask)
    except CalibrationWidthError as err:  # "acs width must be in [1, 16], got 24", no word
        # that 24 is the default of a calib the caller never gave
        if err.run is None or not isinstance(calib, int) or calib != GRAPPA_CALIB:
            raise
        raise CalibrationWidthError(calib_width_message(*err.run, default=True)) from None
    return rss(ifft2c(filled), dim=-3)


_REGISTRY: dict[str, Entry] = {
    "zero_filled": Entry(mri.zero_filled, True, "MRI: A^H y (coil-combined with the maps)"),
    "zero_filled_rss": Entry(mri.zero_filled_rss, False, "MRI: RSS of the zero-filled coil images"),
    "cg_sense": Entry(mri.cg_sense, True, "MRI: CG on the (Tikhonov) normal equations"),
    "l1_wavelet": Entry(mri.l1_wavelet, True, "MRI: FISTA on 1/2||Ax-y||^2 + lam||Wx||_1",
                        settings_problem=mri.l1_wavelet_settings_problem, needs=("pywt",)),
    "tv": Entry(mri.tv, True, "MRI: isotropic TV-regularised least squares (ADMM/PDHG)", mri.TV_SETTINGS),
    "grappa": Entry(grappa_rss, False, "MRI: GRAPPA k-space completion + RSS",
                    settings_problem=grappa_settings_problem),
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

#: Flags that make a reconstruction return a tuple, not an image (``tgv``'s ``return_v``:
#: ``(x, v)``): no config or ``--set`` may give them (:func:`settable_parameters`), and
#: :func:`run` refuses a true one before solving (it solved, then failed with "tgv returned a
#: tuple, not an image tensor"); call the function itself (``recon.tgv``) for the tuple.
TUPLE_FLAGS: dict[str, tuple[str, ...]] = {"tgv": ("return_v",)}


def settable_parameters(name: str) -> dict:
    """``{name: default}`` of the parameters of reconstruction ``name`` that a config or
    ``--set`` may give: its keyword parameters less those the reconstruct stage supplies itself
    (``x0``, ``callback`` and :data:`STAGE_SUPPLIED`: GRAPPA's ``mask``, EPLL's ``batch_dims``),
    and the :data:`TUPLE_FLAGS` that would make it return no image (``tgv``'s ``return_v``).
    ``mrirecon run`` and ``mrirecon bench`` check against this one list: the bench listed
    ``callback`` as valid and then failed with an internal error on
    ``--set l1_wavelet.callback=1``."""
    from mrirecon.core.config import signature_params

    supplied = {"x0", "callback", *STAGE_SUPPLIED.get(name, ()), *TUPLE_FLAGS.get(name, ())}
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
    import names of the optional packages ``fn`` imports, :func:`package_problem`).

    A name already registered, or, for a function defined outside mrirecon, the name of a
    learned model (``modl``, ``varnet``, any of :func:`mrirecon.models.available_models`, also
    spelt ``MoDL``) or of shipped weights (:func:`mrirecon.io.weights.available_weights`),
    is refused unless ``overwrite=True``:
    pipelines and benchmarks look a method up here before the models, so ``register("modl",
    fn)`` ran ``fn`` where MoDL was named. Replacing a name mrirecon defines (a shipped method,
    model or weights) warns; replacing one's own registration (a notebook cell run again) does
    not.

    The code of a function defined outside mrirecon is recorded (:func:`code_checksum`) and
    becomes part of the code identity that ``mrirecon run --resume`` and the bench's resume
    compare (:func:`registered_code`, :mod:`mrirecon.pipeline.code_identity`): after an edit
    and a new ``register(..., overwrite=True)`` the inputs are reconstructed again, while the
    same code resumes.
    """
    if settings_problem is not None and not callable(settings_problem):
        raise TypeError(f"register: settings_problem for {name!r} must be callable, got "
                        f"{type(settings_problem).__name__}")
    names = () if isinstance(needs, str) else tuple(needs)
    if isinstance(needs, str) or not all(isinstance(m, str) for m in names):
        raise TypeError(f"register: needs for {name!r} must be import names (e.g. "
                        f"needs=(\"pywt\",)), got {needs!r}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty str, got {name!r}")
    if not callable(fn):
        raise TypeError(f"register: fn for {name!r} must be callable, got {type(fn).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register: {name!r} is already registered (pass overwrite=True)")
    if len(inspect.signature(fn).parameters) < 2:
        raise ValueError(f"register: {name!r} must take (y, op, **params)")
    code = code_checksum(fn)
    shipped = _shipped_name(name) if code is not None else None  # mrirecon's own: no clash
    if shipped is not None and not overwrite:
        raise ValueError(f"register: {name!r} is the name of a {shipped}; a pipeline or "
                         f"benchmark naming it would run your function instead: choose another "
                         f"name, or pass overwrite=True to replace it")
    if shipped is not None or (name in _REGISTRY and _REGISTRY[name].code_sha256 is None
                               and code is not None):
        what = shipped or "reconstruction of mrirecon's"
        warnings.warn(f"register: {name!r} now names your function, not the {what}, in "
                      f"recon.run, pipelines and benchmarks", stacklevel=2)
    _REGISTRY[name] = Entry(fn, needs_op, summary or (fn.__doc__ or "").strip().split("\n")[0],
                            settings_by_method, settings_problem, names, code)


def _shipped_name(name: str) -> str | None:
    """What of mrirecon's ``name`` names besides a classical method: ``"learned model"`` (as
    :func:`~mrirecon.models.build_model` spells it: any case, ``-`` for ``_``), ``"learned
    model's shipped weights"``, or ``None``."""
    from mrirecon.models.registry import available_models
    from mrirecon.io.weights import available_weights  # (not training: it imports recon)

    if name.lower().replace("-", "_") in available_models():
        return "learned model"
    if name in available_weights():
        return "learned model's shipped weights"
    return None


def registered_code() -> dict[str, str]:
    """``{name: sha256}`` of the registered reconstructions defined outside mrirecon (the
    package's own are covered by its source checksum), sorted by name: what
    :func:`mrirecon.pipeline.code_identity.code_sha256` adds to the package's checksum."""
    return {k: e.code_sha256 for k, e in sorted(_REGISTRY.items()) if e.code_sha256 is not None}


def code_checksum(fn: Callable) -> str | None:
    """SHA-256 identifying the code of ``fn``, or ``None`` when it is mrirecon's own (a
    function or class of a ``mrirecon`` module, covered by the package's source checksum).

    What counts: the source text (:func:`inspect.getsource`: a function's ``def`` with its
    decorators and body, a callable object's class), or where there is none (``exec``, a
    deleted file) the byte code, names and constants of its code objects; its default values
    and the plain values its closure holds (numbers, strings, tuples, nested functions);
    ``functools.partial``'s function and arguments. Not counted: what the code reaches through
    globals or objects (a helper function defined elsewhere, a network's weights in a
    closure): change the name, or run without resume, after editing only those."""
    text = _code_text(fn, 0)
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _own(obj) -> bool:
    """Whether the function or class ``obj`` is mrirecon's: a function by the file of its code
    (``functools.wraps`` copies ``__module__`` onto a user's wrapper), a class by its module."""
    code = getattr(obj, "__code__", None)
    if code is not None:
        return os.path.abspath(code.co_filename).startswith(_PACKAGE + os.sep)
    module = getattr(obj, "__module__", None) or ""
    return module == "mrirecon" or module.startswith("mrirecon.")


def _code_text(fn, depth: int) -> str | None:
    if isinstance(fn, functools.partial):
        inner = _code_text(fn.func, depth + 1)
        return (f"partial({inner if inner is not None else _qualified(fn.func)}; "
                f"{_value_text(fn.args, depth)}; {_value_text(fn.keywords, depth)})")
    target = fn.__func__ if inspect.ismethod(fn) else fn
    if not inspect.isfunction(target):
        target = type(target)  # a callable object: its class's code
    if _own(target):
        return None
    parts = [_qualified(target)]
    code = getattr(target, "__code__", None)
    try:
        parts.append(inspect.getsource(target))  # a decorated function's: the one it wraps
    except (OSError, TypeError):
        parts.append(_code_bytes(code) if code is not None else repr(target))
    if code is not None and hasattr(target, "__wrapped__"):
        parts.append(_code_bytes(code))  # the wrapper's own code
    parts.append(_value_text(getattr(target, "__defaults__", None), depth))
    parts.append(_value_text(getattr(target, "__kwdefaults__", None), depth))
    for cell in getattr(target, "__closure__", None) or ():
        try:
            parts.append(_value_text(cell.cell_contents, depth))
        except ValueError:  # an empty cell
            parts.append("<empty>")
    return "\0".join(parts)


def _qualified(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _code_bytes(code) -> str:
    consts = [(_code_bytes(c) if inspect.iscode(c) else repr(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|{consts}"


def _value_text(value, depth: int) -> str:
    """A stable text of a default or closure value: plain values as ``repr``, functions by
    their code, containers item by item; anything else by its type (its state is not
    counted)."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if depth >= 4:  # deep or self-referencing values: their type
        return f"<{type(value).__module__}.{type(value).__qualname__}>"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_value_text(v, depth + 1) for v in value)})"
    if isinstance(value, dict):
        items = sorted((repr(k), _value_text(v, depth + 1)) for k, v in value.items())
        return f"dict({items})"
    if inspect.isfunction(value) or isinstance(value, functools.partial):
        text = _code_text(value, depth + 1)
        return text if text is not None else _qualified(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


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
        and lists the valid ones), no ``op`` where one is needed, or a flag that makes the
        method return a tuple (:data:`TUPLE_FLAGS`: ``tgv``'s ``return_v=True``).
    ValueError
        The method returned an image that is not ``op``'s (its trailing axes), or NaN / Inf
        from finite data (:func:`checked_output`; ``TypeError`` for no tensor).
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
    if flags := [k for k in TUPLE_FLAGS.get(name, ()) if params.get(k)]:
        raise TypeError(f"recon.run: {name}'s {flags[0]}=True returns a tuple, not an image; "
                        f"call mrirecon.recon.{name}(...) itself for it")
    if entry.needs_op and op is None:
        raise TypeError(f"{name}: needs a forward operator op (got None)")
    if isinstance(y, Tensor):
        check_measurements(name, y, op, kspace=_kspace_method(entry, op))
    # the method's own checks of y: done (but for its sign rule); solves that stop at their
    # iteration limit short of a tolerance: one warning for the reconstruction, or the record
    # of an enclosing convergence_record (the pipeline's)
    with measurements_checked(y), reported(name):
        image = entry.fn(y, op, **params)
    return checked_output(name, image, y, op)


def checked_output(name: str, image: object, y: object, op: LinearOperator | None) -> Tensor:
    """``image``, the result of reconstruction ``name``, if it is a tensor whose trailing axes
    are ``op``'s image (``op.domain_shape``; leading axes, such as slices, are the method's)
    and whose values are finite (the data were checked finite before the call); else an error
    naming the method and the image it should have returned. A registered method that returned
    rows 12:52 of a 64 x 64 image failed in a later warning helper with "The size of tensor a
    (64) must match the size of tensor b (40)", naming neither.

    Raises
    ------
    TypeError
        ``image`` is no tensor.
    ValueError
        Its trailing axes are not ``op``'s image; :class:`~mrirecon.core.checks.NonFiniteError`
        (a ``ValueError``) for NaN or Inf values from finite data.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"recon.run: {name} returned a {type(image).__name__}, not an image "
                        f"tensor")
    dom = getattr(op, "domain_shape", None) if isinstance(op, LinearOperator) else None
    if dom is not None:
        got = tuple(image.shape)
        tail = got[len(got) - len(dom):] if len(got) >= len(dom) else None
        if tail is None or any(d is not None and d != g for d, g in zip(dom, tail)):
            want = "(" + ", ".join("*" if d is None else str(d) for d in dom) + \
                   ("," if len(dom) == 1 else "") + ")"
            raise ValueError(f"recon.run: {name} returned an image of shape {got}; the "
                             f"operator's image is {want} ({op.name}'s domain, after any "
                             f"leading axes of the data such as slices)")
    if isinstance(y, Tensor) and not bool(torch.isfinite(image).all()):
        raise NonFiniteError(f"recon.run: {name} returned {nonfinite_count(image)} NaN or Inf "
                             f"values (of {image.numel()}) from finite data (a diverging "
                             "iteration, or a fault in the method)")
    return image


def _kspace_method(entry: Entry, op: LinearOperator | None) -> bool:
    """Whether ``y`` is MRI k-space: ``op`` maps to k-space (:func:`is_kspace_operator`), or an
    MRI-only reconstruction is given no operator, one it does not use (``grappa``,
    ``zero_filled_rss``) or a CT projector (then named as the mistake). An MRI reconstruction
    given any other operator (a user's inpainting operator: ``cg_sense``, ``l1_wavelet``,
    ``tv`` take "any LinearOperator") takes the data that operator maps to, real ones too; it
    said "MRI k-space is complex" to every real one."""
    if is_kspace_operator(op):
        return True
    return entry.modality == "mri" and (op is None or not entry.needs_op or is_ct_operator(op))


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
