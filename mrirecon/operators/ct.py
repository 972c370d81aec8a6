"""CT projectors: parallel- and fan-beam ray transforms with exactly matched back-projection.

``A = ParallelBeam(geometry)`` maps images ``(..., H, W)`` to sinograms ``(..., views,
detectors)`` of line integrals in mm (an attenuation image in 1/mm gives a dimensionless
post-log sinogram); ``A.H`` is its exact transpose (unfiltered back-projection). Real images
(float32/float64) are the natural input; complex images are projected part by part. Both
operators are differentiable through an autograd ``Function`` whose backward calls the
adjoint, so autograd never stores the (large) interpolation intermediates.

Conventions are those of :class:`~mrirecon.operators.ct_geometry.CTGeometry`; relation to
``skimage.transform.radon(image, theta)``: ``theta`` (degrees) ``= degrees(angles)``, and
skimage's ``(detectors, views)`` output is our ``(views, detectors)`` transposed, with the same
detector direction; skimage rotates about pixel ``N // 2`` and puts the detector centre at
index ``N // 2``, which equals ours (``(N - 1) / 2``) for odd ``N``; for even ``N`` the axis
sits half a bin above our detector's middle: ``CTGeometry(..., detector_offset=+0.5 *
detector_spacing)`` (the image grid is then centred on the axis, half a pixel from skimage's).
Both projectors place the rays by :attr:`CTGeometry.detector_positions`, measured from the
rotation axis, so a ``detector_offset`` (a centre-of-rotation offset) is exact.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.caches import register as register_cache
from mrirecon.functional.radon import (
    BAND_TABLES,
    grid_backproject,
    grid_project,
    ray_tables,
    shear_backproject,
    shear_group_tensors,
    shear_project,
    shear_tables,
)
from mrirecon.operators.ct_geometry import CTGeometry


def _exact(t: Tensor):
    """No ``torch.autocast`` inside the projectors: the physics runs in the data's own dtype. Under
    a bfloat16 autocast (a model's forward, ``amp: true`` training) the parallel-beam kernel's
    matrix product came out bfloat16 and its scatter into float32 failed ("scatter(): Expected
    self.dtype to be equal to src.dtype")."""
    kind = t.device.type
    return torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else nullcontext()


class _Project(torch.autograd.Function):
    """``A x`` whose backward is ``A^T``."""

    @staticmethod
    def forward(ctx, x: Tensor, op: _CTProjector) -> Tensor:
        ctx.op, ctx.dtype = op, x.dtype
        with _exact(x):
            return op._project(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # a gradient from autocast ops may be bfloat16
        return _Backproject.apply(grad.to(ctx.dtype).contiguous(), ctx.op), None


class _Backproject(torch.autograd.Function):
    """``A^T y`` whose backward is ``A``."""

    @staticmethod
    def forward(ctx, y: Tensor, op: _CTProjector) -> Tensor:
        ctx.op, ctx.dtype = op, y.dtype
        with _exact(y):
            return op._backproject(y)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _Project.apply(grad.to(ctx.dtype).contiguous(), ctx.op), None


class _CTProjector(LinearOperator):
    """Shared plumbing: dtype checks, complex split, batch flattening, autograd."""

    beam = ""

    def __init__(self, geometry: CTGeometry) -> None:
        if not isinstance(geometry, CTGeometry):
            raise TypeError(
                f"{type(self).__name__}: geometry must be a CTGeometry, got {type(geometry).__name__}"
            )
        if geometry.beam != self.beam:
            raise ValueError(
                f"{type(self).__name__} needs a {self.beam}-beam CTGeometry, got beam={geometry.beam!r}"
            )
        super().__init__(geometry.image_shape, geometry.sinogram_shape)
        self.geometry = geometry
        self._cast: dict = {}  # the float64 tables cast to a dtype, see _cast_once

    def _cast_once(self, key: tuple, build):
        """``build()`` (tables cast to a dtype) once per ``key`` and device, then kept: the
        float64 tables were cast at every call (12 casts per parallel-beam gram, 14,000 per
        ``tv_ct`` slice). Built as normal tensors even inside ``inference_mode`` (a
        differentiable FBP or a training step may use them later); ``.to()`` / ``.float()``
        on the module clears the cache (:meth:`_apply`)."""
        key = (*key, next(self.buffers()).device)
        out = self._cast.get(key)
        if out is None:
            out = self._cast[key] = built_as_normal_tensors(build)()
        return out

    def _apply(self, fn, recurse: bool = True):
        self._cast = {}  # buffers are replaced: cast afresh
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"image={g.image_shape}, views={g.num_views}, detectors={g.num_detectors}, "
            f"pixel_size={g.pixel_size} mm"
        )

    # -- kernels on real (B, H, W) / (B, V, D) tensors, implemented by subclasses -------
    def _project(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _backproject(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _run_split(self, t: Tensor, fn, in_shape, out_shape, what: str) -> Tensor:
        if t.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            raise TypeError(
                f"{self.name}: {what} must be float32/float64 or complex, got {t.dtype}"
            )
        if t.is_complex():
            parts = torch.stack([t.real, t.imag])
            out = self._run_split(parts, fn, in_shape, out_shape, what)
            return torch.complex(out[0], out[1])
        lead = t.shape[: t.ndim - 2]
        flat = t.reshape((-1, *in_shape))
        if not flat.is_contiguous():
            flat = flat.contiguous()
        out = fn.apply(flat, self)
        return out.reshape((*lead, *out_shape))

    def fbp(self, y: Tensor, filter: str = "ram-lak") -> Tensor:
        """Filtered back-projection of sinograms ``(..., views, detectors)`` on this geometry
        (capability :class:`~mrirecon.core.capabilities.HasFBP`; see
        :func:`mrirecon.operators.fbp.fbp`)."""
        from mrirecon.operators.fbp import fbp

        return fbp(y, self.geometry, filter=filter)

    def _forward(self, x: Tensor) -> Tensor:
        return self._run_split(
            x, _Project, self.geometry.image_shape, self.geometry.sinogram_shape, "image"
        )

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._run_split(
            y, _Backproject, self.geometry.sinogram_shape, self.geometry.image_shape, "sinogram"
        )


class ParallelBeam(_CTProjector):
    """Parallel-beam ray transform (Joseph-style, shear kernel) and its exact transpose.

    Parameters
    ----------
    geometry
        A ``CTGeometry`` with ``beam="parallel"``; any angle set (sparse view, limited angle).

    Notes
    -----
    Domain ``(..., H, W)`` (attenuation per mm), range ``(..., views, detectors)`` (line
    integrals, mm x attenuation). Each view is a Joseph projection onto a virtual detector of
    pitch ``pixel_size * max(|cos θ|, |sin θ|)`` followed by a two-tap linear resampling onto the
    real detector (see :mod:`mrirecon.functional.radon`; the forward projection sums the rows
    in bands, each over the virtual rays it meets). Tables take about
    ``95 * views * max(H, W)`` bytes (34 MB at 362 x 362, 513 detectors, 1000 views), plus their
    cast to float32 once used (10 MB); temporaries are bounded by processing views in chunks.
    """

    beam = "parallel"

    def __init__(self, geometry: CTGeometry) -> None:
        super().__init__(geometry)
        groups = shear_tables(
            np.asarray(geometry.angles),
            geometry.image_shape,
            geometry.detector_positions,
            geometry.pixel_size,
        )
        self._meta = groups
        self._num_virtual = [[int(m) for m in g.num_virtual] for g in groups]
        for i, g in enumerate(groups):
            self.register_buffer(f"_views{i}", torch.from_numpy(g.views.astype(np.int64)))
            for key, arr in shear_group_tensors(g).items():
                self.register_buffer(f"_{key}{i}", torch.from_numpy(np.ascontiguousarray(arr)),
                                     persistent=key not in BAND_TABLES)

    def _group(self, i: int, dtype: torch.dtype) -> dict:
        """Group ``i``'s tables, the weights in ``dtype`` (cast once, :meth:`_cast_once`)."""

        def build() -> dict:
            out = {"num_virtual": self._num_virtual[i]}
            for name in ("back_offset", "det_index", "band_offset", "band_start"):
                out[name] = getattr(self, f"_{name}{i}")
            for name in ("taps_t", "det_weight", "band_taps"):
                out[name] = getattr(self, f"_{name}{i}").to(dtype)
            return out

        return self._cast_once((i, dtype), build)

    def _project(self, x: Tensor) -> Tensor:
        v, d = self.geometry.sinogram_shape
        out = x.new_empty((x.shape[0], v, d))
        for i, meta in enumerate(self._meta):
            out[:, getattr(self, f"_views{i}")] = shear_project(x, self._group(i, x.dtype), meta)
        return out

    def _backproject(self, y: Tensor) -> Tensor:
        out = y.new_zeros((y.shape[0], *self.geometry.image_shape))
        for i, meta in enumerate(self._meta):
            yg = y[:, getattr(self, f"_views{i}")]
            out += shear_backproject(yg, self._group(i, y.dtype), meta)
        return out


def fan_rays(geometry: CTGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Source positions and ray directions of a fan-beam geometry, ``(views, detectors, 2)`` mm.

    At angle ``θ`` the source sits at ``-source_isocenter * c`` with the central-ray direction
    ``c = (-sin θ, cos θ)`` and the detector axis ``e_u = (cos θ, sin θ)``. A flat detector lies
    at distance ``source_detector`` from the source, perpendicular to ``c``; an equi-angular
    (curved) detector lies on the arc of radius ``source_detector`` about the source with fan
    angle ``γ = u / source_detector``.
    """
    th = np.asarray(geometry.angles, dtype=np.float64)[:, None]
    u = geometry.detector_positions[None, :]
    cen = np.stack([-np.sin(th), np.cos(th)], axis=-1)  # (V, 1, 2)
    eu = np.stack([np.cos(th), np.sin(th)], axis=-1)
    sid, sdd = geometry.source_isocenter, geometry.source_detector
    if geometry.detector == "curved":
        gam = geometry.fan_angles[None, :, None]
        directions = np.cos(gam) * cen + np.sin(gam) * eu
    else:
        directions = sdd * cen + u[..., None] * eu
    origins = np.broadcast_to(-sid * cen, directions.shape).copy()
    return origins, directions


class FanBeam(_CTProjector):
    """Fan-beam ray transform (flat or equi-angular detector) and its exact transpose.

    Parameters
    ----------
    geometry
        A ``CTGeometry`` with ``beam="fan"`` (``source_isocenter``, ``source_detector`` in mm,
        ``detector`` ``"flat"`` or ``"curved"``).

    Notes
    -----
    Joseph's method per ray (each ray steps along its own dominant image axis) via
    ``grid_sample``; the adjoint is the exact backward of that sampling. Tables take
    ``40 * views * detectors`` bytes; sampling grids are built per chunk of views.
    """

    beam = "fan"

    def __init__(self, geometry: CTGeometry) -> None:
        super().__init__(geometry)
        origins, directions = fan_rays(geometry)
        start, step, weight = ray_tables(
            origins, directions, geometry.image_shape, geometry.pixel_size
        )
        self.register_buffer("_start", torch.from_numpy(np.ascontiguousarray(start)))
        self.register_buffer("_step", torch.from_numpy(np.ascontiguousarray(step)))
        self.register_buffer("_weight", torch.from_numpy(np.ascontiguousarray(weight)))

    def _tables(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        return self._cast_once((dtype,), lambda: (self._start.to(dtype), self._step.to(dtype),
                                                  self._weight.to(dtype)))

    def _project(self, x: Tensor) -> Tensor:
        return grid_project(x, *self._tables(x.dtype))

    def _backproject(self, y: Tensor) -> Tensor:
        return grid_backproject(y, *self._tables(y.dtype), self.geometry.image_shape)


def ct_operator(geometry: CTGeometry) -> ParallelBeam | FanBeam:
    """The projector for ``geometry``: :class:`ParallelBeam` or :class:`FanBeam`."""
    if not isinstance(geometry, CTGeometry):
        raise TypeError(
            f"ct_operator: geometry must be a CTGeometry, got {type(geometry).__name__}"
        )
    return ParallelBeam(geometry) if geometry.beam == "parallel" else FanBeam(geometry)


def built_as_normal_tensors(fn):
    """``fn`` run outside ``inference_mode``, for builders whose results are cached and shared
    (:func:`cached_ct_operator`, the FBP's tables): built first inside ``inference_mode`` (a
    pipeline's FBP or forward pass), they were inference tensors, which a later call under
    autograd cannot save for backward ("Inference tensors cannot be saved for backward")."""
    @functools.wraps(fn)
    def build(*args, **kwargs):
        with torch.inference_mode(False):
            return fn(*args, **kwargs)
    return build


@functools.lru_cache(maxsize=8)
@built_as_normal_tensors
def cached_ct_operator(geometry: CTGeometry, device: str = "cpu") -> ParallelBeam | FanBeam:
    """:func:`ct_operator` built once per ``(geometry, device)`` and shared (the last 8 kept,
    about 34 MB each at LoDoPaB size; :func:`mrirecon.clear_caches` drops them).

    Operators never change after construction, so slices on one geometry (a volume, a
    dataset) can share one; callers must not move the shared module (``.to`` acts in place):
    ask for the device instead.
    """
    return ct_operator(geometry).to(device)


register_cache(cached_ct_operator.cache_clear)


@functools.lru_cache(maxsize=16)
def projector_norm(geometry: CTGeometry) -> float:
    """``||A||_2`` of ``ct_operator(geometry)``: seeded power iteration, cached per geometry.

    Learned CT models see the unit-norm projector ``A / ||A||`` and data ``y / ||A||`` in
    training and inference alike (``x`` solving ``A x = y`` is unchanged).
    """
    x0 = torch.zeros((1, *geometry.image_shape), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    norm = ct_operator(geometry).operator_norm(x0, iterations=50, tolerance=1e-4, generator=g)
    return float(norm)


register_cache(projector_norm.cache_clear)
