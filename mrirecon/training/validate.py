"""Value checks of a training config before any data is read (the pipeline's are in
:mod:`mrirecon.pipeline.validate`; both use the shared checks of :mod:`mrirecon.core.config`)."""

from __future__ import annotations

import math

import numpy as np

from mrirecon.core.checks import check_seed
from mrirecon.core.config import at_least as _at_least
from mrirecon.core.config import check_params
from mrirecon.core.config import deprecated_aliases as _deprecated_aliases
from mrirecon.core.config import fail as _fail
from mrirecon.sampling.cartesian import (MAX_MASK_SEED, acceleration_problem,
                                         center_fraction_problem)
from mrirecon.training.optim import lr_problem


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)

#: What a model of each modality is built around (:data:`~mrirecon.models.registry.MODEL_MODALITY`).
_NEEDS = {"mri": "a SENSE operator and k-space", "ct": "a projector and a sinogram"}


#: Registry models `mrirecon train CONFIG` cannot train, and why: its trainer calls
#: ``model(y, op)`` on Cartesian k-space with a SENSE operator (MRI) or on a sinogram with a
#: projector (CT). Each failed at step 1 with "internal error" once the data were read.
_BACKBONE = ("{name!r} is a backbone (a network called as model(x) on images), but `mrirecon "
             "train CONFIG` trains reconstruction models called as model(y, op) on measured data; "
             "train it as the denoiser of a plug-and-play model on this data: model.name pnp_admm, "
             "pnp_hqs or red with model.params.denoiser: {name} (its settings in "
             "model.params.denoiser_params), or pnp_dpir (its own DnCNN denoiser); or train the "
             "DnCNN denoiser of the shipped pnp_dncnn_brain_sim on simulated brain images with "
             "`mrirecon train denoiser`")
_RADIAL = ("needs a nufft_sense operator (radial / spiral data), but `mrirecon train CONFIG` reads "
           "Cartesian k-space (a SENSE operator); train it with `mrirecon train radial` on "
           "simulated radial data made in memory (--model modl or gram_varnet inside, {how})")
NOT_TRAINED_BY_CONFIG = {
    **dict.fromkeys(("dncnn", "unet", "resnet"), _BACKBONE),
    "density_weighted": "{name!r} (density-weighted data consistency) " + _RADIAL.format(
        how="--weighting density, the default"),
    "learned_maps": "{name!r} (coil maps estimated from the gridded centre of a trajectory) "
                    + _RADIAL.format(how="--maps learned --weighting none; with the default "
                                         "--weighting density it is wrapped in density_weighted"),
    "ldamp": "{name!r} (learned D-AMP) is valid only for real i.i.d. Gaussian measurement matrices "
             "(DenseMatrix(iid=True), e.g. mrirecon.operators.gaussian_matrix), which no data of "
             "`mrirecon train CONFIG` give (a SENSE operator or a CT projector); train it from "
             "Python with such an operator: build_model('ldamp', ...)(y, op), y of shape (B, m) "
             "(mrirecon.models.unrolled.ldamp)",
}


def not_trained_by_config(name: str) -> str | None:
    """Why `mrirecon train CONFIG` cannot train registry model ``name`` and what does
    (:data:`NOT_TRAINED_BY_CONFIG`), or ``None`` where it can."""
    key = str(name).lower().replace("-", "_")
    why = NOT_TRAINED_BY_CONFIG.get(key)
    return None if why is None else why.format(name=key)


#: model.name -> a warning: `train CONFIG` trains it otherwise than its documented recipe
RECIPE_WARNINGS = {
    "staged_ct": "model.name: 'staged_ct' is trained here end to end: all stages at once on whole "
                 "images, with model.params.lam and model.params.ensemble fixed as given; its "
                 "documented recipe (mrirecon.training.ct_staged) trains the stages one after the "
                 "other on 128 x 128 patches and chooses each stage's lam from a grid and the "
                 "self-ensemble on validation data: for that, use `mrirecon train staged_ct` "
                 "(simulated data at the LoDoPaB geometry)",
}


def inert_settings(cfg) -> list[str]:
    """One line per setting of ``cfg`` that is accepted but changes nothing, set away from its
    schema default: ``data.num_workers`` above 0 (the trainer reads its samples in the training
    process); the other modality's data keys (``data.mask`` / ``data.maps`` for CT,
    ``data.ct_views`` / ``data.ct_photons`` for MRI); ``data.maps_cache_mb`` for CT or with
    ``data.maps: learned``; image-loss weights with ``loss.ssdu``;
    ``loss.discriminator_lr`` without ``loss.adversarial``; ``optim.lr_gamma`` without a decay
    (``optim.lr_step`` 0 or at least ``optim.max_steps``)."""
    from mrirecon.training.config import LossConfig, MaskConfig, OptimConfig

    d, o, loss, lines = cfg.data, cfg.optim, cfg.loss, []
    if d.num_workers:
        lines.append(
            f"data.num_workers: {d.num_workers} has no effect: `mrirecon train CONFIG` reads its "
            "samples in the training process (no DataLoader workers), so the weights are those of "
            "0; parallel data loading exists only in `train modl` / `train varnet` (--workers) and "
            "`train staged_ct` (--prefetch). Delete the key: it will be refused in a later release")
    if d.modality == "ct":
        mask = MaskConfig()
        for name in ("type", "center_fractions", "accelerations"):
            if getattr(d.mask, name) != getattr(mask, name):
                lines.append(f"data.mask.{name}: has no effect with data.modality ct (CT keeps "
                             "views: data.ct_views); delete the key")
        if d.maps != "learned":  # the default of CT configs (TrainConfig sets it)
            lines.append(f"data.maps: {d.maps!r} has no effect with data.modality ct (no coil "
                         "maps); delete the key")
    if d.maps_cache_mb is not None and (d.modality == "ct" or d.maps == "learned"):
        lines.append(f"data.maps_cache_mb: {d.maps_cache_mb:g} has no effect with "
                     + ("data.modality ct (no coil maps)" if d.modality == "ct" else
                        "data.maps learned (unit maps, nothing calibrated or kept)")
                     + "; delete the key")
    if d.modality != "ct":
        for name in ("ct_views", "ct_photons"):
            if getattr(d, name) is not None:
                lines.append(f"data.{name}: has no effect with data.modality {d.modality} (the "
                             "MRI data are undersampled by data.mask); delete the key")
    plain = LossConfig()
    if getattr(loss, "ssdu", None) is not None:
        for name in ("ssim", "l1", "mse"):
            if getattr(loss, name) and getattr(loss, name) != getattr(plain, name):
                lines.append(f"loss.{name}: {getattr(loss, name)!r} has no effect with loss.ssdu "
                             "(the self-supervised loss replaces the image terms); delete the key")
    if not loss.adversarial and loss.discriminator_lr != plain.discriminator_lr:
        lines.append(f"loss.discriminator_lr: {loss.discriminator_lr!r} has no effect with "
                     "loss.adversarial 0 (no discriminator is trained); delete the key")
    if o.lr_gamma != OptimConfig().lr_gamma and not o.lr_step:
        lines.append(f"optim.lr_gamma: {o.lr_gamma!r} has no effect with optim.lr_step 0 (the "
                     "rate never decays)")
    if o.lr_step and o.lr_step >= o.max_steps:  # the shipped train_*_sim.yaml do this (their
        # weights were trained so): the rate stays optim.lr to the end
        lines.append(f"optim.lr_step: {o.lr_step} >= optim.max_steps {o.max_steps}: the rate "
                     f"never decays (optim.lr_gamma {o.lr_gamma!r} is never applied); the run "
                     f"trains at optim.lr {o.lr:g} throughout")
    return lines


def _first_rank() -> bool:
    """Whether this process is rank 0 of a ``torchrun``-style job (or alone): the config's
    warnings come before the ranks meet, and every rank repeated them, naming none. A malformed
    ``RANK`` / ``WORLD_SIZE`` counts as rank 0 here; the rendezvous refuses it."""
    from mrirecon.threads import rank_and_world

    try:
        return rank_and_world()[0] == 0
    except ValueError:
        return True


def validate_training(cfg, source: str = ""):
    """Value checks of a :class:`~mrirecon.training.config.TrainConfig` (counts, rates, loss
    weights, model parameters), before any data is read; returns it unchanged. Settings that
    change nothing (:func:`inert_settings`) are warned about (``FutureWarning``, naming the
    file) and recorded in the card (``training.config_warnings``). A model this command cannot
    train (:func:`not_trained_by_config`) is refused naming ``model.name`` and what does train
    it; one it trains otherwise than its documented recipe (:data:`RECIPE_WARNINGS`) is warned
    about (``UserWarning``)."""
    import warnings

    from mrirecon.models.registry import _MODELS, MODEL_MODALITY, model_defaults, model_keywords

    d, o, loss = cfg.data, cfg.optim, cfg.loss
    if not str(cfg.output_dir).strip():  # `--set output_dir=$OUT` unset: the working directory
        raise _fail(source, "output_dir", "an empty path (an unset shell variable?); give a folder")
    if not (math.isfinite(d.sample_rate) and 0 < d.sample_rate <= 1):
        raise _fail(source, "data.sample_rate", f"must be in (0, 1], got {d.sample_rate!r}")
    _at_least(source, "data.num_workers", d.num_workers, 0)
    _at_least(source, "data.maps_cache_mb", d.maps_cache_mb, 0)
    for line in inert_settings(cfg) if _first_rank() else ():  # said once per torchrun job
        warnings.warn(f"{source}: {line}" if source else line, FutureWarning, stacklevel=2)
    _at_least(source, "data.ct_views", d.ct_views, 1)
    if d.ct_photons is not None and not (math.isfinite(d.ct_photons) and d.ct_photons > 0):
        raise _fail(source, "data.ct_photons", f"must be a finite number > 0, got {d.ct_photons!r}")
    for i, f in enumerate(d.mask.center_fractions):
        if not (math.isfinite(f) and 0 < f <= 1):
            raise _fail(source, f"data.mask.center_fractions[{i}]", f"must be in (0, 1], got {f!r}")
    for i, a in enumerate(d.mask.accelerations):
        _at_least(source, f"data.mask.accelerations[{i}]", a, 1)
        if (why := acceleration_problem(a)) is not None:  # run's, bench's and simulate's rule
            raise _fail(source, f"data.mask.accelerations[{i}]", why)
    nf, na = len(d.mask.center_fractions), len(d.mask.accelerations)
    if nf != na:  # zip below kept the shorter; the mask function refused it naming no key
        raise _fail(source, "data.mask.center_fractions",
                    f"{nf} value{'s' if nf != 1 else ''} for {na} data.mask.accelerations; give "
                    "one per acceleration")
    for i, (f, a) in enumerate(zip(d.mask.center_fractions, d.mask.accelerations)):
        if (why := center_fraction_problem(f, a)) is not None:  # a "4x" set drawn at 2x
            raise _fail(source, f"data.mask.center_fractions[{i}]", f"{f!r} {why}")
    if lr_problem(o.lr):
        raise _fail(source, "optim.lr", lr_problem(o.lr))
    _at_least(source, "optim.weight_decay", o.weight_decay, 0)
    _at_least(source, "optim.batch_size", o.batch_size, 1)
    _at_least(source, "optim.max_steps", o.max_steps, 1)
    _at_least(source, "optim.lr_step", o.lr_step, 0)
    if not (math.isfinite(o.lr_gamma) and 0 < o.lr_gamma <= 1):  # 0: the rate is 0 after the
        # first decay and training goes on doing nothing; > 1: the rate grows without bound
        raise _fail(source, "optim.lr_gamma", f"must be in (0, 1], got {o.lr_gamma!r}")
    if o.lr_step:  # the last step's rate must still move float32 parameters
        decays = o.max_steps // o.lr_step
        last = math.exp(math.log(o.lr) + decays * math.log(o.lr_gamma))
        if last < _FLOAT32_TINY:
            raise _fail(source, "optim.lr_gamma",
                        f"{o.lr_gamma!r} decays optim.lr {o.lr!r} {decays} times (optim.max_steps "
                        f"{o.max_steps} / optim.lr_step {o.lr_step}) to {last:.3g}, below float32's "
                        f"smallest normal number {_FLOAT32_TINY:.3g}: training would stop moving "
                        "the weights without an error")
    if o.grad_clip is not None and not (math.isfinite(o.grad_clip) and o.grad_clip > 0):
        raise _fail(source, "optim.grad_clip", f"must be a finite number > 0, got {o.grad_clip!r}")
    for name in ("ssim", "l1", "mse", "perceptual", "adversarial", "discriminator_lr"):
        _at_least(source, f"loss.{name}", getattr(loss, name), 0)
    weights = ("ssim", "l1", "mse", "perceptual", "adversarial")  # ReconstructionLoss's terms
    if getattr(loss, "ssdu", None) is None and not sum(getattr(loss, w) for w in weights) > 0:
        raise _fail(source, "loss", "the weights " + ", ".join(f"loss.{w}" for w in weights)
                    + " are all 0: there is nothing to train on; give at least one a weight > 0 "
                    "(or set loss.ssdu for self-supervised training)")
    if loss.adversarial and lr_problem(loss.discriminator_lr):
        raise _fail(source, "loss.discriminator_lr", lr_problem(loss.discriminator_lr))
    ssdu = getattr(loss, "ssdu", None)
    if ssdu is not None:
        if not (math.isfinite(ssdu.ratio) and 0 < ssdu.ratio < 1):
            raise _fail(source, "loss.ssdu.ratio", f"must be in (0, 1), got {ssdu.ratio!r}")
        _at_least(source, "loss.ssdu.splits", ssdu.splits, 1)
        _at_least(source, "loss.ssdu.view_parts", ssdu.view_parts, 2)
        if d.modality == "ct" and d.ct_views is not None and ssdu.view_parts > d.ct_views:
            raise _fail(source, "loss.ssdu.view_parts",
                        f"{ssdu.view_parts} view subsets of the data.ct_views {d.ct_views} views "
                        "kept: each subset needs at least one view; use at most data.ct_views")
        for i, b in enumerate(ssdu.acs_block):
            _at_least(source, f"loss.ssdu.acs_block[{i}]", b, 0)
        from mrirecon.training.ssdu import estimates_own_maps

        if d.modality == "mri" and estimates_own_maps(cfg.model.name, cfg.model.params):
            # the rule of the pipeline's adapt stage (OWN_MAPS): the loss reads the sample's maps
            own = "model.name" if cfg.model.name.lower().replace("-", "_") == "learned_maps" \
                else "model.params.estimate_sensitivities"
            raise _fail(source, own, f"{cfg.model.name!r} estimates its own coil sensitivities, "
                        "but loss.ssdu scores its image through the sample's coil maps (F S x on "
                        "the held-out k-space), a loss it can lower while the image worsens; "
                        "train a model that reconstructs with the sample's maps (modl, vn, "
                        "cascade, ...) or set model.params.estimate_sensitivities: false")
        if d.modality == "mri" and d.maps == "learned":
            raise _fail(source, "data.maps", "loss.ssdu scores the model's image through the "
                        "sample's coil maps (F S x on the held-out k-space); use espirit or walsh")
        for name in ("perceptual", "adversarial"):
            if getattr(loss, name):
                raise _fail(source, f"loss.{name}", "needs reference images; it cannot be "
                                                    "combined with loss.ssdu (self-supervised)")
    try:  # the mask functions' rule (undersample.fixed_seed's bound): they seed a numpy
        # RandomState; the epoch order seed * 1_000_003 overflowed torch's int64 at step 1 (2**45)
        check_seed("seed", cfg.seed, MAX_MASK_SEED + 1)
    except (TypeError, ValueError):
        raise _fail(source, "seed", f"must be an integer in [0, {MAX_MASK_SEED}] (2**32 - 1, the "
                    f"seeds of fastMRI's mask functions), got {cfg.seed!r}") from None
    for name in ("log_every", "val_every", "checkpoint_every"):
        _at_least(source, name, getattr(cfg, name), 0)
    _at_least(source, "val_max_slices", cfg.val_max_slices, 1)
    if (why := not_trained_by_config(cfg.model.name)) is not None:  # failed at step 1, data read
        raise _fail(source, "model.name", why)
    name = cfg.model.name.lower().replace("-", "_")
    kind = MODEL_MODALITY.get(name)
    if kind is not None and kind != d.modality:  # trained on the other's data, exit 0, then the
        # weights refused every input of their own modality ("these CT weights got complex data")
        theirs = [k for k, v in MODEL_MODALITY.items()  # those this command trains
                  if v == d.modality and k not in NOT_TRAINED_BY_CONFIG]
        raise _fail(source, "model.name",
                    f"{cfg.model.name!r} is {'an' if kind == 'mri' else 'a'} {kind.upper()} model "
                    f"(its data consistency needs {_NEEDS[kind]}), but data.modality is "
                    f"{d.modality!r}; train {'an' if d.modality == 'mri' else 'a'} {d.modality.upper()} model "
                    f"({', '.join(sorted(theirs))}) "
                    "or set data.modality")
    keywords = model_keywords(name) if name in _MODELS else None
    if keywords is not None:
        valid = model_defaults(name)
        check_params(name, cfg.model.params, valid, source=source, prefix="model.params",
                     extra=(*sorted(keywords - set(valid)), *_deprecated_aliases(valid)))
    if name in RECIPE_WARNINGS and _first_rank():  # once per torchrun job
        warnings.warn(f"{source}: {RECIPE_WARNINGS[name]}" if source else RECIPE_WARNINGS[name],
                      UserWarning, stacklevel=2)
    return cfg
