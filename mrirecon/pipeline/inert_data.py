"""Settings that the data of one MRI slice leave without effect.

:mod:`mrirecon.pipeline.inert` judges what the config alone shows (``undersample.*`` with
undersampling off, ...); the cases here need the data: each is a note per slice, given only for a
value changed from the default (a value as shipped says nothing about the user's intent), and
only where the output is the one the default gives. Before these notes the output was
byte-identical and ``provenance.json`` recorded the value as if it had been applied.
"""

from __future__ import annotations

from mrirecon.pipeline.schema import CalibrateConfig, LoadConfig, PipelineConfig, PreprocessConfig
from mrirecon.pipeline.slice_mri import MRISlice


def calibration_notes(s: MRISlice, cfg: CalibrateConfig) -> dict[str, str]:
    """Notes for ``calibrate`` settings: a ``calib_width`` beyond both the readout rows and the
    centre band (ESPIRiT calibrates on all of them: 64 and 500 gave the same image, provenance
    saying 500), or on non-Cartesian data beyond the image grid (calibrated on the whole grid,
    :func:`~mrirecon.calib.noncartesian.gridded_calib_width`), and ``max_cropped_energy`` on
    non-Cartesian data (their ESPIRiT keeps ``crop`` as given)."""
    notes = {}
    default = CalibrateConfig()
    if s.espirit is not None and cfg.calib_width != default.calib_width:
        band, block, _ = s.espirit
        if cfg.calib_width > max(block[0], band):
            notes["calib_width"] = (
                f"calibrate.calib_width={cfg.calib_width}: ESPIRiT calibrated on the whole "
                f"{block[0]} x {band} block the data hold ({block[0]} readout rows, the "
                f"{band}-column centre band); any calib_width of {max(block[0], band)} or more "
                "gives this image")
    if (s.trajectory is not None and cfg.method == "espirit"
            and cfg.max_cropped_energy != default.max_cropped_energy):
        notes["max_cropped_energy"] = (
            f"calibrate.max_cropped_energy={cfg.max_cropped_energy}: has no effect on "
            "non-Cartesian data, whose ESPIRiT maps keep calibrate.crop as given")
    if (s.trajectory is not None and cfg.method != "none"
            and cfg.calib_width != default.calib_width):
        from mrirecon.calib.noncartesian import gridded_calib_width

        if (width := gridded_calib_width(cfg.calib_width, s.image_shape)) < cfg.calib_width:
            notes["calib_width"] = (f"calibrate.calib_width={cfg.calib_width}: the calibration "
                                    f"used the whole {s.image_shape[0]} x {s.image_shape[1]} "
                                    f"grid ({width} wide)")
    return notes


def preprocess_notes(s: MRISlice, config: PipelineConfig, *, classical: bool) -> dict[str, str]:
    """Notes for ``load`` / ``preprocess`` settings on a slice after preprocessing:

    * ``preprocess.prewhiten: false`` on a file without a noise scan (nothing to prewhiten);
    * ``preprocess.remove_oversampling: false`` for a learned model (its default) or on data
      without readout oversampling (``true`` there is the learned pipelines' shipped value, so
      it is not noted);
    * ``preprocess.partial_fourier: none`` on a slice with no never-sampled side (a symmetric
      phase encoding and a full echo);
    * ``load.include_calibration: false`` on a file without calibration lines (fastMRI files have
      no acquisition flags; ISMRMRD files without calibration-only lines: ``ACQ_IS_PARALLEL_CALIBRATION`` without
      ``..._AND_IMAGING``).
    """
    from mrirecon.pipeline.sampling_mri import has_missing_side

    pre, default, notes = config.preprocess, PreprocessConfig(), {}
    if pre.prewhiten != default.prewhiten and s.noise is None:
        notes["prewhiten"] = ("preprocess.prewhiten=false: the file holds no noise scan, so "
                              "nothing is prewhitened with the default either")
    if pre.remove_oversampling is False:  # (true is the learned pipelines' shipped value:
        # "nothing to remove" would be said on every file without oversampling)
        croppable = (s.trajectory is None
                     and s.header.oversampled_readout_rows(s.kspace.shape[-2]) is not None)
        if not croppable or not classical:
            notes["remove_oversampling"] = (
                "preprocess.remove_oversampling=false: the default gives the same image: "
                + ("learned models read the readout as acquired" if croppable
                   else "the data have no readout oversampling to remove"))
    if (pre.partial_fourier != default.partial_fourier and s.trajectory is None
            and not has_missing_side(s)):
        notes["partial_fourier"] = (
            f"preprocess.partial_fourier={pre.partial_fourier}: the slice has no never-sampled "
            "side (symmetric phase encoding, full echo), so there is nothing to fill")
    if not config.load.include_calibration and LoadConfig().include_calibration:
        lines = s.header.extra.get("calibration_lines", 0)
        if not lines:
            notes["include_calibration"] = (
                "load.include_calibration=false: the file holds no calibration lines ("
                + ("ISMRMRD calibration-only ACQ_IS_PARALLEL_CALIBRATION" if "calibration_lines" in s.header.extra
                   else "fastMRI files have no acquisition flags") + "), so nothing was left out")
    return notes
