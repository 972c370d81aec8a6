"""Zero-shot, scan-specific adaptation (ZS-SSL, Yaman et al., ICLR 2022) of a trained model.

:func:`adapt_model` fine-tunes a *deep copy* of a model on the k-space of the volume about to be
reconstructed; the caller's model (and so the shipped weights) never changes.

MRI. Per slice, a fixed part ``Gamma`` of the acquired points (``validation_fraction`` of the
acquired columns outside the fully sampled centre for a column mask, else of the points) is held
back for validation. Each step draws one slice of the volume (all slices share the model) and an
SSDU split of the remaining points into a DC set and a loss set, and takes one Adam step on the
normalised L1 + L2 k-space loss (:func:`~mrirecon.training.ssdu.kspace_loss`). Every
``val_every`` steps the validation loss - the model given all non-held-back points, scored on
``Gamma`` - is computed over the volume; the best state is kept and adaptation stops after
``patience`` validations without improvement, at ``steps`` or at ``time_budget_s``. The returned
model is the best state, which is the unchanged initial model when no step improved the
validation loss (the guard against making a well-fitting model worse). A step that diverges (a
non-finite loss, gradients or weights, or a forward pass refusing NaN / Inf values, as MoDL's CG
does once too large a ``lr`` has blown the weights up) ends the adaptation there with the best
state so far (``AdaptReport.diverged``, :func:`diverged_message`).

Data that cannot give these splits with these settings (fewer than two acquired columns outside
the ``acs_block`` centre, an ``acs_block`` over all the points or a ``ratio`` that holds out none,
a CT scan of fewer than 3 views) raise :class:`CannotAdapt`, naming the settings and counts; the
pipeline warns and reconstructs with the unadapted model. A hold-out that differs from
``validation_fraction`` beyond rounding (at least one column, at most all outside the centre but
one; CT: every k-th view) is said in ``AdaptReport.warnings``.

``time_budget_s`` counts from the start (the initial validation included); no step starts that
would end after it, and a validation of the last state may follow. ``rows`` (Cartesian column
masks only) trains on readout stripes of that many rows: with the readout inverse-Fourier
transformed, rows are independent measurements, so a stripe's data, maps and column mask form an
exact smaller SENSE problem (as readout-oversampling removal); stripes are drawn where the image
has signal. Validation then uses a fixed set of the highest-signal stripes. This cuts a step at
fastMRI size (640 rows) several fold.

CT (Noise2Inverse-style): ``op`` must be a projector with a ``geometry`` (``ct_operator``) and
``y`` its line integrals; a fixed interleaved ``validation_fraction`` of the views is held back,
and each step splits the rest into two interleaved halves (reconstruct from one, score on the
other) through the projectors restricted to those views, scaled to unit norm.

Batch norm runs with its running statistics (``model.eval()``) throughout: one scan is no batch.

Normalisation (MRI). A model that normalises its input (``normalize`` on, e.g. MoDL: data
divided by ``s = max |A^H y|``) is adapted at the scale inference will use: each slice is divided
once by ``s`` of the whole slice with all its acquired points, and the copy runs with
``normalize`` off during adaptation (switched back on in the returned copy). A readout stripe or
an SSDU subset therefore keeps the slice's scale instead of being renormalised to its own peak
(a low-signal stripe would otherwise be amplified to peak 1) - the way the deployment-geometry
MoDL was trained (row bands divided by their whole slice's scale, see its card).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from mrirecon.core.checks import LearnedWeightError, NonFiniteError
from mrirecon.functional import fftc, ifftc
from mrirecon.operators.mri import SenseOperator, sense
from mrirecon.sampling.split import SplitError, centre_block, loss_count, split_views, ssdu_split
from mrirecon.training.optim import lr_problem
from mrirecon.training.ssdu import kspace_loss, mri_split_loss


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of :func:`adapt_model` (the pipeline's ``adapt:`` stage)."""

    steps: int = 100
    time_budget_s: float | None = 60.0
    validation_fraction: float = 0.2
    lr: float = 1e-4
    ratio: float = 0.4
    selection: Literal["uniform", "gaussian"] = "gaussian"
    acs_block: tuple[int, int] = (4, 4)
    val_every: int = 5
    patience: int = 3
    rows: int | None = None
    val_stripes: int = 2
    seed: int = 0


@dataclass
class AdaptReport:
    """What adaptation did: validation-loss curve, stopping step, time.

    Attributes
    ----------
    val_steps, val_losses
        Steps at which the validation loss was computed (0 = the initial model) and its values.
    train_losses
        Training loss of every step.
    best_step
        Step of the returned state (0: the initial model was kept).
    steps
        Steps taken; ``stopped`` says why (``"steps"``, ``"patience"``, ``"time_budget"``,
        ``"unreliable"``: MRI, the initial validation loss was clearly worse than an all-zero
        prediction's, :data:`UNRELIABLE_LOSS`, so no step was taken; ``"diverged"``: see
        ``diverged``).
    diverged
        ``None``, or ``{"step": k, "reason": ...}`` when step ``k`` diverged (its loss, its
        gradients or the weights it produced non-finite, or a forward pass raising on NaN /
        Inf values, such as MoDL's CG): the adaptation stopped there and the best state before
        it was kept (:func:`diverged_message`). A diverged step is not counted in ``steps``
        unless it was its validation that diverged.
    seconds
        Wall time of the whole adaptation (validations included).
    """

    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    best_step: int = 0
    steps: int = 0
    stopped: str = "steps"
    seconds: float = 0.0
    diverged: dict | None = None
    #: what the run should say: a setting the data could not honour as asked (the realised
    #: ``validation_fraction``)
    warnings: list[str] = field(default_factory=list)

    @property
    def initial_val_loss(self) -> float:
        return self.val_losses[0] if self.val_losses else float("nan")

    @property
    def best_val_loss(self) -> float:
        return min(self.val_losses) if self.val_losses else float("nan")

    def as_dict(self) -> dict:
        out = {"val_steps": self.val_steps, "val_losses": self.val_losses,
               "train_losses": self.train_losses, "best_step": self.best_step,
               "steps": self.steps, "stopped": self.stopped, "seconds": round(self.seconds, 3)}
        if self.diverged is not None:
            out["diverged"] = dict(self.diverged)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


class CannotAdapt(ValueError):
    """This volume's data cannot give the adaptation's splits with these settings: too few
    acquired columns outside ``acs_block`` for a validation set, a ``ratio`` that holds out no
    point, a CT scan of too few views. The message names the settings and counts; the
    pipeline's adapt stage warns and reconstructs with the unadapted model (as for an
    ``"unreliable"`` validation loss) instead of failing the input."""


def diverged_message(report: AdaptReport, lr: float) -> str | None:
    """What the run says when the adaptation diverged (``None`` when it did not): the step and
    why, the learning rate, which state was kept, and what to do."""
    if report.diverged is None:
        return None
    at, reason = report.diverged["step"], report.diverged["reason"]
    if at == 1 and not reason.startswith(("weights", "validation")):
        # the first step's loss and gradients are the unchanged model's: not adapt.lr's doing
        return (f"adapt: step 1 gave non-finite values ({reason}) before any update, so not "
                "from adapt.lr: the adaptation stopped and the shipped model was kept; check "
                "the input's k-space and coil maps")
    kept = "the shipped model" if report.best_step == 0 else f"the state after step {report.best_step}"
    return (f"adapt: step {at} diverged ({reason}) at adapt.lr={lr:g}: the adaptation stopped "
            f"and the best state ({kept}) was kept; lower adapt.lr")


def check_adapt_config(cfg: AdaptConfig, modality: str | None = None) -> None:
    """Range checks (``ValueError`` naming the field); for ``modality`` "ct" also the view
    hold-out (:func:`_ct_setup`'s k), which had failed each input instead of the load."""
    problems = []
    if not (isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool)
            and 0 <= cfg.seed < 2**63):  # 1e20: "Overflow when unpacking long long", per input
        problems.append(f"seed must be an integer in [0, 2**63), got {cfg.seed!r}")
    if modality == "ct" and 0 < cfg.validation_fraction < 1 and round(1 / cfg.validation_fraction) < 2:
        # (0.99 held back every 2nd view, 50 %, without a word; then it failed each input)
        problems.append(f"validation_fraction {cfg.validation_fraction!r}: CT holds back every "
                        "k-th view, k = round(1 / validation_fraction) = 1; at most 0.5 (every "
                        "2nd view) is possible")
    if not (isinstance(cfg.steps, int) and cfg.steps >= 0):
        problems.append(f"steps must be an integer >= 0, got {cfg.steps!r}")
    if cfg.time_budget_s is not None and not (math.isfinite(cfg.time_budget_s) and cfg.time_budget_s > 0):
        problems.append(f"time_budget_s must be > 0 or null, got {cfg.time_budget_s!r}")
    if not 0 < cfg.validation_fraction < 1:
        problems.append(f"validation_fraction must be in (0, 1), got {cfg.validation_fraction!r}")
    if lr_problem(cfg.lr):
        problems.append(f"lr {lr_problem(cfg.lr)}")
    if not 0 < cfg.ratio < 1:
        problems.append(f"ratio must be in (0, 1), got {cfg.ratio!r}")
    for name in ("val_every", "patience", "val_stripes"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(cfg, name)!r}")
    if not (isinstance(block := cfg.acs_block, (tuple, list)) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in block)):
        problems.append(f"acs_block must be two integers >= 0 (rows, columns), got {block!r}")
    if cfg.rows is not None and cfg.rows < 8:
        problems.append(f"rows must be >= 8 or null, got {cfg.rows!r}")
    if problems:
        raise ValueError("adapt: " + "; ".join(problems))


# ---- MRI views: (slice, stripe) problems with their fixed hold-out ------------------------------


@torch.no_grad()
def _slice_scale(y: Tensor, op: SenseOperator) -> Tensor:
    """``s = max |A^H y|`` of a whole slice ``(1, C, H, W)``, as a normalising model computes it
    at inference (:func:`mrirecon.models.common.normalized_data`), shaped to divide ``y``."""
    from mrirecon.models.common import normalized_data

    return normalized_data(y, op)[2].reshape((-1,) + (1,) * (y.ndim - 1))



@dataclass
class _View:
    y: Tensor  # (1, C, h, W)
    op: SenseOperator  # maps of the stripe, acquired mask
    train: Tensor  # (h, W) or (1, W) bool: acquired minus the hold-out
    val: Tensor  # same shape: the hold-out


def column_mask(op) -> bool:
    """Whether ``op`` samples whole k-space columns (a ``(1, W)`` mask), the condition for
    readout stripes (``rows``); a 2-D mask (e.g. a partial echo's) is not. Operators without a
    mask (CT) count as column masks: ``rows`` does not apply to them."""
    mask = getattr(op, "mask", None)
    return mask is None or mask.ndim < 2 or mask.shape[-2] == 1


def _stripe(y: Tensor, op: SenseOperator, r0: int, rows: int) -> tuple[Tensor, SenseOperator]:
    """Rows ``[r0, r0 + rows)`` of the image as an exact SENSE problem (column masks only)."""
    hybrid = ifftc(y, dim=-2)[..., r0:r0 + rows, :]
    return fftc(hybrid, dim=-2), sense(op.maps[..., r0:r0 + rows, :], op.mask)


def _row_energy(y: Tensor, op: SenseOperator) -> Tensor:
    return (op.H(y).abs() ** 2).reshape(-1, y.shape[-2], y.shape[-1]).sum(dim=(0, -1))


#: the ``adapt:`` key of each parameter an MRI split names (:class:`SplitError`): the hold-out
#: draws ``validation_fraction`` of the points, the training steps ``ratio`` of the rest
_HOLDOUT_KEYS = {"ratio": "adapt.validation_fraction", "acs_block": "adapt.acs_block"}
_STEP_KEYS = {"ratio": "adapt.ratio", "acs_block": "adapt.acs_block"}


def _cannot(exc: SplitError, keys: dict, what: str) -> CannotAdapt:
    return CannotAdapt(f"adapt: {what}: {keys.get(exc.setting, exc.setting)} {exc.reason}")


def _holdout(op: SenseOperator, shape: tuple[int, int], cfg: AdaptConfig, g: torch.Generator
             ) -> tuple[Tensor, Tensor]:
    """``(train, val)`` masks: whole columns for a column mask (valid on every stripe), points
    otherwise; the central ``acs_block`` columns / points are never held back. At least one
    column is held back and one left for training (:class:`CannotAdapt` when the data have
    fewer than two outside the centre block)."""
    mask = op.mask.cpu()
    if not column_mask(op):
        try:
            return ssdu_split(mask, shape, g, ratio=cfg.validation_fraction, selection="uniform",
                              acs_block=cfg.acs_block)
        except SplitError as exc:
            raise _cannot(exc, _HOLDOUT_KEYS, "the validation hold-out") from None
    cols = mask.reshape(-1).bool()
    keep = centre_block((1, cols.numel()), (1, cfg.acs_block[1]))[0]
    cand = torch.nonzero(cols & ~keep).reshape(-1)
    if cand.numel() < 2:
        raise CannotAdapt(
            f"adapt: {cand.numel()} of the {int(cols.sum())} acquired columns lie outside the "
            f"central {cfg.acs_block[1]} columns that adapt.acs_block {list(cfg.acs_block)} keeps "
            f"for training ({int((cols & keep).sum())} acquired there); the validation set holds "
            "back at least one column outside them and the training steps need another: lower "
            "adapt.acs_block[1], or the scan has too few acquired columns to adapt on")
    count = min(max(1, round(cfg.validation_fraction * int(cols.sum()))), cand.numel() - 1)
    val = torch.zeros_like(cols)
    val[cand[torch.randperm(cand.numel(), generator=g)[:count]]] = True
    return (cols & ~val)[None], val[None]


def _fraction_warning(cfg: AdaptConfig, realised: set[tuple[int, int]], unit: str,
                      why: str | None = None) -> str | None:
    """What the run says when the hold-out is not ``validation_fraction`` of the acquired
    columns / points as rounded: held back ``(count, of)`` per slice, raised to one or capped so
    that training keeps one outside the centre block (0.8 and 0.99 both held back 14 of 19
    columns, 0.001 one of 19, without a word)."""
    off = sorted((k, n) for k, n in realised if k != round(cfg.validation_fraction * n))
    if not off:
        return None
    k, n = off[0]
    more = f" (and {len(off) - 1} other count(s))" if len(off) > 1 else ""
    why = why or ("at least one is held back" if k > round(cfg.validation_fraction * n) else
                  f"the acquired {unit} outside the central adapt.acs_block "
                  f"{list(cfg.acs_block)} allow no more"
                  + (" (one of them stays for training)" if unit == "columns" else ""))
    return (f"adapt.validation_fraction {cfg.validation_fraction:g} of {n} acquired {unit} "
            f"asks {round(cfg.validation_fraction * n)}, but {k} ({k / n:.2f}) are held back{more}: "
            f"{why}")


def _mri_views(slices, cfg: AdaptConfig, g: torch.Generator) -> tuple[list, list, Tensor, list]:
    """Training views (per slice, or per candidate stripe), validation views, draw weights,
    warnings (:func:`_fraction_warning`). :class:`CannotAdapt` when a slice cannot give the
    hold-out or the training steps' split with these settings."""
    train_views, val_views, weights = [], [], []
    realised: dict[str, set] = {}  # unit -> {(held back, acquired)}
    for y, op in slices:
        if not isinstance(op, SenseOperator):
            raise ValueError(f"adapt: MRI slices need a Cartesian sense operator, got {type(op).__name__}")
        if y.ndim != 4:
            raise ValueError(f"adapt: y must be (1, coils, H, W), got {tuple(y.shape)}")
        h, w = y.shape[-2:]
        train, val = _holdout(op, (h, w), cfg, g)
        realised.setdefault("columns" if train.shape[-2] == 1 else "points", set()).add(
            (int(val.sum()), int((train | val).sum())))
        rows = cfg.rows
        step = (h, w) if rows is None or rows >= h else (rows, w)  # a step's slice or stripe
        try:  # every training step's SSDU split of this slice is possible (same counts each step)
            omega = _full(train, step)
            loss_count(omega, omega & ~centre_block(step, cfg.acs_block), cfg.ratio, cfg.acs_block)
        except SplitError as exc:
            raise _cannot(exc, _STEP_KEYS, "the training steps' split of the points left after "
                                           "the validation hold-out") from None
        if rows is None or rows >= h:
            v = _View(y, op, train, val)
            train_views.append(v)
            val_views.append(v)
            weights.append(1.0)
            continue
        if not column_mask(op):
            raise ValueError("adapt: rows (readout stripes) needs a Cartesian column mask")
        energy = _row_energy(y, op)
        window = torch.nn.functional.conv1d(energy[None, None].float(), torch.ones(1, 1, rows))[0, 0]
        starts = list(range(0, h - rows + 1, max(rows // 4, 1)))
        sw = torch.stack([window[s] for s in starts]).double()
        for s, wgt in zip(starts, sw.tolist()):
            ys, ops = _stripe(y, op, s, rows)
            train_views.append(_View(ys, ops, train, val))
            weights.append(wgt)
        # validation: the highest-signal non-overlapping stripes, fixed
        chosen: list[int] = []
        for s in sorted(starts, key=lambda s: -float(window[s])):
            if all(abs(s - c) >= rows for c in chosen):
                chosen.append(s)
            if len(chosen) == cfg.val_stripes:
                break
        for s in chosen:
            ys, ops = _stripe(y, op, s, rows)
            val_views.append(_View(ys, ops, train, val))
    wt = torch.tensor(weights, dtype=torch.float64)
    notes = [m for unit, counts in realised.items() if (m := _fraction_warning(cfg, counts, unit))]
    return train_views, val_views, wt / wt.sum().clamp_min(1e-300), notes


def _full(mask: Tensor, shape: tuple[int, int]) -> Tensor:
    return mask.expand(shape) if mask.shape[-2] == 1 else mask


@torch.no_grad()
def _mri_val_loss(model: nn.Module, views: list[_View]) -> float:
    return sum(float(mri_split_loss(model, v.y, v.op, _full(v.train, v.y.shape[-2:]),
                                    _full(v.val, v.y.shape[-2:]))) for v in views) / len(views)


def _mri_step_loss(model: nn.Module, v: _View, cfg: AdaptConfig, g: torch.Generator) -> Tensor:
    shape = tuple(v.y.shape[-2:])
    dc, loss = ssdu_split(v.train, shape, g, ratio=cfg.ratio, selection=cfg.selection,
                          acs_block=cfg.acs_block)
    return mri_split_loss(model, v.y, v.op, dc, loss)


# ---- CT: view hold-out and Noise2Inverse halves ---------------------------------------------


def _ct_recon_loss(model: nn.Module, y: Tensor, geometry, inp: Tensor, out: Tensor) -> Tensor:
    from mrirecon.models.ct_scale import unit_norm_ct
    from mrirecon.operators.ct import cached_ct_operator
    from mrirecon.sampling.views import select_views

    # the projectors of the halves on the sinogram's device (built on the host, they failed on
    # CUDA data), cached: a slice has four view sets (two halves, training and validation views)
    device = str(y.device)
    op_in = cached_ct_operator(select_views(geometry, inp.tolist()), device)
    x = model(*unit_norm_ct(y[..., inp, :], op_in))
    x = x.real if x.is_complex() else x
    pred = cached_ct_operator(select_views(geometry, out.tolist()), device)(x)
    return kspace_loss(pred, y[..., out, :])


def _ct_setup(slices, cfg: AdaptConfig, notes: list[str] | None = None):
    views, realised = [], set()
    for y, op in slices:
        geometry = getattr(op, "geometry", None)
        if geometry is None:
            raise ValueError(f"adapt: CT slices need ct_operator(geometry), got {type(op).__name__}")
        n, k = y.shape[-2], round(1 / cfg.validation_fraction)  # k >= 2: check_adapt_config
        if n < 3:  # one view held back leaves at most one: no two halves to train on
            raise CannotAdapt(f"adapt: the sinogram has {n} view(s): holding back one for "
                              "validation (adapt.validation_fraction) leaves at most one, and each "
                              "training step needs two halves of at least one view each; CT "
                              "adaptation needs 3 views or more")
        if k // 2 >= n:  # e.g. 0.01 of 30 views: every 100th view, none held back (this
            # sinogram's doing, as a scan too narrow to split: skipped with a warning)
            raise CannotAdapt(f"adapt: adapt.validation_fraction {cfg.validation_fraction!r} "
                              f"holds back every {k}th view, but the sinogram has {n} views: none "
                              f"would be held back (use at least {1 / n:.3g})")
        val = torch.arange(n)[torch.arange(n) % k == k // 2]  # k >= 2 and n >= 3: one view or
        train = torch.arange(n)[torch.arange(n) % k != k // 2]  # more held back, two or more kept
        views.append((y, geometry, train, val))
        realised.add((val.numel(), n))
    msg = _fraction_warning(cfg, realised, "views", "CT holds back every k-th view, k = "
                            f"round(1 / validation_fraction) = {k}")  # 0.4 of 30 views: 15
    if msg and notes is not None:
        notes.append(msg)
    return views


# ---- the loop ----------------------------------------------------------------------------------


#: The MRI validation loss of an all-zero k-space prediction (SSDU's normalised L2 + L1: 1 + 1).
ZERO_PREDICTION_LOSS = 2.0
#: Adaptation is skipped (and the run says so) when the initial validation loss is this much
#: above a zero prediction's: through cropped ESPIRiT maps MoDL / PnP started at 2.4-2.8 and
#: the loss fell while PSNR fell by 0.6-0.8 dB; small phantoms start near 2.0 and adapt.
UNRELIABLE_LOSS = 1.1 * ZERO_PREDICTION_LOSS


def _non_finite_name(value: float) -> str:
    return "NaN" if math.isnan(value) else "Inf"


def _forward_reason(exc: Exception) -> str:
    """The error's first clause (its guess at a cause, e.g. the data or coil maps, is wrong
    here: the weights the adaptation made are)."""
    return "the model's forward pass raised " + repr(str(exc).split(" (")[0])


def _all_finite(tensors) -> bool:
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    return not flags or bool(torch.stack(flags).all())


def _take_step(step_loss, params: list, opt: torch.optim.Optimizer) -> float | str:
    """One Adam step: its training loss, or why it diverged (a non-finite loss, gradients or
    resulting weights, or a forward pass raising on NaN / Inf values)."""
    try:
        loss = step_loss()
    except (NonFiniteError, LearnedWeightError) as exc:  # what diverged weights meet (MoDL)
        return _forward_reason(exc)
    value = float(loss.detach())
    if not math.isfinite(value):
        return f"loss {_non_finite_name(value)}"
    loss.backward()
    if not _all_finite(p.grad for p in params):
        return "gradients NaN or Inf"
    opt.step()
    if not _all_finite(params):
        return "weights NaN or Inf after the update"
    return value


def adapt_model(model: nn.Module, slices: list[tuple[Tensor, object]], config: AdaptConfig | None = None,
                *, progress=None) -> tuple[nn.Module, AdaptReport]:
    """Fine-tune a copy of ``model`` on one volume's own data (see the module docstring).

    Parameters
    ----------
    model
        A trained ``model(y, op) -> x``; not modified.
    slices
        The volume: ``(y, op)`` per slice, MRI ``y`` ``(1, C, H, W)`` with ``sense`` operators,
        or CT line integrals ``(1, views, detectors)`` with ``ct_operator(geometry)``.
    config
        :class:`AdaptConfig`.
    progress
        Optional ``progress(step, train_loss, val_loss_or_None)`` callback.

    Returns
    -------
    model, report
        The adapted copy (eval mode; the initial state if adaptation never improved the
        validation loss) and its :class:`AdaptReport`.
    """
    cfg = config or AdaptConfig()
    if not slices:
        raise ValueError("adapt: no slices given")
    is_ct = not isinstance(slices[0][1], SenseOperator)
    check_adapt_config(cfg, "ct" if is_ct else "mri")
    t0 = time.perf_counter()
    adapted = copy.deepcopy(model).eval().requires_grad_(True)
    g = torch.Generator().manual_seed(int(cfg.seed))
    notes: list[str] = []  # warnings of the hold-out
    if is_ct:
        ct = _ct_setup(slices, cfg, notes)

        def val_loss() -> float:
            with torch.no_grad():
                return sum(float(_ct_recon_loss(adapted, y, geo, tr, va)) for y, geo, tr, va in ct) / len(ct)

        def step_loss() -> Tensor:
            y, geo, tr, _ = ct[int(torch.randint(len(ct), (1,), generator=g))]
            a, b = split_views(tr.numel(), 2, generator=g)
            return 0.5 * (_ct_recon_loss(adapted, y, geo, tr[a], tr[b])
                          + _ct_recon_loss(adapted, y, geo, tr[b], tr[a]))
    else:
        renorm = bool(getattr(adapted, "normalize", False))
        if renorm:  # the whole slice's scale, fixed (see the module notes)
            slices = [(y / _slice_scale(y, op), op) for y, op in slices]
            adapted.normalize = False
        train_views, val_views, weights, notes = _mri_views(slices, cfg, g)

        def val_loss() -> float:
            return _mri_val_loss(adapted, val_views)

        def step_loss() -> Tensor:
            v = train_views[int(torch.multinomial(weights, 1, generator=g))]
            return _mri_step_loss(adapted, v, cfg, g)

    report = AdaptReport(warnings=notes)
    best = val_loss()
    report.val_steps.append(0)
    report.val_losses.append(best)
    best_state = copy.deepcopy(adapted.state_dict())
    params = [p for p in adapted.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    bad, step = 0, 0
    step_seconds = 0.0  # mean duration of a step so far
    report.stopped = "steps"
    if not is_ct and best > UNRELIABLE_LOSS:  # the loss cannot tell better from worse here
        report.stopped = "unreliable"

    def diverge(at: int, reason: str) -> None:
        report.diverged = {"step": at, "reason": reason}
        report.stopped = "diverged"

    def validated() -> float | None:
        """The validation loss of the current state, or ``None`` when it diverged."""
        try:
            current = val_loss()
        except (NonFiniteError, LearnedWeightError) as exc:
            diverge(step, f"validation: {_forward_reason(exc)}")
            return None
        if not math.isfinite(current):
            diverge(step, f"validation loss {_non_finite_name(current)}")
            return None
        report.val_steps.append(step)
        report.val_losses.append(current)
        return current

    while step < cfg.steps and report.stopped != "unreliable":
        # no step starts that would end past the budget (the validation closing the run, if
        # one is due, may add its own time)
        if cfg.time_budget_s is not None and \
                time.perf_counter() - t0 + step_seconds > cfg.time_budget_s:
            report.stopped = "time_budget"
            break
        ts = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        outcome = _take_step(step_loss, params, opt)
        if isinstance(outcome, str):  # why it diverged; its state is discarded (best_state)
            diverge(step + 1, outcome)
            break
        step += 1
        step_seconds += (time.perf_counter() - ts - step_seconds) / step
        report.train_losses.append(outcome)
        current = None
        if step % cfg.val_every == 0 or step == cfg.steps:
            current = validated()
            if current is None:
                break
            if current < best:
                best, bad, report.best_step = current, 0, step
                best_state = copy.deepcopy(adapted.state_dict())
            else:
                bad += 1
        if progress is not None:
            progress(step, report.train_losses[-1], current)
        if bad >= cfg.patience:
            report.stopped = "patience"
            break
    if report.diverged is None and report.val_steps[-1] != step:
        # stopped between validations: score the last state too
        current = validated()
        if current is not None and current < best:
            best, report.best_step = current, step
            best_state = copy.deepcopy(adapted.state_dict())
    report.steps = step
    adapted.load_state_dict(best_state)
    if not is_ct and renorm:
        adapted.normalize = True
    for p, q in zip(adapted.parameters(), model.parameters()):
        p.requires_grad_(q.requires_grad)
    adapted.eval()
    report.seconds = time.perf_counter() - t0
    return adapted, report

