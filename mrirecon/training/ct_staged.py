"""Train :class:`~mrirecon.models.unrolled.staged_ct.StagedCTNet` at the LoDoPaB geometry.

    mrirecon train staged_ct --out mrirecon/weights/staged_ct_lodopab.pt --iterations 1 --budget-s 6000 --seed 0 --threads 1

Data recipe (simulated on the fly, never the reserved held-out images of
:mod:`mrirecon.io.heldout_sources`): every sample is a ``362 x 362`` attenuation image over a
26 cm field of view, drawn from

* ``ct`` (30 %): the allowed CT DICOM images (:mod:`mrirecon.io.ct_sources`) with the random
  rotation / flip / shift / zoom of :mod:`mrirecon.data.simulate_ct` and a random HU contrast
  scaling of 0.8-1.2 (two of the five frames, ``eCT_Supplemental.dcm``'s, are a perfusion map
  in US drawn as a texture as if in HU);
* ``phantom`` (20 %): random ellipse body phantoms (:func:`~mrirecon.data.anatomy.random_ellipses_hu`);
* ``textured`` (50 %): a random body outline (ellipse or smooth blob, 45-95 % of the field)
  filled with soft tissue plus a texture of :class:`~mrirecon.training.prior_images.PriorImageBank`
  (natural photographs of scikit-image / matplotlib, procedural shapes and fractal noise,
  deformed MNI152 anatomy, allowed CT) of random contrast (50-1500 HU), sometimes with bright
  bone-like and dark lung-like inserts. The bank cuts them at 362 x 362 with the zoom ranges of
  the 64-pixel prior, so most natural, MNI and CT textures are reflect-padded (mirror-tiled):
  the fractions are in :data:`CARD_TEXT`.

Each image is projected in parallel beam on the LoDoPaB geometry (513 detectors) at 30 or 60
sparse views (every 33rd / 16th of 1000 angles, random offset) and measured with Poisson noise
at 4096 photons per bin (counts floored at 0.1). The model sees ``A / ||A||`` and ``y / ||A||``
as in :mod:`mrirecon.pipeline.stages_ct`.

Training is stage-wise (greedy): stage ``k``'s U-Net learns, on random ``128 x 128`` patches
(mostly inside the body), to map the whole-image output of the stages before it (computed
without gradients) to the reference, with the MSE in units of the FBP's robust scale; Adam with
a cosine learning rate over the stage's share of the wall-time budget or its ``--max-steps``
(:func:`~mrirecon.training.optim.budget_fraction`; step-bounded runs, such as the card's
``command_same_steps``, repeat bit for bit on the same threads, CPU type and torch build).
Every ``--val-every`` steps the model is scored on the validation split (PSNR of the image
clipped at 0, :func:`psnr_nonnegative`, not :func:`mrirecon.metrics.psnr`; :func:`validation_set`: the slices of
``mrirecon.heldout.validation.validation_ct_slices``, allowed sources at the deployment geometry,
rebuilt here because training code never imports the held-out package; a test checks that they
are the same) at 30 and 60 views and the best state is kept; after
each stage its data-consistency weight ``lam`` is chosen on the same split from a grid. The
weights and a model card are written after every stage, so a stopped run leaves a usable model.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrirecon.core.names import accepts_deprecated_names
from mrirecon.data.simulate_ct import (HARDWARE_BLUR, MU_WATER_70KEV_PER_MM, _resample_source,
                                       ct_simulation_geometry, poisson_postlog)
from mrirecon.io.lodopab import IMAGE_SHAPE, NUM_ANGLES, NUM_DETECTORS
from mrirecon.sampling import view_factor
from mrirecon.threads import load_average, load_fields, load_text, use_threads
from mrirecon.training.run_card import trainer_command
from mrirecon.training.init_card import check_init_card, earlier_runs, read_init_card

_log = logging.getLogger("mrirecon.train")

CT_SIZE, CT_FULL_VIEWS, CT_DETECTORS = IMAGE_SHAPE[0], NUM_ANGLES, NUM_DETECTORS
CT_PHOTONS = 4096.0  # LoDoPaB's incident photons per detector bin
#: The cards' ``training_range`` of both LoDoPaB-geometry trainers (staged, primal-dual).
CARD_RANGE = {"matrix": {"min": [CT_SIZE, CT_SIZE], "max": [CT_SIZE, CT_SIZE]},
              "views": [30, 63], "geometry": ["parallel"], "detectors": [CT_DETECTORS, CT_DETECTORS],
              "photons": [int(CT_PHOTONS), int(CT_PHOTONS)]}
VAL_SAMPLES, VAL_SEED = 2, 77  # = mrirecon.heldout.validation.validation_ct_slices()

VIEWS = (30, 60)
#: Static parts of the model card (the run adds parameters, command, steps, wall time, history).
CARD_TEXT = {
    "description": (
        "Sparse-view low-dose CT at the LoDoPaB-CT geometry: Hann FBP, one CG data-consistency "
        "step, then {nets} ({chans} features, {pools} poolings, no normalisation layers), each "
        "followed by an exact CG data-consistency step with the projector; the network sees the "
        "image divided by the FBP's 99th percentile, so the output scales with the data whatever "
        "the view count. The data-consistency weights are relative to the unit-norm projector "
        "A / ||A|| and data y / ||A||, as in training: the pipeline passes them, and the model "
        "scales a bare CT projector (ct_operator(geometry)) and its data so itself. Trained {how}, "
        "{cpu}."),
    "data": {
        "source": "simulated on the fly (mrirecon.training.ct_staged): allowed CT DICOM images "
                  "(random pose, zoom, contrast x0.8-1.2), ellipse body phantoms, and body outlines "
                  "filled with natural photographs (scikit-image, matplotlib), procedural images, "
                  "deformed MNI152 slices or allowed CT textures (random HU contrast, bone / lung "
                  "inserts); 30 % / 20 % / 50 %. Two of the five CT DICOM frames "
                  "(eCT_Supplemental.dcm) are a derived rCBF perfusion map (RescaleType US, "
                  "skull-stripped, CSF and vessels at -1024), drawn as an attenuation texture as if "
                  "in HU, not HU anatomy: 40 % of the CT draws (12 % of all images, 2 % more as "
                  "textures). The textures are cut at 362 x 362 with the zoom ranges of the 64-pixel "
                  "prior (prior_images._crop), so a zoomed source smaller than 362 on a side is "
                  "reflect-padded (mirror-tiled: mirrored copies with straight symmetric seams, CT "
                  "heads as kaleidoscopes) in natural 62 %, MNI 91-100 % (by slice size) and CT 66 % "
                  "of the texture draws, about 26 % of all training images. No reserved (held-out) "
                  "image is read.",
        "geometry": "parallel beam, 362 x 362 over 260 mm, 513 detectors, 30 or 60 of 1000 views "
                    "(every 33rd / 16th angle, random offset), Poisson noise at 4096 photons per "
                    "bin, counts floored at 0.1",
        "validation": "the CT validation split of mrirecon.heldout.validation (2 allowed-source "
                      "images, seed 77){validation_hardware} at 30 and 60 views, offset 0: best "
                      "state per stage, the lam grid and the self-ensemble (on / off); its PSNR "
                      "(validation_psnr_db, val_psnr) is of the image clipped at 0 "
                      "(ct_staged.psnr_nonnegative), which reads higher than mrirecon run's "
                      "PSNR (metrics.psnr) where the image has negative pixels",
    },
    "known_failures": [
        "Trained only at 362 x 362 pixels over 26 cm, parallel beam, 513 detectors, 30-63 views, "
        "4096 photons: `mrirecon run` warns outside matrix 362 x 362, 30-63 views, parallel beam "
        "or 513 detectors. Limited angle or much higher / lower dose are untested.",
        "A short CPU training ({steps} steps of batch {batch} in {minutes} minutes): fine "
        "textures of anatomy unlike the training images come out smoothed, and small low-contrast "
        "details can be lost, as with any sparse-view prior; read it as a sparse-view image, not a "
        "full-dose one.",
        "High-contrast edges (skull, bone, bowel gas) and thin objects outside the body (patient "
        "table, head holder: {hardware_seen}) come out blurred; at 30 views tuned TV "
        "keeps these edges sharper (its error is noise spread over the body).",
        "No metal, beam hardening or photon starvation beyond the 0.1-count floor in training; "
        "streaks from such data are not removed.",
        "lam is relative to the unit-norm projector A / ||A||: the pipeline passes it, and the "
        "model scales a bare CT projector (ct_operator(geometry)) and its data to it itself; a "
        "projector scaled otherwise (c A) is used as given, and its data-consistency steps then "
        "act as if lam were lam / (c ||A||)^2.",
        "No non-negativity constraint: air may hold small negative values (the held-out "
        "protocol clips at 0, as for every method).",
    ],
}
HARDWARE_TEXT = (" Scanner hardware (--hardware): a patient table (flat or curved slab, dense "
                 "shell around a foam or solid core) below the body in half of the images and a "
                 "U-shaped head holder around it in a third, in the air only, band-limited by a "
                 "Gaussian of {:g}-{:g} pixel as a reconstructed slice is.").format(*HARDWARE_BLUR)
#: ``{hardware_seen}`` of the known failures / ``{validation_hardware}`` of the validation line,
#: without and with --hardware
HARDWARE_SEEN = ("none in the training images",
                 "simulated ones in the training images, never a real one")
VALIDATION_HARDWARE = ("", ", plus a table and a head-holder copy of each image "
                           f"({3 * VAL_SAMPLES} images in all)")
LAM_GRID = (None, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
SOURCE_P = {"ct": 0.3, "phantom": 0.2, "textured": 0.5}


def full_geometry():
    """The LoDoPaB parallel-beam geometry: 362 x 362 over 26 cm, 1000 angles, 513 detectors."""
    return ct_simulation_geometry("parallel", CT_SIZE, CT_FULL_VIEWS, CT_DETECTORS, 260.0)


class CTImageRecipe:
    """Draws training attenuation images ``(362, 362)`` in 1/mm (see the module docstring)."""

    def __init__(self, seed: int, size: int = CT_SIZE, mni_volumes: int = 4, hardware: bool = False) -> None:
        from mrirecon.io.ct_sources import load_ct_sources
        from mrirecon.training.prior_images import PriorImageBank

        self.size, self.rng, self.hardware = size, np.random.default_rng([seed, 1]), bool(hardware)
        self.ct = load_ct_sources()
        self.bank = PriorImageBank(size, seed=seed, mni_volumes=mni_volumes, mni_slices=4)

    def reseed(self, seed: int, stream: int) -> None:
        """Restart the draws on the stream ``(seed, stream)`` (the image sources stay loaded)."""
        self.rng = np.random.default_rng([seed, 1, stream])
        self.bank.rng = np.random.default_rng([seed, 4, stream])

    def _body_mask(self) -> np.ndarray:
        rng, n = self.rng, self.size
        yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) / (n / 2)
        a, b = rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95)
        t = rng.uniform(0, np.pi)
        u = xx * np.cos(t) + yy * np.sin(t)
        v = -xx * np.sin(t) + yy * np.cos(t)
        r = (u / a) ** 2 + (v / b) ** 2
        if rng.uniform() < 0.5:  # smooth blob outline
            f = ndimage.gaussian_filter(rng.standard_normal((n, n)), n / 10, mode="wrap")
            r = r + 0.6 * f / max(f.std(), 1e-12) * rng.uniform(0.1, 0.4)
        return r <= 1.0

    def textured_hu(self) -> np.ndarray:
        rng = self.rng
        kind = str(rng.choice(["natural", "procedural", "mni", "ct"], p=[0.4, 0.3, 0.2, 0.1]))
        tex = self.bank.magnitude(kind)
        tex = tex / max(tex.max(), 1e-12)
        mask = self._body_mask()
        hu = np.full(tex.shape, -1000.0)
        base = rng.uniform(-120, 80)
        hu[mask] = base + rng.uniform(50, 1500) * (tex[mask] - (rng.uniform() < 0.3) * 0.5)
        if rng.uniform() < 0.3:  # fat rim
            inner = ndimage.binary_erosion(mask, iterations=int(rng.integers(3, 12)))
            hu[mask & ~inner] = rng.uniform(-120, -60)
        for _ in range(int(rng.integers(0, 4))):  # bone-like / lung-like inserts
            n = self.size
            c = rng.uniform(0.25, 0.75, 2) * n
            ax = rng.uniform(0.02, 0.15, 2) * n
            yy, xx = np.mgrid[:n, :n]
            ins = ((yy - c[0]) / ax[0]) ** 2 + ((xx - c[1]) / ax[1]) ** 2 <= 1
            hu[ins & mask] = rng.uniform(300, 1800) if rng.uniform() < 0.6 else rng.uniform(-900, -600)
        return hu

    def draw(self) -> tuple[np.ndarray, str]:
        """``(mu, source)``: attenuation (1/mm) ``(362, 362)`` float64 and its source kind."""
        from mrirecon.data.anatomy import add_scanner_hardware_hu, random_ellipses_hu

        rng, shape = self.rng, (self.size, self.size)
        kind = str(rng.choice(list(SOURCE_P), p=list(SOURCE_P.values())))
        if kind == "ct":
            src = self.ct[int(rng.integers(len(self.ct)))]
            hu = _resample_source(src.values[::-1], shape, rng)  # perfusion maps too
            hu = (hu + 1000.0) * rng.uniform(0.8, 1.2) - 1000.0
        elif kind == "phantom":
            hu = random_ellipses_hu(shape, rng)
        else:
            hu = self.textured_hu()
        if self.hardware:  # a patient table / head holder in the air around the body
            hu = add_scanner_hardware_hu(hu, rng, blur=HARDWARE_BLUR)
        hu = np.clip(hu, -1024.0, 3071.0)
        return np.maximum(MU_WATER_70KEV_PER_MM * (1.0 + hu / 1000.0), 0.0), kind


class SparseViewSimulator:
    """Projects an attenuation image at 30 / 60 views (random offset) with 4096-photon noise."""

    def __init__(self, seed: int) -> None:
        self.full = full_geometry()
        self.rng = np.random.default_rng([seed, 2])
        self._ops: dict = {}

    def reseed(self, seed: int, stream: int) -> None:
        """Restart the views, offsets and noise on the stream ``(seed, stream)``."""
        self.rng = np.random.default_rng([seed, 2, stream])

    def operator(self, factor: int, offset: int):
        """``(geometry, A, ||A||)`` of the kept views, cached."""
        from mrirecon.operators.ct import ct_operator, projector_norm
        from mrirecon.sampling import sparse_view

        key = (factor, offset)
        if key not in self._ops:
            g, _ = sparse_view(self.full, factor, offset)
            self._ops[key] = (g, ct_operator(g), projector_norm(g))
        return self._ops[key]

    def measure(self, mu: np.ndarray, views: int | None = None, offset: int | None = None):
        """``(y / ||A||, A / ||A||, geometry)`` for ``mu``; ``views`` / ``offset`` random if None."""
        views = int(self.rng.choice(VIEWS)) if views is None else views
        factor = view_factor(CT_FULL_VIEWS, views)
        offset = int(self.rng.integers(factor)) if offset is None else offset
        g, op, norm = self.operator(factor, offset)
        with torch.no_grad():
            clean = op(torch.from_numpy(mu)).numpy()
        y = poisson_postlog(clean, CT_PHOTONS, self.rng, min_count=0.1)
        return torch.from_numpy(y / norm).float(), op * (1.0 / norm), g


def validation_sinograms(samples: int = VAL_SAMPLES, seed: int = VAL_SEED, hardware: bool = False):
    """``(sinograms (N, 1000, 513), attenuation (N, 362, 362))`` float64 of the CT validation
    split: allowed CT images and phantoms at the LoDoPaB geometry, 4096 photons, counts floored at
    0.1 (the data of ``mrirecon.heldout.validation.validation_ct_slices``). ``hardware``: followed
    by a copy of each with a patient table and one with a head holder
    (:func:`~mrirecon.data.simulate_ct.with_scanner_hardware`), so ``N = 3 samples``."""
    from mrirecon.data.simulate_ct import simulate_ct_samples, with_scanner_hardware

    geom = full_geometry()
    sim = simulate_ct_samples(samples, geom, photons=CT_PHOTONS, seed=seed, min_count=0.1)
    if not hardware:
        return sim.sinogram, sim.attenuation
    sinos, mus = with_scanner_hardware(sim.attenuation, geom, CT_PHOTONS, seed, min_count=0.1)
    return np.concatenate([sim.sinogram, sinos]), np.concatenate([sim.attenuation, mus])


def validation_set(sim: SparseViewSimulator, hardware: bool = False) -> list[tuple]:
    """``[(y, op, reference mu, views)]``: the validation split (with its scanner-hardware copies
    when ``hardware``) at 30 and 60 views (offset 0)."""
    out = []
    sinograms, mus = validation_sinograms(hardware=hardware)
    for sino, mu in zip(sinograms, mus):
        for views in VIEWS:
            factor = view_factor(CT_FULL_VIEWS, views)
            g, op, norm = sim.operator(factor, 0)
            y = torch.from_numpy(sino[::factor] / norm).float()
            out.append((y, op * (1.0 / norm), torch.from_numpy(mu).float(), views))
    return out


def psnr_nonnegative(ref: torch.Tensor, img: torch.Tensor) -> float:
    """PSNR in dB (data range = ``ref.max()``) of ``img`` clipped at ``mu >= 0`` first.

    The trainers' score (``lam`` grid, best state, the cards' ``validation_psnr_db`` of
    ``staged_ct_lodopab`` / ``primal_dual_lodopab``), kept so that the shipped cards' choices
    and figures stay reproducible. :func:`mrirecon.metrics.psnr` (``mrirecon run``, ``bench``,
    the held-out tables) scores the image as it is. For a non-negative reference the clip only
    lowers the error, so this reads at least as high: equal on a non-negative image, about
    3 dB higher (``10 log10 2``) where the error is zero-mean noise on air, and without bound
    for an image that is wrong only below 0. On the validation split (30 / 60 views): the
    shipped ``staged_ct_lodopab`` +0.020 / +0.029 dB, ``primal_dual_lodopab`` +0.029 / +0.023
    dB, the Hann FBP (``validation_psnr_db_hann_fbp``) +1.32 / +1.00 dB (20.86 / 24.30 against
    19.54 / 23.30)."""
    mse = float(((ref - img.clamp_min(0)) ** 2).mean())
    return 10 * math.log10(float(ref.max()) ** 2 / max(mse, 1e-30))


@torch.no_grad()
def score(model, val: list[tuple], stages: int | None = None) -> dict[int, float]:
    """Mean validation PSNR (:func:`psnr_nonnegative`: of the image clipped at 0) per view count
    (of the first ``stages`` stages of a staged model; ``None``: the whole ``model(y, op)``)."""
    res: dict[int, list[float]] = {v: [] for v in VIEWS}
    for y, op, ref, views in val:
        x = model(y[None], op) if stages is None else model(y[None], op, iterations=stages)
        res[views].append(psnr_nonnegative(ref, x[0]))
    return {v: float(np.mean(p)) for v, p in res.items()}


@torch.no_grad()
def tune_lam(model, val: list[tuple], k: int) -> dict[str, dict[int, float]]:
    """Choose stage ``k``'s ``lam`` (``k = -1``: ``lam0``) from :data:`LAM_GRID` by the mean
    validation PSNR (:func:`psnr_nonnegative`); sets it on ``model`` and returns the grid's
    scores."""
    inputs = []
    for y, op, ref, views in val:
        model_lam0, model.lam0 = model.lam0, (model.lam0 if k >= 0 else None)
        x, s = model.initial(y[None], op)
        model.lam0 = model_lam0
        for j in range(max(k, 0)):
            x = model.stage(j, x, s, y[None], op)
        z = model.correct(k, x, s) if k >= 0 else x
        inputs.append((z, y[None], op, ref, views, op.H(y[None])))
    scores = {}
    for lam in LAM_GRID:
        res: dict[int, list[float]] = {v: [] for v in VIEWS}
        for z, y, op, ref, views, aty in inputs:
            x = z if lam is None else model.solve(lam, z, y, op, aty)
            res[views].append(psnr_nonnegative(ref, x[0]))
        scores[str(lam)] = {v: float(np.mean(p)) for v, p in res.items()}
    pick = max(LAM_GRID, key=lambda v: float(np.mean(list(scores[str(v)].values()))))
    if k >= 0:
        model.lam[k] = pick
    else:
        model.lam0 = pick
    return scores


@torch.no_grad()
def tune_ensemble(model, val: list[tuple], stages: int) -> dict[str, dict[int, float]]:
    """Choose ``model.ensemble`` (the geometric self-ensemble of the U-Nets, 8x their cost) by
    the mean validation PSNR of the first ``stages`` stages; sets it and returns both scores."""
    scores = {}
    for on in (False, True):
        model.ensemble = on
        scores[str(on).lower()] = score(model, val, stages)
    # a plain bool: the card (YAML) cannot hold numpy's
    model.ensemble = bool(np.mean(list(scores["true"].values())) > np.mean(list(scores["false"].values())))
    return scores


def _patch_corner(rng: np.random.Generator, target: torch.Tensor, size: int) -> tuple[int, int]:
    h, w = target.shape
    if rng.uniform() < 0.85:
        idx = torch.nonzero(target > 0.2 * float(target.max()))
        if len(idx):
            r, c = idx[int(rng.integers(len(idx)))].tolist()
            return (int(np.clip(r - size // 2, 0, h - size)), int(np.clip(c - size // 2, 0, w - size)))
    return int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))


@accepts_deprecated_names  # stages= (before 2026-12-07): iterations=, with a FutureWarning
def train_staged_ct(out: str | Path, *, budget_s: float = 4300.0, seed: int = 0, iterations: int = 2,
                    chans: int = 16, num_pools: int = 4, patch: int = 128, batch: int = 4,
                    pool: int = 24, refresh_every: int = 2, lr: float = 1e-3, val_every: int = 150,
                    init: str | None = None, prefetch: bool = False, hardware: bool = False,
                    max_steps: tuple[int, ...] | None = None, threads: int | None = None,
                    log=_log.info) -> dict:
    """Run the stage-wise training (see the module docstring) within ``budget_s`` seconds of wall
    time; writes ``out`` (a ``.pt`` state dict) and its card (``.yaml`` beside it) after every
    stage and returns the card. ``init``: a state dict of the same architecture (e.g. a shipped
    ``staged_ct_lodopab.pt``) to continue from; its validation score is the one to beat, so a
    continuation never ends below its start. ``prefetch``: make the refresh samples (projection,
    FBP, CG) on a background thread, one more core, while the U-Net trains
    (:class:`~mrirecon.training.prefetch.Prefetch`; the samples are those of the sequential loop,
    in the same order: stage ``k > 0`` restarts its draws on the stream ``(seed, k)``, so the
    samples a prefetcher made ahead and dropped at the end of a stage change nothing).
    ``hardware``: add a patient table / head holder around half / a third of the training images
    (:func:`~mrirecon.data.anatomy.add_scanner_hardware_hu`). ``max_steps``: each stage's step
    limit (one count: every stage's) beside its share of ``budget_s`` (see ``save``)."""
    from mrirecon.models.unrolled.staged_ct import StagedCTNet
    from mrirecon.training.optim import (budget_fraction, cosine_step, require_steps,
                                         stage_step_limits)
    from mrirecon.training.prefetch import Prefetch

    if patch > CT_SIZE:  # refused before the setup: the crops would come out smaller or fail
        raise ValueError(f"train staged_ct: --patch {patch} is larger than the {CT_SIZE} x {CT_SIZE} "
                         f"training images; give at most {CT_SIZE}")
    stage_steps = stage_step_limits("staged_ct", max_steps, iterations)  # before the setup
    tune_reserve = 60.0  # per stage: lam grid, self-ensemble choice, saving
    if budget_s <= tune_reserve * iterations:  # refused at once, before a minute of setup
        require_steps("staged_ct", 0, f"--budget-s {budget_s:g} (each of the {iterations} stages keeps "
                      f"{tune_reserve:g} s for its lam grid and saving)", out)
    threads = use_threads(threads)
    out, t_start = Path(out), time.time()
    load_start = load_average()
    torch.manual_seed(seed)
    model = StagedCTNet(iterations=iterations, chans=chans, num_pools=num_pools, lam=None, init_seed=seed)
    first = read_init_card(init)  # before this run writes its own card over it
    check_init_card(init, "staged_ct", "staged_ct", {"iterations": iterations, "chans": chans,  # shapes
                    "num_pools": num_pools, "filter": model.filter}, StagedCTNet)  # named too
    if init is not None:
        load_init(model, Path(init))
    recipe, sim = CTImageRecipe(seed, hardware=hardware), SparseViewSimulator(seed)
    rng = np.random.default_rng([seed, 3])
    val = validation_set(sim, hardware=hardware)
    log(f"setup {time.time() - t_start:.0f} s; FBP validation PSNR {score(model, val, 0)}")
    lam0_scores = tune_lam(model, val, -1)
    log(f"lam0 grid {lam0_scores} -> {model.lam0}")
    history, steps_per_stage = [], []
    shares = [0.65, 0.35] if iterations == 2 else [1.0 / iterations] * iterations
    for k in range(iterations):
        remaining = budget_s - (time.time() - t_start) - tune_reserve * (iterations - k)
        stage_budget = max(remaining, 0.0) * shares[k] / sum(shares[k:])
        if stage_budget <= 0:  # the lam grid and ensemble tuning below must not run past it
            require_steps("staged_ct", 0, f"--budget-s {budget_s:g} (stage {k} would start "
                          f"{time.time() - t_start:.0f} s in, and each stage keeps "
                          f"{tune_reserve:g} s for its lam grid and saving)", out,
                          f"{out} keeps stages 0-{k - 1}" if k else None)
        net = model.nets[k]
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        if k > 0:  # a stage's data depend on (seed, k) only, not on what a prefetcher drew ahead
            recipe.reseed(seed, k)
            sim.reseed(seed, k)

        def sample(k=k):
            mu, _ = recipe.draw()
            y, op, _ = sim.measure(mu)
            with torch.no_grad():
                x, s = model.initial(y[None], op)
                for j in range(k):
                    x = model.stage(j, x, s, y[None], op)
            return x[0] / s[0], torch.from_numpy(mu).float() / s[0]

        items = [sample() for _ in range(pool)]
        best, best_state, step = -1e9, None, 0
        if init is not None:  # the starting point is the score to beat
            v = score(model, val, k + 1)
            best = float(np.mean(list(v.values())))
            best_state = {n: p.detach().clone() for n, p in net.state_dict().items()}
            log(f"stage {k}: initial weights score {v}")
        t0 = time.time()
        feeder = Prefetch(sample) if prefetch else None
        next_sample = sample if feeder is None else feeder.get
        try:
            while True:
                frac = budget_fraction(step, time.time() - t0, stage_budget, stage_steps[k])
                if frac >= 1:
                    break
                xs, ts = [], []
                for _ in range(batch):
                    x, t = items[int(rng.integers(len(items)))]
                    r, c = _patch_corner(rng, t, patch)
                    xs.append(x[r:r + patch, c:c + patch])
                    ts.append(t[r:r + patch, c:c + patch])
                x, t = torch.stack(xs)[:, None], torch.stack(ts)[:, None]
                if rng.uniform() < 0.5:
                    x, t = x.transpose(-1, -2), t.transpose(-1, -2)
                loss = torch.mean((x + net(x) - t) ** 2)
                cosine_step(opt, loss, lr=lr, frac=frac)
                step += 1
                if step % (refresh_every * (k + 1)) == 0:  # later stages cost more per sample
                    items[int(rng.integers(len(items)))] = next_sample()
                if step % val_every == 0 or budget_fraction(
                        step, time.time() - t0, stage_budget, stage_steps[k]) >= 1:  # its last
                    net.eval()
                    v = score(model, val, k + 1)
                    net.train()
                    m = float(np.mean(list(v.values())))
                    history.append({"stage": k, "step": step, "loss": float(loss.detach()), "val_psnr": v,
                                    "elapsed_s": round(time.time() - t_start)})
                    log(f"stage {k} step {step} loss {float(loss.detach()):.3e} val {v} "
                        f"({time.time() - t_start:.0f} s{load_text()})")
                    if m > best:
                        best, best_state = m, {n: p.detach().clone() for n, p in net.state_dict().items()}
        finally:  # the producer thread ends with its stage
            if feeder is not None:
                feeder.close()
        require_steps("staged_ct", step, f"--budget-s {budget_s:g} (stage {k})", out,
                      f"{out} keeps stages 0-{k - 1}" if k else None)
        if best_state is None:  # validated, never finite: NaN / Inf throughout
            raise ValueError(f"train staged_ct: stage {k}: no validation score of its {step} steps was "
                             f"finite (the training diverged: lower --lr, now {lr}); {out} keeps "
                             f"{'the stages before' if k else 'what it held before this run'}")
        net.load_state_dict(best_state)
        steps_per_stage.append(step)
        lam_scores = tune_lam(model, val, k)
        log(f"stage {k}: best val {best:.2f} dB; lam grid {lam_scores} -> {model.lam[k]}")
        ens_scores = tune_ensemble(model, val, k + 1)
        log(f"stage {k}: self-ensemble {ens_scores} -> {model.ensemble}")
        history.append({"stage": k, "lam_grid": lam_scores, "lam": model.lam[k],
                        "ensemble_scores": ens_scores, "ensemble": model.ensemble})
        card = save(model, out, k + 1, dict(
            seed=seed, budget_s=budget_s,
            **({} if max_steps is None else {"max_steps": tuple(stage_steps)}),
            iterations=iterations, chans=chans, num_pools=num_pools,
            patch=patch, batch=batch, pool=pool, refresh_every=refresh_every, lr=lr,
            val_every=val_every, threads=threads, **({} if init is None else {"init": init}),
            **({"prefetch": True} if prefetch else {}), **({"hardware": True} if hardware else {})),
            steps_per_stage, history,
            time.time() - t_start, load_start, score(model, val, k + 1), first)
        model.ensemble = False  # the next stage trains on the plain stages' outputs
        log(f"wrote {out}")
    return card


def load_init(model, path: Path, kind: str = "staged_ct",
              must_match: str = "iterations / chans / num_pools") -> None:
    """Load the state dict at ``path`` into ``model`` (float16 files load into float32) through
    the one weights reader (safe loading; a truncated file, or NaN / Inf weights a diverged run
    left, are refused); errors name ``mrirecon train KIND``, the file and, for a state dict of
    another shape, the architecture options that must match."""
    from mrirecon.io.weights import read_state_dict

    if not path.exists():
        raise FileNotFoundError(f"train {kind}: --init {path} does not exist")
    from mrirecon.training.weights import load_state_into

    state = read_state_dict(path, who=f"train {kind}: --init")
    load_state_into(model, state, f"train {kind}: --init {path} is not a state dict of this "
                                  f"architecture ({must_match} must match)")


def _card_text(args: dict, done: int, steps: list[int], wall_s: float, first: dict | None) -> tuple:
    """The run-dependent sentences of the card: ``(description, known_failures)``."""
    patch = f"{args['patch']} x {args['patch']} patches"
    earlier = earlier_runs(first)
    if earlier:
        sizes = [re.search(r"--patch (\d+)", r.get("command", "")) for r in earlier]
        sizes = ", ".join(f"{m.group(1)} x {m.group(1)}" if m else "other" for m in sizes)
        n = ("two", "three", "four")[len(earlier) - 1] if len(earlier) < 4 else str(len(earlier) + 1)
        how = f"in {n} runs ({sizes}, then {patch}; each continues from the one before)"
    else:
        how = ("end to end" if done == 1 else "stage by stage") + f" on {patch}"
    threads = "one CPU thread" if args["threads"] == 1 else f"{args['threads']} CPU threads"
    cpu = (f"on {threads}, the training samples made on one more core (--prefetch)"
           if args.get("prefetch") else f"on {threads}")
    total = sum(steps) + sum(sum(r.get("steps_per_stage", [])) for r in earlier)
    minutes = (wall_s + sum(r.get("wall_time_s", 0.0) for r in earlier)) / 60
    description = CARD_TEXT["description"].format(
        nets="one residual U-Net" if done == 1 else f"{done} residual U-Nets",
        chans=args["chans"], pools=args["num_pools"], how=how, cpu=cpu)
    failures = [f.format(steps=total, batch=args["batch"], minutes=round(minutes),
                         hardware_seen=HARDWARE_SEEN[bool(args.get("hardware"))])
                for f in CARD_TEXT["known_failures"]]
    return description, failures


def card_data(hardware: bool) -> dict:
    """The card's ``data`` section; a ``--hardware`` run says what it added and selected on."""
    data = dict(CARD_TEXT["data"])
    data["validation"] = data["validation"].format(
        validation_hardware=VALIDATION_HARDWARE[hardware])
    if hardware:
        data["source"] += HARDWARE_TEXT
    return data


def save(model, out: Path, done: int, args: dict, steps: list[int], history: list,
         wall_s: float, load_start, val: dict, first: dict | None = None) -> dict:
    """Write ``out`` (``.pt``: the first ``done`` stages) and its card (``.yaml`` beside it);
    ``first``: the training record of the run this one continued (``init_card.read_init_card``)."""
    from mrirecon.io.weights import write_weights

    # stored as float16 (half the size; load_state_dict casts back to the float32 parameters)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()
             if not k.startswith("nets.") or int(k.split(".")[1]) < done}
    command = trainer_command("staged_ct", out, args)
    # once every stage is done: the run's steps, the rate over them, no budget that ends them
    same_steps = {} if done < args["iterations"] else {"command_same_steps": trainer_command(
        "staged_ct", out, {"budget_s": 1e9, "max_steps": tuple(steps),
                           **{k: v for k, v in args.items() if k not in ("budget_s", "max_steps")}})}
    description, failures = _card_text(args, done, steps, wall_s, first)
    card = {
        "description": description,
        "model": {"name": "staged_ct", "params": {
            "iterations": done, "chans": args["chans"], "num_pools": args["num_pools"],
            "lam": list(model.lam[:done]), "lam0": model.lam0, "cg_iterations": model.cg_iterations,
            "filter": model.filter, "ensemble": bool(model.ensemble)}},
        "overridable": ["cg_iterations", "ensemble"],
        "training": {
            "command": command, **same_steps, "seed": args["seed"], "steps_per_stage": steps,
            "wall_time_s": round(wall_s, 1),
            "hardware": f"{platform.machine()} CPU, {args['threads']} thread(s), shared",
            **load_fields(load_start),
            "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d"),
            "storage": "float16 state dict (loaded into float32 parameters)",
            "validation_psnr_db": val, "history": history,
            **({} if first is None else {"first_run": first}),
        },
        "data": card_data(bool(args.get("hardware"))),
        "training_range": CARD_RANGE,
        "known_failures": failures,
    }
    write_weights(out, state, card, width=100)
    return card
