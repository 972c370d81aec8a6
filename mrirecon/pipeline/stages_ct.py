"""CT pipeline stages: LoDoPaB-layout sinograms (or a DICOM image series) -> HU volume.

Inputs
------
* an ``observation_{part}_{i}.hdf5`` file in the LoDoPaB-CT layout (public or simulated by
  ``mrirecon simulate ct``): every sample is a slice; the matching ``ground_truth`` file, when
  present, is the reference;
* a DICOM CT series (folder): the images are the reference and the sinogram is simulated by the
  projector (``undersample.views`` / ``undersample.photons`` set the acquisition), i.e. a
  retrospective dose / view-count study.

Metrics are computed on attenuation normalised like LoDoPaB's ground truth (``mu / MU_MAX``,
non-negative, so fastMRI's ``data_range = gt.max()`` convention is meaningful); exports are in HU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mrirecon.containers import ImageGeometry
from mrirecon.operators import ct_operator
from mrirecon.operators.ct import cached_ct_operator, projector_norm
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.schema import PipelineConfig, ReconstructConfig, UndersampleConfig

_OBS = re.compile(r"^observation_(?P<part>.+)_(?P<index>\d{3})\.hdf5$")


@dataclass
class CTSlice:
    """One slice: post-log sinogram ``(views, detectors)`` on ``geometry``; reference in 1/mm."""

    sinogram: Tensor
    geometry: CTGeometry
    reference: Tensor | None = None
    image: Tensor | None = None


def undersample(s: CTSlice, cfg: UndersampleConfig, seed: int) -> CTSlice:
    """Sparse views (``views``: keep that many, equispaced) and extra dose reduction
    (``photons``: Poisson noise on the transmission) when ``enabled``."""
    if not cfg.enabled:
        return s
    from mrirecon.sampling import low_dose_noise, sparse_view

    sino, geometry = s.sinogram, s.geometry
    if cfg.views is not None and cfg.views < geometry.num_views:
        factor = geometry.num_views // cfg.views
        geometry, idx = sparse_view(geometry, factor)
        sino = sino[..., torch.as_tensor(idx), :]
    if cfg.photons is not None:
        g = torch.Generator().manual_seed(seed)
        sino = low_dose_noise(sino, cfg.photons, g)
    return CTSlice(sino, geometry, s.reference)


def reconstruct(s: CTSlice, cfg: ReconstructConfig, model: torch.nn.Module | None,
                device: str, scale: float | None = None) -> CTSlice:
    """FBP / SIRT / TV by name, or a learned ``model(y, op)``; image in 1/mm ``(H, W)``.

    Learned models see the projector scaled to unit norm and the data scaled alike
    (``A / ||A||``, ``y / ||A||``), as in training (:mod:`mrirecon.training.data_ct`); the
    solution of ``A x = y`` is unchanged.
    """
    from mrirecon import recon

    op = cached_ct_operator(s.geometry, device)  # built once per geometry, not per slice
    y = s.sinogram.to(device)
    if model is not None:
        norm = projector_norm(s.geometry)
        with torch.inference_mode():
            image = model((y / norm).unsqueeze(0), op * (1.0 / norm))[0]
    elif cfg.method == "fbp":
        image = recon.run(cfg.method, y, op, **cfg.params)
    else:  # iterative methods run on data scaled so the image peak is ~1 (lam is relative)
        if scale is None:  # the peak of the Hann FBP, unless the caller already has it
            from mrirecon.operators.fbp import fbp

            scale = float(fbp(y, s.geometry, filter="hann").max())
        scale = max(scale, 1e-12)
        image = recon.run(cfg.method, y / scale, op, **cfg.params) * scale
    image = image.real if image.is_complex() else image
    return CTSlice(s.sinogram, s.geometry, s.reference, image.cpu().float())


def _slice_seed(name: str, index: int) -> int:
    return (sum((i + 1) * ord(c) for i, c in enumerate(name)) * 1009 + index) % (2**31 - 1)


def _check_ct_slice(s: CTSlice, path: Path, k: int, reference: bool) -> None:
    if not bool(torch.isfinite(s.sinogram).all()):
        raise ValueError(f"{path}: slice {k}: the sinogram holds NaN or Inf values")
    if not bool((s.sinogram != 0).any()):
        raise ValueError(f"{path}: slice {k}: the sinogram is all zero; nothing to reconstruct")
    if reference and s.reference is not None and not bool(torch.isfinite(s.reference).all()):
        raise ValueError(f"{path}: slice {k}: the reference holds NaN or Inf values; metrics "
                         "would be meaningless (set evaluate.enabled=false to skip them)")


def ct_volume(config: PipelineConfig, path: Path, fmt: str, model, device: str, progress: bool,
              prepare=None):
    """Reconstruct all slices of one CT input; returns the pieces :mod:`volume` exports.

    ``prepare(model, [(y, op)]) -> model`` (e.g. the adapt stage) sees every undersampled
    slice (line integrals ``(1, views, detectors)``, ``ct_operator(geometry)``) first."""
    from tqdm.auto import tqdm

    from mrirecon.io.lodopab import MU_MAX_PER_MM, LoDoPaBFiles, attenuation_to_hu, hu_to_attenuation
    from mrirecon.pipeline.runner import release_memory

    if fmt == "dicom":
        from mrirecon.io import read_dicom_series

        series = read_dicom_series(path)
        if series.modality != "CT" or series.kind != "hu":
            raise ValueError(f"{path}: a CT pipeline needs a CT series in Hounsfield units, found "
                             f"Modality {series.modality!r} ({series.kind}); use an MRI pipeline "
                             "for MR data")
        hu = series.data.double()
        mu_all = torch.as_tensor(hu_to_attenuation(hu.numpy())).float().clamp_min(0)
        n, h, w = mu_all.shape
        pixel = float(series.geometry.spacing[1])
        geometry = CTGeometry.parallel((h, w), num_views=config.undersample.views or 360,
                                       pixel_size=pixel)
        op = ct_operator(geometry)
        names = [(path.name, k) for k in range(n)]

        def read(k):
            return CTSlice(op(mu_all[k].double()).float(), geometry, mu_all[k])

        image_geometry = series.geometry
        mu_water, mu_air = None, None
    elif fmt == "ct_hdf5":
        m = _OBS.match(path.name)
        if m is None:
            raise ValueError(f"{path}: CT HDF5 input must be an observation_<part>_<NNN>.hdf5 file "
                             "in the LoDoPaB-CT layout")
        files = LoDoPaBFiles(path.parent, m.group("part"))
        f = int(m.group("index"))
        start = int(sum(files.counts[:f]))
        n = files.counts[f]
        has_gt = files.ground_truth_files is not None

        def read(k):
            ref = files.attenuation(start + k).data[0] if has_gt else None
            return CTSlice(files.sinogram(start + k).data[0], files.geometry, ref)

        names = [(path.name, k) for k in range(n)]
        p = files.geometry.pixel_size
        image_geometry = ImageGeometry(spacing=(p, p, p))
        mu_water, mu_air = files.mu_water, files.mu_air
    else:
        raise ValueError(f"{path}: a CT pipeline needs LoDoPaB-layout HDF5 or a DICOM series, found {fmt}")

    recons, refs, previews = [], [], []
    from mrirecon.operators.fbp import fbp

    if prepare is not None:  # e.g. adapt: the model sees every undersampled slice first
        from mrirecon.pipeline.adapt_stage import ct_pair

        pairs = []
        for k in range(n):
            s = undersample(read(k), config.undersample, _slice_seed(*names[k]))
            pairs.append(ct_pair(s, device))
        model = prepare(model, pairs)

    for k in tqdm(range(n), desc=path.name, unit="slice", disable=not progress, leave=False):
        s = read(k)
        _check_ct_slice(s, path, k, config.evaluate.enabled)
        s = undersample(s, config.undersample, _slice_seed(*names[k]))
        if model is not None and k == 0:
            from mrirecon.pipeline.model_range import warn_outside_range

            warn_outside_range(model, matrix=tuple(s.geometry.image_shape), views=s.geometry.num_views)
        preview = fbp(s.sinogram, s.geometry, filter="hann").float()  # in the data's float32
        if model is None and config.reconstruct.method == "fbp" and \
                dict(config.reconstruct.params) == {"filter": "hann"}:
            s = CTSlice(s.sinogram, s.geometry, s.reference, preview)  # the same FBP, once
        else:
            s = reconstruct(s, config.reconstruct, model, device, scale=float(preview.max()))
        recons.append(s.image)
        previews.append(preview)
        if s.reference is not None:
            refs.append(s.reference.float())
        release_memory()
    mu = torch.stack(recons)
    reference = torch.stack(refs) if len(refs) == n else None
    kw = {} if mu_water is None else {"mu_water": mu_water, "mu_air": mu_air}
    hu = torch.from_numpy(np.asarray(attenuation_to_hu(mu.double().numpy(), **kw))).float()
    eval_ref = None if reference is None else reference / MU_MAX_PER_MM
    eval_pred = mu / MU_MAX_PER_MM
    display_ref = None if reference is None else torch.from_numpy(
        np.asarray(attenuation_to_hu(reference.double().numpy(), **kw))).float()
    display_prev = torch.from_numpy(np.asarray(attenuation_to_hu(torch.stack(previews).double().numpy(),
                                                                 **kw))).float()
    return hu, eval_ref, eval_pred, display_ref, display_prev, image_geometry
