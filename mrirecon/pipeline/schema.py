"""The pipeline schema: one frozen dataclass per stage, loaded once from ``pipelines/*.yaml``.

The stage sections of :class:`PipelineConfig` are listed in the order the code runs them
(:data:`mrirecon.pipeline.stream.STAGES`). :data:`REMOVED_KEYS` are keys of earlier releases
that never changed anything; a config that still has them loads with a ``FutureWarning`` naming
the file and key (:func:`drop_removed_keys`) and will be refused in the next release.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from mrirecon.core.config import INTERNAL, to_dict
from mrirecon.training.adapt import AdaptConfig as AdaptSettings

#: ``{dotted key: why it went}``: accepted with a FutureWarning for one release, then refused.
REMOVED_KEYS = {
    "reconstruct.batch_slices": "slices are always streamed one at a time; the key never "
                                "changed anything",
    "postprocess.output": "the output is always the magnitude (RSS for coil images); the key "
                          "never changed anything",
}


def drop_removed_keys(data: dict, source: str) -> dict:
    """``data`` without :data:`REMOVED_KEYS`, warning once per key found (naming ``source``)."""
    import warnings

    out = dict(data)
    for dotted, why in REMOVED_KEYS.items():
        section, key = dotted.split(".")
        block = out.get(section)
        if isinstance(block, dict) and key in block:
            out[section] = {k: v for k, v in block.items() if k != key}
            warnings.warn(f"{source}: {dotted}: removed ({why}); delete it from the config, it "
                          "will be an error in the next release", FutureWarning, stacklevel=3)
    return out


@dataclass(frozen=True)
class LoadConfig:
    """Which reader to use; ``auto`` picks by file content/suffix. ISMRMRD raw data only:
    ``counters`` picks one value of counters the file has several of (``{repetition: 2}``;
    ``contrast``, ``phase``, ``set``; ``slice`` reads one slice or 3-D slab alone, e.g. of
    overlapping slabs), ``include_calibration: false`` leaves calibration-only (ACS) lines out
    of the image."""

    format: Literal["auto", "fastmri", "ismrmrd", "ct_hdf5", "dicom", "bart"] = "auto"
    counters: dict[str, int] = field(default_factory=dict)
    include_calibration: bool = True


@dataclass(frozen=True)
class PreprocessConfig:
    """MRI k-space before calibration (:func:`mrirecon.pipeline.stages_mri.preprocess`): readout
    oversampling removal, noise prewhitening (when a noise scan exists), receiver DC offsets
    subtracted, coil compression, a radial gradient delay; ``partial_fourier`` is read by the
    reconstruction. Nothing is scaled here: ``reconstruct`` runs a classical method on the data
    over :func:`~mrirecon.pipeline.stages_mri.data_scale` and scales its image back; learned
    models normalise their input themselves."""

    prewhiten: bool = True
    coil_compression: int | None = None
    compression_method: Literal["svd", "gcc"] = "svd"
    # readout oversampling removal (k-space rows cropped in hybrid space to the header's recon
    # rows when the encoded matrix is larger); None: on for classical methods, off for learned
    # models (which were trained on the data as acquired)
    remove_oversampling: bool | None = None
    # partial Fourier (asymmetric header encoding limits) and partial echo: cg_sense solves for
    # a real image times the phase of the symmetric centre and zero_filled_rss / grappa fill the
    # missing side by POCS ("phase_constrained"), or the missing side stays unsampled / zero
    # ("none"); other methods always leave it unsampled, with a note. A radial partial echo
    # whose missing side no spoke measures (spokes over pi): tv and cg_sense solve for a real
    # image times the phase of the symmetric part of the spokes (pipeline/echo_noncartesian.py)
    partial_fourier: Literal["phase_constrained", "none"] = "phase_constrained"
    # gradient delay of radial spokes, estimated per slice from the data where the spokes cross
    # (pipeline/checks_noncart.py): "warn" names one over 0.2 readout samples (per axis),
    # "correct" also shifts the trajectory by it, "ignore" skips the estimate. Cartesian data
    # and readouts that are not spokes (spiral) are not estimated
    gradient_delay: Literal["warn", "correct", "ignore"] = "warn"


@dataclass(frozen=True)
class CalibrateConfig:
    """Coil sensitivity estimation for MRI (ignored for CT)."""

    method: Literal["espirit", "walsh", "none"] = "espirit"
    calib_width: int = 24
    kernel_width: int = 6
    threshold: float = 0.02
    crop: float = 0.95
    #: ESPIRiT: lower ``crop`` for a slice where it would zero more than this share of the
    #: centre band's image energy (``mrirecon.calib.centre``); ``null`` keeps ``crop`` fixed.
    max_cropped_energy: float | None = 0.005


@dataclass(frozen=True)
class UndersampleConfig:
    """Retrospective undersampling of fully sampled data (fastMRI mask functions / CT views)."""

    enabled: bool = False
    mask: Literal["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"] = (
        "equispaced_fraction"
    )
    center_fractions: tuple[float, ...] = (0.08,)
    accelerations: tuple[int, ...] = (4,)
    seed: Literal["file", "fixed"] = "file"
    fixed_seed: int = 0
    views: int | None = None
    photons: float | None = None


@dataclass(frozen=True)
class ReconstructConfig:
    """Any classical method of :mod:`mrirecon.recon` or learned model of :mod:`mrirecon.models`."""

    method: str = "cg_sense"
    params: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    #: settings per nominal acceleration (Cartesian MRI) / view count (CT), ``{8: {lam: 1.0e-3}}``;
    #: each slice takes the nearest entry, ``params`` on top of it; a learned model's entries
    #: hold only its card's ``overridable`` settings (:mod:`mrirecon.pipeline.param_tables`)
    params_by_acceleration: dict[float, dict[str, Any]] = field(default_factory=dict)
    params_by_views: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: not a YAML key: ``(method, tables)`` the tables above were validated with, so that a
    #: config whose method was changed in code (``dataclasses.replace``) does not run the old
    #: method's tables (:func:`mrirecon.pipeline.validate.tables_of_the_method`)
    tables_tuned_for: tuple | None = field(default=None, compare=False, repr=False,
                                           metadata={INTERNAL: True})


@dataclass(frozen=True)
class AdaptConfig(AdaptSettings):
    """Scan-specific self-supervised fine-tuning of the learned model before each volume (off by
    default): ZS-SSL with the settings of :class:`mrirecon.training.adapt.AdaptConfig` (steps,
    time budget, validation split, ...; this section *is* one, handed to
    :func:`~mrirecon.training.adapt.adapt_model` as it is). A copy is adapted per volume; the
    weights on disk never change. ``save_weights`` writes the adapted state dict to
    ``adapted/<name>.pt`` beside the outputs (its sha256 goes into ``provenance.json``)."""

    enabled: bool = False
    method: Literal["zs_ssl"] = "zs_ssl"
    save_weights: bool = False


@dataclass(frozen=True)
class PostprocessConfig:
    """Crop to the header's recon size (or a fixed size) and take the magnitude."""

    crop: Literal["recon_size", "none", "fixed"] = "recon_size"
    crop_size: tuple[int, int] = (320, 320)


@dataclass(frozen=True)
class EvaluateConfig:
    """fastMRI metrics against the reference when one exists."""

    enabled: bool = True


#: The largest DICOM SeriesNumber (an IS: a signed 32-bit integer).
MAX_SERIES_NUMBER = 2**31 - 1


@dataclass(frozen=True)
class ExportConfig:
    """Output formats; HDF5 is the fastMRI submission layout."""

    formats: tuple[Literal["hdf5", "nifti", "dicom", "png"], ...] = ("hdf5", "nifti", "dicom", "png")
    keep_identity: bool = False
    series_description: str = ""
    #: DICOM SeriesNumber; 0: the source series' number + 1000 when ``keep_identity`` puts the
    #: result in a DICOM input's study (a derived series beside it, as scanners number them),
    #: else 1
    series_number: int = 0


@dataclass(frozen=True)
class ReportConfig:
    enabled: bool = True
    max_slices_in_figures: int = 3


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline (see ``pipelines/*.yaml``)."""

    name: str
    modality: Literal["mri", "ct"]
    description: str = ""
    load: LoadConfig = field(default_factory=LoadConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    undersample: UndersampleConfig = field(default_factory=UndersampleConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: not a YAML key: the pipeline file this config was loaded from (``load_pipeline``), for
    #: the run log and ``provenance.json``; ``None`` for a config built in code
    pipeline_file: str | None = field(default=None, compare=False, repr=False,
                                      metadata={INTERNAL: True})
    #: not a YAML key: ``(config_sha256 of the config judged, warnings)`` of ``load_pipeline``,
    #: which logged them; ``run_pipeline`` records them without logging them again (a run from
    #: Python said every inert setting twice), unless the config was changed since
    load_warnings: tuple[str, tuple[str, ...]] | None = field(default=None, compare=False,
                                                              repr=False, metadata={INTERNAL: True})


def config_sha256(config: PipelineConfig) -> str:
    """Checksum of the effective configuration (after overrides): what ``--resume`` compares."""
    text = json.dumps(to_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
