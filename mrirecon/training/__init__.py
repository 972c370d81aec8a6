"""Training: configs, samples (MRI and CT), loss, the DDP-capable resumable loop, shipped weights.

* :func:`train_from_config` - what ``mrirecon train CONFIG.yaml`` runs;
* :class:`TrainConfig` - the YAML schema (loaded by :func:`mrirecon.core.config.load_config`);
* :class:`MRITrainingSet`, :class:`CTTrainingSet` - samples with ``y``, ``operator()``, ``target``;
* :class:`AdversarialCritic` (``loss.adversarial``) and
  :class:`mrirecon.training.perceptual.PerceptualLoss` (``loss.perceptual``) - optional loss terms
  (``perceptual`` is not imported here: it is also the script that trains its feature network);
* :class:`Trainer` - the loop (data order and masks are functions of seed, epoch, position);
* :func:`load_pretrained`, :func:`available_weights` - shipped ``.pt`` + ``.yaml`` model cards.
"""

from mrirecon.training.config import TrainConfig
from mrirecon.training.data import MRITrainingSet, TrainingSample
from mrirecon.training.data_ct import CTSample, CTTrainingSet
from mrirecon.training.losses import ReconstructionLoss
from mrirecon.training.losses_gan import AdversarialCritic, PatchDiscriminator
from mrirecon.training.run import TrainResult, train_from_config
from mrirecon.training.trainer import Trainer
from mrirecon.training.weights import available_weights, load_pretrained, model_card

__all__ = [
    "AdversarialCritic",
    "CTSample",
    "CTTrainingSet",
    "MRITrainingSet",
    "PatchDiscriminator",
    "ReconstructionLoss",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingSample",
    "available_weights",
    "load_pretrained",
    "model_card",
    "train_from_config",
]
