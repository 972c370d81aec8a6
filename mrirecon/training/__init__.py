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

from mrirecon.lazy import lazy_exports

# Imported on first use (PEP 562): the pipeline schema needs mrirecon.training.adapt, and an
# eager package import would load the whole training stack (the loop, losses, data sets,
# checkpoint I/O: ~0.6 s) into every ``mrirecon run`` of a classical pipeline.
_EXPORTS = {
    "AdversarialCritic": "losses_gan",
    "CTSample": "data_ct",
    "CTTrainingSet": "data_ct",
    "MRITrainingSet": "data",
    "PatchDiscriminator": "losses_gan",
    "ReconstructionLoss": "losses",
    "TrainConfig": "config",
    "TrainResult": "run",
    "Trainer": "trainer",
    "TrainingSample": "data",
    "available_weights": "weights",
    "load_pretrained": "weights",
    "model_card": "weights",
    "train_from_config": "run",
}

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
