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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mrirecon.containers import ImageGeometry
from mrirecon.operators import ct_operator
from mrirecon.operators.ct import cached_ct_operator, projector_norm
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.schema import PipelineConfig, ReconstructConfig, UndersampleConfig
from mrirecon.pipeline.stream import Method, Modality, VolumeRun, detect_format

_OBS = re.compile(r"^observation_(?P<part>.+)_(?P<index>\d{3})\.hdf5$")


@dataclass
class CTSlice:
    """One slice: post-log sinogram ``(views, detectors)`` on ``geometry``; reference in 1/mm.

    ``file_name`` and ``index`` seed the dose simulation of :func:`undersample`; ``preview`` is
    the Hann-filtered FBP of the (undersampled) sinogram once computed (the report's input image
    and the intensity scale of iterative methods); ``image`` the reconstruction in 1/mm.
    """

    sinogram: Tensor
    geometry: CTGeometry
    reference: Tensor | None = None
    image: Tensor | None = None
    file_name: str = ""
    index: int = 0
    preview: Tensor | None = None


def slice_seed(name: str, index: int) -> int:
    """The noise seed of slice ``index`` of file ``name`` (stable across runs and machines)."""
    return (sum((i + 1) * ord(c) for i, c in enumerate(name)) * 1009 + index) % (2**31 - 1)


def undersample(s: CTSlice, cfg: UndersampleConfig) -> CTSlice:
    """Sparse views (``views``: keep that many, equispaced) and extra dose reduction
    (``photons``: Poisson noise on the transmission, seeded by :func:`slice_seed` of the
    slice's file name and index) when ``enabled``."""
    if not cfg.enabled:
        return s
    from mrirecon.sampling import low_dose_noise, sparse_view

    sino, geometry = s.sinogram, s.geometry
    if cfg.views is not None and cfg.views < geometry.num_views:
        factor = geometry.num_views // cfg.views
        geometry, idx = sparse_view(geometry, factor)
        sino = sino[..., torch.as_tensor(idx), :]
    if cfg.photons is not None:
        g = torch.Generator().manual_seed(slice_seed(s.file_name, s.index))
        sino = low_dose_noise(sino, cfg.photons, g)
    return replace(s, sinogram=sino, geometry=geometry, image=None, preview=None)


def reconstruct(s: CTSlice, cfg: ReconstructConfig, model: torch.nn.Module | None) -> CTSlice:
    """FBP / SIRT / TV by name, or a learned ``model(y, op)``; image in 1/mm ``(H, W)`` on the CPU.

    Runs on the sinogram's device. Learned models see the projector scaled to unit norm and the
    data scaled alike (``A / ||A||``, ``y / ||A||``), as in training
    (:mod:`mrirecon.training.data_ct`); the solution of ``A x = y`` is unchanged. Iterative
    methods run on data scaled so that the image peak is ~1 (``lam`` is relative): the peak of
    the slice's ``preview`` (Hann FBP), computed here when absent. ``fbp`` with the Hann filter
    reuses the ``preview``.
    """
    from mrirecon import recon

    y = s.sinogram
    device = str(y.device)
    if model is None and cfg.method == "fbp" and dict(cfg.params) == {"filter": "hann"} \
            and s.preview is not None:
        return replace(s, image=s.preview.cpu().float())  # the same FBP, once
    op = cached_ct_operator(s.geometry, device)  # built once per geometry, not per slice
    if model is not None:
        norm = projector_norm(s.geometry)
        with torch.inference_mode():
            image = model((y / norm).unsqueeze(0), op * (1.0 / norm))[0]
    elif cfg.method == "fbp":
        image = recon.run(cfg.method, y, op, **cfg.params)
    else:
        preview = s.preview if s.preview is not None else fbp_preview(s)
        scale = max(float(preview.max()), 1e-12)
        image = recon.run(cfg.method, y / scale, op, **cfg.params) * scale
    image = image.real if image.is_complex() else image
    return replace(s, image=image.cpu().float())


def fbp_preview(s: CTSlice) -> Tensor:
    """The Hann-filtered FBP of the slice's sinogram, in the data's float32."""
    from mrirecon.operators.fbp import fbp

    return fbp(s.sinogram, s.geometry, filter="hann").float()


#: The largest post-log value a real sinogram can hold: counts >= 1 out of I0 <= ~1e13 photons
#: give -log(I / I0) <= 30; the bound leaves a wide margin (pre-log counts are far above it).
MAX_LINE_INTEGRAL = 1000.0


def check_slice(s: CTSlice, path: Path, k: int, reference: bool) -> None:
    """Refuse a slice that cannot give a meaningful image, naming the file and slice."""
    if not bool(torch.isfinite(s.sinogram).all()):
        raise ValueError(f"{path}: slice {k}: the sinogram holds NaN or Inf values")
    if not bool((s.sinogram != 0).any()):
        raise ValueError(f"{path}: slice {k}: the sinogram is all zero; nothing to reconstruct")
    sino = s.sinogram.double()
    mean, rms = float(sino.mean()), float(sino.square().mean().sqrt())
    if mean < -0.05 * rms:  # noise alone averages to ~0 (|mean| ~ rms / sqrt(size))
        raise ValueError(f"{path}: slice {k}: the sinogram's mean line integral is negative "
                         f"({mean:.3g}, rms {rms:.3g}); post-log data are -log(I / I0) >= 0 up to "
                         "noise: is the sign flipped (log(I / I0) stored)?")
    peak = float(sino.abs().max())
    if peak > MAX_LINE_INTEGRAL:  # e^-30 already needs ~1e13 photons per bin to leave one count
        raise ValueError(f"{path}: slice {k}: the sinogram reaches {peak:.3g}; post-log line "
                         f"integrals -log(I / I0) stay below {MAX_LINE_INTEGRAL:g} (a transmission "
                         f"of e^-{MAX_LINE_INTEGRAL:g} leaves no photon): are these pre-log counts "
                         "or a rescaled sinogram?")
    if reference and s.reference is not None and not bool(torch.isfinite(s.reference).all()):
        raise ValueError(f"{path}: slice {k}: the reference holds NaN or Inf values; metrics "
                         "would be meaningless (set evaluate.enabled=false to skip them)")


# ---- the stage protocol -----------------------------------------------------------------------


class _DicomSource:
    """A CT DICOM series: the images are the reference, the sinogram is projected from them."""

    def __init__(self, path: Path, views: int | None) -> None:
        from mrirecon.io import read_dicom_series
        from mrirecon.io.lodopab import hu_to_attenuation

        series = read_dicom_series(path)
        if series.modality != "CT" or series.kind != "hu":
            raise ValueError(f"{path}: a CT pipeline needs a CT series in Hounsfield units, found "
                             f"Modality {series.modality!r} ({series.kind}); use an MRI pipeline "
                             "for MR data")
        hu = series.data.double()
        self._mu = torch.as_tensor(hu_to_attenuation(hu.numpy())).float().clamp_min(0)
        _, h, w = self._mu.shape
        pixel = float(series.geometry.spacing[1])
        self._geometry = CTGeometry.parallel((h, w), num_views=views or 360, pixel_size=pixel)
        self._op = ct_operator(self._geometry)
        self.path = path
        self.info = {"image_geometry": series.geometry, "hu_units": {}}

    def __len__(self) -> int:
        return self._mu.shape[0]

    def read(self, k: int) -> CTSlice:
        mu = self._mu[k]
        return CTSlice(self._op(mu.double()).float(), self._geometry, mu, file_name=self.path.name,
                       index=k)

    def close(self) -> None:
        pass


class _LoDoPaBSource:
    """One ``observation_<part>_<NNN>.hdf5`` file (and its ground truth, when present)."""

    def __init__(self, path: Path) -> None:
        from mrirecon.io.lodopab import LoDoPaBFiles

        m = _OBS.match(path.name)
        if m is None:
            raise ValueError(f"{path}: CT HDF5 input must be an observation_<part>_<NNN>.hdf5 file "
                             "in the LoDoPaB-CT layout")
        self._files = files = LoDoPaBFiles(path.parent, m.group("part"))
        f = int(m.group("index"))
        self._start, self._n = int(sum(files.counts[:f])), files.counts[f]
        self._has_gt = files.ground_truth_files is not None
        self.path = path
        p = files.geometry.pixel_size
        units = {} if files.mu_water is None else {"mu_water": files.mu_water,
                                                   "mu_air": files.mu_air}
        self.info = {"image_geometry": ImageGeometry(spacing=(p, p, p)), "hu_units": units,
                     "reference_key": "ground_truth_" + m.group("part")}

    def __len__(self) -> int:
        return self._n

    def read(self, k: int) -> CTSlice:
        i = self._start + k
        ref = self._files.attenuation(i).data[0] if self._has_gt else None
        return CTSlice(self._files.sinogram(i).data[0], self._files.geometry, ref,
                       file_name=self.path.name, index=k)

    def close(self) -> None:
        pass


class CTStages(Modality[CTSlice]):
    """The CT stage protocol (:class:`~mrirecon.pipeline.stream.Modality`) over this module's
    stage functions, configured by a pipeline config. There is no calibration; ``undersample``
    also computes the slice's Hann FBP ``preview``."""

    def __init__(self, config: PipelineConfig, *, device: str = "cpu") -> None:
        self.config, self.device = config, device

    def load(self, path: Path):
        fmt = detect_format(path, self.config.load.format)
        if fmt == "dicom":
            return _DicomSource(path, self.config.undersample.views)
        if fmt == "ct_hdf5":
            return _LoDoPaBSource(path)
        raise ValueError(f"{path}: a CT pipeline needs LoDoPaB-layout HDF5 or a DICOM series, "
                         f"found {fmt}")

    def preprocess(self, s: CTSlice) -> CTSlice:
        check_slice(s, Path(s.file_name), s.index, self.config.evaluate.enabled)
        return s

    def undersample(self, s: CTSlice) -> CTSlice:
        s = undersample(s, self.config.undersample)
        return replace(s, preview=fbp_preview(s))

    def to_device(self, s: CTSlice) -> CTSlice:
        return replace(s, sinogram=s.sinogram.to(self.device))

    def reconstruct(self, s: CTSlice, method: Method) -> CTSlice:
        return reconstruct(s, method.config, method.model)

    def postprocess(self, s: CTSlice) -> Tensor:
        return s.image

    def reference(self, s: CTSlice) -> Tensor | None:
        return s.reference

    def preview(self, s: CTSlice) -> Tensor | None:
        return s.preview


def hu_volumes(run: VolumeRun, info: dict, name: str):
    """Method ``name``'s attenuation volume of ``run`` -> ``(hu, eval_ref, eval_pred, display_ref,
    display_preview)``: HU for export and display, ``mu / MU_MAX`` for the metrics."""
    from mrirecon.io.lodopab import MU_MAX_PER_MM, attenuation_to_hu

    def hu(mu: Tensor | None) -> Tensor | None:
        if mu is None:
            return None
        return torch.from_numpy(np.asarray(attenuation_to_hu(mu.double().numpy(),
                                                             **info["hu_units"]))).float()

    mu, reference = run.outputs[name], run.reference
    eval_ref = None if reference is None else reference / MU_MAX_PER_MM
    return hu(mu), eval_ref, mu / MU_MAX_PER_MM, hu(reference), hu(run.preview)
