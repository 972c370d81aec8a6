"""Stateless Radon kernels: Joseph-style ray-driven projection and its exact transpose.

Two kernels serve the CT operators in :mod:`mrirecon.operators.ct`; both take precomputed
tables (pure functions of a :class:`~mrirecon.operators.ct_geometry.CTGeometry`, built here)
and act on real images ``(B, H, W)`` and sinograms ``(B, views, detectors)``.

Shear kernel (parallel beam)
    For a view whose rays are closer to the image columns (``|cos θ| >= |sin θ|``) every ray
    crosses each image row once. The rays of one view are parallel, so on a *virtual detector*
    of spacing ``pixel_size * |cos θ|`` the crossing points of all rays with row ``k`` lie at
    ``m + t_k`` (integer ``m``, one offset ``t_k`` per row): the Joseph line integral of virtual
    ray ``m`` is ``w * sum_k (1 - f_k) x[k, m + n_k] + f_k x[k, m + n_k + 1]`` with
    ``n_k = floor(t_k)``, ``f_k = t_k - n_k`` and the step length ``w = pixel_size / |cos θ|``.
    Gathering the contiguous row windows ``x[k, n_k : n_k + M + 1]`` turns the sum over rows
    into one batched matrix product; a two-tap linear interpolation then resamples the virtual
    detector onto the real one. A row meets only ``W + 1`` of the ``M`` virtual rays (``M`` is
    up to ~2 ``W`` near 45 degrees), so the rows are cut into bands of ``K / _BANDS`` rows:
    a band's windows start where its rays begin and are ``W + 2`` plus the band's spread of
    ``n_k`` long, and the band sums are added onto the virtual detector (40 % less work than
    whole windows at 362^2, 30-60 views; the same sums, in another order).
    The transpose is built from the same tables the same way
    (gather of windows of the virtual sinogram and a matrix product), so no scatter over the
    image is needed and ``<Ax, y> = <x, A^T y>`` holds to rounding. Views closer to the rows
    use the transposed image.

Grid kernel (any ray set, used for fan beam)
    Every ray steps through the (zero-padded, square) image one pixel at a time along its
    dominant axis and samples the image by linear interpolation across it (Joseph's method),
    implemented with :func:`torch.nn.functional.grid_sample`; the transpose is the exact
    backward of that sampling (``aten.grid_sampler_2d_backward``).

Coordinates: pixel ``(row, col)`` has centre ``x = (col - (W-1)/2) * pixel_size``,
``y = ((H-1)/2 - row) * pixel_size`` (mm); a view at angle ``θ`` has detector axis
``e_u = (cos θ, sin θ)`` and central ray direction ``(-sin θ, cos θ)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# elements of the largest gathered temporary (views x rows x window): 32 MB in float32. Smaller
# chunks mean more parallel regions, which cost a lot on an oversubscribed machine (measured:
# 2M-element chunks were 3-6x slower than 8M with two threads under a load of 9 on 2 cores)
_CHUNK_ELEMENTS = 8_000_000
# row bands of the forward projection (module docstring): 4-12 bands ran alike at 362^2 (0.6 ms
# against 1.0-1.1 ms per view group of 15 views, one thread), more only add small operations
_BANDS = 6


# ----------------------------------------------------------------------------------------------
# shear kernel (parallel beam)
# ----------------------------------------------------------------------------------------------
@dataclass
class ShearGroup:
    """Tables of the views that step along one image axis (all numpy, float64 / int64).

    ``transpose`` is False for views stepping over rows (``K = H`` steps, lateral size
    ``L = W``) and True for views stepping over columns (image transposed first).
    """

    transpose: bool
    views: np.ndarray  # (Vg,) indices into the geometry's views
    steps: int  # K
    lateral: int  # L
    shift: np.ndarray  # (Vg, K) int64, n_k
    taps: np.ndarray  # (Vg, 2, K) float64, w (1 - f_k) and w f_k
    num_virtual: np.ndarray  # (Vg,) int64, M_v
    det_index: np.ndarray  # (Vg, 2, detectors) int64, virtual index of the two taps
    det_weight: np.ndarray  # (Vg, 2, detectors) float64
    pad_left: int  # P
    padded_width: int  # Wp
    y_left: int  # Q
    y_length: int  # Ylen
    origin: np.ndarray | None = None  # (Vg,) virtual coordinate of virtual ray 0
    slope: np.ndarray | None = None  # (Vg,) virtual coordinate per mm of detector position
    band_window: int = 0  # window length of every band of rows (virtual rays + 1)
    band_start: np.ndarray | None = None  # (Vg, bands) first virtual ray of each band's window


def shear_tables(
    angles: np.ndarray,
    image_shape: tuple[int, int],
    detector_positions: np.ndarray,
    pixel_size: float,
) -> list[ShearGroup]:
    """Tables of the shear kernel for parallel-beam ``angles`` (radians).

    Parameters
    ----------
    angles
        ``(views,)`` projection angles in radians.
    image_shape
        ``(H, W)`` pixels.
    detector_positions
        ``(detectors,)`` detector centres ``u`` in mm.
    pixel_size
        Pixel side in mm.
    """
    h, w = image_shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    u = np.asarray(detector_positions, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64)
    c, s = np.cos(angles), np.sin(angles)
    rows = np.abs(c) >= np.abs(s)
    groups = []
    for transpose in (False, True):
        views = np.nonzero(rows != transpose)[0]
        if views.size == 0:
            continue
        cv, sv = c[views], s[views]
        if not transpose:  # lateral index = column, steps over rows
            k_steps, lat = h, w
            a0 = cx - cy * sv / cv
            slope_u = 1.0 / (pixel_size * cv)
            slope_k = sv / cv
            step = pixel_size / np.abs(cv)
        else:  # lateral index = row, steps over columns
            k_steps, lat = w, h
            a0 = cy - cx * cv / sv
            slope_u = -1.0 / (pixel_size * sv)
            slope_k = cv / sv
            step = pixel_size / np.abs(sv)
        k = np.arange(k_steps, dtype=np.float64)
        mu = slope_u[:, None] * u[None, :]  # (Vg, D) virtual coordinate of each detector
        lat_k = a0[:, None] + slope_k[:, None] * k[None, :]  # lateral index at m = 0
        lo = np.maximum(np.floor(mu.min(1)), np.floor(-1.0 - lat_k.max(1)))
        hi = np.minimum(np.ceil(mu.max(1)), np.ceil(lat - lat_k.min(1)))
        num_virtual = np.maximum(hi - lo + 1, 1).astype(np.int64)
        t = lo[:, None] + lat_k
        shift = np.floor(t)
        frac = t - shift
        taps = np.stack([(1 - frac) * step[:, None], frac * step[:, None]], axis=1)
        # two-tap linear resampling of the virtual detector onto the real detector
        pos = mu - lo[:, None]
        i0 = np.floor(pos)
        g = pos - i0
        idx = np.stack([i0, i0 + 1], axis=1)
        wts = np.stack([1 - g, g], axis=1)
        valid = (idx >= 0) & (idx < num_virtual[:, None, None])
        wts = np.where(valid, wts, 0.0)
        idx = np.where(valid, idx, 0).astype(np.int64)
        shift = shift.astype(np.int64)
        m_max = int(num_virtual.max())
        pad_left = max(0, -int(shift.min()))
        padded_width = pad_left + max(lat, int(shift.max()) + m_max + 1)
        y_left = max(int(shift.max()) + 1, 0)
        y_length = max(y_left + m_max, y_left - int(shift.min()) + lat)
        band_window, band_start = _bands(shift, lat, num_virtual)
        groups.append(
            ShearGroup(
                transpose,
                views,
                k_steps,
                lat,
                shift,
                taps,
                num_virtual,
                idx,
                wts,
                pad_left,
                padded_width,
                y_left,
                y_length,
                lo,
                slope_u,
                band_window,
                band_start,
            )
        )
    return groups


def _band_rows(shift: np.ndarray) -> np.ndarray:
    """``shift`` ``(Vg, K)`` cut into ``_BANDS`` bands of equal rows ``(Vg, bands, rows)``, the
    last band padded with copies of the last row (their taps are zero)."""
    vg, k = shift.shape
    bands = min(_BANDS, k)
    rows = -(-k // bands)
    pad = np.repeat(shift[:, -1:], bands * rows - k, axis=1)
    return np.concatenate([shift, pad], axis=1).reshape(vg, bands, rows)


def _bands(shift: np.ndarray, lateral: int, num_virtual: np.ndarray) -> tuple[int, np.ndarray]:
    """Row bands of the forward projection (:func:`_band_rows`): ``(window, start (Vg, bands))``.

    Row ``k`` of a view meets virtual rays ``m`` in ``[-n_k - 1, L - 1 - n_k]`` (the windows
    are zero elsewhere), so a band's rays lie in ``[max(-max n - 1, 0), min(L - 1 - min n,
    M_v - 1)]``; one window length ``W`` (the longest of these plus 2, for the second tap)
    serves every band, each starting at its first ray, moved left where the window would pass
    the whole windows' end ``M + 1`` (group maximum ``M``): every read stays in the row's
    padded range that whole windows read."""
    banded = _band_rows(shift)
    first = np.maximum(-banded.max(-1) - 1, 0)
    last = np.minimum(lateral - 1 - banded.min(-1), num_virtual[:, None] - 1)
    window = int(max((last - first + 2).max(), 2))
    m_max = int(num_virtual.max())
    start = np.minimum(first, m_max + 1 - window)
    return window, np.maximum(start, 0).astype(np.int64)


def _chunks(num_views: int, per_view: int) -> list[tuple[int, int]]:
    size = max(1, _CHUNK_ELEMENTS // max(per_view, 1))
    return [(v0, min(v0 + size, num_views)) for v0 in range(0, num_views, size)]


def _windows(flat: Tensor, length: int) -> Tensor:
    """All windows ``flat[i : i + length]`` as a strided view ``(numel - length + 1, length)``."""
    return flat.as_strided((flat.numel() - length + 1, length), (1, 1))


def shear_project(x: Tensor, group: dict[str, Tensor], meta: ShearGroup) -> Tensor:
    """Project real images ``x`` ``(B, H, W)`` onto the views of one group.

    ``group`` holds the group's tables as tensors on ``x``'s device (``band_offset``
    ``(Vg, bands, rows)``, ``band_taps`` ``(Vg, bands, 2, rows)``, ``band_start``
    ``(Vg, bands)``, ``det_index``/``det_weight`` ``(Vg, 2, D)``,
    ``num_virtual`` as a Python list; :func:`shear_group_tensors`). Returns ``(B, Vg, D)``.
    Each band of rows is one batched matrix product over its windows (module docstring).
    """
    if meta.transpose:
        x = x.transpose(-2, -1)
    b = x.shape[0]
    k, lat, wp = meta.steps, meta.lateral, meta.padded_width
    xp = F.pad(x, (meta.pad_left, wp - meta.pad_left - lat)).contiguous()
    flat = xp.reshape(-1)
    base = torch.arange(b, device=x.device).mul_(k * wp).view(b, 1, 1, 1)
    num_v = group["num_virtual"]
    vg = len(num_v)
    det = group["det_index"].shape[-1]
    offsets_all, taps_all = group["band_offset"], group["band_taps"]
    (bands, rows), win = offsets_all.shape[1:], meta.band_window
    out = x.new_empty((b, vg, det))
    m_max = max(num_v)
    ray = torch.arange(win - 1, device=x.device)
    for v0, v1 in _chunks(vg, b * bands * rows * win):
        vc = v1 - v0
        offsets = (base + offsets_all[v0:v1]).reshape(-1)
        gathered = _windows(flat, win).index_select(0, offsets).view(b, vc, bands, rows, win)
        y = torch.matmul(taps_all[v0:v1], gathered)  # (B, Vc, bands, 2, win)
        sums = (y[..., 0, : win - 1] + y[..., 1, 1:]).reshape(b, vc, bands * (win - 1))
        virtual = x.new_zeros((b, vc, m_max + 1))
        index = (group["band_start"][v0:v1, :, None] + ray).view(1, vc, -1).expand(b, -1, -1)
        virtual.scatter_add_(-1, index, sums)
        idx = group["det_index"][v0:v1]
        wts = group["det_weight"][v0:v1]
        i0 = idx[:, 0].expand(b, -1, -1)
        i1 = idx[:, 1].expand(b, -1, -1)
        out[:, v0:v1] = wts[:, 0] * virtual.gather(-1, i0) + wts[:, 1] * virtual.gather(-1, i1)
    return out


def shear_backproject(y: Tensor, group: dict[str, Tensor], meta: ShearGroup) -> Tensor:
    """Exact transpose of :func:`shear_project`: sinogram ``(B, Vg, D)`` -> ``(B, H, W)``."""
    num_v = group["num_virtual"]

    def fill(ypad: Tensor, yc: Tensor, v0: int, v1: int) -> None:
        # transpose of the detector resampling: spread each detector value over the virtual
        # detector of its view
        b, q = yc.shape[0], meta.y_left
        virtual = ypad[:, :, q : q + max(num_v[v0:v1])]
        idx, wts = group["det_index"][v0:v1], group["det_weight"][v0:v1]
        virtual.scatter_add_(-1, idx[:, 0].expand(b, -1, -1), wts[:, 0] * yc)
        virtual.scatter_add_(-1, idx[:, 1].expand(b, -1, -1), wts[:, 1] * yc)

    return _backproject(y, group, meta, fill)


def _backproject(y: Tensor, group: dict[str, Tensor], meta: ShearGroup, fill) -> Tensor:
    """The back-projectors' common loop: for each chunk of views, ``fill(ypad, yc, v0, v1)``
    writes the virtual sinogram ``ypad`` ``(B, Vc, Ylen)`` from the detector values ``yc``, and
    :func:`_spread_rows` adds it onto the image."""
    b = y.shape[0]
    k, lat = meta.steps, meta.lateral
    vg = len(group["num_virtual"])
    out = y.new_zeros((b, k, lat))
    for v0, v1 in _chunks(vg, b * k * (lat + 1)):
        ypad = y.new_zeros((b, v1 - v0, meta.y_length))
        fill(ypad, y[:, v0:v1], v0, v1)
        _spread_rows(ypad, group, meta, v0, v1, out)
    return out.transpose(-2, -1) if meta.transpose else out


def _spread_rows(ypad: Tensor, group: dict[str, Tensor], meta: ShearGroup, v0: int, v1: int,
                 out: Tensor) -> None:
    """``out += `` the row step of the transpose for views ``v0:v1``: virtual sinograms
    ``ypad`` ``(B, Vc, Ylen)`` (virtual ray ``m`` at ``Q + m``) onto ``(B, K, L)``."""
    b, vc, ylen = ypad.shape
    k, lat = meta.steps, meta.lateral
    # window start of (v, k): Q - n_vk - 1; laid out (B, K, Vc)
    starts = group["back_offset"][v0:v1].t() + torch.arange(vc, device=ypad.device).mul_(ylen)
    base = torch.arange(b, device=ypad.device).mul_(vc * ylen).view(b, 1, 1)
    offsets = (base + starts).reshape(-1)
    gathered = _windows(ypad.reshape(-1), lat + 1).index_select(0, offsets)
    gathered = gathered.view(b, k, vc, lat + 1)
    z = torch.matmul(group["taps_t"][:, :, v0:v1], gathered)  # (B, K, 2, L + 1)
    out += z[:, :, 0, 1:] + z[:, :, 1, :lat]


def shear_interpolate_backproject(y: Tensor, group: dict[str, Tensor], meta: ShearGroup,
                                  real_index: Tensor, real_weight: Tensor) -> Tensor:
    """Pixel-interpolating back-projection (for FBP) with the shear kernel's row step.

    Instead of the transpose of the detector resampling (which spreads each detector value
    over the virtual detector with weights whose sum depends on the phase between the two
    grids: a moiré), every virtual ray *interpolates* the detector linearly at its position:
    ``real_index``/``real_weight`` ``(Vg, 2, M)`` (zero weight outside the detector). The row
    step interpolates the virtual sinogram linearly at each pixel (the virtual rays are one
    pixel apart across a row), scaled by the step length, so pixel ``p`` receives
    ``step_v * q_v(u_p)`` up to the two linear interpolations.
    """
    q, m = meta.y_left, real_index.shape[-1]

    def fill(ypad: Tensor, yc: Tensor, v0: int, v1: int) -> None:
        b = yc.shape[0]
        i0 = real_index[v0:v1, 0].expand(b, -1, -1)
        i1 = real_index[v0:v1, 1].expand(b, -1, -1)
        w = real_weight[v0:v1]
        ypad[:, :, q : q + m] = w[:, 0] * yc.gather(-1, i0) + w[:, 1] * yc.gather(-1, i1)

    return _backproject(y, group, meta, fill)


def shear_group_tensors(meta: ShearGroup) -> dict[str, np.ndarray]:
    """The per-group arrays the kernels index, ready to become module buffers: the forward
    projection's ``band_*`` (row ``k`` of band ``b`` is image row ``b * rows + k``, its window
    starting at the band's first ray in the padded image; the last band padded with zero taps)
    and the transpose's ``back_offset`` / ``taps_t``, both with the detector resampling's
    ``det_index`` / ``det_weight``."""
    vg, k = meta.shift.shape
    row_start = np.arange(k, dtype=np.int64) * meta.padded_width + meta.pad_left + meta.shift
    band_offset = _band_rows(row_start) + meta.band_start[..., None]
    bands, per = band_offset.shape[1:]
    taps = np.concatenate([meta.taps, np.zeros((vg, 2, bands * per - k))], axis=-1)
    band_taps = taps.reshape(vg, 2, bands, per).transpose(0, 2, 1, 3)
    return {
        "back_offset": meta.y_left - 1 - meta.shift,
        "taps_t": np.ascontiguousarray(meta.taps.transpose(2, 1, 0)),
        "det_index": meta.det_index,
        "det_weight": meta.det_weight,
        "band_offset": band_offset,
        "band_taps": np.ascontiguousarray(band_taps),
        "band_start": meta.band_start,
    }


#: The tables only the forward projection reads (module buffers outside the state dict: they
#: are derived)
BAND_TABLES = ("band_offset", "band_taps", "band_start")


# ----------------------------------------------------------------------------------------------
# grid kernel (any rays, used for fan beam)
# ----------------------------------------------------------------------------------------------
def ray_tables(
    origins: np.ndarray,
    directions: np.ndarray,
    image_shape: tuple[int, int],
    pixel_size: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joseph stepping tables of the grid kernel for arbitrary rays.

    Parameters
    ----------
    origins, directions
        ``(views, detectors, 2)`` a point on each ray and its direction ``(x, y)`` in mm
        (directions need not be normalised).
    image_shape
        ``(H, W)``; the image is zero-padded to a square of side ``max(H, W)``.
    pixel_size
        Pixel side in mm.

    Returns
    -------
    start, step
        ``(views, detectors, 2)`` normalised ``grid_sample`` coordinates of the first sample and
        of the increment per step (``S = max(H, W)`` steps along each ray's dominant axis).
    weight
        ``(views, detectors)`` step length in mm.
    """
    h, w = image_shape
    side = max(h, w)
    cx = (w - 1) / 2 + (side - w) // 2
    cy = (h - 1) / 2 + (side - h) // 2
    d = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    dx, dy = d[..., 0], d[..., 1]
    qc = origins[..., 0] / pixel_size + cx
    qr = cy - origins[..., 1] / pixel_size
    by_rows = np.abs(dy) >= np.abs(dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        rx = np.where(by_rows, dx / np.where(by_rows, dy, 1.0), 0.0)
        ry = np.where(by_rows, 0.0, dy / np.where(by_rows, 1.0, dx))
    start = np.stack(
        [np.where(by_rows, qc + qr * rx, 0.0), np.where(by_rows, 0.0, qr + qc * ry)], axis=-1
    )
    step = np.stack([np.where(by_rows, -rx, 1.0), np.where(by_rows, 1.0, -ry)], axis=-1)
    weight = pixel_size / np.where(by_rows, np.abs(dy), np.abs(dx))
    return (2 * start + 1) / side - 1, 2 * step / side, weight


def _square(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(x, (left, side - w - left, top, side - h - top))


def _groups(vc: int) -> int:
    threads = max(1, torch.get_num_threads())
    return math.gcd(vc, threads)


def _grid(start: Tensor, step: Tensor, side: int) -> Tensor:
    k = torch.arange(side, dtype=start.dtype, device=start.device).view(1, side, 1, 1)
    return torch.addcmul(start.unsqueeze(1), k, step.unsqueeze(1))  # (Vc, S, D, 2)


def grid_project(x: Tensor, start: Tensor, step: Tensor, weight: Tensor) -> Tensor:
    """Joseph projection of real images ``(B, H, W)`` along the rays of :func:`ray_tables`.

    ``start``, ``step``: ``(V, D, 2)``, ``weight``: ``(V, D)`` in ``x``'s dtype. Returns
    ``(B, V, D)``.
    """
    xs = _square(x)
    b, side = xs.shape[0], xs.shape[-1]
    v, det = weight.shape
    out = x.new_empty((b, v, det))
    for v0, v1 in _chunks(v, max(b, 2) * side * det):
        vc = v1 - v0
        g = _groups(vc)
        grid = _grid(start[v0:v1], step[v0:v1], side).view(g, (vc // g) * side, det, 2)
        inp = xs.unsqueeze(0).expand(g, b, side, side)
        samples = F.grid_sample(
            inp, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        sums = samples.view(g, b, vc // g, side, det).sum(3)  # (G, B, Vc/G, D)
        out[:, v0:v1] = sums.transpose(0, 1).reshape(b, vc, det) * weight[v0:v1]
    return out


def grid_backproject(
    y: Tensor, start: Tensor, step: Tensor, weight: Tensor, image_shape: tuple[int, int]
) -> Tensor:
    """Exact transpose of :func:`grid_project`: ``(B, V, D)`` -> ``(B, H, W)``."""
    h, w = image_shape
    side = max(h, w)
    b, v, det = y.shape
    acc = y.new_zeros((b, side, side))
    for v0, v1 in _chunks(v, max(b, 2) * side * det):
        vc = v1 - v0
        g = _groups(vc)
        grid = _grid(start[v0:v1], step[v0:v1], side).view(g, (vc // g) * side, det, 2)
        yw = (y[:, v0:v1] * weight[v0:v1]).view(b, g, vc // g, 1, det).transpose(0, 1)
        grad_out = yw.expand(g, b, vc // g, side, det).reshape(g, b, (vc // g) * side, det)
        dummy = y.new_empty(()).expand(g, b, side, side)
        grad_in, _ = torch.ops.aten.grid_sampler_2d_backward(
            grad_out, dummy, grid, 0, 0, False, [True, False]
        )
        acc += grad_in.sum(0)
    top, left = (side - h) // 2, (side - w) // 2
    return acc[:, top : top + h, left : left + w]
