"""Self-supervised losses: SSDU for MRI, view splitting (Noise2Inverse-style) for CT.

No model changes: the split is a new sampling operator. For MRI the model gets
``(y * dc, sense(maps, dc))`` - the same operator class with the data-consistency mask ``dc``
- and its image ``x`` is scored on the held-out points ``loss``: ``F S x`` against ``y`` there.
For CT the model gets one view subset with the projector of those views (scaled to unit norm,
as in supervised training), and its image is projected onto the other subsets' views.

The k-space / sinogram loss is SSDU's normalised L1 + L2 (Yaman et al. 2020, eq. 7):

    L(u, v) = ||u - v||_2 / ||v||_2 + ||u - v||_1 / ||v||_1

with complex moduli for k-space; both terms are scale free, so the scanner's arbitrary k-space
scale does not change the loss, and the L1 term keeps large residuals (low frequencies) from
dominating as a plain squared error would.

Seeds: :func:`split_seed` gives one seed per ``(run seed, epoch, sample index)``; a sample's
``splits`` splits come from one generator in sequence, so a step is reproducible and a resumed
run draws the same splits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mrirecon.operators.mri import SenseOperator, sense
from mrirecon.sampling.split import SplitError, split_views, ssdu_split
from mrirecon.training.config import SSDUConfig

_log = logging.getLogger("mrirecon.train")


def estimates_own_maps(name: str, params: Mapping) -> bool:
    """Whether model ``name`` built with ``params`` estimates its own coil sensitivities
    (E2E-VarNet unless ``estimate_sensitivities`` is false, ``learned_maps``). Such a model
    combines the coils with its own maps, and E2E-VarNet detaches its output's phase, while the
    SSDU loss (training's ``loss.ssdu``, the pipeline's ``adapt:``) scores its image through the
    sample's calibrated maps: a loss it can lower while the image worsens (E2E-VarNet's output
    scored 2.99, worse than predicting zero, 2.0, at 33 dB PSNR). The one rule of both."""
    name = str(name).lower().replace("-", "_")
    return name == "learned_maps" or (
        name == "varnet" and bool(dict(params or {}).get("estimate_sensitivities", True)))


def split_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the splits of sample ``index`` in ``epoch`` (independent of batch position)."""
    return (seed * 1_000_000_007 + epoch * 2_654_435_761 + index * 97_531 + 12_345) % (2**63 - 1)


def name_seed(name: str, index: int = 0) -> int:
    """A fixed seed from a file name and slice: the split of each validation slice (adaptation
    seeds its hold-out from ``adapt.seed`` alone, the same for every volume)."""
    return int.from_bytes(hashlib.sha256(f"{name}:{index}".encode()).digest()[:7], "little")


def kspace_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """SSDU's normalised ``||u - v||_2 / ||v||_2 + ||u - v||_1 / ||v||_1`` (scalar).

    Both tensors hold values on the loss set only (zero elsewhere); complex or real.
    """
    diff = prediction - target
    l2 = torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(target).clamp_min(1e-30)
    l1 = diff.abs().sum() / target.abs().sum().clamp_min(1e-30)
    return l2 + l1


def _complex_image(model_name: str, x: Tensor) -> Tensor:
    if not x.is_complex():
        raise ValueError(
            f"SSDU: {model_name} returns a real image (e.g. a coil-combined magnitude); the "
            "k-space loss needs the complex image x (its F S x is compared with the held-out "
            "k-space). Use a model with a complex output (MoDL, VN, ISTA-Net, ADMM-CSNet, ...)")
    return x


def mri_split_loss(model: nn.Module, y: Tensor, op: SenseOperator, dc: Tensor, loss_mask: Tensor
                   ) -> Tensor:
    """Loss of one split: ``x = model(y * dc, sense(maps, dc))``, scored on ``loss_mask``."""
    dc, loss_mask = dc.to(y.device), loss_mask.to(y.device)
    x = _complex_image(type(model).__name__, model(y * dc, sense(op.maps, dc)))
    predicted = op.expand(x) * loss_mask
    return kspace_loss(predicted, y * loss_mask)


def mri_ssdu_loss(model: nn.Module, y: Tensor, op: SenseOperator, generator: torch.Generator,
                  cfg: SSDUConfig) -> Tensor:
    """Mean loss over ``cfg.splits`` SSDU splits of the acquired points (the operator's mask)
    of ``y`` ``(1, C, H, W)``."""
    if not isinstance(op, SenseOperator):
        raise ValueError(f"SSDU: MRI samples need a Cartesian sense operator, got {type(op).__name__}")
    acquired = op.mask
    shape = tuple(y.shape[-2:])
    total = y.real.new_zeros(())
    for _ in range(cfg.splits):
        dc, loss_mask = ssdu_split(acquired.cpu(), shape, generator, ratio=cfg.ratio,
                                   selection=cfg.selection, acs_block=cfg.acs_block)
        total = total + mri_split_loss(model, y, op, dc, loss_mask)
    return total / cfg.splits


def ct_view_loss(model: nn.Module, sample, generator: torch.Generator, cfg: SSDUConfig) -> Tensor:
    """Noise2Inverse-style loss of a :class:`~mrirecon.training.data_ct.CTSample`.

    The views are split into ``cfg.view_parts`` disjoint subsets; for each subset ``J`` the
    model reconstructs from ``J`` alone (projector of ``J`` and data scaled by its norm, as the
    model saw in supervised training) and its image is projected onto the complementary views,
    where the normalised L1 + L2 distance to the measured line integrals is the loss.
    """
    from mrirecon.models.ct_scale import unit_norm_ct
    from mrirecon.operators.ct import ct_operator
    from mrirecon.sampling.views import select_views

    measured = sample.y * sample.norm  # (1, views, detectors) line integrals
    views = measured.shape[-2]
    subsets = split_views(views, cfg.view_parts, generator=generator, interleaved=cfg.interleaved)
    total = measured.new_zeros(())
    for j, idx in enumerate(subsets):
        rest = torch.cat([s for k, s in enumerate(subsets) if k != j])
        rest = torch.sort(rest).values
        # projectors on the data's device (built on the host, a CUDA run failed at its first
        # step, as scan-specific CT adaptation had)
        op = ct_operator(select_views(sample.geometry, idx.tolist())).to(measured.device)
        x = model(*unit_norm_ct(measured[..., idx.to(measured.device), :], op))  # as trained
        x = x.real if x.is_complex() else x
        predicted = ct_operator(select_views(sample.geometry, rest.tolist())).to(measured.device)(x)
        total = total + kspace_loss(predicted, measured[..., rest.to(measured.device), :])
    return total / len(subsets)


class SelfSupervisedLoss:
    """The trainer's ``sample_loss(model, sample, seed) -> scalar`` for ``loss.ssdu``."""

    def __init__(self, cfg: SSDUConfig) -> None:
        self.cfg = cfg

    #: the ``loss.ssdu`` key of each parameter a split names (:class:`SplitError`)
    KEYS = {"ratio": "ratio", "acs_block": "acs_block", "parts": "view_parts"}

    def __call__(self, model: nn.Module, sample, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        try:
            if hasattr(sample, "geometry"):  # CT
                return ct_view_loss(model, sample, g, self.cfg)
            return mri_ssdu_loss(model, sample.y, sample.operator(), g, self.cfg)
        except SplitError as exc:  # a setting this sample cannot honour: name the key and file
            key = self.KEYS.get(exc.setting, exc.setting)
            raise ValueError(f"SSDU: {sample.fname} slice {sample.slice_index}: loss.ssdu.{key} "
                             f"{exc.reason}") from None


def make_ssdu_validate_fn(dataset, cfg: SSDUConfig, max_samples: int | None = None):
    """The trainer's ``validate_fn`` for self-supervised runs.

    Returns ``{"ssdu_loss": ...}``: the mean self-supervised loss on fixed splits (seeded by file
    name and slice), computable without any reference; plus the fastMRI ``NMSE / PSNR / SSIM``
    of the full-data reconstruction of the volumes whose samples carry a reference (a folder
    mixing test-layout files with fully sampled ones: the others are named once, up front, by
    ``AcquiredMRISet``, or here at the first validation for a dataset without
    ``files_without_reference``; one file without a reference had turned the scores off for
    every volume, without a word).

    Marked ``collective``, so the trainer calls it on every rank: in an initialised process
    group of ``W > 1`` ranks, rank ``r`` takes volumes ``r, r + W, ...`` (the dataset's
    ``volume_keys()``; samples ``r, r + W, ...`` without it) for the loss and the scoring
    (:func:`~mrirecon.training.validation.evaluate_reconstructor` with ``distributed=True``), so
    it reads and calibrates its own slices only; the per-sample losses and per-volume scores
    are gathered, the losses summed in sample order: every rank returns what one process would.
    """
    loss = SelfSupervisedLoss(cfg)
    # the files without a reference are named once: up front by a dataset that knows them
    # (AcquiredMRISet), else at the first validation
    said: list[bool] = [True] if hasattr(dataset, "files_without_reference") else []

    @torch.no_grad()
    def validate(model: nn.Module, device) -> dict[str, float]:
        import torch.distributed as dist

        from mrirecon.training.validation import volume_groups

        rank, world = 0, 1
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        was_training = model.training
        model.eval()
        try:
            n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
            groups = volume_groups(dataset) or [[i] for i in range(len(dataset))]
            mine = [i for group in groups[rank::world] for i in group if i < n]
            values, missing, is_ct = [], [], False  # values: (sample index, loss)
            for i in mine:
                s = dataset.get(i, mask_seed=None).to(device)
                values.append((i, float(loss(model, s, name_seed(s.fname, s.slice_index)))))
                if s.target is None:
                    missing.append((i, s.fname))
                is_ct = is_ct or hasattr(s, "geometry")
            if world > 1:  # every rank takes the same branch below (a collective in it)
                parts: list = [None] * world
                dist.all_gather_object(parts, (values, missing, is_ct))
                values = sorted(v for part in parts for v in part[0])
                missing = sorted(m for part in parts for m in part[1])
                is_ct = any(part[2] for part in parts)
            out = {"ssdu_loss": sum(v for _, v in values) / max(len(values), 1)}
            without = {name for _, name in missing}
            if missing and not said and rank == 0 and not is_ct and len(without) < len(groups):
                said.append(True)
                _log.warning("SSDU validation: %d of %d validation file(s) have no reference "
                             "(%s): NMSE / PSNR / SSIM are those of the other %d", len(without),
                             len(groups), ", ".join(sorted(without)[:3])
                             + (", ..." if len(without) > 3 else ""),
                             len(groups) - len(without))
            if n and not is_ct and max_samples is None and len(without) < len(groups):
                from mrirecon.training.validation import evaluate_reconstructor, model_reconstructor

                # the volumes without a reference are left out of the scores
                out.update(evaluate_reconstructor(model_reconstructor(model, device), dataset,
                                                  distributed=True).mean())
            return out
        finally:
            model.train(was_training)

    validate.collective = True  # every rank calls it (Trainer)
    return validate
