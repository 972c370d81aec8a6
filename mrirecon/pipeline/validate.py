"""Value checks of a loaded pipeline config, run before any input is read.

:func:`mrirecon.core.config.from_dict` checks key names and types. This module checks what a
type cannot say: the reconstruction method exists, its parameters are ones the method (or the
learned model's constructor) takes (with a did-you-mean hint; for weights with a model card, only
the ones its ``overridable`` lets a run change), iteration counts are positive,
weights such as ``lam`` are finite and non-negative, and sizes, counts and fractions are in range.
Every problem is a :class:`~mrirecon.core.config.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
from collections.abc import Callable
from dataclasses import replace

from mrirecon.core.checks import check_method_settings, param_problem, settings_of_other_methods
from mrirecon.core.names import DEPRECATED, canonical_params, did_you_mean, pip_name
from mrirecon.core.config import (
    at_least as _at_least,
    check_params,
    deprecated_aliases as _deprecated_aliases,
    fail as _fail,
    signature_annotations,
    signature_params as _signature,
)
from mrirecon.pipeline.param_tables import TABLE, WHAT, explain_shadowed, label, table_key, table_of
from mrirecon.pipeline.schema import MAX_SERIES_NUMBER, CalibrateConfig, PipelineConfig
from mrirecon.sampling.cartesian import (MAX_MASK_SEED, acceleration_problem,
                                         center_fraction_problem)

log = logging.getLogger("mrirecon.pipeline")


def wrong_modality(method: str, wanted: str, model=None) -> str | None:
    """Why ``method`` cannot run where modality ``wanted`` (``"mri"`` / ``"ct"``) is, or
    ``None``: a classical method of the other modality (its registry summary says ``MRI:`` /
    ``CT:``), a learned ``model`` (or a model name, or a shipped weights name by its card's
    model, without one) of the other's :data:`MODEL_MODALITY`. The one place the pipeline
    validator and the benchmark ask (the benchmark also for what it lists as its methods)."""
    from mrirecon import recon
    from mrirecon.models.registry import MODEL_MODALITY, model_modality
    from mrirecon.recon.registry import _lookup

    if model is None and method in recon.available():
        kind, what = _lookup(method).modality, "reconstruction"
    else:
        kind = model_modality(model) if model is not None else MODEL_MODALITY.get(method)
        if model is None and method not in MODEL_MODALITY:
            kind = MODEL_MODALITY.get(_shipped_model(method))
        what = "model"
    if kind not in ("mri", "ct") or kind == wanted:
        return None
    return f"{method!r} is {'an' if kind == 'mri' else 'a'} {kind.upper()} {what}"


def _shipped_model(name: str) -> str | None:
    """The model of the card of shipped weights ``name`` (``staged_ct_lodopab``:
    ``staged_ct``), ``None`` for no shipped name or an unreadable card."""
    from mrirecon.training.weights import available_weights, model_card

    if name not in available_weights():
        return None
    try:
        return str(model_card(name)["model"]["name"]).lower().replace("-", "_")
    except (FileNotFoundError, ValueError):
        return None


def check_classical_settings(method: str, merged: dict, source: str, where: str,
                             blame: Callable[[str], str]) -> None:
    """The load checks of classical method ``method``'s settings for one slice, ``merged`` (its
    parameters on top of a table entry's) after :func:`~mrirecon.core.config.check_params` took
    the names and kinds: settings of another ``method`` value (``tgv`` ``rho`` with
    ``method=pdhg``), values the method refuses (:func:`~mrirecon.recon.registry.settings_problem`)
    and required ones; errors name ``source`` and ``blame(key)`` (``where.key`` for a missing
    one). ``mrirecon run`` (:func:`validate_pipeline`) and ``mrirecon bench`` (its ``--set``)
    share it: the bench took ``tgv`` ``rho`` beside ``method=pdhg`` and failed every volume."""
    from mrirecon.recon.registry import _lookup, settable_parameters, settings_problem

    entry = _lookup(method)
    if entry.settings_by_method:  # e.g. tv_ct's preconditioned under its ADMM default
        owners = entry.settings_by_method
        chosen = merged.get("method", _signature(entry.fn, 2)[0].get("method"))
        given = {k: merged.get(k) for names in owners.values() for k in names}
        try:
            check_method_settings(method, chosen, owners, **given)
        except ValueError as err:
            wrong = settings_of_other_methods(chosen, owners, given) if chosen in owners else []
            raise _fail(source, blame(wrong[0] if wrong else "method"), str(err)) from None
    if (bad := settings_problem(method, merged)) is not None:
        raise _fail(source, blame(bad[0]), bad[1])  # fbp's filter=hamming failed each input
    takes = settable_parameters(method)
    missing = [p for p in entry.required() if p not in merged and p in takes]
    if missing:
        raise _fail(source, f"{where}.{missing[0]}", f"{method} needs {', '.join(missing)} (e.g. "
                    f"--set {where}.{missing[0]}=...)")


def check_installed(method: str, source: str, key: str) -> None:
    """Refuse the classical ``method`` when a package it imports is not installed
    (:func:`~mrirecon.recon.registry.package_problem`), naming ``source`` and ``key``: each
    input was read and reconstructed first, then failed."""
    from mrirecon.recon.registry import package_problem

    if (why := package_problem(method)) is not None:
        raise _fail(source, key, f"{why}, or choose another method")


def _check_method(config: PipelineConfig, source: str) -> None:
    from mrirecon import recon
    from mrirecon.recon.registry import _lookup, settable_parameters

    rc = config.reconstruct
    method = rc.method
    if (why := wrong_modality(method, config.modality)) is not None:
        raise _fail(source, "reconstruct.method",
                    f"{why}; this pipeline's modality is {config.modality!r}")
    if method in recon.available():
        check_installed(method, source, "reconstruct.method")  # before its parameters' names
        kinds = signature_annotations(_lookup(method).fn, 2)  # lam: float takes no list
        takes = settable_parameters(method)  # less what the stage passes itself (x0, ...)
        check_params(method, rc.params, takes, source=source, annotations=kinds)
        found = table_of(rc)
        # what a slice runs: params alone, or params on top of each entry of the table
        cases = [("reconstruct.params", {})] if found is None else \
            [(f"reconstruct.{found[0]}.{label(k)}", e) for k, e in found[1].items()]
        for where, own in cases:
            check_params(method, own, takes, source=source, prefix=where, annotations=kinds)
            check_classical_settings(method, {**own, **rc.params}, source, where, lambda key, w=where:
                                     f"{'reconstruct.params' if key in rc.params else w}.{key}")
        if rc.weights:
            raise _fail(source, "reconstruct.weights",
                        f"{method!r} is a classical method and takes no weights")
        return
    from mrirecon.models.registry import _MODELS, available_models, model_defaults, model_keywords

    if method not in available_models():
        names = recon.available() + available_models()
        hint = did_you_mean(method, names)
        raise _fail(source, "reconstruct.method",
                    f"unknown method {method!r}{hint}; classical: {', '.join(recon.available())}; "
                    f"learned: {', '.join(available_models())}. A method of your own (or one "
                    "that calls a model of your own) is registered with "
                    "mrirecon.recon.register(name, fn) and run from Python in that process: "
                    "config, text = load_pipeline(path); run_pipeline(config, inputs, output, "
                    "config_text=text) (mrirecon.pipeline.definitions / .runner); the "
                    "'mrirecon run' command imports no code of yours")
    valid, keywords = model_defaults(method), model_keywords(method)
    kinds = signature_annotations(_MODELS[method][0], 0)
    if (allowed := card_overridable(rc.weights)) is not None:
        _check_card_params(method, rc, allowed, set(valid) | set(keywords or ()), keywords is None,
                           source)
    if keywords is None:  # cannot know the names; still check the values of the known ones
        for key, value in rc.params.items():
            problem = param_problem(str(key), value, valid.get(key, inspect.Parameter.empty),
                                    kinds.get(key, inspect.Parameter.empty))
            if problem:
                raise _fail(source, f"reconstruct.params.{key}", problem)
    else:
        check_params(method, rc.params, valid, source=source, annotations=kinds,
                     extra=(*sorted(keywords - set(valid)), *_deprecated_aliases(valid)))


def card_overridable(weights) -> set[str] | None:
    """The parameters that the model card of ``weights`` lets a run change (its
    ``overridable``), or ``None`` for no weights or weights without a readable card (a bare
    state dict is built from the pipeline's parameters; a missing file or a malformed card is
    refused, naming it, when the model is loaded)."""
    if not weights:
        return None
    from mrirecon.training.weights import model_card

    try:
        card = model_card(weights)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return set(card.get("overridable") or ())


def card_refusal(weights, allowed: set[str], key: str) -> str:
    """Why the model card of ``weights`` refuses a run's setting ``key`` (``allowed``: its
    ``overridable``); one wording for ``reconstruct.params`` and the tables' entries."""
    return (f"the model card of {weights} lets a run change "
            f"{', '.join(sorted(allowed)) or 'nothing'} (overridable), not {key!r}")


def _check_card_params(method: str, rc, allowed: set[str], known: set[str], open_ended: bool,
                       source: str) -> None:
    """Refuse ``reconstruct.params`` that the model card of ``rc.weights`` does not let a run
    change (``allowed``) at load, naming the key: a parameter of the model (``known``, or any
    name of a model taking ``**kwargs``: ``open_ended``) as the card's; another name as unknown,
    listing and suggesting only ``allowed``. It listed every constructor parameter as valid, and
    the one it suggested was refused by the card when the model was loaded."""
    for key in rc.params:
        if key in allowed:
            continue
        if key in known or open_ended:
            raise _fail(source, f"reconstruct.params.{key}", card_refusal(rc.weights, allowed, key))
        names = ", ".join(sorted(allowed)) or "none"
        raise _fail(source, f"reconstruct.params.{key}",
                    f"{method} has no parameter {key!r}{did_you_mean(key, sorted(allowed))}; "
                    f"valid: {names} (the settings the model card of {rc.weights} lets a run "
                    "change, its overridable; the card fixes the rest)")


def check_calibrate(cal: CalibrateConfig, source: str) -> None:
    """The value checks of the ``calibrate`` section (none for ``method: none``), a
    :class:`~mrirecon.core.config.ConfigError` naming ``source`` and ``calibrate.<key>``; the
    same for ``mrirecon run`` and ``mrirecon bench --set calibrate.*``."""
    if cal.method == "none":
        return
    _at_least(source, "calibrate.calib_width", cal.calib_width, 1)
    _at_least(source, "calibrate.kernel_width", cal.kernel_width, 1)
    if not (math.isfinite(cal.threshold) and 0 <= cal.threshold < 1):
        raise _fail(source, "calibrate.threshold", f"must be in [0, 1), got {cal.threshold!r}")
    if not (math.isfinite(cal.crop) and 0 <= cal.crop <= 1):
        raise _fail(source, "calibrate.crop", f"must be in [0, 1], got {cal.crop!r}")
    share = cal.max_cropped_energy
    if share is not None and not (math.isfinite(share) and 0 <= share < 1):
        raise _fail(source, "calibrate.max_cropped_energy",
                    f"must be in [0, 1) or null, got {share!r}")


def validate_pipeline(config: PipelineConfig, source: str = "", *,
                      quiet: bool = False) -> PipelineConfig:
    """Check the values of ``config`` (see the module docstring).

    Returns the config, with the deprecated parameter names of ``reconstruct.params`` renamed
    (:func:`canonical_method_params`), a ``~`` in ``reconstruct.weights`` expanded, and tables
    tuned for another method than ``reconstruct.method`` dropped with a warning
    (:func:`tables_of_the_method`); otherwise unchanged. ``quiet``: the config was validated
    (and its notes logged) before, as loaded: the note that ``reconstruct.params`` replaces a
    table's settings (:func:`~mrirecon.pipeline.param_tables.explain_shadowed`) is not logged
    again (``run_pipeline`` of a loaded config said it twice per run).
    """
    config, dropped = tables_of_the_method(config, source)
    for msg in dropped:
        log.warning("%s", msg)
    rc = config.reconstruct
    if isinstance(rc.weights, str) and rc.weights.startswith("~"):  # weights: ~/x.pt
        config = replace(config, reconstruct=replace(rc, weights=os.path.expanduser(rc.weights)))
    pre, und = config.preprocess, config.undersample
    fmt = config.load.format
    if (config.modality == "mri" and fmt in ("ct_hdf5", "dicom")) or \
            (config.modality == "ct" and fmt in ("fastmri", "ismrmrd", "bart")):
        raise _fail(source, "load.format", f"{fmt!r} data cannot go through a {config.modality!r} "
                                           "pipeline; use auto or a format of that modality")
    from mrirecon.io.ismrmrd_raw import SELECTABLE_COUNTERS

    if config.modality == "ct" and config.load.counters:
        name = next(iter(config.load.counters))
        raise _fail(source, f"load.counters.{name}", "selects acquisitions of ISMRMRD raw data; a "
                    "CT pipeline reads LoDoPaB HDF5 or DICOM, which have no counters")
    for name, value in dict(config.load.counters).items():
        if name not in SELECTABLE_COUNTERS:
            raise _fail(source, f"load.counters.{name}",
                        f"not a selectable counter; one of {list(SELECTABLE_COUNTERS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(source, f"load.counters.{name}", f"must be an integer >= 0, got {value!r}")
    _at_least(source, "preprocess.coil_compression", pre.coil_compression, 1)
    check_calibrate(config.calibrate, source)
    if not und.center_fractions or not und.accelerations:
        raise _fail(source, "undersample.center_fractions", "needs at least one value")
    for i, f in enumerate(und.center_fractions):
        if not (math.isfinite(f) and 0 < f <= 1):
            raise _fail(source, f"undersample.center_fractions[{i}]", f"must be in (0, 1], got {f!r}")
    for i, a in enumerate(und.accelerations):
        _at_least(source, f"undersample.accelerations[{i}]", a, 1)
    if config.modality == "mri":  # fastMRI pairs them: fraction i goes with acceleration i
        if len(und.center_fractions) != len(und.accelerations):
            raise _fail(source, "undersample.center_fractions",
                        f"{len(und.center_fractions)} value(s) for {len(und.accelerations)} "
                        "accelerations; give one centre fraction per acceleration")
        for i, (f, a) in enumerate(zip(und.center_fractions, und.accelerations)):
            if und.enabled and (why := acceleration_problem(a)) is not None:  # 1: no mask to
                raise _fail(source, f"undersample.accelerations[{i}]",  # draw (off: not read)
                            f"{why}; for fully sampled data set undersample.enabled=false")
            if (why := center_fraction_problem(f, a)) is not None:
                raise _fail(source, f"undersample.center_fractions[{i}]", f"{f!r} {why}")
    _at_least(source, "undersample.views", und.views, 1)
    if und.photons is not None:
        from mrirecon.sampling.views import check_photons

        try:  # the pipeline's count floor is LoDoPaB's 0.1
            check_photons(und.photons, 0.1, "photons")
        except ValueError as err:
            raise _fail(source, "undersample.photons", str(err).removeprefix("photons: ")) from None
    _at_least(source, "undersample.fixed_seed", und.fixed_seed, 0)
    if und.fixed_seed > MAX_MASK_SEED:  # fastMRI's mask functions seed a numpy RandomState
        raise _fail(source, "undersample.fixed_seed",
                    f"must be <= {MAX_MASK_SEED} (2**32 - 1, the seeds of fastMRI's mask "
                    f"functions), got {und.fixed_seed!r}")
    for i, c in enumerate(config.postprocess.crop_size):
        _at_least(source, f"postprocess.crop_size[{i}]", c, 1)
    _at_least(source, "report.max_slices_in_figures", config.report.max_slices_in_figures, 0)
    _at_least(source, "export.series_number", config.export.series_number, 0)
    if config.export.series_number > MAX_SERIES_NUMBER:
        raise _fail(source, "export.series_number", f"must be <= {MAX_SERIES_NUMBER} (DICOM's "
                    f"IS range), got {config.export.series_number!r}")
    desc = config.export.series_description
    if len(desc) > 64 or any(c < " " or c == "\x7f" for c in desc):
        raise _fail(source, "export.series_description",
                    f"DICOM allows at most 64 printable characters, got {len(desc)} ({desc[:20]!r}...)")
    if "\\" in desc:
        raise _fail(source, "export.series_description",
                    f"'{desc}' holds '\\', the DICOM value delimiter: SeriesDescription (one "
                    "value) would be written as several; use '/' instead")
    if not config.export.formats:
        raise _fail(source, "export.formats", "needs at least one of hdf5, nifti, dicom, png")
    _check_modality_settings(config, source)
    config = _canonical_reconstruct_params(config, source)
    config = _checked_tables(config, source, quiet)
    _check_method(config, source)
    _check_adapt(config, source)
    _check_packages(config, source)
    rc = config.reconstruct
    tables = {t: getattr(rc, t) for t in WHAT if getattr(rc, t)}
    return replace(config, reconstruct=replace(
        rc, tables_tuned_for=(rc.method, copy.deepcopy(tables)) if tables else None))


#: The packages the stages import when a config enables them, ``(key, value, import name)``
#: (the pip name: :func:`mrirecon.core.names.pip_name`): ``export.formats`` ``dicom`` needs
#: pydicom, and so on (a reconstruction's own:
#: :func:`mrirecon.recon.registry.package_problem`). Without one, each input was read and
#: reconstructed before the export failed it ("ModuleNotFoundError: ... pydicom"), its metrics
#: discarded.
STAGE_PACKAGES = (("export.formats", "dicom", "pydicom"),
                  ("export.formats", "nifti", "nibabel"),
                  ("export.formats", "png", "matplotlib"),
                  ("load.format", "dicom", "pydicom"))


def _check_packages(config: PipelineConfig, source: str) -> None:
    """Refuse at load a config whose stages need a package that is not installed, naming the
    key, the package and the way out (install it, or do without what needs it)."""
    from mrirecon.recon.registry import installed

    for key, value, module in STAGE_PACKAGES:
        pip = pip_name(module)
        section, _, name = key.partition(".")
        setting = getattr(getattr(config, section), name)
        if value in (setting if isinstance(setting, (tuple, list)) else (setting,)) \
                and not installed(module):
            way = (f"remove {value} from {key}" if key == "export.formats" else
                   "convert the data to another format")
            raise _fail(source, key, f"{value} needs the Python package {pip}, which is not "
                        f"installed: pip install {pip}, or {way}")


def tables_of_the_method(config: PipelineConfig, source: str = "") -> tuple[PipelineConfig, list[str]]:
    """``(config, warnings)``: ``config`` without its ``params_by_acceleration`` /
    ``params_by_views`` when they are the tables validated with another method than
    ``reconstruct.method`` (``reconstruct.tables_tuned_for``, recorded by
    :func:`validate_pipeline`): a method changed in code after loading
    (``dataclasses.replace(rc, method="cg_sense", params={})`` on ``mri_cs``) ran L1-wavelet's
    iteration table (1000 CG iterations at 8x: 4.20 NMSE), as ``--set reconstruct.method=...``
    does not (:func:`mrirecon.pipeline.definitions._tables_of_the_method`). Tables set anew with
    the method are kept."""
    rc = config.reconstruct
    tables = {t: getattr(rc, t) for t in WHAT if getattr(rc, t)}
    tuned = rc.tables_tuned_for
    if not tables or tuned is None or tuned[0] == rc.method or tuned[1] != tables:
        return config, []
    where = f"{source}: " if source else ""
    msg = (f"{where}reconstruct.{' / '.join(tables)}: tuned for {tuned[0]}, not used with "
           f"reconstruct.method={rc.method} (the method was changed after the pipeline was "
           f"loaded; give {rc.method} a table of its own to use one)")
    rc = replace(rc, **{t: {} for t in tables}, tables_tuned_for=None)
    return replace(config, reconstruct=rc), [msg]


#: Settings that only the MRI stages read (whole sections, or ``section.key``) and those only the
#: CT stages read. Set away from their defaults in a pipeline of the other modality they changed
#: nothing, without a word: ``undersample.accelerations=[6]`` in a CT pipeline kept every view
#: (the metrics of the full sinogram, provenance saying 6x), ``undersample.views=30`` in an MRI
#: pipeline drew the 4x mask. ``undersample.seed`` / ``fixed_seed`` are read by both (CT: the
#: dose noise, :func:`mrirecon.pipeline.stages_ct.slice_seed`).
MRI_ONLY = ("preprocess", "calibrate", "postprocess", "undersample.mask",
            "undersample.center_fractions", "undersample.accelerations")
CT_ONLY = ("undersample.views", "undersample.photons")


def changed_from_defaults(config: PipelineConfig, dotted: str) -> list[str]:
    """The keys under ``dotted`` (a section or one key) whose values differ from the defaults."""
    from dataclasses import fields

    section, _, key = dotted.partition(".")
    block = getattr(config, section)
    default = type(block)()
    names = [key] if key else [f.name for f in fields(block)]
    return [f"{section}.{n}" for n in names if getattr(block, n) != getattr(default, n)]


def _check_modality_settings(config: PipelineConfig, source: str) -> None:
    """Refuse settings the pipeline's modality never reads, and a CT ``undersample.enabled``
    with nothing to undersample (neither ``views`` nor ``photons``)."""
    if config.modality == "ct":
        for dotted in MRI_ONLY:
            if changed := changed_from_defaults(config, dotted):
                hint = (" CT undersamples with undersample.views (sparse view) and "
                        "undersample.photons (low dose)") if dotted.startswith("undersample") else ""
                raise _fail(source, changed[0], "an MRI setting, which a CT pipeline does not read "
                            f"(it would change nothing); remove it.{hint}")
        und = config.undersample
        if und.enabled and und.views is None and und.photons is None:
            raise _fail(source, "undersample.enabled",
                        "true, but neither undersample.views nor undersample.photons is set, so "
                        "every view would be kept at the data's dose; set undersample.views=N "
                        "and / or undersample.photons=I0, or undersample.enabled=false")
    else:
        for dotted in CT_ONLY:
            if changed := changed_from_defaults(config, dotted):
                raise _fail(source, changed[0], "a CT setting, which an MRI pipeline does not read "
                            "(it would change nothing); remove it. MRI undersamples k-space with "
                            "undersample.accelerations, center_fractions and mask")


def _check_adapt(config: PipelineConfig, source: str) -> None:
    """``adapt:`` needs a learned model and sane values (:func:`check_adapt_config`)."""
    ad = config.adapt
    if not ad.enabled:
        return
    from mrirecon import recon

    if config.reconstruct.method in recon.available():
        raise _fail(source, "adapt.enabled", f"adaptation fine-tunes a learned model; "
                    f"{config.reconstruct.method!r} is a classical method")
    from mrirecon.pipeline.adapt_stage import own_maps_refusal
    from mrirecon.pipeline.inert import own_maps_model

    if (name := own_maps_model(config)) is not None:  # the weights' card, the params on top
        raise _fail(source, "adapt.enabled",
                    own_maps_refusal(config, name).removeprefix("adapt: "))
    from mrirecon.training.adapt import check_adapt_config

    try:
        check_adapt_config(ad, config.modality)
    except ValueError as e:
        field = str(e).split(": ", 1)[-1].split(" ", 1)[0]
        raise _fail(source, f"adapt.{field}", str(e).split(": ", 1)[-1]) from None


def accepted_params(method: str) -> set[str] | None:
    """Parameter names of a classical method or learned model (``None``: unknown method)."""
    from mrirecon import recon
    from mrirecon.recon.registry import _lookup

    if method in recon.available():
        return set(_signature(_lookup(method).fn, 2)[0])
    from mrirecon.models.registry import _MODELS, model_defaults

    return set(model_defaults(method)) if method in _MODELS else None


def canonical_method_params(method: str, params: dict, source: str,
                            prefix: str = "reconstruct.params") -> dict:
    """``params`` with the deprecated names of :mod:`mrirecon.core.names` renamed (``lamda`` ->
    ``lam``, ``max_iterations`` -> ``iterations``, ...), with a ``FutureWarning`` naming
    ``source`` and the key, so that older YAML files and ``--set`` lines still run for one
    release. An old and a new name together is a :class:`ConfigError`."""
    accepted = accepted_params(method)
    if accepted is None:
        return params  # _check_method reports the unknown method
    for key in params:
        new = DEPRECATED.get(key)
        if new in params and key not in accepted and new in accepted:
            raise _fail(source, f"{prefix}.{key}",
                        f"both {key!r} (deprecated) and {new!r} are given; keep only {new!r}")
    return canonical_params(params, accepted, f"{source}: {prefix}" if source else prefix,
                            target=method)


def _canonical_reconstruct_params(config: PipelineConfig, source: str) -> PipelineConfig:
    rc = config.reconstruct
    params = canonical_method_params(rc.method, rc.params, source)
    if params == rc.params:
        return config
    return replace(config, reconstruct=replace(rc, params=params))


def _checked_tables(config: PipelineConfig, source: str, quiet: bool = False) -> PipelineConfig:
    """``reconstruct.params_by_acceleration`` / ``params_by_views``
    (:mod:`mrirecon.pipeline.param_tables`) with numeric keys (``--set`` gives strings; ``8`` and
    ``"8"`` merge, the later on top) and canonical parameter names; refused in a pipeline of the
    other modality, and for a learned model beyond what its card lets a run change
    (``overridable``)."""
    from mrirecon import recon
    from mrirecon.models.registry import available_models

    rc = config.reconstruct
    for name, what in WHAT.items():
        table = getattr(rc, name)
        if not table:
            continue
        if name != TABLE[config.modality]:
            raise _fail(source, f"reconstruct.{name}",
                        f"the data of {'an MRI' if config.modality == 'mri' else 'a CT'} pipeline have no {what}; use "
                        f"reconstruct.{TABLE[config.modality]}")
        allowed = None  # a learned model's: the settings its card lets a run change
        if rc.method not in recon.available():
            if rc.method not in available_models():
                return config  # _check_method names the unknown method
            allowed = _overridable(rc, source, f"reconstruct.{name}", what)
            from mrirecon.models.registry import _MODELS, model_defaults

            defaults = model_defaults(rc.method)  # the values are checked as reconstruct.params

            kinds = signature_annotations(_MODELS[rc.method][0], 0)
        out: dict = {}
        for raw, entry in table.items():
            where = f"reconstruct.{name}.{raw}"
            key = table_key(raw)
            if key is None or key < 1 or (what == "views" and key != int(key)):
                kind = "a view count (an integer >= 1)" if what == "views" else "an acceleration (a number >= 1)"
                raise _fail(source, where, f"a key must be {kind}, got {raw!r} (--set splits keys "
                            f"at dots: give a fractional key in a mapping, reconstruct.{name}="
                            "{5.5: {lam: 1.0e-3}})")
            if not isinstance(entry, dict):
                raise _fail(source, where, f"expected a mapping of {rc.method} settings (e.g. "
                            f"{{lam: 1.0e-3}}), got {entry!r}")
            key = int(key) if what == "views" else key
            if key in out:  # '30' and 30: one entry would have been merged into the other
                twin = next(k for k in table if k is not raw and table_key(k) == table_key(raw))
                raise _fail(source, f"reconstruct.{name}", f"the keys {twin!r} and {raw!r} name the "
                            f"same {what} ({label(key)}); give it one entry")
            entry = canonical_method_params(rc.method, entry, source, prefix=f"reconstruct.{name}.{label(key)}")
            for k, v in entry.items() if allowed is not None else ():
                if k not in allowed:
                    raise _fail(source, f"reconstruct.{name}.{label(key)}.{k}",
                                card_refusal(rc.weights, allowed, k))
                problem = param_problem(str(k), v, defaults.get(k, inspect.Parameter.empty),
                                        kinds.get(k, inspect.Parameter.empty))
                if problem:
                    raise _fail(source, f"reconstruct.{name}.{label(key)}.{k}", problem)
            out[key] = {**out.get(key, {}), **entry}
        config = replace(config, reconstruct=replace(rc, **{name: out}))
        rc = config.reconstruct
    if not quiet:
        explain_shadowed(rc, source)
    return config


def _overridable(rc, source: str, field: str, what: str) -> set[str]:
    """The settings the card of a learned model's weights lets a run change (its
    ``overridable``), for a table of them; refused without weights or a card."""
    from mrirecon.training.weights import model_card

    why = (f"{rc.method!r} is a learned model: settings per {what} must be among its model card's "
           "overridable inference settings")
    if not rc.weights:
        raise _fail(source, field, f"{why}, and reconstruct.weights is empty")
    try:
        card = model_card(rc.weights)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(source, field, f"{why}; {err}") from None
    return set(card.get("overridable") or ())
