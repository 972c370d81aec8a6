"""One input volume of ``mrirecon run``: stream its slices through the modality's stages
(:mod:`mrirecon.pipeline.stream`), then evaluate and export the volume."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mrirecon.containers import Image
from mrirecon.pipeline import stream
from mrirecon.pipeline.report import VolumeResult, display_name
from mrirecon.pipeline.schema import MAX_SERIES_NUMBER, PipelineConfig
from mrirecon.pipeline.slice_messages import SliceMessages
from mrirecon.pipeline.stream import Method, score_volume
from mrirecon.solvers.convergence import ConvergenceRecord, convergence_record

#: fastMRI's SSIM window (:func:`mrirecon.metrics.ssim`): smaller images have no SSIM.
SSIM_WINDOW = 7

log = logging.getLogger("mrirecon.pipeline")


def process_volume(config: PipelineConfig, path: Path, output: Path, result: VolumeResult, *,
                   model, device: str, progress: bool, name: str | None = None) -> None:
    """Reconstruct, evaluate and export one file; fills ``result`` in place.

    The slices stream through :func:`~mrirecon.pipeline.stream.stream_volume` with the
    modality's stages (:func:`modality_for`). ``name`` (default: the file's stem or the folder's
    name) is where the outputs go under ``output``; it may contain ``/``.
    """
    stages = modality_for(config, device, classical=model is None)
    shown = display_name(result)  # as metrics.csv and the ERROR lines name the input
    if model is not None and config.adapt.enabled:  # adapt: the per-volume prepare_model hook
        from mrirecon.pipeline.adapt_stage import volume_hook

        stages.prepare_model = volume_hook(config, output, name or (
            path.stem if path.is_file() else path.name), result)
    method = Method(config.reconstruct.method, config.reconstruct, model)
    counts = {"sampled": 0, "acquired": 0}  # k-space columns over all slices (MRI, Cartesian)
    scale = ScaleCheck(config)  # the zero-filled images the output's scale is checked against
    messages = SliceMessages()  # the stages' warnings and notes, kind by kind
    solves = ConvergenceRecord()  # solves that stopped short of their tolerance, by slice
    crops: list[float | None] = []  # MRI: the ESPIRiT crop applied per slice (None: none)
    ranges = None  # the model card's training range, checked where slices differ
    if model is not None:
        from mrirecon.pipeline.model_range_slice import VolumeRanges

        ranges = VolumeRanges(config, model)

    def on_slice(i, s) -> None:
        solves.label = i  # the solvers' reports until the next slice are slice i's
        warned, told = stages.data_messages(s)
        chosen = stages.settings(s, config.reconstruct)  # which table entry runs
        if chosen.note:
            told[f"params_{chosen.key:g}"] = chosen.note
        if chosen.warning:
            warned["params_outside_table"] = chosen.warning
        messages.add(i, warned, told)
        if config.modality == "mri":  # the crop each slice's ESPIRiT maps were cut at, exactly
            crops.append(s.espirit_crop)
        if config.modality == "mri" and s.trajectory is None:  # sampled vs acquirable columns
            from mrirecon.pipeline.slice_mri import column_counts

            sampled, acquirable = column_counts(s)
            counts["acquired"] += acquirable
            counts["sampled"] += sampled
        scale.add(stages, s)
        if ranges is not None:  # said once per input and message, naming its slices
            messages.add(i, ranges.add(s), {})

    # the zero-filled / FBP previews only feed the PNG panels
    with convergence_record(solves):
        run = stream.stream_volume(stages, path, [method], progress=progress, on_slice=on_slice,
                                   previews="png" in config.export.formats)
    for i, warned in run.output_messages.get(method.name, {}).items():  # the outputs'
        messages.add(i, warned, {})
    for i in solves.labels():  # said once per input, naming the slices (not once per slice)
        what = f"reconstruct.method {config.reconstruct.method!r}: " + "; ".join(solves.lines(i))
        if i is None:  # before the first slice (a volume-level hook)
            result.warn(f"{shown}: {what}")
        else:
            messages.add(i, {"unconverged": what}, {})
    if any(c is not None for c in crops):  # provenance.json / status: files[].calibration
        result.calibration["espirit_crop"] = crops
    if ranges is not None:  # CT data stating no dose: the dose their noise fits
        result.calibration.update(ranges.record)
    warned, told = messages.lines(shown, run.slices)
    for msg in warned:
        result.warn(msg)
    for msg in told:
        result.note(msg)
    if config.modality == "mri":
        recon, reference = run.outputs[method.name], run.reference
        accel = counts["acquired"] / counts["sampled"] if counts["sampled"] else None
        if config.evaluate.enabled and reference is not None and sampled_all(accel):
            from mrirecon.pipeline.sampling_mri import fully_sampled_warning

            result.warn(fully_sampled_warning(shown, config.undersample))
        eval_ref, eval_pred, display_ref, preview = reference, recon, reference, run.preview
        image = Image(recon, stages.output_geometry(run.info["header"]), kind="magnitude", modality="MR",
                      description=f"mrirecon {config.reconstruct.method}")
    else:
        from mrirecon.pipeline.ct_hu import hu_volumes

        recon, eval_ref, eval_pred, display_ref, preview = hu_volumes(run, run.info, method.name)
        image = Image(recon, run.info["image_geometry"], kind="hu", modality="CT",
                      description=f"mrirecon {config.reconstruct.method}")
    if not bool(torch.isfinite(recon).all()):
        raise ValueError(f"{path}: the reconstruction holds NaN or Inf values (method "
                         f"{config.reconstruct.method!r} diverged?); nothing was written")
    if config.modality == "ct":  # values impossibly far below air: the method's artefacts
        from mrirecon.pipeline.ct_plausibility import below_air_note

        if (msg := below_air_note(recon, config.reconstruct.method)) is not None:
            result.note(f"{shown}: {msg}")
    if (msg := scale.warning(recon, run.preview, method.name)) is not None:
        msg = f"{shown}: {msg}"
        result.warn(msg)
    result.slices = int(recon.shape[0])
    if config.evaluate.enabled and run.reference_dropped:
        field_ = run.info.get("reference_key") or "reference"
        msg = f"{shown}: {field_}: no metrics: {run.reference_dropped}"
        result.warn(msg)
    if config.evaluate.enabled and eval_ref is not None:
        field_ = run.info.get("reference_key") or "reference"
        peak = float(eval_ref.max())
        if peak <= 0:  # the input failed after reconstruction, in psnr, naming no dataset
            msg = (f"{shown}: {field_}: no metrics: the reference is "
                   f"{'all zero' if not eval_ref.any() else f'nowhere positive (maximum {peak:.3g})'}"
                   ", so PSNR / SSIM have no data range (a placeholder reference?)")
            result.warn(msg)
            display_ref = None  # nor a figure panel (a negative one failed the PNG export)
        elif min(eval_ref.shape[-2:]) < SSIM_WINDOW:  # failed the input after reconstruction
            msg = (f"{shown}: {field_}: no metrics: the images are "
                   f"{eval_ref.shape[-2]} x {eval_ref.shape[-1]}, smaller than the "
                   f"{SSIM_WINDOW} x {SSIM_WINDOW} window of fastMRI's SSIM")
            result.warn(msg)
        else:
            if config.modality == "mri":  # placeholder slices of the reference are not scored
                eval_ref, eval_pred, msg = without_blank_reference_slices(eval_ref, eval_pred)
                if msg:
                    msg = f"{shown}: {field_} {msg}"
                    result.warn(msg)
            for msg in reference_notes(eval_ref, eval_pred, mri=config.modality == "mri"):
                msg = f"{shown}: {field_}: {msg}"
                result.warn(msg)
            result.metrics = evaluate(eval_ref, eval_pred, crop=config.modality == "mri")
    placed_formats = [f for f in ("dicom", "nifti") if f in config.export.formats]
    if placed_formats and not image.geometry.placed:
        msg = (f"{shown}: the file holds no patient position or orientation (fastMRI and "
               "LoDoPaB files do not), only voxel sizes: the " + " / ".join(placed_formats)
               + " output is placed axially at the origin (NIfTI xform codes 0, a DICOM "
               "ImageComments says so); do not overlay it on other series")
        result.warn(msg)
    note = unknown_fov_note(run.info.get("header"), placed_formats)
    if note:
        msg = f"{shown}: {note}"
        result.warn(msg)
    export(config, path, output, image, display_ref, preview, result, name=name,
           source_dataset=run.info.get("source_dataset"), header=run.info.get("header"))


#: Bounds on an MRI output's 99th percentile over that of the zero-filled RSS image of the same
#: (undersampled) data, outside which :class:`ScaleCheck` warns. The shipped pipelines mri_cs,
#: mri_tv, mri_retrospective and mri_learned gave 0.998-3.5 on simulated brains (8 coils 128 x 128,
#: 4 coils 64 x 48; fully sampled, fastMRI-style 4x / 8x files, retrospective 4x / 8x; 3.5 is
#: mri_cs on an 8x file with a 5-column band, all others at most 2.6) and 1.0 on a fully sampled
#: oblique ISMRMRD scan; CG-SENSE with ESPIRiT maps from a 3-column band of that scan 8.2e8. A
#: zero-filled image keeps the sampled centre, so a faithful output stays within a small factor of
#: it; the lower bound leaves room for low-SNR data, whose zero-filled RSS keeps the noise floor
#: (mri_cs / mri_tv / mri_learned with the 3-column maps gave 0.27, not caught: the kernel
#: warning of :func:`~mrirecon.pipeline.checks_mri.kernel_warning` is).
OUTPUT_SCALE_BOUNDS = (0.1, 10.0)


class ScaleCheck:
    """The zero-filled RSS images of a Cartesian MRI volume's slices (the PNG previews when they
    are made, else one inverse FFT per slice here), against which :meth:`warning` checks the
    output's scale: a solver that amplified noise wrote an image 1e8 times too bright, exit 0."""

    def __init__(self, config: PipelineConfig) -> None:
        self.on = config.modality == "mri"
        self.own = "png" not in config.export.formats  # else stream_volume makes them
        self.postprocess = config.postprocess
        self.images: list[torch.Tensor] = []
        self.band: int | None = None  # the narrowest ESPIRiT centre band of the volume

    def add(self, stages, s) -> None:
        """Slice ``s`` (undersampled, calibrated) of ``stages`` (:class:`MRIStages`)."""
        if not self.on:
            return
        if s.trajectory is not None:  # gridded previews are another scale: not checked
            self.on = False
            return
        from mrirecon.pipeline.checks_mri import espirit_kernel
        from mrirecon.pipeline.stages_mri import zero_filled_preview

        if self.own:
            self.images.append(zero_filled_preview(s, self.postprocess).cpu())
        if (found := espirit_kernel(s)) is not None:
            self.band = found[0] if self.band is None else min(self.band, found[0])

    def warning(self, output: torch.Tensor, preview: torch.Tensor | None, method: str) -> str | None:
        """The warning for ``output`` ``(slices, h, w)`` (finite), or ``None``."""
        if not self.on:
            return None
        zero_filled = torch.stack(self.images) if self.own and self.images else preview
        if zero_filled is None or zero_filled.shape != output.shape:
            return None
        ratio = output_scale(output, zero_filled)
        low, high = OUTPUT_SCALE_BOUNDS
        if ratio is None or low <= ratio <= high:
            return None
        what = (f"reconstruct.method {method!r}: the reconstruction's 99th percentile is "
                f"{ratio:.2g}x the zero-filled image's (within {low:g}-{high:g}x for faithful "
                "reconstructions)")
        if ratio > high:
            why = (f"coil maps from a {self.band}-column centre band?" if self.band is not None
                   and self.band <= 4 else "ill-conditioned coil maps, or a diverging solver?")
            return (f"{what}: the solver amplified noise ({why}); its intensities are not the "
                    "data's: try calibrate.method=walsh, a wider centre band "
                    "(undersample.center_fractions) or regularisation (reconstruct.params lam)")
        return (f"{what}: the output is nearly black (coil maps zero over the object, or a "
                "model far outside its training range?); compare it with the zero-filled image")


def output_scale(output: torch.Tensor, zero_filled: torch.Tensor) -> float | None:
    """99th percentile of ``output`` over that of ``zero_filled`` (same shape), or ``None`` when
    the zero-filled image's is 0 (no data to compare with)."""
    den = float(np.percentile(zero_filled.numpy(), 99))
    if not den > 0:
        return None
    return float(np.percentile(output.numpy(), 99)) / den


def warn_unscored(config: PipelineConfig, results: list[VolumeResult]) -> None:
    """Inputs of a scoring run (``evaluate.enabled``) that finished without metrics while others
    of the run have theirs get a warning (in place, in ``results``): they are missing from
    ``metrics.csv`` and its mean, which silently became the mean of the others (MRI: no
    ``reconstruction_rss`` / ``_esc``; CT: no ``ground_truth_<part>_NNN.hdf5`` beside the
    observation). An input already warned about its reference (``no metrics: ...``, or a
    reference it could not use) is not warned twice. A run where no input is scored (a fastMRI
    test set: no file holds a reference) logs one line instead. Judged over this run's results,
    those resumed included (their status records never hold this warning), and per rank when
    distributed."""
    if not config.evaluate.enabled:
        return
    done = [r for r in results if r.status in ("ok", "skipped")]
    scored = [r for r in done if r.metrics]
    unscored = [r for r in done if not r.metrics
                and not any(": no metrics: " in w for w in r.warnings)]
    if not unscored:
        return
    ct = config.modality == "ct"
    what = ("a ground truth (ground_truth_<part>_NNN.hdf5 beside its observation_<part>_NNN.hdf5)"
            if ct else "a reference image (reconstruction_rss / reconstruction_esc)")
    if not scored:
        if len(unscored) == len(done):
            log.info("evaluate: none of the %d input(s) %s %s: nothing was scored and no "
                     "metrics.csv written%s", len(done), "has" if ct else "holds", what,
                     "" if ct else " (a fastMRI test set?)")
        return
    from mrirecon.io.lodopab import reference_file_name  # the LoDoPaB pairing rule

    for r in unscored:
        name = Path(r.input).name
        gt = reference_file_name(name) if ct else None
        why = ((f"its ground truth {gt} is not beside it" if gt else
                "no ground truth is beside it (ground_truth_<part>_NNN.hdf5 beside "
                "observation_<part>_NNN.hdf5: its name is not LoDoPaB's)") if ct
               else "the file holds no reference image (reconstruction_rss / reconstruction_esc)")
        r.warn(f"{name}: no metrics: {why}, while {len(scored)} other input(s) of this run have "
               "theirs; it is missing from metrics.csv and from the mean over the inputs")


def unknown_fov_note(header, formats: list[str]) -> str | None:
    """What a NIfTI / DICOM export says of axes without a field of view (``fov_unknown_axes`` of
    ``header.extra``, from the ISMRMRD or BART reader; ``fov_unknown_source``: why): 1 mm assumed."""
    unknown = header.extra.get("fov_unknown_axes") if header is not None else None
    if not formats or not unknown:
        return None
    along = " and ".join({"x": "x (rows)", "y": "y (columns)", "z": "z (slices)"}[a] for a in unknown)
    why = header.extra.get("fov_unknown_source") or ", ".join(
        f"ismrmrd_header/encoding/reconSpace/fieldOfView_mm/{a}" for a in unknown) + (
        f": {'is' if len(unknown) == 1 else 'are'} 0 (no field of view)")
    return (f"{why}, so the voxel size 1 mm was assumed along {along}: the "
            + " / ".join(formats) + " output's voxel spacing there is not the scanner's")


def _warn_outside_range(config: PipelineConfig, model, s) -> list[str]:
    """Where slice ``s`` lies outside what the learned model was trained on, not logged, naming
    the weights (:func:`mrirecon.pipeline.model_range.slice_range_warnings`); :func:`process_volume`
    checks each slice whose quantities differ from those before and records the messages once per
    input naming the slices (:class:`~mrirecon.pipeline.model_range_slice.VolumeRanges`)."""
    from mrirecon.pipeline.model_range import slice_range_warnings

    return slice_range_warnings(config, model, s)


def modality_for(config: PipelineConfig, device: str, *, classical: bool):
    """The stage protocol of ``config.modality`` (:class:`~mrirecon.pipeline.stream.Modality`)."""
    if config.modality == "mri":
        from mrirecon.pipeline.stages_mri import MRIStages

        return MRIStages(config, device=device, classical=classical)
    from mrirecon.pipeline.stages_ct import CTStages

    return CTStages(config, device=device)


def reference_notes(reference: torch.Tensor, output: torch.Tensor, *, mri: bool) -> list[str]:
    """What makes the metrics of ``output`` against ``reference`` (same shape) meaningless:
    another scale (a uint16 ``reconstruction_rss`` scored 6.2 dB, a LoDoPaB ground truth in HU
    2.5 dB, exit 0 and no word), another slice order (slices stored last to first: each slice
    scored against another one's anatomy) or, for MRI, another orientation (a transposed
    reference: 9.3 instead of 41.0 dB). CT references are checked for orientation against the
    FBP slice by slice instead (:func:`mrirecon.pipeline.stages_ct.reference_orientation`)."""
    from mrirecon.pipeline.reference_checks import orientation_note, scale_note, slice_order_note

    notes = [scale_note(reference, output), slice_order_note(reference, output)]
    if mri:
        notes.append(orientation_note(reference, output, "the reconstruction"))
    return [n for n in notes if n]


def without_blank_reference_slices(reference: torch.Tensor, output: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """``(reference, output, message)`` without the slices whose MRI reference is all zero while
    the reconstruction's is not (``message``: which, or ``None``). A reference nowhere positive
    is returned whole, for the caller to refuse (it has no norm and no data range: ``mrirecon
    run`` says so, :func:`~mrirecon.bench.core.scored` raises).

    Left out rather than scored: an RSS reference of a real acquisition is never exactly zero
    (its noise floor alone is not), so such a slice is a placeholder or a write that failed, and
    the reconstruction of that slice cannot be judged against it. Scored, it added the slice's
    whole energy to the volume's error without a word (a 3-slice volume 13.9 dB instead of
    22.4); a fastMRI user reads the volume's figure as the quality of the method, which the
    remaining slices still measure (with fastMRI's volume data range, that of the reference).
    A slice both zero (a noise-only slice whose coil maps were all zero) matches and is kept."""
    if not float(reference.max()) > 0:
        return reference, output, None
    blank = (reference.flatten(1) == 0).all(1) & (output.flatten(1) != 0).any(1)
    if not bool(blank.any()):
        return reference, output, None
    shown = [int(i) for i in blank.nonzero().flatten()]
    keep = ~blank
    which = (f"slice {shown[0]} is" if len(shown) == 1 else
             f"slices {', '.join(map(str, shown[:8]))}{', ...' if len(shown) > 8 else ''} are")
    return reference[keep], output[keep], (
        f"{which} all zero while the reconstruction is not (a placeholder, or a reference that "
        f"was not written?): left out of the metrics, which score the other {int(keep.sum())} of "
        f"{len(blank)} slices")


def sampled_all(acceleration: float | None) -> bool:
    """Whether Cartesian data had every acquirable column (``None``: not Cartesian)."""
    return acceleration is not None and acceleration <= 1.0 + 1e-6


def evaluate(reference: torch.Tensor, recon: torch.Tensor, *, crop: bool = False) -> dict[str, float]:
    """fastMRI NMSE / PSNR / SSIM of one volume (shapes must already agree), in float64.

    ``crop``: first centre-crop both to ``(w, w)``, ``w`` the reference's width, as
    ``fastmri.evaluate`` does (MRI; :func:`mrirecon.metrics.fastmri_crop`, whose rule scores a
    reference wider than tall whole, where fastMRI would fail). Uncropped, a 192 x 160 volume scored 26.66 dB where fastMRI says 25.90."""
    if tuple(reference.shape) != tuple(recon.shape):
        raise ValueError(f"evaluate: reference {tuple(reference.shape)} and reconstruction "
                         f"{tuple(recon.shape)} differ")
    if not bool(torch.isfinite(reference).all()):
        raise ValueError("evaluate: the reference holds NaN or Inf values; metrics would be "
                         "meaningless (set evaluate.enabled=false to skip them)")
    if not bool(torch.isfinite(recon).all()):
        raise ValueError("evaluate: the reconstruction holds NaN or Inf values (diverged?); try "
                         "a smaller step or more regularisation")
    scores = score_volume(reference, recon, crop=crop)  # float64 per chunk: no .double() copies
    return {k.lower(): scores[k] for k in ("NMSE", "PSNR", "SSIM")}


#: The ``layout`` attribute of a CT image's ``reconstructions/`` file: a LoDoPaB input's
#: ground truth is stored rotated (ODL's (x, y) axes), and a score against it as stored compared
#: rotated images (correlation 0.36-0.73 against 0.96) without a word.
CT_LAYOUT = ("mrirecon image (rows, cols), as the DICOM and NIfTI series; the LoDoPaB-CT "
             "(ODL x, y) layout of its ground truth is np.rot90(reconstruction, -1, axes=(1, 2))")


def series_number(export, source_dataset) -> int:
    """``export.series_number``, or for 0: the source series' number + 1000 where
    ``keep_identity`` puts the result in a DICOM input's study (its SeriesNumber 1 had made
    every result a second series 1 beside the scanner's), else 1."""
    if export.series_number:
        return export.series_number
    try:
        number = int(source_dataset.SeriesNumber) if export.keep_identity else 0
    except (AttributeError, TypeError, ValueError):  # no source, or no usable number
        number = 0
    return number + 1000 if 0 < number <= MAX_SERIES_NUMBER - 1000 else 1


def submission_suffix(path: Path, modality: str) -> str:
    """The suffix of an input's ``reconstructions/`` file: an MRI HDF5 input's own (``.hdf5``,
    ``.H5``), so the file has the target's name that ``fastmri.evaluate`` opens (it failed with
    FileNotFoundError on ``vol.hdf5`` beside ``vol.h5``); ``.h5`` for any other input (CT: a
    LoDoPaB ``observation_*.hdf5`` has its target in another file, ``ground_truth_*``)."""
    suffix = path.suffix if path.is_file() and modality == "MR" else ""
    return suffix if suffix.lower() in (".h5", ".hdf5", ".hdf") else ".h5"


def export(config: PipelineConfig, path: Path, output: Path, image: Image,
           reference: torch.Tensor | None, zero_filled: torch.Tensor | None,
           result: VolumeResult, name: str | None = None, source_dataset=None,
           header=None) -> None:
    """Write the configured formats for one volume; records the output paths in ``result``.

    ``source_dataset``: the header of a DICOM input's first slice (``run.info``), whose
    technique (and identity, with ``export.keep_identity``) the DICOM series copies;
    ``header``: an MRI volume's acquisition header, whose technique the DICOM series carries
    (``io.dicom_technique``) and whose ``patient_id`` (and site and protocol name) it keeps with
    ``export.keep_identity``."""
    from mrirecon import io

    stem = name or (path.stem if path.is_file() else path.name)
    formats = config.export.formats
    if "hdf5" in formats:
        target = output / "reconstructions" / f"{stem}{submission_suffix(path, image.modality)}"
        io.write_reconstruction(target, image.data.numpy(),  # CT in HU; MRI magnitudes at
                                units="HU" if image.kind == "hu" else "a.u.",  # the data's scale
                                layout=CT_LAYOUT if image.modality == "CT" else None)
        result.outputs["hdf5"] = str(target)
    if "nifti" in formats:
        target = output / "nifti" / f"{stem}.nii.gz"
        io.write_nifti(image, target)
        result.outputs["nifti"] = str(target)
    if "dicom" in formats:
        from mrirecon.io.dicom import quantisation_warning

        folder = output / "dicom" / stem
        if (msg := quantisation_warning(image.data.numpy(), image.modality)) is not None:
            msg = f"{display_name(result)}: {msg}"
            result.warn(msg)
        from mrirecon.pipeline.output_files import dicom_identity

        patient, warning, note = dicom_identity(config.export.keep_identity, display_name(result),
                                                source_dataset, header)
        if warning:
            result.warn(warning)
        if note:
            result.note(note)
        io.write_dicom_series(image, folder, series_description=config.export.series_description
                              or image.description, keep_identity=config.export.keep_identity,
                              source_dataset=source_dataset, patient=patient,
                              header=header if image.modality == "MR" else None,
                              series_number=series_number(config.export, source_dataset))
        result.outputs["dicom"] = str(folder)
    if "png" in formats:
        result.figures = _figures(image, reference, zero_filled, output / "figures" / stem,
                                  config.report.max_slices_in_figures, header)


def figure_slices(n: int, most: int) -> list[int]:
    """The slices of an ``n``-slice volume that get figures: all when ``n <= most``, else
    ``most``, the centres of ``most`` equal runs of slices (40 slices, 3 figures: 6, 20, 33):
    the first and the last slice of a volume are often noise outside the anatomy (2 of the 3
    panels of a 40-slice brain showed nothing), and ``most = 1`` showed slice 0, not the
    middle."""
    if n <= most:
        return list(range(n))
    return [int((i + 0.5) * n / most) for i in range(most)]


def _figures(image: Image, reference, zero_filled, folder: Path, max_slices: int,
             header=None) -> list[str]:
    """One PNG panel per picked slice: reconstruction, reference and ``|error|`` (when the input
    has a reference), zero-filled / FBP input. MRI panels share the grey window ``0..max`` of
    the reference slice; a reference slice that is blank (all zero, nowhere positive) or not
    finite gives no window and no error map (a window of 0 drew the other panels black, and
    ``|recon - 0|`` is no error): the window is then the reconstruction's own
    (:func:`_display_max`) and the error panel says why it is not available. Pixels keep the
    geometry's proportions (0.5 x 1 mm pixels were drawn square: a disc twice as tall), square
    where the MRI ``header`` gave no FOV along rows or columns (1 mm placeholders)."""
    from mrirecon.io.png import save_panel

    sp, unknown = image.geometry.spacing, header.extra.get("fov_unknown_axes", ()) if header else ()
    aspect, n = 1.0 if {"x", "y"} & set(unknown) else sp[1] / sp[2], image.data.shape[0]
    picks = figure_slices(n, max_slices)
    paths, vol = [], image.data.numpy()
    for k in picks:
        imgs, titles, err_idx = [vol[k]], ["reconstruction"], None
        vmax = _display_max(vol[k])
        if reference is not None:
            ref = reference[k].numpy()
            why = _unusable_reference(ref, mri=image.modality == "MR")
            if why is None:
                vmax = float(ref.max()) if image.modality == "MR" else vmax
                imgs += [ref, np.abs(vol[k] - ref)]
                titles += ["reference", "|error|"]
                err_idx = 2
            else:
                gone = f"not available:\nreference slice {why}"
                imgs += [ref if np.isfinite(ref).all() else gone, gone]
                titles += [f"reference ({why})", "|error|"]
        if zero_filled is not None:
            imgs.append(zero_filled[k].numpy())
            titles.append("zero-filled input" if image.modality == "MR" else "FBP input")
        if image.modality == "CT":
            imgs = [np.clip(i, -200, 400) + 200 if j != err_idx and not isinstance(i, str) else i
                    for j, i in enumerate(imgs)]
            vmax = 600
        paths.append(str(save_panel(imgs, titles, folder / f"slice_{k:03d}.png", vmax=vmax,
                                    error_index=err_idx, suptitle=f"slice {k}", aspect=aspect)))
    return paths


#: The percentile of a slice's values that tops its own grey window (:func:`_display_max`): a
#: few bright pixels (a flow artefact, an edge) do not darken the rest of the image.
DISPLAY_PERCENTILE = 99.5


def _display_max(values: np.ndarray) -> float | None:
    """The top of the grey window of an image shown without a usable reference: the
    :data:`DISPLAY_PERCENTILE` percentile of its finite values, else their maximum when that
    percentile is not positive (a small bright object), else ``None`` (nothing positive: the
    panel's own maximum, black)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    top = float(np.percentile(finite, DISPLAY_PERCENTILE))
    if top > 0:
        return top
    peak = float(finite.max())
    return peak if peak > 0 else None


def _unusable_reference(ref: np.ndarray, *, mri: bool) -> str | None:
    """Why a reference slice cannot set the display window nor give an error map (``None``: it
    can): NaN / Inf values; for MRI (magnitudes) also all zero or nowhere positive (a
    placeholder slice, which the metrics leave out too)."""
    bad = int(ref.size - np.count_nonzero(np.isfinite(ref)))
    if bad:
        return f"with {bad} NaN or Inf values"
    if mri and not (ref > 0).any():
        return "all zero" if not ref.any() else "nowhere positive"
    return None
