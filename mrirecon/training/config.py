"""Training configuration (YAML -> frozen dataclasses via :mod:`mrirecon.core.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal


@dataclass(frozen=True)
class MaskConfig:
    """fastMRI-style mask function; training draws fresh masks, validation seeds by file name."""

    type: Literal["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"] = (
        "equispaced_fraction"
    )
    center_fractions: tuple[float, ...] = (0.08, 0.04)
    accelerations: tuple[int, ...] = (4, 8)


@dataclass(frozen=True)
class DataConfig:
    """Folders of fastMRI-layout (MRI) or LoDoPaB-layout (CT) HDF5 files."""

    train: str
    val: str
    modality: Literal["mri", "ct"] = "mri"
    mask: MaskConfig = field(default_factory=MaskConfig)
    sample_rate: float = 1.0
    num_workers: int = 0  # has no effect (the trainer loads in-process); warned at load
    # coil maps of each sample (MRI); None: by model (:func:`default_maps`), set by TrainConfig
    maps: Literal["espirit", "walsh", "learned"] | None = None
    # MiB of ESPIRiT / Walsh maps kept for reuse by this process (train and val sets together),
    # least recently used dropped and recomputed; 0: none; None: min(2048, RAM / 8 / ranks on the
    # node) (:func:`mrirecon.training.maps_cache.default_budget_bytes`)
    maps_cache_mb: float | None = None
    ct_views: int | None = None
    ct_photons: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


def default_maps(model: ModelConfig, modality: str = "mri") -> str:
    """``data.maps`` when the config gives none: ``learned`` (no calibration) for a model that
    estimates its own coil maps (E2E-VarNet, ``learned_maps``) and for CT (no coils: the value
    recorded in the cards of CT runs), else ``espirit``, the maps the learned pipelines
    (``mri_modl``, ``mri_learned``) give it. The default was ``learned`` for every model: a
    MoDL trained on unit maps 1/sqrt(C) (a coil sum) scored 18.8 dB, below zero-filled (19.1;
    20.0 with ESPIRiT), and was then run with ESPIRiT maps, with no word."""
    from mrirecon.training.ssdu import estimates_own_maps

    own = modality != "mri" or estimates_own_maps(model.name, model.params)
    return "learned" if own else "espirit"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 1
    max_steps: int = 1000
    lr_step: int = 0
    lr_gamma: float = 0.1
    grad_clip: float | None = None


@dataclass(frozen=True)
class SSDUConfig:
    """Self-supervised loss (``loss: {ssdu: {...}}``): no reference image is used.

    MRI (SSDU, Yaman et al. 2020): each sample's acquired points are split ``splits`` times into
    a data-consistency set (the mask of the operator the model sees) and a loss set holding
    ``ratio`` of the points (``selection`` uniform or Gaussian, the central ``acs_block`` always
    in the DC set); the loss is the normalised L1 + L2 distance in k-space on the loss set
    (:func:`mrirecon.training.ssdu.kspace_loss`). CT (Noise2Inverse-style): the views are split
    into ``view_parts`` disjoint subsets (interleaved or random); the model's reconstruction
    from one subset is scored on the others' sinogram through the projector of those views.
    Splits are seeded per (sample, epoch).
    """

    ratio: float = 0.4
    selection: Literal["uniform", "gaussian"] = "gaussian"
    acs_block: tuple[int, int] = (4, 4)
    splits: int = 1
    view_parts: int = 2
    interleaved: bool = True


@dataclass(frozen=True)
class LossConfig:
    """Weights of the training loss terms (see :class:`~mrirecon.training.losses.ReconstructionLoss`).

    ``perceptual`` weighs :class:`~mrirecon.training.perceptual.PerceptualLoss` (shipped
    feature network); ``adversarial > 0`` adds a patch discriminator
    (:mod:`mrirecon.training.losses_gan`) updated once per generator step with Adam at
    ``discriminator_lr``, objective ``adversarial_mode``. ``ssdu`` replaces all of these by
    the self-supervised k-space (MRI) / sinogram (CT) loss of :class:`SSDUConfig`.
    """

    ssim: float = 1.0
    l1: float = 0.0
    mse: float = 0.0
    perceptual: float = 0.0
    adversarial: float = 0.0
    discriminator_lr: float = 1e-4
    adversarial_mode: Literal["nonsaturating", "lsgan"] = "nonsaturating"
    ssdu: SSDUConfig | None = None  # set: self-supervised, the image terms above are not used


@dataclass(frozen=True)
class TrainConfig:
    """A complete training run; ``output_dir`` receives checkpoints and logs."""

    name: str
    output_dir: str
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    amp: bool = False
    checkpointing: bool = False
    # steps between log rows, validations and checkpoints; log_every / checkpoint_every 0: only
    # at the last step; val_every 0: no validation at all (train_from_config passes no
    # validate_fn, and data.val is not checked against data.train)
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 100
    val_max_slices: int | None = None
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.data.maps is None:  # the maps the pipelines give the model
            maps = default_maps(self.model, self.data.modality)
            object.__setattr__(self, "data", replace(self.data, maps=maps))
