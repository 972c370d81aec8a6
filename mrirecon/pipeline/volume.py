"""One input volume through the stages: stream slices, then evaluate and export the volume."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mrirecon.containers import Image
from mrirecon.pipeline import stages_mri
from mrirecon.pipeline.report import VolumeResult
from mrirecon.pipeline.runner import release_memory
from mrirecon.pipeline.schema import PipelineConfig

log = logging.getLogger("mrirecon.pipeline")


def detect_format(path: Path, wanted: str) -> str:
    """Pick the reader: explicit ``load.format`` or by content (HDF5 groups) / folder."""
    if wanted != "auto":
        return wanted
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return "dicom"
    from mrirecon.io.probe import hdf5_layout

    return hdf5_layout(path)


def process_volume(config: PipelineConfig, path: Path, output: Path, result: VolumeResult, *,
                   model, device: str, progress: bool, name: str | None = None) -> None:
    """Reconstruct, evaluate and export one file; fills ``result`` in place.

    ``name`` (default: the file's stem or the folder's name) is where the outputs go under
    ``output``; it may contain ``/``.
    """
    fmt = detect_format(path, config.load.format)
    prepare = None  # adapt: the per-volume hook, prepare(model, slices) -> model
    if model is not None and config.adapt.enabled:
        from mrirecon.pipeline.adapt_stage import adapt_volume

        def prepare(m, slices):
            return adapt_volume(config, m, slices, output, name or volume_name(path), result)
    if config.modality == "mri":
        if fmt not in ("fastmri", "ismrmrd"):
            raise ValueError(f"{path}: an MRI pipeline needs fastMRI or ISMRMRD data, found {fmt}")
        recon, reference, preview, geometry, accel = _mri_volume(config, path, fmt, model, device,
                                                                 progress, prepare)
        if config.evaluate.enabled and reference is not None and sampled_all(accel):
            msg = (f"{path.name}: the k-space is fully sampled and undersample.enabled is false, so "
                   "the metrics score a reconstruction of complete data against its own reference "
                   "(set undersample.enabled=true for a retrospective study)")
            log.warning("%s", msg)
            result.warnings.append(msg)
        eval_ref, eval_pred, display_ref = reference, recon, reference
        image = Image(recon, geometry, kind="magnitude", modality="MR",
                      description=f"mrirecon {config.reconstruct.method}")
    else:
        from mrirecon.pipeline.stages_ct import ct_volume

        recon, eval_ref, eval_pred, display_ref, preview, geometry = ct_volume(
            config, path, fmt, model, device, progress, prepare)
        image = Image(recon, geometry, kind="hu", modality="CT",
                      description=f"mrirecon {config.reconstruct.method}")
    if not bool(torch.isfinite(recon).all()):
        raise ValueError(f"{path}: the reconstruction holds NaN or Inf values (method "
                         f"{config.reconstruct.method!r} diverged?); nothing was written")
    result.slices = int(recon.shape[0])
    if config.evaluate.enabled and eval_ref is not None:
        result.metrics = evaluate(eval_ref, eval_pred)
    export(config, path, output, image, display_ref, preview, result, name=name)


def sampled_all(acceleration: float | None) -> bool:
    """Whether Cartesian data had every acquirable column (``None``: not Cartesian)."""
    return acceleration is not None and acceleration <= 1.0 + 1e-6


def evaluate(reference: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
    """fastMRI NMSE / PSNR / SSIM of one volume (shapes must already agree)."""
    from mrirecon.metrics import evaluate_volumes

    if tuple(reference.shape) != tuple(recon.shape):
        raise ValueError(f"evaluate: reference {tuple(reference.shape)} and reconstruction "
                         f"{tuple(recon.shape)} differ")
    if not bool(torch.isfinite(reference).all()):
        raise ValueError("evaluate: the reference holds NaN or Inf values; metrics would be "
                         "meaningless (set evaluate.enabled=false to skip them)")
    if not bool(torch.isfinite(recon).all()):
        raise ValueError("evaluate: the reconstruction holds NaN or Inf values (diverged?); try "
                         "a smaller step or more regularisation")
    report = evaluate_volumes([reference.double().numpy()], [recon.double().numpy()], crop=False,
                              metrics=("NMSE", "PSNR", "SSIM"))
    return {k.lower(): float(v[0]) for k, v in report.values.items()}


def volume_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _mri_volume(config: PipelineConfig, path: Path, fmt: str, model, device: str, progress: bool,
                prepare=None):
    from tqdm.auto import tqdm

    from mrirecon.io import FastMRIFile, read_ismrmrd

    if fmt == "fastmri":
        src = FastMRIFile(path)
        n = len(src)
        file_mask = src.sampling_mask() if src.mask is not None else None

        def read(i):
            return src.read_slice(i)
    else:
        vol = read_ismrmrd(path)
        src, n, file_mask = None, vol.data.shape[0], None

        def read(i):
            from dataclasses import replace

            return replace(vol, data=vol.data[i : i + 1],
                           reference=None, slice_indices=(i,))
    outs, refs, zfs = [], [], []
    sampled = acquired = 0  # k-space columns, over all slices: the effective acceleration
    header = None
    try:
        if prepare is not None:  # e.g. adapt: the model sees every prepared slice first
            from mrirecon.pipeline.adapt_stage import mri_pairs

            model = prepare(model, mri_pairs(config, read, n, path.name, file_mask, device))
        for i in tqdm(range(n), desc=path.name, unit="slice", disable=not progress, leave=False):
            ks = read(i)
            header = ks.header
            s = stages_mri.make_slice(ks, i, path.name, file_mask)
            s = stages_mri.preprocess(s, config.preprocess, classical=model is None)
            s = stages_mri.undersample(s, config.undersample)
            stages_mri.check_slice(s, "undersample", config.evaluate.enabled)
            if s.trajectory is None:  # Cartesian: sampled vs acquirable columns
                cols = s.header.acquired_columns(s.mask.numel())
                acquired += int(cols.sum())
                sampled += int((s.mask.reshape(-1).bool() & cols).sum())
            s = stages_mri.calibrate(s, config.calibrate)
            stages_mri.check_slice(s, "calibrate", False)
            if model is not None and i == 0:
                from mrirecon.pipeline.model_range import warn_outside_range

                acc = float(s.mask.numel()) / max(float(s.mask.sum()), 1.0)
                warn_outside_range(model, matrix=tuple(s.kspace.shape[-2:]), coils=int(s.kspace.shape[0]),
                                   acceleration=acc)
            s.kspace = s.kspace.to(device)
            if s.maps is not None:
                s.maps = s.maps.to(device)
            s = stages_mri.reconstruct(s, config.reconstruct, model)
            s.image = s.image.cpu()
            s.kspace = s.kspace.cpu()
            out = stages_mri.postprocess(s, config.postprocess)
            # keep compact copies only: crops are views that would pin whole slices in memory
            outs.append(out.clone())
            zfs.append(stages_mri.zero_filled_preview(s, config.postprocess).clone())
            if s.reference is not None and tuple(s.reference.shape) == tuple(out.shape):
                refs.append(s.reference.float().clone())
            del s, ks
            release_memory()  # per-slice buffers back to the OS: peak RSS stays flat
    finally:
        if src is not None:
            src.close()
    recon = torch.stack(outs)
    reference = torch.stack(refs) if len(refs) == n else None
    accel = acquired / sampled if sampled else None  # None: non-Cartesian, not judged here
    return recon, reference, torch.stack(zfs), header.geometry, accel


def export(config: PipelineConfig, path: Path, output: Path, image: Image,
           reference: torch.Tensor | None, zero_filled: torch.Tensor | None,
           result: VolumeResult, name: str | None = None) -> None:
    """Write the configured formats for one volume; records the output paths in ``result``."""
    from mrirecon import io

    stem = name or (path.stem if path.is_file() else path.name)
    formats = config.export.formats
    if "hdf5" in formats:
        target = output / "reconstructions" / f"{stem}.h5"
        io.write_reconstruction(target, image.data.numpy())
        result.outputs["hdf5"] = str(target)
    if "nifti" in formats:
        target = output / "nifti" / f"{stem}.nii.gz"
        io.write_nifti(image, target)
        result.outputs["nifti"] = str(target)
    if "dicom" in formats:
        folder = output / "dicom" / stem
        io.write_dicom_series(image, folder, series_description=config.export.series_description
                              or image.description, keep_identity=config.export.keep_identity)
        result.outputs["dicom"] = str(folder)
    if "png" in formats:
        result.figures = _figures(image, reference, zero_filled, output / "figures" / stem,
                                  config.report.max_slices_in_figures)


def _figures(image: Image, reference, zero_filled, folder: Path, max_slices: int) -> list[str]:
    from mrirecon.io.png import save_panel

    vol = image.data.numpy()
    n = vol.shape[0]
    picks = sorted(set(np.linspace(0, n - 1, min(max_slices, n)).round().astype(int).tolist()))
    paths = []
    for k in picks:
        imgs, titles, err_idx = [vol[k]], ["reconstruction"], None
        vmax = float(vol[k].max())
        if reference is not None:
            ref = reference[k].numpy()
            vmax = float(ref.max())
            imgs += [ref, np.abs(vol[k] - ref)]
            titles += ["reference", "|error|"]
            err_idx = 2
        if zero_filled is not None:
            imgs.append(zero_filled[k].numpy())
            titles.append("zero-filled input" if image.modality == "MR" else "FBP input")
        if image.modality == "CT":
            imgs = [np.clip(i, -200, 400) + 200 if j != err_idx else i for j, i in enumerate(imgs)]
            vmax = 600
        paths.append(str(save_panel(imgs, titles, folder / f"slice_{k:03d}.png", vmax=vmax,
                                    error_index=err_idx, suptitle=f"slice {k}")))
    return paths
