"""Image-quality metrics with the fastMRI definitions (``fastmri.evaluate``).

Every metric takes a ground-truth and a predicted magnitude volume ``(slices, H, W)`` (NumPy
arrays or torch tensors) and returns one number per volume:

* ``NMSE = ||gt - pred||^2 / ||gt||^2``;
* ``PSNR = 10 log10(L^2 / mean((gt - pred)^2))`` with ``L = gt.max()`` of the volume;
* ``SSIM`` = mean over slices of the 2-D SSIM (uniform 7 x 7 window, K1 = 0.01, K2 = 0.03,
  sample covariance, 3-pixel border excluded) with ``L = gt.max()`` of the volume.

NumPy inputs give Python floats; torch inputs give 0-dim tensors (differentiable in ``pred``).
All computations run in float64. :func:`evaluate_volumes` reproduces fastMRI's report: both
volumes centre-cropped to the target's width (:func:`fastmri_crop`; a target wider than tall,
which fastMRI refuses, whole), then the mean and standard deviation over volumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mrirecon.core.checks import finite_and_nonzero, nonfinite_count
from mrirecon.functional import center_crop
from mrirecon.metrics.ssim_loss import ssim_map

ArrayLike = np.ndarray | Tensor


def _as_tensor(a: ArrayLike) -> Tensor:
    """``a`` as a tensor: a NumPy array of non-native byte order (h5py reads a big-endian
    dataset as ``>f4``) or of long double precision is converted first (torch refused both
    with its own words); the metrics compute in float64."""
    if isinstance(a, Tensor):
        return a
    a = np.asarray(a)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind == "f" and a.itemsize > 8:
        a = a.astype(np.float64)
    elif a.dtype.kind == "c" and a.itemsize > 16:
        a = a.astype(np.complex128)  # refused as complex below, with the metric's words
    if a.dtype.kind not in "biufc":
        raise TypeError(f"expected a numeric image, got a NumPy array of dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a))


def _as_pair(gt: ArrayLike, pred: ArrayLike, who: str, volume: bool = False) -> tuple[Tensor, Tensor, bool]:
    """The two inputs as tensors and whether to return tensors (any input was a tensor).

    Floating-point inputs keep their precision: each metric converts them to float64 a chunk of
    slices at a time (:func:`_float64_chunks`); a whole-volume float64 copy of each, and the
    float64 temporaries of the sums over it, took 7 times a float32 volume. Integer and boolean
    inputs are converted here."""
    is_torch = isinstance(gt, Tensor) or isinstance(pred, Tensor)
    tensors = []
    for name, a in (("gt", gt), ("pred", pred)):
        try:
            t = _as_tensor(a)
        except TypeError as err:
            raise TypeError(f"{who}: {name}: {err}") from None
        if t.is_complex():
            raise ValueError(f"{who}: {name} is complex; pass magnitude images")
        tensors.append(t if t.is_floating_point() else t.to(torch.float64))
    g, p = tensors
    if g.shape != p.shape:
        raise ValueError(f"{who}: gt shape {tuple(g.shape)} does not match pred shape {tuple(p.shape)}")
    if volume and g.ndim != 3:
        raise ValueError(f"{who}: expected volumes (slices, H, W), got shape {tuple(g.shape)}")
    if g.numel() == 0:
        raise ValueError(f"{who}: empty input of shape {tuple(g.shape)}")
    for name, t in (("gt", g), ("pred", p)):  # a NaN pred scored NaN, an Inf one -inf dB
        if not finite_and_nonzero(t)[0]:  # one pass; the count only for the message
            bad = nonfinite_count(t)
            raise ValueError(f"{who}: {name} holds {bad} NaN or Inf "
                             "values" + ("" if name == "gt" else
                                         " (a diverged reconstruction?); it has no score"))
    return g, p.to(g.device), is_torch


#: Elements per chunk of the sums over a volume (8 MiB in float64): the float64 temporaries of
#: a metric then do not grow with the volume.
CHUNK_ELEMENTS = 1 << 20


def _float64_chunks(g: Tensor, p: Tensor):
    """``(gt, pred)`` in float64, a chunk of slices (rows of the first axis) at a time."""
    if g.ndim == 0:
        yield g.to(torch.float64), p.to(torch.float64)
        return
    rows = max(1, CHUNK_ELEMENTS // max(1, g[0].numel()))
    for i in range(0, g.shape[0], rows):
        yield g[i : i + rows].to(torch.float64), p[i : i + rows].to(torch.float64)


def _sums(g: Tensor, p: Tensor, norm: bool = False) -> tuple[Tensor, Tensor | None]:
    """``sum((gt - pred)^2)`` and, with ``norm``, ``sum(gt^2)``, in float64, accumulated over
    chunks of slices (:func:`_float64_chunks`)."""
    err = ref = None
    for a, b in _float64_chunks(g, p):
        e = torch.sum((a - b) ** 2)
        err = e if err is None else err + e
        if norm:
            r = torch.sum(a**2)
            ref = r if ref is None else ref + r
    return err, ref


def _out(value: Tensor, is_torch: bool) -> float | Tensor:
    return value if is_torch else float(value)


def _maxval(g: Tensor, maxval, who: str = "metrics") -> Tensor:
    """The data range ``L``: ``maxval`` or ``gt.max()``; must be finite and > 0."""
    L = g.detach().max().to(torch.float64) if maxval is None else torch.as_tensor(
        maxval, dtype=torch.float64, device=g.device)
    if L.numel() != 1 or not bool(torch.isfinite(L)) or not float(L) > 0:
        what = "gt.max()" if maxval is None else "maxval"
        raise ValueError(f"{who}: the data range {what} must be finite and > 0, got {L.tolist()}"
                         " (an all-zero or negative reference has no meaningful PSNR/SSIM)")
    return L


def mse(gt: ArrayLike, pred: ArrayLike) -> float | Tensor:
    """Mean squared error ``mean((gt - pred)^2)`` over all voxels."""
    g, p, t = _as_pair(gt, pred, "mse")
    return _out(_sums(g, p)[0] / g.numel(), t)


def nmse(gt: ArrayLike, pred: ArrayLike) -> float | Tensor:
    """Normalised MSE ``||gt - pred||^2 / ||gt||^2`` (dimensionless)."""
    g, p, t = _as_pair(gt, pred, "nmse")
    err, norm = _sums(g, p, norm=True)
    if not float(norm) > 0:  # was inf (nan for an all-zero pred), as psnr / ssim refuse it
        raise ValueError(f"nmse: gt of shape {tuple(g.shape)} is all zero; the error relative to "
                         "its norm is undefined (swapped arguments, or an empty slice?)")
    return _out(err / norm, t)


def psnr(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> float | Tensor:
    """Peak SNR in dB, ``10 log10(maxval^2 / MSE)``; ``maxval`` defaults to ``gt.max()``."""
    g, p, t = _as_pair(gt, pred, "psnr")
    L = _maxval(g, maxval, "psnr")
    return _out(10 * torch.log10(L**2 / (_sums(g, p)[0] / g.numel())), t)


def ssim(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> float | Tensor:
    """Mean SSIM of a volume ``(slices, H, W)``: the per-slice SSIM averaged over slices.

    ``maxval`` (the data range ``L``) defaults to ``gt.max()`` over the whole volume, as in
    ``fastmri.evaluate.ssim``. Slices must be at least 7 x 7.
    """
    g, p, t = _as_pair(gt, pred, "ssim", volume=True)
    L = _maxval(g, maxval, "ssim")
    # a few slices at a time: the float64 box-filter temporaries then do not grow with the volume
    per_slice = [ssim_map(g[i : i + 4].to(torch.float64), p[i : i + 4].to(torch.float64),
                          L).mean(dim=(-2, -1)) for i in range(0, g.shape[0], 4)]
    return _out(torch.cat(per_slice).mean(), t)


METRIC_FUNCS = {"MSE": mse, "NMSE": nmse, "PSNR": psnr, "SSIM": ssim}


def fastmri_crop(target_shape: Sequence[int]) -> tuple[int, int]:
    """The ``(h, w)`` that target and prediction are centre-cropped to before scoring: the rule
    of ``mrirecon run`` and ``mrirecon bench`` alike (:func:`crop_to_target`).

    ``(W_t, W_t)``, ``W_t`` the target's width, as ``fastmri.evaluate`` crops (a 640 x 368 knee
    target cropped to 368 x 368, a 320 x 320 one kept). A target wider than tall (``H_t < W_t``),
    which fastMRI's ``center_crop`` refuses ("Invalid shapes."), is scored whole: the crop is its
    own ``(H_t, W_t)`` (the prediction cropped to the target's shape). Either way the numbers are
    those of fastMRI's metrics on the cropped volumes.
    """
    h, w = int(target_shape[-2]), int(target_shape[-1])
    return (w, w) if h >= w else (h, w)


def crop_to_target(gt: ArrayLike, pred: ArrayLike) -> tuple[Tensor, Tensor]:
    """Centre-crop target and prediction to :func:`fastmri_crop` of the target's shape:
    ``(W_t, W_t)``, ``W_t`` the target's width, as ``fastmri.evaluate`` does before comparing
    (e.g. 640 x 368 -> 368 x 368), or the whole target when it is wider than tall (where
    fastMRI fails).

    Returns float64 tensors ``(slices, h, w)``.
    """
    g, p = _cropped(gt, pred)
    return g.to(torch.float64), p.to(torch.float64)


def _cropped(gt: ArrayLike, pred: ArrayLike) -> tuple[Tensor, Tensor]:
    """:func:`crop_to_target` in the inputs' own precision (views of them): the metrics convert
    a chunk of slices at a time."""
    g, p = (_as_tensor(a) for a in (gt, pred))
    size = fastmri_crop(g.shape)
    for name, a in (("target", g), ("prediction", p)):
        if a.is_complex():  # .to(float64) kept the real part only: PSNR 8.7 instead of 20.3 dB
            raise ValueError(f"crop_to_target: the {name} is complex ({a.dtype}); fastMRI scores "
                             "magnitude images: pass .abs()")
        if a.shape[-2] < size[0] or a.shape[-1] < size[1]:
            raise ValueError(
                f"crop_to_target: {name} of shape {tuple(a.shape)} is smaller than the crop {size} "
                f"(fastmri_crop of the target's shape {tuple(g.shape)})"
            )
    return center_crop(g, size), center_crop(p, size)


@dataclass
class MetricsReport:
    """Per-volume metrics and their mean and standard deviation over volumes.

    Attributes
    ----------
    names
        Volume names, in evaluation order.
    values
        ``metric -> (volumes,)`` float64 array of per-volume values.
    """

    names: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_volumes(self) -> int:
        return len(self.names)

    def mean(self) -> dict[str, float]:
        """Mean over volumes of each metric."""
        return {k: float(np.mean(v)) for k, v in self.values.items()}

    def std(self) -> dict[str, float]:
        """Sample standard deviation (``ddof = 1``, as fastMRI's ``runstats``) over volumes;
        0 for a single volume."""
        with np.errstate(invalid="ignore"):  # a perfect volume's PSNR is inf: no spread (NaN)
            return {k: float(np.std(v, ddof=1)) if v.size > 1 else 0.0
                    for k, v in self.values.items()}

    def __str__(self) -> str:
        mean, std = self.mean(), self.std()
        return " ".join(f"{k} = {mean_spread(mean[k], std[k], self.num_volumes, '.4g', '+/-')}"
                        for k in sorted(mean))


def mean_spread(mean: float, std: float, volumes: int | None, fmt: str | Callable[[float], str],
                pm: str = "±") -> str:
    """``"mean ± 2 std"`` of a metric over ``volumes`` volumes (``None``: a count not given),
    each formatted with ``fmt`` (a format spec, or a function of the value, as ``report.html``'s);
    one volume has no spread: ``"mean (n = 1)"`` (the tables printed "± 0.00000", a spread of
    zero that was never measured). A mean that is not finite has no spread: ``"n/a"`` for NaN (a
    volume with no score), ``"inf"`` for the PSNR of a perfect reconstruction (fastMRI's value;
    it was printed "n/a", as a diverged one)."""
    if math.isnan(mean):
        return "n/a"
    if math.isinf(mean):
        return f"{mean}"
    show = fmt if callable(fmt) else (lambda v: f"{v:{fmt}}")
    if volumes == 1:
        return f"{show(mean)} (n = 1)"
    return f"{show(mean)} {pm} {show(2 * std)}"


def evaluate_volumes(
    targets: Mapping[str, ArrayLike] | Sequence[ArrayLike],
    predictions: Mapping[str, ArrayLike] | Sequence[ArrayLike],
    *,
    crop: bool = True,
    metrics: Iterable[str] = ("MSE", "NMSE", "PSNR", "SSIM"),
    nonfinite: str = "raise",
) -> MetricsReport:
    """Compute the fastMRI metrics per volume.

    Parameters
    ----------
    targets, predictions
        Volumes ``(slices, H, W)``: two mappings with the same keys (e.g. file names) or two
        sequences of equal length.
    crop
        Centre-crop both to the target's width first (:func:`crop_to_target`), as fastMRI does.
    nonfinite
        A prediction holding NaN or Inf: ``"raise"`` (a ``ValueError`` naming the volume) or
        ``"nan"`` (every metric of that volume NaN: what a training or tuning loop that ranks
        states wants of a diverged one, which then is never the best).
    metrics
        Names among ``MSE``, ``NMSE``, ``PSNR``, ``SSIM``.

    Returns
    -------
    MetricsReport
        ``str(report)`` prints ``"NAME = mean +/- 2 std"`` like ``fastmri.evaluate``
        (``"NAME = mean (n = 1)"`` for one volume).
    """
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRIC_FUNCS]
    if unknown:
        raise ValueError(f"evaluate_volumes: unknown metrics {unknown}; expected {sorted(METRIC_FUNCS)}")
    if isinstance(targets, Mapping):
        if not isinstance(predictions, Mapping) or set(targets) != set(predictions):
            raise ValueError("evaluate_volumes: targets and predictions must be mappings with the same keys")
        names = list(targets)
        pairs = [(targets[n], predictions[n]) for n in names]
    else:
        targets, predictions = list(targets), list(predictions)
        if len(targets) != len(predictions):
            raise ValueError(
                f"evaluate_volumes: {len(targets)} targets but {len(predictions)} predictions"
            )
        names = [str(i) for i in range(len(targets))]
        pairs = list(zip(targets, predictions))
    if not pairs:
        raise ValueError("evaluate_volumes: no volumes given")
    values: dict[str, list[float]] = {m: [] for m in metrics}
    with torch.no_grad():
        if nonfinite not in ("raise", "nan"):
            raise ValueError(f"evaluate_volumes: nonfinite must be 'raise' or 'nan', got {nonfinite!r}")
        for name, (gt, pred) in zip(names, pairs):
            who = f"evaluate_volumes: volume {name!r}"  # which of the volumes, not "mse"
            g, p = _cropped(gt, pred) if crop else (gt, pred)
            # the scored region only: NaNs in the columns the crop drops left a score (was NaN)
            if nonfinite == "nan" and not finite_and_nonzero(_as_tensor(p))[0]:
                for m in metrics:
                    values[m].append(float("nan"))
                continue
            g, p, _ = _as_pair(g, p, who)
            for m in metrics:
                values[m].append(float(METRIC_FUNCS[m](g, p)))
    return MetricsReport(names, {m: np.asarray(v, dtype=np.float64) for m, v in values.items()})


def metrics_table(reports: Mapping[str, MetricsReport], metrics: Sequence[str] = ("NMSE", "PSNR", "SSIM")) -> str:
    """A Markdown table, one row per method: ``mean ± 2 std`` of each metric over volumes
    (:func:`mean_spread`: ``mean (n = 1)`` for one volume)."""
    digits = {"MSE": ".4g", "NMSE": ".5f", "PSNR": ".2f", "SSIM": ".4f"}
    lines = ["| method | volumes | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for method, rep in reports.items():
        mean, std = rep.mean(), rep.std()
        cells = []
        for m in metrics:
            if m not in mean:
                raise ValueError(f"metrics_table: report {method!r} has no metric {m!r}")
            f = digits.get(m, ".4g")
            cells.append(mean_spread(mean[m], std[m], rep.num_volumes, f))
        lines.append(f"| {method} | {rep.num_volumes} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
