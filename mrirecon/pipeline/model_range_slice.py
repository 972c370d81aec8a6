"""What ``mrirecon run`` compares of a slice with a learned model's card (:func:`slice_properties`,
split from :mod:`mrirecon.pipeline.model_range`, which holds the comparison), the CT dose of data
that state none (:func:`unstated_dose`), what the messages call the model (:func:`card_label`)
and ``mrirecon run``'s check of one input (:class:`VolumeRanges`).

``mrirecon run`` checked the first slice of each input only, and named the model type: a CT
slice that a dropped projection left with 29 views (``ct_primal_dual_sim``: 30 .. 30) was
reconstructed without a word unless it was the first, the first slice's warning read as if it
concerned the whole input, and ``modl_brain_sim`` (128 x 128, 4-8 coils) and
``modl_fastmri_diverse`` (640 x 320-368, 8-12 coils) were both "the modl training range". Now
each slice whose checked quantities (:func:`slice_key`, cheap) differ from those of the slices
before is checked (what is costly to measure, the k-space SNR and the dose the noise fits, only
then), each message is said once naming its slices ("slice 1 of 2: views 29 is outside the
primal_dual_ct_sim training range 30 .. 30 (see its card mrirecon/weights/
primal_dual_ct_sim.yaml, 'known failures')"), and the weights are named.

A noisy sinogram without ``attrs/photons`` was not checked against the card's ``photons``
either, without a word (its provenance ``"photons": null`` is ``undersample.photons``): a
1024-photon file run through ``ct_primal_dual_sim`` (4096 .. 4096) was warned with the attribute
and not without it. Its dose is now the one its noise fits
(:func:`~mrirecon.training.ct_dose_check.noise_dose`), recorded in provenance as
``files[].calibration.photons_estimated``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrirecon.functional.density import centre_out_spokes
from mrirecon.sampling.nonuniform import nyquist_fraction


def card_label(model: Any) -> tuple[str | None, str]:
    """``(label, see)``: what the range messages call ``model`` and where they send the reader.
    Shipped weights (by name, or a path into the package's weights folder, as the pipeline
    loads them): their name and card (``"primal_dual_ct_sim"``, ``"(see its card
    mrirecon/weights/primal_dual_ct_sim.yaml, 'known failures')"``); weights from another file:
    its name (``model.pt``) and the card beside it; else ``None`` (the messages name the card's
    model type) and the card's known failures."""
    from mrirecon.io.weights import WEIGHTS_DIR
    from mrirecon.training.weights import card_path

    origin = getattr(model, "weights_origin", None)
    origin = origin if isinstance(origin, Mapping) else {}
    pt = Path(str(origin["path"])) if origin.get("path") else None
    if origin.get("name") or (pt is not None and pt.resolve().parent == WEIGHTS_DIR):
        stem = Path(str(origin.get("name") or pt)).stem  # (a pipeline resolves the name)
        return stem, f"(see its card mrirecon/weights/{stem}.yaml, 'known failures')"
    if pt is not None:
        return pt.name, f"(see its card {card_path(pt)}, 'known failures')"
    return None, "(see the model card's 'known failures')"


def slice_key(config: Any, s: Any) -> tuple:
    """What :func:`slice_properties` reads of slice ``s`` that can differ from slice to slice,
    cheaply: CT the image grid, views, beam, detectors and stated dose (a dropped projection
    leaves a slice fewer views); Cartesian MRI the k-space's shape, the rows and coils as
    acquired, the sampled / acquirable columns, the mask's centre band and a separate reference
    scan's band; non-Cartesian MRI the grid and the k-space's and trajectory's shapes. Slices of
    one key share the check of the first of them (what is costly, the k-space SNR and the dose
    the noise fits, is measured once)."""
    if config.modality == "ct":
        g = s.geometry
        return (tuple(g.image_shape), g.num_views, g.beam, g.num_detectors,
                getattr(s, "data_photons", None))
    shape = tuple(s.kspace.shape)
    if s.trajectory is not None:
        return (tuple(s.image_shape), shape, tuple(s.trajectory.shape),
                s.header.extra.get("trajectory"))
    from mrirecon.pipeline.reference_mri import calibration_width
    from mrirecon.pipeline.slice_mri import column_counts
    from mrirecon.pipeline.slice_snr import mask_band

    return (shape, s.acquired_rows, s.header.extra.get("acquired_coils"), column_counts(s),
            mask_band(s), None if s.calibration is None else calibration_width(s))


#: A message's words up to its first figure: the kind :class:`VolumeRanges` files it under (one
#: quantity's messages of other slices, other figures, are said on one line).
_KIND = re.compile(r"^[^\d]{1,60}")


class VolumeRanges:
    """``mrirecon run``'s training-range check of one input with ``model``'s card: :meth:`add`
    gives each slice's messages (checked where :func:`slice_key` differs from the slices
    before, else those slices' messages), by kind, for the volume's
    :class:`~mrirecon.pipeline.slice_messages.SliceMessages`, which says each once naming its
    slices; ``record`` the per-input provenance (``photons_estimated``: the dose the noise of
    data stating none fits, ``None`` where it could not be told)."""

    def __init__(self, config: Any, model: Any) -> None:
        self.config, self.model = config, model
        self.label, self.see = card_label(model)
        self.checked: dict[tuple, dict[str, str]] = {}
        self.record: dict[str, Any] = {}

    def add(self, s: Any, *, full_fov_maps: bool = False) -> dict[str, str]:
        """The messages of slice ``s`` by kind (text up to the first figure, numbered when a
        slice has two of one kind), each ending with where to read more (:func:`card_label`).
        ``full_fov_maps``: the model gets uncropped maps (the benchmark's)."""
        key = (slice_key(self.config, s), full_fov_maps)
        if key not in self.checked:
            from mrirecon.pipeline.model_range import range_warnings

            props = slice_properties(self.config, self.model, s, full_fov_maps=full_fov_maps)
            if "dose_margin" in props or "dose_unknown" in props:
                self.record.setdefault("photons_estimated", props.get("photons"))
            found: dict[str, str] = {}
            for msg in range_warnings(getattr(self.model, "model_card", None), label=self.label,
                                      **props):
                m = _KIND.match(msg)
                kind = "training_range: " + (m.group(0).strip() if m else "")
                kind += f" ({sum(k.startswith(kind) for k in found) + 1})" if kind in found else ""
                found[kind] = f"{msg} {self.see}"
            self.checked[key] = found
        return self.checked[key]


def unstated_dose(model: Any, s: Any) -> dict[str, Any]:
    """The dose of CT slice ``s`` that states none (no ``attrs/photons``, no
    ``undersample.photons``), for a card that states ``photons``: the one its noise fits
    (:func:`~mrirecon.training.ct_dose_check.noise_dose`, the dose check's estimator, from
    :data:`~mrirecon.training.ct_dose_check.NOISE_FREE`: any bin with counts enough), checked
    with :data:`~mrirecon.training.ct_dose_check.DOSE_RATIO` of slack (correct files read
    0.81-1.28x in their air), as ``photons`` / ``dose_setting`` / ``dose_margin``. Measured
    without air around the object the noise bounds the dose only from below (the object's
    edges add variance): used where that bound is above the card's range. Noise-free data (the
    air exactly constant, a dose above ``NOISE_FREE``, or no noise to measure and neither
    ``attrs/min_photon_count`` nor negative line integrals) are not checked, less noise than in training; noisy data whose
    dose cannot be told give ``dose_unknown`` (why), said "not checked"."""
    from mrirecon.pipeline.model_range import _interval, card_range
    from mrirecon.training.ct_dose_check import DOSE_RATIO, NOISE_FREE, _about, noise_dose

    iv = _interval((card_range(getattr(model, "model_card", None)) or {}).get("photons"))
    sino = getattr(s, "sinogram", None)
    if iv is None or sino is None:
        return {}
    found = noise_dose(sino, NOISE_FREE)
    if found is not None and found.photons > NOISE_FREE:
        return {}  # the air exactly constant (inf), or less noise than float32 holds: noise-free
    if found is not None and (found.air or found.photons > iv[1] * DOSE_RATIO):
        where = ("the air around the object" if found.air else
                 f"the bins of line integral near {found.level:.2g} (no air around the object: "
                 "a lower bound)")
        return dict(photons=float(_about(found.photons)), dose_margin=DOSE_RATIO,
                    dose_setting=f"no attrs/photons: estimated from the sinogram's noise along "
                                 f"the detector in {where}, {found.samples} detector bins, to "
                                 f"within {DOSE_RATIO:g}x")
    if found is not None:  # a lower bound inside or below the range
        why = (f"the file states no dose (attrs/photons) and its noise, measured without air "
               f"around the object, says only at least about {_about(found.photons)} photons "
               "per bin")
    else:
        why = getattr(s, "data_noise", None) or _negative(sino)
        if why is None:
            return {}  # nothing says noise: noise-free, as undersample.photons takes it
        why = (f"the file states no dose (attrs/photons) and the data hold noise ({why}), too "
               "little of it to measure along the detector")
    return dict(dose_unknown=why)


def _negative(sinogram: Any) -> str | None:
    """Why ``sinogram`` holds noise by its line integrals (``undersample.photons``' rule,
    :func:`~mrirecon.sampling.views.check_noise_free`), ``None`` when they do not say so."""
    from mrirecon.sampling.views import check_noise_free

    try:
        check_noise_free(sinogram, "model range")
    except ValueError:
        return "negative line integrals, which only noise gives"
    return None


def slice_properties(config: Any, model: Any, s: Any, *,
                     full_fov_maps: bool = False) -> dict[str, Any]:
    """What :func:`~mrirecon.pipeline.model_range.range_warnings` compares of slice ``s`` of the stages of ``config`` with
    ``model``'s card: non-Cartesian MRI its image grid, coils, readouts, trajectory and (radial)
    the share of Nyquist's spokes; Cartesian MRI the matrix the model gets and the rows as
    acquired, coils (and those acquired, when compressed), acceleration, the calibration band
    (``acs_columns``: ``reference_mri.calibration_width``; the mask's for E2E-VarNet), the
    k-space SNR (for a card that states ``snr_db``), ``calibrate.method`` and the ESPIRiT crop;
    CT the image grid, views, beam, detectors and dose (``undersample.photons``, else the
    data's own, else the dose the noise fits: :func:`unstated_dose`). ``full_fov_maps``: the model gets uncropped maps (the benchmark's)."""
    if config.modality == "mri" and s.trajectory is not None:  # the image grid, the readouts
        kind = s.header.extra.get("trajectory")
        radial = kind is None or str(kind).lower() == "radial"
        return dict(matrix=tuple(s.image_shape), coils=int(s.kspace.shape[0]),
                    acquired_coils=s.header.extra.get("acquired_coils"),
                    maps=_maps_given(config, s),
                    spokes=int(s.trajectory.shape[0]), trajectory=kind,
                    nyquist_fraction=nyquist_fraction(
                        int(s.trajectory.shape[0]), tuple(s.image_shape),
                        centre_out=centre_out_spokes(s.trajectory)) if radial else None)
    if config.modality == "mri":  # the matrix the model gets, and the rows as acquired
        from mrirecon.pipeline.reference_mri import calibration_width
        from mrirecon.pipeline.slice_mri import column_counts
        from mrirecon.pipeline.slice_snr import kspace_snr_db, mask_band
        from mrirecon.pipeline.stages_mri import model_takes_maps

        sampled, acquirable = column_counts(s)  # padding columns are not undersampled ones
        acc = acquirable / max(sampled, 1)
        band = mask_band(s)  # the imaging mask's centre band, once
        # the band the coil maps calibrate from: the pipeline's calibrate stage's (a separate
        # reference scan when the slice has one), or the mask's for a model that estimates its
        # own maps from the k-space's centre (E2E-VarNet)
        acs = (calibration_width(s) if model_takes_maps(model)
               else band[1] - band[0])
        snr = kspace_snr_db(config, s, band) if _states(model, "snr_db") else None
        rows = int(s.kspace.shape[-2])
        recon_rows = None if s.acquired_rows else s.header.oversampled_readout_rows(rows)
        return dict(matrix=(rows, int(s.kspace.shape[-1])),
                    coils=int(s.kspace.shape[0]), acquired_rows=s.acquired_rows,
                    recon_rows=recon_rows,
                    acquired_coils=s.header.extra.get("acquired_coils"),
                    maps=_maps_given(config, s), acceleration=acc,
                    maps_crop=0.0 if full_fov_maps else _maps_crop(config),
                    noise_schedule=_noise_schedule(model), acs_columns=acs,
                    snr_db=None if snr is None else snr[0],
                    **({} if snr is None else {"snr_source": snr[1]}))
    g = s.geometry  # CT: the image grid, the views kept, the beam, the detector and the dose
    u, own = config.undersample, getattr(s, "data_photons", None)  # (tests pass bare geometry)
    lowered = u.enabled and u.photons is not None and (not own or u.photons < own)
    out = dict(matrix=tuple(g.image_shape), views=g.num_views, beam=g.beam,
               detectors=g.num_detectors, noise_schedule=_noise_schedule(model))
    if lowered or own:
        return {**out, "photons": u.photons if lowered else own,
                "dose_setting": "undersample.photons" if lowered else "the data's own"}
    return {**out, **unstated_dose(model, s)}


def _states(model: Any, key: str) -> bool:
    """Whether ``model``'s card states ``training_range[key]`` (what is costly to measure is
    measured only then)."""
    rng = (getattr(model, "model_card", None) or {}).get("training_range")
    return isinstance(rng, Mapping) and key in rng


def _noise_schedule(model: Any) -> tuple[float, float] | None:
    """``(sigma_min, sigma_max)`` of a PnP schedule model (DPIR), ``None`` for other models."""
    lo, hi = getattr(model, "sigma_min", None), getattr(model, "sigma_max", None)
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        return float(lo), float(hi)
    return None


def _maps_given(config: Any, s: Any) -> str | None:
    """``calibrate.method`` of a multi-coil slice (one coil: the maps are ones whatever it
    says), compared with the card's ``maps``."""
    return None if int(s.kspace.shape[0]) == 1 else str(config.calibrate.method)


def _maps_crop(config: Any) -> float | None:
    """The ESPIRiT crop of the coil maps the model gets (``None``: no ESPIRiT maps)."""
    cal = config.calibrate
    return float(cal.crop) if cal.method == "espirit" else None
