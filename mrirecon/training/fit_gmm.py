"""Fit the shipped patch GMM: ``mrirecon train gmm --out mrirecon/weights/patch_gmm.pt``.

Patches come only from the allowed simulation images (:mod:`mrirecon.data.anatomy`): noise-free
simulated brain MRI magnitudes (MNI152 template via nilearn, random contrast, orientation,
deformation, bias) and CT attenuation maps (the allowed DICOM slices and random-ellipse
phantoms), each scaled to a maximum of 1. No image shipped by any other package is used (the
Shepp-Logan phantom is left out too, so that it can serve as a held-out test image).

The output is the state dict of an :class:`~mrirecon.models.unrolled.UnrolledEM` whose ``gmm.``
entries are the fitted mixture (``gmm.means``, ``gmm.covs``, ``gmm.weights``; read them alone
with :func:`mrirecon.training.weights.load_patch_gmm`) and whose per-iteration parameters are the
untrained defaults; a model card ``<out>.yaml`` is written beside it.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mrirecon.io.weights import write_weights
from mrirecon.models.gmm import PatchGMM
from mrirecon.threads import use_threads

_log = logging.getLogger("mrirecon.train")


def training_images(*, mri_volumes: int, mri_slices: int, ct_samples: int, size: int, seed: int) -> list[np.ndarray]:
    """Allowed training images ``(size, size)`` float64, each scaled to max 1."""
    from mrirecon.data.simulate_ct import simulate_ct_samples
    from mrirecon.data.simulate_mri import simulate_mri_volume

    images = []
    for v in range(mri_volumes):
        vol = simulate_mri_volume(v, slices=mri_slices, coils=1, size=(size, size), seed=seed, snr_db=None)
        images += [np.abs(s.numpy()) for s in vol.image]
    ct = simulate_ct_samples(ct_samples, photons=None, size=size, seed=seed, views=16)
    images += list(ct.attenuation)
    return [im / max(float(im.max()), 1e-12) for im in images]


def sample_patches(images: list[np.ndarray], patch_size: int, per_image: int, seed: int,
                   flat_fraction: float = 0.1) -> torch.Tensor:
    """``per_image`` random patches from each image, flattened row-major, ``(N, p*p)``.

    Nearly constant patches (std < 1e-3, e.g. air) are kept with probability ``flat_fraction``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        h, w = im.shape
        r = rng.integers(0, h - patch_size + 1, size=per_image)
        c = rng.integers(0, w - patch_size + 1, size=per_image)
        off = np.arange(patch_size)
        p = im[r[:, None, None] + off[None, :, None], c[:, None, None] + off[None, None, :]]
        p = p.reshape(per_image, -1)
        keep = (p.std(axis=1) >= 1e-3) | (rng.uniform(size=per_image) < flat_fraction)
        out.append(p[keep])
    return torch.tensor(np.concatenate(out), dtype=torch.float64)


def fit_and_save(out: str | Path, *, components: int = 20, patch_size: int = 8,
                 mri_volumes: int = 10, mri_slices: int = 4, ct_samples: int = 20,
                 size: int = 128, patches_per_image: int = 1000, iterations: int = 40,
                 seed: int = 2011, threads: int | None = None) -> dict:
    """Fit the mixture and write ``out`` (state dict) and ``out.yaml`` (card); returns the card
    (``mrirecon train gmm --components 20 ...``).

    The card records this run (``training``: the command with ``--threads``, seed, EM
    iterations run, wall time, threads); over an earlier card of the same mixture and recipe
    (all options but ``iterations``) only that card's descriptive sections stay
    (:func:`~mrirecon.training.run_card.rebuilt_card`: ``training_range``, ``known_failures``
    of the shipped card), never its run record."""
    from mrirecon.training.run_card import earlier_card

    opts = dict(components=components, patch_size=patch_size, mri_volumes=mri_volumes,
                mri_slices=mri_slices, ct_samples=ct_samples, size=size,
                patches_per_image=patches_per_image, iterations=iterations, seed=seed)
    earlier = earlier_card(out)  # before this run replaces the weights it describes
    threads = use_threads(threads)
    torch.manual_seed(opts["seed"])
    t0 = time.perf_counter()
    images = training_images(mri_volumes=opts["mri_volumes"], mri_slices=opts["mri_slices"],
                             ct_samples=opts["ct_samples"], size=opts["size"], seed=opts["seed"])
    patches = sample_patches(images, opts["patch_size"], opts["patches_per_image"], opts["seed"])
    t1 = time.perf_counter()
    history: list[float] = []

    def log(it: int, ll: float) -> None:
        history.append(ll)
        _log.info("EM %3d: mean log-likelihood %.4f", it, ll)

    gmm = PatchGMM.fit(patches, opts["components"], iterations=opts["iterations"], callback=log)
    t2 = time.perf_counter()

    from mrirecon.models.registry import MODEL_DEFAULTS
    from mrirecon.models.unrolled.unrolled_em import UnrolledEM

    params = dict(MODEL_DEFAULTS["unrolled_em"])
    params.update(gmm=None, components=opts["components"], patch_size=opts["patch_size"], learn_gmm=False)
    model = UnrolledEM(**params)
    for key in ("means", "covs", "weights"):
        getattr(model.gmm, key).copy_(getattr(gmm, key).to(torch.float32))
    out = Path(out)
    summary = {"images": len(images), "patches": int(patches.shape[0]), "history": history,
               "wall_time_s": round(t2 - t0, 1), "data_time_s": round(t1 - t0, 1)}
    card = _card(out, {"threads": threads, **opts}, params, summary, earlier)
    write_weights(out, model.state_dict(), card)
    _log.info("wrote %s (%.0f KiB) in %.0f s", out, out.stat().st_size / 1024, t2 - t0)
    return card


def _card(out: Path, args: dict, params: dict, summary: dict, earlier: dict | None) -> dict:
    """The card of a ``train gmm`` run (``args``: its options with the threads it ran on):
    :func:`~mrirecon.training.run_card.trainer_card`, an ``earlier`` card of the same mixture
    and recipe keeping its descriptive sections, never its run record."""
    from mrirecon.training.run_card import trainer_command
    from mrirecon.training.run_card import trainer_card

    opts = {k: v for k, v in args.items() if k != "threads"}
    history = summary["history"]
    fresh = {
        "model": {"name": "unrolled_em", "params": params},
        "data": {
            "source": "noise-free simulated brain MRI magnitudes (MNI152 template via nilearn) and "
                      "CT attenuation maps (allowed DICOM slices and random-ellipse phantoms); "
                      "Shepp-Logan and all other package images excluded (held out)",
            "images": summary["images"],
            "patches": summary["patches"],
            **opts,
        },
        "training": {
            "command": trainer_command("gmm", out, args),
            "seed": opts["seed"],
            "algorithm": "EM, float64, deterministic initialisation (std quantile x gradient orientation)",
            "iterations": opts["iterations"],
            "steps": len(history),  # EM iterations run
            "mean_log_likelihood_first_last": [round(history[0], 4), round(history[-1], 4)],
            "wall_time_s": summary["wall_time_s"],
            "data_time_s": summary["data_time_s"],
            "hardware": f"{platform.machine()} CPU, {args['threads']} thread(s)",
            "torch": str(torch.__version__),
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    defaults = {
        "description": (
            f"Patch GMM prior (Zoran & Weiss 2011 style): {opts['components']} zero-mean "
            f"full-covariance components over DC-removed {opts['patch_size']}x{opts['patch_size']} "
            "patches of images scaled to [0, 1], fitted by EM. Stored as an UnrolledEM state dict "
            "(keys gmm.means, gmm.covs, gmm.weights; learn_gmm false so no GMM corrections are stored; the "
            "per-iteration parameters are untrained defaults). "
            "Used by recon 'epll' and as the initial prior of 'unrolled_em'. Not for clinical use."
        ),
        "known_failures": [
            "Fitted by mrirecon train gmm (see training) on [0, 1]-scaled simulated MNI152 "
            "magnitudes and CT images only; the unrolled parameters (sigma schedule, noise level) "
            "are untrained defaults, and these weights are not scored on the held-out protocol."],
    }
    return trainer_card(fit_and_save, fresh, earlier, args, ("iterations",), defaults)
