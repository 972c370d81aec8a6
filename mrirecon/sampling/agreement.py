"""Whether k-space fits a sampling mask: one rule for ``recon.run`` and the models' input checks
(the data ``y`` against the operator's mask, :func:`judge_mask`) and the pipeline's
``reconcile_mask`` (a file's k-space against its mask)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mrirecon.core import HasSamplingMask, LinearOperator, capability

#: A 2-D mask's samples inside ``y``'s span may hold exact zeros by chance (quantised k-space
#: whose faint outer samples round to 0 in every coil) up to this share before ``y`` counts as
#: undersampled with another mask (a Poisson-disc or variable-density mask of another seed,
#: fftshifted or transposed, leaves 45-75 % of them empty). Column masks allow none.
CHANCE_ZEROS = 0.01


def mask_disagreement(held: Tensor, keep: Tensor,
                      inside: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Where data and a mask disagree, as ``(empty, dropped)`` boolean tensors.

    ``empty``: the mask samples there but the data hold nothing (only where ``inside``: zero
    padding outside the acquired span is never "empty"); ``dropped``: the data hold something
    the mask leaves out. Either alone is ordinary (data undersampled by this mask or a subset of
    it; fully sampled data that the mask undersamples); both at once mean the data were
    undersampled with another mask (fftshifted, flipped, transposed, another seed).

    Parameters
    ----------
    held
        Where the data hold a nonzero value (bool; columns ``(..., W)`` or samples
        ``(..., H, W)``).
    keep
        Where the mask samples (bool), broadcastable with ``held``.
    inside
        Where a sample of the mask may count as empty (bool), or ``None`` for everywhere.
    """
    empty = keep & ~held
    if inside is not None:
        empty = empty & inside.to(empty.device)
    return empty, ~keep & held


def held_span(held: Tensor, dims: int = 1) -> Tensor:
    """``held``'s span (bool, its shape): between the first and the last held entry along the
    last axis (``dims=1``: columns), and for ``dims=2`` also along the second-to-last (per row
    and per column: a fully sampled ellipse spans no corner, a zero-padded band no edge)."""
    span = _between(held, -1)
    if dims == 2:
        span = span & _between(held, -2)
    return span


def _between(held: Tensor, dim: int) -> Tensor:
    after_first = held.cumsum(dim) > 0
    before_last = held.flip(dim).cumsum(dim).flip(dim) > 0
    return after_first & before_last


@dataclass(frozen=True)
class MaskFit:
    """k-space ``y`` against an operator's sampling mask (:func:`judge_mask`), per sample of the
    flattened leading axes: ``held`` / ``keep`` / ``empty`` / ``dropped`` are ``(n, h, w)``
    (``h == 1`` for a column mask), the counts ``(n,)``."""

    columns: bool  # a column mask (..., 1, W), judged by column; else by sample
    held: Tensor  # where y holds data (any coil)
    keep: Tensor  # where the mask samples
    empty: Tensor  # kept, inside y's span, holding no data
    dropped: Tensor  # holding data the mask drops
    n_empty: Tensor
    n_dropped: Tensor
    allowed: Tensor | int  # the empty samples allowed by chance (CHANCE_ZEROS; columns: 0)

    def where(self, i: int) -> str:
        """`` (sample i of n)`` when ``y`` holds several samples, else ``""``."""
        return f" (sample {i} of {self.held.shape[0]})" if self.held.shape[0] > 1 else ""

    def mismatch(self) -> str | None:
        """Why ``y`` was undersampled with another mask than the operator's (data where the mask
        drops them *and* more kept samples empty than ``allowed``), in ``recon.run``'s words after
        its ``name: ``, or ``None``."""
        bad = ((self.n_empty > self.allowed) & (self.n_dropped > 0)).nonzero().flatten()
        if not len(bad):
            return None
        i = int(bad[0])
        where, n_dropped, n_empty = self.where(i), int(self.n_dropped[i]), int(self.n_empty[i])
        if self.columns:
            return (f"y does not fit the operator's mask{where}: {n_dropped} "
                    f"column(s) of y hold data that the mask drops (first: "
                    f"{int(self.dropped[i, 0].nonzero()[0])}) and {n_empty} column(s) the mask "
                    f"keeps hold none (first: {int(self.empty[i, 0].nonzero()[0])}): y was "
                    "undersampled with another mask (fftshifted, flipped, another seed or "
                    "acceleration?); build op with the mask of y")
        h, w = self.held.shape[-2:]
        return (f"y does not fit the operator's 2-D mask{where}: {n_dropped} "
                f"sample(s) of y hold data that the mask drops and {n_empty} of the "
                f"{int(self.keep[i].sum())} the mask keeps hold none: y is sampled at "
                f"{float(self.held[i].float().mean()):.1%} of the {h} x {w} grid, the "
                f"operator's mask at {float(self.keep[i].float().mean()):.1%}: y was "
                "undersampled with another mask (fftshifted, transposed, another seed or "
                "acceleration?); build op with the mask of y")


def judge_mask(y: Tensor, op: LinearOperator | None) -> MaskFit | None:
    """k-space ``y`` against ``op``'s sampling mask by :func:`mask_disagreement` (inside
    :func:`held_span` of ``y``: zero padding at the edges is no sample), or ``None`` where not
    judged: operators without a Cartesian mask (non-Cartesian, CT) and masks that do not match
    ``y``'s trailing axes. Column masks ``(..., 1, W)`` are judged by column, 2-D masks
    ``(..., H, W)`` by sample; a :class:`~mrirecon.operators.mri.SenseOperator`'s ``y`` by any
    coil. One pass over ``y``; a mask that does not broadcast with ``y`` raises torch's
    ``RuntimeError``."""
    from mrirecon.operators.mri import SenseOperator

    found = None if op is None else capability(op, HasSamplingMask)
    mask = None if found is None else found.mask
    if not isinstance(mask, Tensor) or mask.ndim < 2 or y.ndim < 2 or mask.shape[-1] != y.shape[-1]:
        return None
    columns = mask.shape[-2] == 1
    if not columns and mask.shape[-2] != y.shape[-2]:
        return None
    held = y.detach() != 0
    if columns:
        held = held.any(dim=-2, keepdim=True)  # (..., [coils,] 1, W)
    if isinstance(found, SenseOperator) and held.ndim >= 3:
        held = held.any(dim=-3)  # any coil
    held, keep = torch.broadcast_tensors(held, mask.detach().to(held.device).bool())
    h, w = held.shape[-2:]
    held, keep = held.reshape(-1, h, w), keep.reshape(-1, h, w)
    span = held_span(held, dims=1 if columns else 2)
    empty, dropped = mask_disagreement(held, keep, span)
    allowed = 0 if columns else CHANCE_ZEROS * (keep & span).sum((-2, -1))
    return MaskFit(columns, held, keep, empty, dropped, empty.sum((-2, -1)),
                   dropped.sum((-2, -1)), allowed)
