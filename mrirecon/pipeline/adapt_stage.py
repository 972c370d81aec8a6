"""The ``adapt:`` stage: scan-specific ZS-SSL fine-tuning of the learned model, per volume.

Called once per volume with all its prepared slices, before the reconstruct loop; returns the
model to reconstruct that volume with (an adapted copy: the loaded model, and so the weights on
disk, never change). With ``save_weights`` the adapted state dict and a model card are written
(atomically) to ``adapted/<name>.pt`` / ``.yaml`` beside the other outputs; the adaptation report
(validation-loss curve, stopping step, seconds) and the weights' sha256 are recorded in the
volume's result, hence in ``provenance.json``. A volume whose data cannot give the adaptation's
splits with these settings (:class:`~mrirecon.training.adapt.CannotAdapt`: e.g. too few acquired
columns outside ``adapt.acs_block``) is reconstructed by the unadapted model with a warning that
names the settings and counts (``adapt.stopped: skipped``, ``adapt.skipped``: why).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import nn

from mrirecon.pipeline.report import VolumeResult
from mrirecon.pipeline.schema import PipelineConfig
from mrirecon.training.weights import INHERITED_CARD_KEYS

log = logging.getLogger("mrirecon.pipeline")


#: What the adapted weights' card keeps of the original card: the data checks and the settings
#: a user may change (without them the adapted weights ran outside their range without a word,
#: and ``reconstruct.params.iterations`` was refused). The one list that ``save_model`` also
#: keeps for weights fine-tuned from a loaded model.
INHERITED = INHERITED_CARD_KEYS


def model_architecture(config: PipelineConfig) -> tuple[str, dict, dict]:
    """Model name and constructor parameters of the loaded model (the weights' card, with the
    pipeline's ``reconstruct.params`` on top), and the sections of its card listed in
    :data:`INHERITED`, for the adapted weights' card."""
    rc = config.reconstruct
    name, params, inherited = rc.method, dict(rc.params), {}
    if rc.weights:
        from mrirecon.training.weights import model_card

        try:
            card = model_card(rc.weights)
            name, params = card["model"]["name"], {**dict(card["model"].get("params", {})), **params}
            inherited = {k: card[k] for k in INHERITED if k in card}
        except (FileNotFoundError, ValueError):  # a bare state dict: the pipeline's own params
            pass
    return name, params, inherited


def adapt_volume(config: PipelineConfig, model: nn.Module, slices: list, output: Path, name: str,
                 result: VolumeResult) -> nn.Module:
    """Adapt a copy of ``model`` to ``slices`` (``(y, op)`` per slice) when ``adapt.enabled``."""
    ad = config.adapt
    if not ad.enabled or model is None:
        return model
    from mrirecon.training.adapt import (AdaptReport, CannotAdapt, adapt_model, column_mask,
                                         diverged_message)

    if ad.rows is not None and not all(column_mask(op) for _, op in slices):
        log.info("%s: adapt: on whole slices, not %d-row readout stripes: with a partial echo the "
                 "readout is not fully sampled, so its rows are not separate problems", name, ad.rows)
        ad = dataclasses.replace(ad, rows=None)
    skipped = None
    try:
        adapted, report = adapt_model(model, slices, ad)
    except CannotAdapt as exc:  # this scan's data cannot give the splits with these settings:
        # the input is still reconstructed, by the unadapted model (it failed: "too few acquired
        # columns outside the centre for a validation set", no key, no counts)
        adapted, report, skipped = model, AdaptReport(stopped="skipped"), str(exc).removeprefix("adapt: ")
    info = {"method": ad.method, **report.as_dict()}
    if report.stopped == "time_budget":  # how many steps fit depends on the machine and its load
        # the thread count too: another one sums in another order, and the weights and image
        # differ at float32 rounding (as they do on another CPU type or torch build)
        info["reproduce"] = f"--threads {torch.get_num_threads()} " + (
            f"--set adapt.time_budget_s=null --set adapt.steps={report.steps}"
            if report.steps else "--set adapt.enabled=false")
        log.info("%s: adapt: the %g s time budget allowed %d of %d steps on this machine (its "
                 "speed and load decide how many; the image depends on it): %s repeats this "
                 "run's adaptation bit for bit on a machine of the same CPU type and torch "
                 "build (elsewhere to float32 rounding)", name, ad.time_budget_s, report.steps,
                 ad.steps, info["reproduce"])
    for note in report.warnings:  # settings the data could not honour as asked
        result.warn(f"{name}: {note}")
    if skipped is not None:
        info["skipped"] = skipped
        result.warn(f"{name}: adapt skipped: {skipped}; the unadapted model reconstructs this volume")
    elif report.stopped == "unreliable":
        msg = (f"{name}: adapt skipped: the model's k-space prediction scores "
               f"{report.initial_val_loss:.3g} on the validation split, worse than predicting zero "
               "(2), so the loss cannot tell a better image from a worse one (coil maps "
               "cropped by calibrate.crop?); the shipped model reconstructs this volume")
        result.warn(msg)
    elif report.diverged is not None:  # a too large adapt.lr: the best state before it is kept
        msg = f"{name}: {diverged_message(report, ad.lr)}"
        result.warn(msg)
    elif report.best_step == 0:
        log.info("%s: adapt: no step of %d improved the validation loss (%.4g; %s): the shipped "
                 "model reconstructs this volume", name, report.steps, report.initial_val_loss,
                 report.stopped)
    else:
        log.info("%s: adapted in %.1f s, %d step(s) (%s), best step %d, validation loss %.4g -> "
                 "%.4g", name, report.seconds, report.steps, report.stopped, report.best_step,
                 report.initial_val_loss, report.best_val_loss)
    if ad.save_weights:
        from mrirecon.pipeline.run_state import sha256
        from mrirecon.training.run import save_model

        path = output / "adapted" / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        name_, params, inherited = model_architecture(config)
        extra = {**inherited, "adapted_from": config.reconstruct.weights, "adapt": info,
                 "input": result.input}
        save_model(adapted, path, name_, params, extra)
        result.outputs["adapted_weights"] = str(path)
        result.outputs["adapted_card"] = str(path.with_suffix(".yaml"))
        info["weights_sha256"] = sha256(path)
    result.adapt = info
    return adapted



#: Why a model that estimates its own coil sensitivities cannot be adapted: the SSDU loss
#: compares its image through the calibrated maps, not its own (E2E-VarNet lost 4.1 dB while
#: the loss fell). :func:`own_maps_refusal` adds E2E-VarNet's way out where its weights allow it.
OWN_MAPS = ("adapt: {method!r} estimates its own coil sensitivities, but the adaptation scores "
            "its image through the calibrated maps, a loss it can lower while the image worsens; "
            "adapt a model that reconstructs with the calibrated maps (mri_learned_adapt: MoDL)")


def own_maps_refusal(config: PipelineConfig, method: str) -> str:
    """:data:`OWN_MAPS` for ``config``'s model ``method`` (its architecture's name), and, for an
    E2E-VarNet whose parameters a run may set (weights without a model card, none, or a card that
    lists ``estimate_sensitivities`` under ``overridable``), the settings that make it use the
    calibrated maps. It said "or set estimate_sensitivities=false", which is no key; the full key
    on mri_varnet was then refused by the card of varnet_fastmri_diverse (overridable: none)."""
    message = OWN_MAPS.format(method=method)
    if str(method).lower().replace("-", "_") != "varnet":  # learned_maps: no such switch
        return message
    rc = config.reconstruct
    if rc.weights:
        from mrirecon.training.weights import model_card

        try:
            card = model_card(rc.weights)
        except (FileNotFoundError, ValueError):  # a bare state dict: the pipeline's parameters
            card = None
        if card is not None and "estimate_sensitivities" not in (card.get("overridable") or ()):
            return message
    calibrate = "" if config.calibrate.method in ("espirit", "walsh") else \
        " --set calibrate.method=espirit"
    return (f"{message}; or, for weights trained with model.params.estimate_sensitivities: "
            f"false, --set reconstruct.params.estimate_sensitivities=false{calibrate}")


def mri_pair(s) -> tuple:
    """``(y (1, C, H, W), sense(maps, mask))`` of a prepared (undersampled, calibrated) MRI
    slice, on the slice's device."""
    from mrirecon.pipeline.slice_mri import operator

    if s.trajectory is not None:
        raise ValueError("adapt needs Cartesian k-space (non-Cartesian data have no SSDU split "
                         "here yet)")
    if s.maps is None:
        raise ValueError("adapt needs calibrated coil maps (calibrate.method espirit or walsh) "
                         "and a model that reconstructs with them")
    y = s.kspace[None]
    return y, operator(s, s.maps[None].to(y.device))


def ct_pair(s, device: str) -> tuple:
    """``(line integrals (1, views, detectors), ct_operator(geometry))`` of an undersampled CT
    slice."""
    from mrirecon.operators.ct import cached_ct_operator

    return s.sinogram[None].to(device), cached_ct_operator(s.geometry, device)



def volume_hook(config: PipelineConfig, output: Path, name: str, result: VolumeResult):
    """``prepare_model(model, slices) -> model`` for the streaming runner: the volume's
    undersampled, calibrated slices (on the device) as ``(y, op)`` pairs into
    :func:`adapt_volume`."""

    def prepare_model(model: nn.Module, slices) -> nn.Module:
        if config.modality == "mri" and getattr(model, "sensitivity", None) is not None:
            raise ValueError(own_maps_refusal(config, config.reconstruct.method))
        if config.modality == "mri":  # an all-zero slice is written as zeros, not adapted to
            from mrirecon.pipeline.slice_mri import is_blank

            pairs = [mri_pair(s) for s in slices if not is_blank(s)]
        else:
            # the full device ("cuda:1"): its type alone put the data on cuda:0, the model on cuda:1
            pairs = [ct_pair(s, str(s.sinogram.device)) for s in slices]
        return adapt_volume(config, model, pairs, output, name, result)

    return prepare_model
