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

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mrirecon.containers import ImageGeometry
from mrirecon.operators import ct_operator
from mrirecon.operators.ct import cached_ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.ct_consistency import (OPPOSITE_MISMATCH, above_count_floor, centre_warning,
                                              dead_views_message, dose_note, drop_dead_views,
                                              edge_levels, mark_dead_views, missing_rays,
                                              offset_short_side_note, opposite_view_mismatch,
                                              transmission_warning, views_note)
from mrirecon.training.ct_dose_check import dose_warning
from mrirecon.pipeline.ct_fan_check import dead_bins, fan_geometry_warning, sinogram_p99
from mrirecon.pipeline.ct_plausibility import (NOISE_FIT_METHODS, bulk_shift_warning,
                                               coverage_warning, empty_sinogram_message,
                                               floor_warnings, image_warnings, noise_fit_warning)
from mrirecon.pipeline.schema import PipelineConfig, ReconstructConfig, UndersampleConfig
from mrirecon.pipeline.stream import Method, Modality, detect_format
from mrirecon.sampling import file_seed


@dataclass
class CTSlice:
    """One slice: post-log sinogram ``(views, detectors)`` on ``geometry``; reference in 1/mm.

    ``file_name`` and ``index`` seed the dose simulation of :func:`undersample`; ``preview`` is
    the Hann-filtered FBP of the (undersampled) sinogram once computed (the report's input image
    and the intensity scale of iterative methods); ``image`` the reconstruction in 1/mm;
    ``data_photons`` the dose of the noise the data already hold (``None``: noise-free or unknown)
    and ``data_min_counts`` their count floor (LoDoPaB: 0.1 photons), which lowering that dose
    by thinning needs (:func:`undersample`).
    """

    sinogram: Tensor
    geometry: CTGeometry
    reference: Tensor | None = None
    image: Tensor | None = None
    file_name: str = ""
    index: int = 0
    preview: Tensor | None = None
    data_photons: float | None = None
    data_min_counts: float = 0.1
    data_noise: str | None = None  # why data without a dose hold noise (lodopab_attrs.unknown_dose)
    views_sorted: bool = False  # the file stored its views out of angle order (sort_views)
    views_message: str | None = None  # how undersample.views was met (views_note)
    # a DICOM series reader's (level, kind, text): padding read as air, bits above HighBit, ...
    reader_messages: tuple[tuple[str, str, str], ...] = ()
    dead: Tensor | None = None  # views read as dropped projections: file index, else -1
    dropped: tuple[int, ...] = ()  # the file indices of those left out after undersample
    # water's attenuation (1/mm) the file states (mu_water_per_mm), None where it states none:
    # the image's scale is judged against it (ct_plausibility.image_warnings)
    data_mu_water: float | None = None


def slice_seed(name: str, index: int, cfg: UndersampleConfig | None = None) -> int:
    """The noise seed of slice ``index`` of file ``name`` (stable across runs and machines).
    With ``cfg.seed == "fixed"`` the file name is replaced by ``cfg.fixed_seed``, as the MRI
    masks are: every file gets the same noise sequence (per slice index)."""
    if cfg is not None and cfg.seed == "fixed":
        base = cfg.fixed_seed + 1  # 0 .. 2**32 - 1, checked at load
    else:  # the name hashed (a weighted character sum gave 280 LoDoPaB names 136 seeds)
        base = int(np.random.SeedSequence(file_seed(name)).generate_state(1)[0])
    return (base * 1009 + index) % (2**31 - 1)


def undersample(s: CTSlice, cfg: UndersampleConfig) -> CTSlice:
    """Sparse views (``views``: every ``k``-th view, ``k = n // views``, about that many; see
    :func:`~mrirecon.sampling.view_factor`) and a lower dose (``photons``) when ``enabled``.

    The dose: data that already hold Poisson noise at ``s.data_photons`` per bin (LoDoPaB
    observations: 4096) are thinned binomially to exactly ``photons``
    (:func:`~mrirecon.sampling.thin_dose`; more than the data's dose is refused, naming the
    file and ``undersample.photons``); noise-free data (``data_photons`` ``None``) get Poisson
    noise at ``photons`` (:func:`~mrirecon.sampling.low_dose_noise`). Either draw is seeded by
    :func:`slice_seed` of the slice's file name (or ``fixed_seed`` with ``seed: fixed``) and
    index."""
    if not cfg.enabled:
        return s
    from mrirecon.sampling import low_dose_noise, sparse_view, thin_dose, view_factor
    from mrirecon.sampling.views import check_noise_free

    sino, geometry = s.sinogram, s.geometry
    factor = 1
    if cfg.views is not None and cfg.views < geometry.num_views:
        factor = view_factor(geometry.num_views, cfg.views, f"{s.file_name}: undersample.views")
        geometry, idx = sparse_view(geometry, factor)
        sino = sino[..., torch.as_tensor(idx), :]
        s = s if s.dead is None else replace(s, dead=s.dead[torch.as_tensor(idx)])
    message = views_note(s.geometry.num_views, factor, geometry.num_views, cfg)
    if cfg.photons is not None:
        g = torch.Generator().manual_seed(slice_seed(s.file_name, s.index, cfg))
        who = f"{s.file_name}: undersample.photons"
        if s.data_photons is None:  # refused for data that hold noise of an unknown dose
            check_noise_free(sino, who, s.data_noise)
            sino = low_dose_noise(sino, cfg.photons, g)
        else:
            sino = thin_dose(sino, s.data_photons, cfg.photons, g, min_counts=s.data_min_counts,
                             who=who, source=s.file_name)
    return replace(s, sinogram=sino, geometry=geometry, image=None, preview=None,
                   views_message=message)


#: The note of a slice whose views :func:`sort_views` put in angle order.
VIEWS_SORTED_NOTE = ("views stored out of angle order (golden-angle or interleaved acquisition): "
                     "sorted by angle for reconstruction")


def angle_order(geometry: CTGeometry) -> np.ndarray | None:
    """The stable permutation of the views into ascending angle order; ``None`` when they are in
    it already (repeated angles keep their stored order).

    The angles are sorted as stored, not folded: a parallel-beam set over more than a half turn
    keeps its views at ``a >= pi`` (that at ``a - pi`` with the detector reversed). Rows in
    ascending angle order form a sinogram that varies smoothly from row to row over any span, as
    the learned primal-dual's dual CNN (3 x 3 convolutions over (views, detectors)) saw in
    training; a shuffled, interleaved or golden-angle order cost it 3-4 dB with no word. The
    order is circular (:func:`~mrirecon.operators.fbp.scan_order`): a scan over 230°..459°
    written modulo a turn stays one run from 230°, not two sorted from 0°."""
    from mrirecon.operators.fbp import scan_order

    return scan_order(geometry.angles)


def sort_views(s: CTSlice) -> CTSlice:
    """``s`` with its sinogram rows and geometry angles in ascending angle order (and
    ``views_sorted`` set), or ``s`` itself when they are in it: the image of every method is
    then that of the sorted file, bit for bit."""
    order = angle_order(s.geometry)
    if order is None:
        return s
    g = s.geometry
    rows = torch.as_tensor(order, device=s.sinogram.device)
    return replace(s, sinogram=s.sinogram.index_select(-2, rows), views_sorted=True,
                   geometry=replace(g, angles=tuple(g.angles[i] for i in order)),
                   dead=None if s.dead is None else s.dead[torch.as_tensor(order)])


def reconstruct(s: CTSlice, cfg: ReconstructConfig, model: torch.nn.Module | None) -> CTSlice:
    """FBP / SIRT / TV by name, or a learned ``model(y, op)``; image in 1/mm ``(H, W)`` on the CPU.

    Runs on the sinogram's device. Learned models see the projector scaled to unit norm and the
    data scaled alike (``A / ||A||``, ``y / ||A||``), as in training
    (:mod:`mrirecon.training.data_ct`); the solution of ``A x = y`` is unchanged. Iterative
    methods run on data scaled so that the image peak is ~1 (``lam`` is relative): the peak of
    the slice's ``preview`` (Hann FBP), computed here when absent. ``fbp`` with the Hann filter
    reuses the ``preview``. Every method sees the views in ascending angle order
    (:func:`sort_views`; a no-op on sorted data).
    """
    from mrirecon import recon

    s, stored = sort_views(s), s  # the pipeline sorted at preprocess; a library call may not
    y = s.sinogram
    device = str(y.device)
    if model is None and cfg.method == "fbp" and dict(cfg.params) == {"filter": "hann"} \
            and s.preview is not None:
        return replace(stored, image=s.preview.cpu().float())  # the same FBP, once
    op = cached_ct_operator(s.geometry, device)  # built once per geometry, not per slice
    if model is not None:  # the unit-norm projector the models were trained with
        from mrirecon.models.ct_scale import unit_norm_ct

        with torch.inference_mode():
            image = model(*unit_norm_ct(y.unsqueeze(0), op))[0]
    elif cfg.method == "fbp":
        image = recon.run(cfg.method, y, op, **cfg.params)
    else:
        preview = s.preview if s.preview is not None else fbp_preview(s)
        scale = max(float(preview.max()), 1e-12)
        image = recon.run(cfg.method, y / scale, op, **cfg.params) * scale
    image = image.real if image.is_complex() else image
    return replace(stored, image=image.cpu().float())


def fbp_preview(s: CTSlice) -> Tensor:
    """The Hann-filtered FBP of the slice's sinogram, in the data's float32."""
    from mrirecon.operators.fbp import fbp

    return fbp(s.sinogram, s.geometry, filter="hann").float()


#: The densest mean attenuation (1/mm) a ray through the whole image can meet: bone is ~0.05,
#: steel ~0.3 at CT energies; lengths in m or cm instead of mm give 10-1000x more.
MAX_MEAN_ATTENUATION = 2.0

#: The largest post-log value a real sinogram can hold: counts >= 1 out of I0 <= ~1e13 photons
#: give -log(I / I0) <= 30; the bound leaves a wide margin (pre-log counts are far above it).
MAX_LINE_INTEGRAL = 1000.0


def check_slice(s: CTSlice, path: Path, k: int, reference: bool) -> None:
    """Refuse a slice that cannot give a meaningful image, naming the file and slice."""
    if not bool(torch.isfinite(s.sinogram).all()):
        raise ValueError(f"{path}: slice {k}: the sinogram holds NaN or Inf values")
    if not bool((s.sinogram != 0).any()):
        raise ValueError(f"{path}: slice {k}: the sinogram is all zero; nothing to reconstruct")
    from mrirecon.recon.checks import flipped_sign_message

    if (flipped := flipped_sign_message(s.sinogram)) is not None:  # the library's rule
        raise ValueError(f"{path}: slice {k}: {flipped}")
    sino = s.sinogram.double()
    peak = float(sino.abs().max())
    if float(sino.max()) == float(sino.min()):
        raise ValueError(f"{path}: slice {k}: the sinogram is constant (every line integral is "
                         f"{float(sino.max()):.6g}); no object inside the field of view projects "
                         "so: nothing to reconstruct")
    if peak > MAX_LINE_INTEGRAL:  # e^-30 already needs ~1e13 photons per bin to leave one count
        raise ValueError(f"{path}: slice {k}: the sinogram reaches {peak:.3g}; post-log line "
                         f"integrals -log(I / I0) stay below {MAX_LINE_INTEGRAL:g} (a transmission "
                         f"of e^-{MAX_LINE_INTEGRAL:g} leaves no photon): are these pre-log counts "
                         "or a rescaled sinogram?")
    if (why := above_count_floor(float(sino.max()), s.data_photons, s.data_min_counts)):
        raise ValueError(f"{path}: slice {k}: {why}")
    g = s.geometry
    chord = g.pixel_size * math.hypot(*g.image_shape)  # the longest ray through the image, mm
    if peak / chord > MAX_MEAN_ATTENUATION:
        raise ValueError(f"{path}: slice {k}: the sinogram's peak line integral {peak:.3g} needs a "
                         f"mean attenuation of {peak / chord:.3g} / mm along the longest ray "
                         f"through the image ({chord:.3g} mm), denser than any tissue or implant "
                         f"(water 0.019, bone ~0.05, steel ~0.3 / mm): are the geometry's lengths "
                         f"in mm (pixel_size {g.pixel_size:.3g}, detector_spacing "
                         f"{g.detector_spacing:.3g})?")
    if reference and s.reference is not None and not bool(torch.isfinite(s.reference).all()):
        raise ValueError(f"{path}: slice {k}: the reference holds NaN or Inf values; metrics "
                         "would be meaningless (set evaluate.enabled=false to skip them)")


#: Outer detector bins (a fraction of the detector, on each side) that must see air.
EDGE_FRACTION = 0.02
#: Mean line integral in those bins, relative to the sinogram's 99th percentile, above which
#: the projections count as truncated. Air reads 0 up to noise, whose mean is ~0 (+1 / (2 I0)
#: from the log of few counts: below 0.01 of the percentile even at 64 photons per bin).
TRUNCATION_LEVEL = 0.05


#: Below this many views every method's image is dominated by streaks.
MIN_VIEWS = 8
#: Angles closer than this (rad) measure the same direction (any real angular step is ~1e-3).
SAME_ANGLE = 1e-6


def distinct_directions(geometry: CTGeometry) -> int:
    """How many different directions the views measure: angles modulo a half turn for a
    parallel beam (the view at ``a + pi`` holds the same rays, mirrored), a full turn for fan."""
    period = math.pi if geometry.beam == "parallel" else 2 * math.pi
    a = np.mod(np.asarray(geometry.angles, dtype=np.float64), period)
    a = np.sort(np.where(period - a < SAME_ANGLE, 0.0, a))
    return 1 + int(np.count_nonzero(np.diff(a) > SAME_ANGLE))


#: Parallel beam: every view sums to the same total (the object's integral times the detector
#: pitch, Helgason-Ludwig order 0); the spread of the view sums over their mean above which the
#: data cannot be a parallel-beam sinogram of this geometry. Noise and sparse views give ~0.002
#: at 4096 photons per bin, ~0.02 at 64 (photon starvation biases the long rays); a transposed
#: sinogram ~1.
MASS_SPREAD = 0.1


def data_warnings(sinogram: Tensor, geometry: CTGeometry) -> dict[str, str]:
    """What looks wrong in a post-log sinogram ``(views, detectors)`` but may be real: truncated
    projections, too few views, a dead detector bin, views whose sums disagree or a rotation
    axis away from the geometry's ``detector_offset`` (parallel beam),
    conjugate rays that disagree (fan beam), pre-log transmission data, a near-empty sinogram.

    No method here models an object wider than the detector: its rays through the body miss
    the outer bins, and every reconstruction gets a bright rim and shading (TV: pixels of
    ~100,000 HU on a simulated truncation). Air in the outer bins is what shows the object is
    inside the field of view."""
    sino = sinogram.double()
    out: dict[str, str] = {}
    views, n = sino.shape[-2:]
    directions = distinct_directions(geometry)
    if views < MIN_VIEWS:
        out["views"] = (f"only {views} view{'s' * (views > 1)}: below {MIN_VIEWS} views every "
                        "method's image is dominated by streaks")
    elif directions < MIN_VIEWS:  # 30 views all at one angle read as 30 views and gave 9 dB
        out["views"] = (f"the geometry's {views} angles give only {directions} distinct "
                        f"direction{'s' * (directions > 1)} (repeated angles"
                        f"{', or views half a turn apart' if geometry.beam == 'parallel' else ''}"
                        f"): below {MIN_VIEWS} directions every method's image is dominated by "
                        "streaks; are the angles in attrs/geometry right?")
    k = max(2, int(round(EDGE_FRACTION * n)))
    p99 = sinogram_p99(sino)
    edges = edge_levels(sino, geometry, k)  # an offset detector's short side: inside
    truncated = p99 > 0 and max(edges) > TRUNCATION_LEVEL * p99
    # a full turn on an offset detector whose short side reads the object (a half-fan scan):
    # whole views, but no view's centre of mass is the object's (a correct 133 mm offset was
    # told to be 127 mm)
    half_fan = p99 > 0 and max(float(sino[..., :k].mean()),
                               float(sino[..., -k:].mean())) > TRUNCATION_LEVEL * p99
    if (pre_log := transmission_warning(sino, k)) is not None:  # not line integrals: no more
        return {**out, "transmission": pre_log}
    if (empty := empty_sinogram_message(sino)) is not None:  # air: the rest would judge noise
        return {**out, "empty": empty}
    sums = sino.sum(-1)
    spread = float(sums.std() / sums.mean().abs()) if views > 1 and float(sums.mean()) else 0.0
    if geometry.beam == "parallel" and spread > MASS_SPREAD:
        out["inconsistent"] = (
            f"the views' total line integrals vary by {spread:.0%} (std / mean over {views} "
            "views), where every view of a parallel-beam sinogram sums to the same total: is "
            "the sinogram transposed (detectors x views), from another geometry (fan beam)"
            + (", or truncated (its outer bins do not read air)" if truncated else "") + "?")
    mirror = opposite_view_mismatch(sino, geometry)
    if mirror is not None and mirror > OPPOSITE_MISMATCH and "inconsistent" not in out:
        out["inconsistent"] = (
            f"views half a turn apart disagree ({mirror:.0%} relative difference), where a "
            "parallel-beam view at angle + pi is the one at angle, mirrored: are the angles "
            "wrong (a half-turn scan labelled as a full turn), or is this fan-beam data?")
    dead = dead_bins(sino, p99)  # zero in every view inside the object (left out of the pairs)
    if "inconsistent" not in out and (msg := fan_geometry_warning(sino, geometry, dead)) is not None:
        out["inconsistent"] = msg
    if not half_fan and "inconsistent" not in out and (msg := centre_warning(sino, geometry)):
        out["centre"] = msg  # the centre-of-mass fit needs whole projections
    if bool(dead.any()):
        cols = torch.nonzero(dead).flatten().tolist()
        out["dead"] = (f"detector bin{'s' * (len(cols) > 1)} {', '.join(map(str, cols[:8]))}"
                       f"{', ...' if len(cols) > 8 else ''} read{'s' * (len(cols) == 1)} zero in "
                       "every view inside the object (a dead detector element): expect a ring "
                       "artefact")
    if truncated and "inconsistent" not in out:
        side = "first" if edges[0] >= edges[1] else "last"
        out["truncated"] = (f"the projections look truncated: the {k} {side} detector bins read "
                            f"a mean line integral of {max(edges):.3g}, "
                            f"{max(edges) / p99:.0%} of the sinogram's 99th percentile "
                            f"{p99:.3g} (air reads ~0); if the object extends beyond the "
                            "detector, expect a bright rim and shading in every method's image"
                            + offset_short_side_note(geometry, edges, k, TRUNCATION_LEVEL * p99))
    miss = missing_rays(sino, geometry)
    if miss is not None and p99 > 0 and miss[1] > TRUNCATION_LEVEL * p99:
        out["geometry"] = (f"of the {miss[0]} detector bins whose rays miss the image (beyond its "
                           f"circumscribed circle, {miss[2]:.0f} mm) one reads a mean line integral of "
                           f"{miss[1]:.3g}, {miss[1] / p99:.0%} of the sinogram's 99th percentile "
                           "(air reads ~0): does the geometry (pixel_size, detector_spacing) "
                           "describe these data, and does the image cover the object?")
    return out


def reference_orientation(reference: Tensor, fbp: Tensor) -> str | None:
    """A message when a flip / rotation of the (square) reference matches the data's FBP much
    better than as read, naming the data too where they would explain it: a LoDoPaB ground truth
    stored as (rows, cols) was scored rotated (15.0 dB, SSIM 0.48 instead of 28.0 / 0.83)."""
    from mrirecon.pipeline.reference_checks import CT_DATA_CAUSES, orientation_note

    if reference.shape[-1] != reference.shape[-2]:
        return None
    return orientation_note(reference, fbp, "the data's FBP", " (LoDoPaB ground truths are ODL "
                            "(x, y), not (rows, cols))", causes=CT_DATA_CAUSES)


def reference_geometry(reference: Tensor, sinogram: Tensor, geometry: CTGeometry) -> str | None:
    """A message when the reference projects onto the sinogram far better with another geometry
    than ``geometry`` (a pitch at the isocentre, distances a few percent off, an axis shift, a
    parallel beam's pitch or pixel size, the angles offset by a start angle not recorded:
    :func:`mrirecon.training.ct_reference_geometry.
    reference_geometry_note`, the rule ``CTTrainingSet`` refuses by), else ``None``."""
    from mrirecon.training.ct_reference_geometry import reference_geometry_note

    note = reference_geometry_note(sinogram.cpu(), reference.cpu(), geometry, "the reference")
    return None if note is None else (
        f"attrs/geometry: {note}: does attrs/geometry describe these data (lengths in mm, the "
        "pitch at the detector)? Every method reconstructs through it")


# ---- the stage protocol -----------------------------------------------------------------------


class _DicomSource:
    """A CT DICOM series: the images are the reference, the sinogram is projected from them
    (parallel beam, at ``views``: ``undersample.views`` when undersampling is on, else 360)."""

    def __init__(self, path: Path, views: int | None, photons: float | None = None) -> None:
        from mrirecon.io.dicom_read import read_dicom_series_and_messages
        from mrirecon.io.lodopab import hu_to_attenuation

        series, header, self._messages = read_dicom_series_and_messages(path)
        if series.modality != "CT":
            raise ValueError(f"{path}: a CT pipeline needs a CT series in Hounsfield units, found "
                             f"Modality {series.modality!r} ({series.kind}); use an MRI pipeline "
                             "for MR data")
        if series.kind != "hu":  # was told to "use an MRI pipeline for MR data"
            raise ValueError(f"{path}: RescaleType: is not HU, so the CT values are read as "
                             f"{series.kind}; a CT pipeline needs a series in Hounsfield units "
                             "(RescaleType HU or absent): export it in HU")
        hu = series.data.double()
        self._mu = torch.as_tensor(hu_to_attenuation(hu.numpy())).float().clamp_min(0)
        _, h, w = self._mu.shape
        pixel, col = float(series.geometry.spacing[1]), float(series.geometry.spacing[2])
        if abs(pixel - col) > 1e-3 * max(pixel, col):  # the projector's pixels are square
            raise ValueError(f"{path}: PixelSpacing {pixel:g} x {col:g} mm: the CT projector "
                             "assumes square pixels, so the sinogram would be projected with "
                             f"{pixel:g} mm columns; resample the series to square pixels first")
        self._geometry = CTGeometry.parallel((h, w), num_views=views or 360, pixel_size=pixel)
        self._op = ct_operator(self._geometry)
        self._messages = [*self._messages, _projected_message(views or 360, views is None, photons)]
        self.path = path
        # the first slice's header travels to the DICOM export (technique; identity when kept)
        self.info = {"image_geometry": series.geometry, "hu_units": {}, "source_dataset": header}

    def __len__(self) -> int:
        return self._mu.shape[0]

    def read(self, k: int) -> CTSlice:
        mu = self._mu[k]
        return CTSlice(self._op(mu.double()).float(), self._geometry, mu, file_name=self.path.name,
                       index=k, reader_messages=self._messages)

    def close(self) -> None:
        pass


def _projected_message(views: int, default_views: bool, photons: float | None):
    """The reader message of a DICOM series projected by :class:`_DicomSource`: its metrics score
    the reconstruction of a sinogram made from the images against those images. A warning when
    nothing of an acquisition was simulated (undersampling off: 360 noise-free views; the
    metrics of a round trip read as a reconstruction's, 34-39 dB FBP), a note otherwise."""
    noise = f"Poisson noise at {photons:g} photons per bin" if photons else "no noise"
    text = (f"the sinogram was projected from the series' images (parallel beam, {views} views, "
            f"{noise}) and the metrics score the reconstruction against those same images: a "
            "simulation of the acquisition, not a reconstruction of acquired data")
    if default_views and not photons:
        return ("warning", "projected", text + "; set undersample.enabled=true with "
                "undersample.views / undersample.photons to simulate one worth scoring")
    return ("note", "projected", text)


class _LoDoPaBSource:
    """One ``observation_<part>_<NNN>.hdf5`` file (and its ground truth, when present)."""

    def __init__(self, path: Path) -> None:
        from mrirecon.io.lodopab import LoDoPaBFiles, parse_name, reference_file_name

        name = parse_name(path.name)
        if name is None or name[0] != "observation":
            raise ValueError(f"{path}: CT HDF5 input must be an observation_<part>_<NNN>.hdf5 file "
                             "in the LoDoPaB-CT layout")
        # this file alone: a damaged sibling (or one of another geometry) failed every input
        self._files = files = LoDoPaBFiles(path.parent, name[1], only=name[2])
        self._start, self._n = 0, files.counts[0]
        self._has_gt = files.has_ground_truth(0)  # per file: one missing reference spoiled all
        self.path = path
        # the file's own water, where it states one (LoDoPaB's files do not: 0.02 / mm assumed)
        self._mu_water = files.mu_water if "mu_water_per_mm" in files.attrs else None
        p = files.geometry.pixel_size
        units = {} if files.mu_water is None else {"mu_water": files.mu_water,
                                                   "mu_air": files.mu_air}
        self.info = {"image_geometry": ImageGeometry(spacing=(p, p, p), placed=False),
                     "hu_units": units, "reference_key": "ground_truth_" + name[1]}
        siblings = path.parent.glob(f"ground_truth_{name[1]}_[0-9][0-9][0-9].hdf5")
        if not self._has_gt and any(True for _ in siblings):
            gt = reference_file_name(path.name)
            self.info["reference_missing"] = f"{gt} is missing, while other files of its part have theirs"

    def __len__(self) -> int:
        return self._n

    def read(self, k: int) -> CTSlice:
        from mrirecon.io.lodopab_attrs import unknown_dose

        i = self._start + k
        ref = self._files.attenuation(i).data[0] if self._has_gt else None
        return CTSlice(self._files.sinogram(i).data[0], self._files.geometry, ref,
                       file_name=self.path.name, index=k, data_photons=self._files.data_photons,
                       data_min_counts=self._files.min_photon_count,
                       data_noise=unknown_dose(self._files.attrs), data_mu_water=self._mu_water)

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
        if fmt == "dicom":  # projected at the views kept (was: also with undersampling off)
            u = self.config.undersample
            return _DicomSource(path, u.views if u.enabled else None,
                                u.photons if u.enabled else None)
        if fmt == "ct_hdf5":
            return _LoDoPaBSource(path)
        raise ValueError(f"{path}: a CT pipeline needs LoDoPaB-layout HDF5 or a DICOM series, "
                         f"found {'BART (.cfl) MRI k-space' if fmt == 'bart' else fmt}")

    def preprocess(self, s: CTSlice) -> CTSlice:
        """Check the slice; mark its dropped projections; put its views in angle order (before
        ``undersample``, whose every ``k``-th view is then every ``k``-th by angle)."""
        check_slice(s, Path(s.file_name), s.index, self.config.evaluate.enabled)
        return sort_views(mark_dead_views(s))

    def undersample(self, s: CTSlice) -> CTSlice:
        s = drop_dead_views(undersample(s, self.config.undersample))  # kept by the views' rule
        return replace(s, preview=fbp_preview(s))

    def to_device(self, s: CTSlice) -> CTSlice:
        return replace(s, sinogram=s.sinogram.to(self.device))

    def data_messages(self, s: CTSlice) -> tuple[dict[str, str], dict[str, str]]:
        out = data_warnings(s.sinogram, s.geometry)  # without the dropped projections
        if s.dropped:
            out["dead_views"] = dead_views_message(list(s.dropped), s.geometry.num_views)
        if not {"transmission", "empty"} & set(out):  # pre-log data, air: no image scale
            out.update(image_warnings(s.preview, s.geometry.pixel_size, s.data_mu_water))
        if (msg := coverage_warning(s.geometry)) is not None:
            out["coverage"] = msg
        photons = self.dose(s)  # the dose of the data reconstructed, and its count floor
        floor = floor_warnings(s.sinogram.cpu(), photons, s.data_min_counts)  # dead bins too
        out.update({k: v for k, v in floor.items() if k not in out})
        judged = s.data_photons is not None and not {"transmission", "empty"} & set(out)
        if judged and (msg := dose_warning(s.sinogram, photons, s.data_photons,
                                           photons != s.data_photons)) is not None:
            out["dose_mismatch"] = msg  # the noise against the stated dose (not of an air scan)
        if s.reference is not None and s.preview is not None:
            msg = reference_orientation(s.reference, s.preview)
            if msg:
                out["reference_orientation"] = msg
        if s.reference is not None and s.index == 0 and "transmission" not in out:
            msg = reference_geometry(s.reference, s.sinogram, s.geometry)
            if msg:  # once per input (its first slice), as training checks each file
                out["reference_geometry"] = msg
        notes = {}
        for level, kind, text in s.reader_messages:  # the DICOM reader's, said once per input
            (notes if level == "note" else out)[f"dicom_{kind}"] = text
        note = dose_note(s.data_photons, self.config.undersample)
        if note:
            notes["dose"] = note
        if s.views_message:
            notes["views"] = s.views_message
        if s.views_sorted:
            notes["view_order"] = VIEWS_SORTED_NOTE
        rc = self.settings(s, self.config.reconstruct).config
        if rc.method == "fbp" and "short_scan" in rc.params and s.geometry.beam == "parallel":
            notes["short_scan"] = (f"reconstruct.params.short_scan={rc.params['short_scan']}: has "
                                   "no effect on parallel-beam data (Parker's short-scan weights "
                                   "are for fan beams)")
        return out, notes

    def table_value(self, s: CTSlice) -> float:
        """The slice's view count (after ``undersample``)."""
        return s.geometry.num_views

    def dose(self, s: CTSlice) -> float | None:
        """Photons per bin of the data reconstructed: ``undersample.photons`` where it lowered
        the dose, else the data's own (``None``: noise-free or unknown)."""
        u = self.config.undersample
        lowered = u.enabled and u.photons is not None and (not s.data_photons or u.photons < s.data_photons)
        return u.photons if lowered else s.data_photons

    def reconstruct(self, s: CTSlice, method: Method) -> CTSlice:
        out = reconstruct(s, method.config, method.model)  # its mean HU against the FBP's
        if empty_sinogram_message(s.sinogram) is None and (msg := bulk_shift_warning(
                out.image, s.preview, method.config.method)) is not None:  # (air: no object)
            self._say(method.name, s.index, "bulk_shift", msg)
        if method.model is None and method.config.method in NOISE_FIT_METHODS \
                and (photons := self.dose(s)) is not None:  # its residual against the noise
            y = s.sinogram  # in angle order since preprocess, as reconstruct saw it
            op = cached_ct_operator(s.geometry, str(y.device))
            projected = op(out.image.to(device=y.device, dtype=y.dtype))
            if (msg := noise_fit_warning(y, projected, photons, method.config.method)) is not None:
                self._say(method.name, s.index, "noise_fit", msg)
        return out

    def postprocess(self, s: CTSlice) -> Tensor:
        return s.image

    def reference(self, s: CTSlice) -> Tensor | None:
        return s.reference

    def preview(self, s: CTSlice) -> Tensor | None:
        return s.preview
