"""Warn when data fall outside the training range stated on a model card.

A card's optional ``training_range`` mapping lists what the model saw in training::

    training_range:
      matrix: {min: [H, W], max: [H, W]}   # Cartesian MRI k-space (readout x phase), the
                                            # non-Cartesian MRI image grid, or CT image size
      coils: [min, max]
      accelerations: [min, max]             # Cartesian MRI: acquirable / sampled columns
      spokes: [min, max]                    # non-Cartesian MRI: readouts (spokes, interleaves)
      trajectory: [radial, ...]             # non-Cartesian MRI: ISMRMRD encoding/trajectory
                                            # (absent, and no spokes / nyquist_fraction: the
                                            # model was trained on Cartesian k-space only)
      views: [min, max]                     # CT projection angles
      geometry: [parallel, ...]             # CT beam types (parallel, fan)
      detectors: [min, max]                 # CT detector elements per view
      nyquist_fraction: [min, max]          # radial MRI: spokes / (pi/2 max(H, W))
      noise_levels: [min, max]              # a noise-conditioned denoiser's sigma (PnP-DPIR)
      photons: [min, max]                   # CT dose, incident photons per bin (.inf: noise-free)
      readout_oversampling: [min, max]      # Cartesian MRI: encoded / recon readout rows (1: none)
      maps: [espirit, ...]                  # MRI: the coil maps trained with (data.maps)
      acs_columns: [min, max]               # Cartesian MRI: contiguous sampled columns through DC
      snr_db: [min, max]                    # Cartesian MRI: k-space SNR trained / tuned at (dB)

The matrix is compared with the one the model gets: after ``preprocess.remove_oversampling``'s
exact readout crop that is the recon grid, and a card that states ``readout_oversampling``
accepts its training matrix and that matrix's recon grid (weights trained on 32 x 32 k-space,
run on 2x-oversampled 64 x 32 data that the crop brings to 32 x 32, warned "matrix 64 x 32 is
outside ... 32 x 32"). A card without it (the shipped ones) is checked on the data as acquired.
Coils compressed by ``preprocess.coil_compression`` are named so, with the acquired count (a
15-coil model on a 15-coil file warned of "coils 12"). ``maps`` is compared with
``calibrate.method`` (``none``: unit maps, ``data.maps: learned``) for a model that uses the
sample's maps; ``photons`` with ``undersample.photons``, else the data's own dose, else (no
``attrs/photons``) the dose their noise fits, within its factor of uncertainty; noisy data whose
dose cannot be told are warned that it is not checked, noise-free data are not checked (less
noise than in training: :func:`~mrirecon.pipeline.model_range_slice.unstated_dose`). Cards of
an older ``mrirecon train`` without ``maps`` / ``photons`` are read from what they record
(:func:`card_range`); a card without any ``training_range`` is warned as a card-less ``.pt`` is
(:func:`unchecked_range`).

``acs_columns`` is the width of the run of sampled columns through the k-space centre (the
calibration band ESPIRiT and E2E-VarNet estimate coil maps from), padding columns left out:
``mri_pnp_brain_sim`` (trained and tuned on 10-21 columns) got 5 columns from fastMRI's 8x
centre fraction 0.04 on 128 columns and lost ~5 dB to TV without a word, its acceleration in
range. ``snr_db`` is compared with :func:`~mrirecon.pipeline.slice_snr.kspace_snr_db`'s estimate, on its lower end only and
with :data:`SNR_DB_MARGIN` (see there): ``mri_pnp`` (its lam tuned on 28-34 dB data) lost 7.5 dB
to TV on 15 dB k-space without a word.

``nyquist_fraction`` (radial MRI) is a ratio of two of these: spokes / (pi/2 max(H, W)), the
share of Nyquist's spoke count (centre-out spokes count half). The intervals are checked one by
one, so a model trained at 64 x 64 with 40 spokes and at 128 x 128 with 96 (``modl_radial_sim``:
0.40 and 0.48 of Nyquist's spokes) took 128 x 128 with 40 spokes (0.20) for inside its range, and
lost 5.8-8 dB to TV without a word; the ratio says how undersampled the data are.

A card without ``trajectory`` (nor ``spokes`` / ``nyquist_fraction``, which only non-Cartesian
training states) describes a model trained on Cartesian k-space: a radial or spiral slice is
outside its range. Before that rule no Cartesian card warned: ``modl_brain_sim`` and
``patch_gmm`` (``mri_unrolled_em``) on a 128 x 128 radial file (8 coils, 96 spokes) gave 28.8 /
27.5 dB, below a plain CG-SENSE (30.3) and 13 dB below ``mri_radial_cs``, without a word.

:func:`range_warnings` compares one slice's properties with it and returns readable messages;
:func:`~mrirecon.pipeline.model_range_slice.slice_properties` reads the properties off a slice
of the pipeline's stages, the one check of ``mrirecon run`` (each slice whose checked quantities
differ from those of the slices before: :class:`~mrirecon.pipeline.model_range_slice.
VolumeRanges`, recorded per input naming it, the slices and the weights) and ``mrirecon bench``
(the same, per volume and learned method: :class:`~mrirecon.bench.messages.RangeMessages`; it
checked the first slice of each volume only). :func:`warn_slice_outside_range` is that check of
one slice, logging each distinct message once per model, as :func:`warn_outside_range` does.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrirecon.pipeline.model_range_slice import (  # noqa: F401 (_noise_schedule: its users')
    _noise_schedule, card_label, slice_properties)
from mrirecon.sampling.nonuniform import nyquist_fraction
from mrirecon.training.weights import RANGE_INTERVALS, RANGE_KINDS

log = logging.getLogger("mrirecon.pipeline")

def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


def range_warnings(card: Mapping[str, Any] | None, *, matrix: tuple[int, int] | None = None,
                   coils: int | None = None, acceleration: float | None = None,
                   views: int | None = None, spokes: int | None = None,
                   trajectory: str | None = None, maps_crop: float | None = None,
                   beam: str | None = None, detectors: int | None = None,
                   nyquist_fraction: float | None = None,
                   noise_schedule: tuple[float, float] | None = None,
                   acquired_rows: int | None = None, recon_rows: int | None = None,
                   acquired_coils: int | None = None, maps: str | None = None,
                   photons: float | None = None, dose_setting: str = "undersample.photons",
                   dose_margin: float = 1.0, dose_unknown: str | None = None,
                   acs_columns: int | None = None, snr_db: float | None = None,
                   snr_source: str = "the outer k-space", label: str | None = None) -> list[str]:
    """Messages for every property outside the card's range (:func:`card_range`: its
    ``training_range``, what older cards lack filled in; empty if none, or no card).

    ``beam`` (CT: ``"parallel"`` / ``"fan"``) is compared with the card's ``geometry`` list,
    ``detectors`` (CT detector elements per view) with its ``detectors`` interval.
    ``nyquist_fraction`` (radial MRI) is compared with the card's interval of that name; when not
    given it is computed from ``spokes`` and ``matrix`` (full spokes) unless ``trajectory``
    names another kind than radial. ``noise_schedule`` ``(sigma_min, sigma_max)`` of a PnP
    schedule is compared with the card's ``noise_levels``: a denoiser without biases extrapolates
    linearly in its sigma input, so ``mri_pnp`` with ``sigma_max`` 100 (trained to 0.25) gave an
    image 55x too bright at -23 dB, with only a plausibility warning blaming the coil maps.

    ``matrix`` is what the model gets; ``acquired_rows`` the readout rows as acquired when the
    pipeline cropped the oversampling, ``recon_rows`` the rows that crop would keep of
    oversampled data left uncropped (:func:`_matrix_warnings`). ``acquired_coils``: the coils
    acquired when ``preprocess.coil_compression`` made ``coils`` of them. ``maps``: the run's
    ``calibrate.method``, compared with the card's ``maps``. ``photons``: the CT dose the model
    gets, ``dose_setting`` where it comes from; ``dose_margin`` > 1 for a dose estimated from the
    data's noise (said "about", warned beyond that factor outside the card's interval);
    ``dose_unknown``: why no dose could be told of noisy data (:func:`_dose_warnings`).
    ``label``: what the messages call the model (the weights' name,
    :func:`~mrirecon.pipeline.model_range_slice.card_label`), default the card's model type
    (two shipped cards share each type with other ranges). ``acs_columns``: the Cartesian
    slice's contiguous sampled columns through DC; ``snr_db``: its k-space SNR estimate (:func:`~mrirecon.pipeline.slice_snr.kspace_snr_db`,
    ``snr_source`` what it was estimated from), checked by :func:`_snr_warnings`."""
    rng = card_range(card)
    if rng is None:
        return []
    kind = str((card.get("model") or {}).get("name", "model"))
    name = label or kind
    out = _matrix_warnings(rng, name, matrix, acquired_rows, recon_rows)
    named = {"trajectory": trajectory, "geometry": beam}
    for key in RANGE_KINDS:
        value, kinds = named.get(key), rng.get(key)
        if value and isinstance(kinds, (list, tuple)) and kinds and \
                value.lower() not in {str(k).lower() for k in kinds}:
            what = f"{value}-beam geometry" if key == "geometry" else f"{key} {value}"
            out.append(f"{what} is outside the {name} training range "
                       f"({', '.join(map(str, kinds))})")
    out += _cartesian_card_warnings(rng, name, trajectory, spokes)
    given = {"coils": coils, "accelerations": acceleration, "views": views, "spokes": spokes,
             "maps_crop": maps_crop, "detectors": detectors,
             "acs_columns": acs_columns}  # nyquist_fraction, snr_db: below
    for key in RANGE_INTERVALS:
        value = given.get(key)
        what = {"accelerations": "acceleration", "spokes": "readouts (spokes / interleaves)",
                "maps_crop": "the coil maps' ESPIRiT crop (calibrate.crop)",
                "detectors": "detector count",
                "acs_columns": "centre band (contiguous sampled columns through the k-space "
                               "centre, which the coil maps are calibrated from)"}.get(key, key)
        iv = _interval(rng.get(key))
        # a mask's effective acceleration acquirable / sampled columns differs from its nominal
        # rate by the rounding of the line count and the centre band (fastMRI's 4x on 368 columns
        # samples 93: 3.96); 5 % slack keeps such masks inside a card's "4 .. 8"
        slack = 0.05 * float(value) if key == "accelerations" and value is not None else 1e-6
        if key == "spokes" and iv is not None and value is not None and float(value) > iv[1] \
                and _interval(rng.get("nyquist_fraction")) is not None:
            continue  # more readouts than trained: the share of Nyquist (below) judges them
        if value is not None and iv is not None and not iv[0] - slack <= float(value) <= iv[1] + slack:
            if key == "coils" and acquired_coils is not None:
                out.append(_compressed_coils_warning(name, int(value), acquired_coils, iv))
                continue
            out.append(f"{what} {float(value):g} is outside the {name} training range "
                       f"{iv[0]:g} .. {iv[1]:g}")
    out += _maps_warnings(card, rng, name, maps)
    out += _dose_warnings(rng, name, photons, dose_setting, pnp=_plug_and_play(kind),
                          margin=dose_margin, unknown=dose_unknown)
    out += _snr_warnings(rng, name, snr_db, snr_source, pnp=_plug_and_play(kind))
    out += _undersampling_warnings(rng, name, matrix, spokes, trajectory, nyquist_fraction)
    iv = _interval(rng.get("noise_levels"))
    if noise_schedule is not None and iv is not None and not (
            iv[0] * (1 - 1e-6) <= min(noise_schedule) and max(noise_schedule) <= iv[1] * (1 + 1e-6)):
        out.append(f"the noise schedule sigma_max {max(noise_schedule):g} .. sigma_min "
                   f"{min(noise_schedule):g} (reconstruct.params) is outside the noise levels "
                   f"{name}'s denoiser was trained on, {iv[0]:g} .. {iv[1]:g}: it extrapolates "
                   "there")
    return out


#: ``mrirecon train`` commands whose card states no dose before 1eabb06 (2788377 and older): both
#: simulate at :data:`mrirecon.training.ct_staged.CT_PHOTONS` (4096 photons per bin, since they
#: were added) and take no dose option.
_FIXED_DOSE_TRAINERS = re.compile(r"\bmrirecon train (primal_dual_ct|staged_ct)\b")


def card_range(card: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The training range of ``card``: its ``training_range`` (``None`` when it has none), with
    fields that cards of an older ``mrirecon train`` lack taken from what they record instead:
    ``maps`` from ``training.config.data.maps`` (an MRI config: the dataclass default was
    recorded, ``learned`` before 1eabb06), ``photons`` from ``training.config.data.ct_photons``
    (a CT config that set it; otherwise the files' own dose, which the card does not say) or
    4096 for ``train primal_dual_ct`` / ``staged_ct`` (:data:`_FIXED_DOSE_TRAINERS`). The card's
    own fields win. Before, such cards were checked on neither: a MoDL trained on unit maps ran
    with ESPIRiT maps, LoDoPaB weights at 1024 photons, without a word."""
    rng = (card or {}).get("training_range")
    if not isinstance(rng, Mapping):
        return None
    training = card.get("training")
    training = training if isinstance(training, Mapping) else {}
    config = training.get("config")
    data = config.get("data") if isinstance(config, Mapping) else None
    recorded: dict[str, Any] = {}
    if isinstance(data, Mapping):
        modality = str(data.get("modality", "mri")).lower()
        if modality == "mri" and isinstance(data.get("maps"), str):
            recorded["maps"] = [data["maps"]]
        photons = data.get("ct_photons")
        if modality == "ct" and isinstance(photons, (int, float)) and not isinstance(photons, bool):
            recorded["photons"] = [float(photons)] * 2
    command = training.get("command")
    if isinstance(command, str) and _FIXED_DOSE_TRAINERS.search(command):
        from mrirecon.training.ct_staged import CT_PHOTONS

        recorded["photons"] = [CT_PHOTONS, CT_PHOTONS]
    missing = {k: v for k, v in recorded.items() if rng.get(k) is None}
    return {**rng, **missing} if missing else rng


def unchecked_range(model: Any) -> str | None:
    """The warning for ``model`` whose card has no ``training_range`` (cards of ``mrirecon
    train`` before 2788377 hold only ``model:``; hand-written ones), in the words of a card-less
    ``.pt`` (:func:`~mrirecon.training.weights.unchecked_range_note`); ``None`` for a model
    without a card (its loader says so) or with a range. Such cards got no warning on 96 x 96,
    8-coil, 8x data, while weights without any card were told that nothing is checked."""
    from mrirecon.training.weights import card_path, unchecked_range_note

    card = getattr(model, "model_card", None)
    if not isinstance(card, Mapping) or isinstance(card.get("training_range"), Mapping):
        return None
    origin = getattr(model, "weights_origin", None)
    origin = origin if isinstance(origin, Mapping) else {}
    if origin.get("path"):
        where = str(card_path(Path(origin["path"])))
    else:
        where = f"the model card of {origin.get('name') or (card.get('model') or {}).get('name')}"
    return unchecked_range_note(f"{where} has no training_range (a card of an older mrirecon "
                                "train, or written by hand)",
                                "add one (the keys of mrirecon.pipeline.model_range: matrix, "
                                "coils, accelerations, maps; CT views, geometry, detectors, "
                                "photons) or retrain with this version, whose cards state it")


def _matrix_warnings(rng: Mapping[str, Any], name: str, matrix: tuple[int, int] | None,
                     acquired_rows: int | None, recon_rows: int | None) -> list[str]:
    """The message when ``matrix`` (what the model gets) is outside the card's matrix, naming
    ``preprocess.remove_oversampling`` where the other setting would give the model a matrix
    it was trained on. A card with ``readout_oversampling`` accepts its matrix (as acquired in
    training, which never crops) and that matrix's recon grid (rows / oversampling: the crop is
    an exact smaller problem, 20.22 vs 20.19 dB for weights trained on 2x-oversampled files);
    a card without it is checked on the rows as acquired (``acquired_rows``), as before."""
    m = rng.get("matrix")
    if matrix is None or not (isinstance(m, Mapping) and "min" in m and "max" in m):
        return []
    lo, hi = [int(v) for v in m["min"]], [int(v) for v in m["max"]]
    cols = int(matrix[1])
    trained = f"{lo[0]} x {lo[1]} .. {hi[0]} x {hi[1]}"
    over = _interval(rng.get("readout_oversampling"))
    if over is None:  # the rows as acquired
        rows = int(acquired_rows or matrix[0])
        if lo[0] <= rows <= hi[0] and lo[1] <= cols <= hi[1]:
            return []
        return [f"matrix {rows} x {cols} is outside the {name} training range {trained}"]

    def fits(rows: int) -> bool:  # as trained, or its recon grid
        return lo[1] <= cols <= hi[1] and (
            lo[0] <= rows <= hi[0] or lo[0] / over[1] - 1e-6 <= rows <= hi[0] / over[0] + 1e-6)

    if fits(int(matrix[0])):
        return []
    if acquired_rows is not None:
        msg = (f"matrix {matrix[0]} x {cols} (the {acquired_rows} x {cols} acquired, its readout "
               f"oversampling removed: preprocess.remove_oversampling) is outside the {name} "
               f"training range {trained}")
        if fits(int(acquired_rows)):
            msg += (f": set preprocess.remove_oversampling=false (it was trained on "
                    f"{acquired_rows} rows as acquired)")
        return [msg]
    msg = f"matrix {matrix[0]} x {cols} is outside the {name} training range {trained}"
    if recon_rows is not None and fits(int(recon_rows)):
        msg += (f": the readout is oversampled ({matrix[0]} rows for a recon grid of "
                f"{recon_rows}); set preprocess.remove_oversampling=true")
    return [msg]


def _compressed_coils_warning(name: str, coils: int, acquired: int,
                              iv: tuple[float, float]) -> str:
    """The message when the ``coils`` virtual coils ``preprocess.coil_compression`` made of the
    ``acquired`` ones are outside the card's coil interval ``iv`` (training never compresses)."""
    msg = (f"coils {coils} (preprocess.coil_compression={coils} of the {acquired} acquired) is "
           f"outside the {name} training range {iv[0]:g} .. {iv[1]:g}")
    if iv[0] <= acquired <= iv[1]:
        return msg + (f": it was trained on uncompressed coils; set "
                      f"preprocess.coil_compression=null (or at least {iv[0]:g})")
    if acquired > iv[1]:
        return msg + f": set preprocess.coil_compression to {iv[0]:g} .. {iv[1]:g}"
    return msg


def _maps_warnings(card: Mapping[str, Any], rng: Mapping[str, Any], name: str,
                   method: str | None) -> list[str]:
    """The message when ``calibrate.method`` (``method``; ``none`` gives unit maps, the
    training's ``data.maps: learned``) gives a model that uses the sample's coil maps other maps
    than the card's ``maps``. Models that estimate their own (E2E-VarNet) are not checked."""
    from mrirecon.training.ssdu import estimates_own_maps

    kinds = [str(k).lower() for k in rng.get("maps") or ()]
    if method is None or not kinds:
        return []
    model = card.get("model") or {}
    if estimates_own_maps(str(model.get("name", "")), model.get("params") or {}):
        return []
    kind = method if method in ("espirit", "walsh") else "learned"
    if kind in kinds:
        return []
    unit = ": unit maps 1/sqrt(C), a coil sum" if kinds == ["learned"] else ""
    fix = "none" if kinds[0] == "learned" else kinds[0]
    msg = (f"coil maps {method} (calibrate.method) are outside the {name} training range "
           f"({', '.join(kinds)}, data.maps{unit}): set calibrate.method={fix}")
    return [msg + (", or retrain with data.maps: espirit" if unit else "")]


def _dose_warnings(rng: Mapping[str, Any], name: str, photons: float | None,
                   setting: str, *, pnp: bool = False, margin: float = 1.0,
                   unknown: str | None = None) -> list[str]:
    """The message when the CT dose the model gets (``photons`` per bin, from ``setting``) is
    outside the card's ``photons`` (``inf``: trained on noise-free data); for a dose estimated
    from the data's noise (``margin`` > 1, its factor of uncertainty) only beyond ``margin``.
    Without a dose, ``unknown`` (why noisy data have none) says that the range is not checked:
    a noisy sinogram without ``attrs/photons`` was skipped without a word. ``pnp``: the model is
    plug-and-play (:func:`_plug_and_play`)."""
    iv = _interval(rng.get("photons"))
    if iv is None:
        return []

    def dose(v: float) -> str:
        return "noise-free" if math.isinf(v) else f"{v:g}"

    trained = "noise-free" if math.isinf(iv[0]) else f"{dose(iv[0])} .. {dose(iv[1])}"
    if photons is None:
        return [] if unknown is None else [
            f"dose unknown: {unknown}: it was not checked against the {name} training range "
            f"{trained} photons per bin; state the file's dose (attrs/photons: the incident "
            "photons per bin of the noise it holds)"]
    slack = max(float(margin), 1 + 1e-6)
    if iv[0] / slack <= float(photons) <= iv[1] * slack:
        return []
    fix = ("tune reconstruct.params (lam, sigma_min) for this dose" if pnp else
           f"retrain with data.ct_photons={float(photons):g}")
    about = "about " if margin > 1 else ""
    return [f"dose {about}{float(photons):g} photons per bin ({setting}) is outside the {name} "
            f"training range {trained}: {fix}, or use ct_fbp / ct_tv"]


def _plug_and_play(name: str) -> bool:
    """Whether model ``name`` is a plug-and-play prior, whose card's dose / SNR are those its
    schedule was tuned at (the denoiser saw neither): retuning, not retraining, fits it."""
    return str(name).lower().startswith(("pnp", "red"))


#: dB below a card's ``snr_db`` before :func:`~mrirecon.pipeline.slice_snr.kspace_snr_db` warns. The outer readout rows'
#: corners it reads (:func:`~mrirecon.pipeline.checks_noncart.outer_noise`) also hold the
#: object's own high frequencies, which count as noise, so the estimate reads low on clean data
#: (fully sampled and 4x, seeds 101 and 7): 21.6-25.6 dB for 30 dB simulated brains at 96 x 96 /
#: 128 x 128, 29.9-30.0 at 256 x 256 and 320 x 320 (2x readout oversampling), 22.8-27.8 for
#: 50 dB at 128 x 128; where noise dominates it is close, 13.9-15.0 dB for 15 dB and 17.9-19.5
#: for 20 dB data. At 64 x 64 (the object filling the field of view) 30 dB read 13.9-23.2. With
#: 10 dB a 28 dB lower bound warns below an estimate of 18 dB.
SNR_DB_MARGIN = 10.0


def _snr_warnings(rng: Mapping[str, Any], name: str, snr_db: float | None,
                  source: str, *, pnp: bool = False) -> list[str]:
    """The message when the slice's k-space SNR estimate ``snr_db`` lies more than
    :data:`SNR_DB_MARGIN` below the card's ``snr_db``. Above the interval is not checked: less
    noise than in training (``mri_pnp`` stayed level with TV at 40 and 50 dB), as noise-free
    CT data are not checked against ``photons``."""
    iv = _interval(rng.get("snr_db"))
    if snr_db is None or iv is None or not snr_db < iv[0] - SNR_DB_MARGIN:
        return []
    fix = ("its schedule (reconstruct.params.lam) was tuned at that SNR: retune it for these "
           "data (lam 3e-5 brought mri_pnp level with TV at 10-15 dB)" if pnp
           else "retrain on data of this SNR")
    return [f"k-space SNR about {snr_db:.1f} dB (estimated from {source}) is below the {name} "
            f"training range {iv[0]:g} .. {iv[1]:g} dB: {fix}, or use mri_tv / mri_cs"]


#: What a card states only for a model trained on non-Cartesian data.
NONCARTESIAN_KEYS = ("trajectory", "spokes", "nyquist_fraction")


def _cartesian_card_warnings(rng: Mapping[str, Any], name: str, trajectory: str | None,
                             spokes: int | None) -> list[str]:
    """The message when a non-Cartesian slice (its ``trajectory`` kind other than Cartesian, or
    ``spokes`` given: only non-Cartesian slices have readouts counted so) meets a card of a
    model trained on Cartesian k-space (none of :data:`NONCARTESIAN_KEYS` in its range)."""
    kind = str(trajectory) if trajectory else None
    if (kind is None or kind.lower() == "cartesian") and spokes is None:
        return []
    if any(key in rng for key in NONCARTESIAN_KEYS):
        return []
    kind = kind if kind and kind.lower() != "cartesian" else "non-Cartesian"
    return [f"{kind} k-space is outside the {name} training range: a model card without "
            "training_range.trajectory describes a model trained on Cartesian k-space only; "
            f"for {kind} data run mri_radial_cs (or mri_radial_learned)"]


def _undersampling_warnings(rng: Mapping[str, Any], name: str, matrix: tuple[int, int] | None,
                            spokes: int | None, trajectory: str | None,
                            fraction: float | None) -> list[str]:
    """The message when the slice's share of Nyquist's spokes (``fraction``, or computed from
    ``spokes`` and ``matrix`` for radial data) is below the card's ``nyquist_fraction`` (checked,
    like every interval of ``training_range``, when the card is read). Only the lower end: more
    spokes than trained make the problem easier (``mri_radial_learned`` on a 64 x 64 brain gained
    1.2 / 1.4 dB at 0.64 / 0.96 of Nyquist over its 0.40, level with TV), and every default
    ``mrirecon simulate --trajectory radial`` file (0.64) was warned; nor does a card's
    ``spokes`` interval warn above its end when it states ``nyquist_fraction``."""
    iv = _interval(rng.get("nyquist_fraction"))
    if iv is None:
        return []
    radial = trajectory is None or str(trajectory).lower() == "radial"
    if fraction is None and radial and spokes is not None and matrix is not None:
        fraction = nyquist_fraction(spokes, matrix)
    if fraction is None or fraction >= iv[0] - 1e-6:  # denser than trained: an easier problem
        return []  # (64 x 64 at 0.64 / 0.96 of Nyquist: 39.4 / 39.6 dB against 38.2 in range)
    n = max(int(matrix[0]), int(matrix[1])) if matrix is not None else None
    what = (f"{spokes} spokes on a {matrix[0]} x {matrix[1]} grid, {fraction:.3g} of Nyquist's "
            f"{int(math.pi / 2 * n)} (pi/2 x {n}),") if spokes is not None and n else \
        f"{fraction:.3g} of Nyquist's spoke count"
    return [f"undersampling: {what} is below the {name} training range {iv[0]:g} .. {iv[1]:g} "
            "of Nyquist (spokes / (pi/2 x matrix))"]


def warn_outside_range(model: Any, **properties: Any) -> list[str]:
    """Log (once per model and message) the :func:`range_warnings` of ``model.model_card``,
    naming the weights as ``mrirecon run`` does (:func:`card_label`), and (once per model, not
    returned) :func:`unchecked_range` for a card without a range."""
    card = getattr(model, "model_card", None)
    msgs = range_warnings(card, **{"label": card_label(model)[0], **properties})
    seen = model.__dict__.setdefault("_range_warned", set()) if card is not None else set()
    note = unchecked_range(model)
    if note is not None and note not in seen:  # not a range message: logged, not returned
        seen.add(note)
        log.warning("%s", note)
    for msg in msgs:
        if msg not in seen:
            seen.add(msg)
            log.warning("%s %s; results may be unreliable", msg, card_label(model)[1])
    return msgs


def warn_slice_outside_range(config: Any, model: Any, s: Any, *,
                             full_fov_maps: bool = False) -> list[str]:
    """:func:`warn_outside_range` of ``model`` for slice ``s`` (:func:`slice_properties`), logged
    once per model and message; returns the messages."""
    return warn_outside_range(model, **slice_properties(config, model, s,
                                                        full_fov_maps=full_fov_maps))


def slice_range_warnings(config: Any, model: Any, s: Any) -> list[str]:
    """:func:`range_warnings` of ``model``'s card for slice ``s`` (:func:`slice_properties`),
    naming the weights (:func:`~mrirecon.pipeline.model_range_slice.card_label`), not logged:
    ``mrirecon run`` records them per input, naming it and the slices
    (:class:`~mrirecon.pipeline.model_range_slice.VolumeRanges`)."""
    return range_warnings(getattr(model, "model_card", None), label=card_label(model)[0],
                          **slice_properties(config, model, s))


def refuse_other_trajectory(config: Any, model: Any, s: Any) -> None:
    """Refuse, naming the pipeline, the file and the pipelines to use, an MRI slice whose
    trajectory the learned ``model`` cannot take: E2E-VarNet (``sense(maps, mask)`` only) on
    radial / spiral data, a density-weighted or learned-maps model (``nufft_sense`` only: it reads
    the trajectory) on Cartesian data. They failed inside the model, after the training-range
    warnings, with internal class names ("TypeError: VarNet needs a SenseOperator (sense(maps,
    mask)), got NufftSense"). Other models run on both, warned by :func:`range_warnings`."""
    from pathlib import Path

    from mrirecon.models.unrolled.density_weighted import DensityWeightedModel
    from mrirecon.models.unrolled.learned_maps import LearnedMapsModel
    from mrirecon.models.unrolled.varnet import VarNet

    radial = isinstance(model, (DensityWeightedModel, LearnedMapsModel))
    if model is None or not (radial or isinstance(model, VarNet)) \
            or radial == (s.trajectory is not None):
        return
    pipeline = Path(config.pipeline_file).stem if config.pipeline_file else config.name
    kind = str(s.header.extra.get("trajectory") or "non-Cartesian") if s.trajectory is not None \
        else "Cartesian"
    if radial:
        raise ValueError(f"pipeline {pipeline} takes radial / spiral k-space (its "
                         f"model reads the trajectory); {s.file_name} is {kind} k-space: use "
                         "mri_cs, mri_tv or a Cartesian learned pipeline (mri_learned, mri_varnet)")
    raise ValueError(f"pipeline {pipeline} takes Cartesian k-space (E2E-VarNet "
                     f"estimates its coil maps from the sampled centre columns); {s.file_name} is "
                     f"{kind} k-space: use mri_radial_cs or mri_radial_learned")
