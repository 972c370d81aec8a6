"""Train an unrolled network on simulated radial data (the shipped ``modl_radial_sim``).

Data are made in memory, exactly as ``mrirecon simulate mri --trajectory radial`` makes them
(object, birdcage maps and noise of :func:`~mrirecon.data.simulate_mri.simulate_mri_volume`,
golden-angle spokes through :func:`~mrirecon.operators.nufft_sense`), and each slice is
reconstructed as the pipeline does: ESPIRiT maps from the gridded centre (crop 0), operator
``nufft_sense(maps, trajectory)``. The loss is the L1 distance of magnitudes (the maps fix the
image phase only up to a smooth reference). Usage::

    OMP_NUM_THREADS=1 mrirecon train radial --model modl --out runs/modl_radial_sim --steps 250

writes ``<out>.pt`` (state dict) and ``<out>.yaml`` (model card with held-out metrics).

``--maps learned`` trains the model jointly with a coil-sensitivity network
(:class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel`, registry name
``learned_maps``): the operator then carries uniform maps ``1 / sqrt(C)`` (as the pipeline's
when ``calibrate`` is skipped) and the network estimates the maps from the gridded centre; the
card also reports CG-SENSE with those maps against CG-SENSE with the ESPIRiT maps. Same data,
steps and settings, seeds 0 / 1 (held-out NMSE): ESPIRiT MoDL 0.0398 / 0.0419, learned-maps MoDL
0.0239 / 0.0275 (validation seed 27: 0.0352 / 0.0364 vs 0.0293 / 0.0250); shipped as
``modl_radial_learned_maps_sim`` (seed 1, the better on validation), the default of
``mri_radial_learned``. With the sensitivity network's output used directly (no residual over
the gridded coil images, E2E-VarNet's form) 250 steps gave 0.0573, worse than ESPIRiT.

Measured on a 2-core CPU (1 thread, 64 x 64, 40 spokes, 40 training slices; held-out NMSE):
MoDL without batch norm, 250 steps 0.0398 (shipped), 1200 steps 0.0424; with batch norm, 500
steps 0.201; gram_varnet (5 cascades, 8-channel NormUnets, 2.5 MB), 350 steps 0.149. Gridding
gives 0.0413 and 10 CG-SENSE iterations 0.0206: these small CPU runs show that the models
train on the NUFFT operator, not a tuned radial model (that needs longer runs or a GPU).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrirecon.calib import noncartesian_maps
from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.data.simulate_noncartesian import make_trajectory
from mrirecon.io.weights import write_weights
from mrirecon.metrics import evaluate_volumes
from mrirecon.models.registry import build_model
from mrirecon.operators import nufft_sense
from mrirecon.recon import run

#: small CPU-sized settings per model. The regularisers of gram_varnet normalise their input
#: (NormUnet), which matters here: max |A^H y| of radial data is dominated by the oversampled
#: centre, so the image scale after the models' ``max |A^H y| = 1`` normalisation varies from
#: slice to slice, and MoDL's batch-normalised DnCNN trained with batch 1 did not cope (its
#: held-out NMSE stayed above gridding's in a 500-step run).
MODELS = {
    "gram_varnet": dict(iterations=5, chans=8, pools=3),
    "modl": dict(iterations=4, layers=5, features=32, lam=0.05, cg_iterations=6, shared=True,
                 batchnorm=False),
}
#: the sensitivity network of ``--maps learned`` (E2E-VarNet's is 8 channels, 4 pools)
SENSITIVITY = dict(sens_chans=8, sens_pools=2, calib_width=24)
#: coil counts of the simulated training data (min, max)
COILS = (4, 8)
MAPS = ("espirit", "learned")


def uniform_maps(y: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, size, size)`` maps ``1 / sqrt(C)``: the operator's maps for a model that
    estimates its own (only the coil count matters), as the pipeline builds them."""
    b, c = y.shape[:2]
    return torch.full((b, c, size, size), c ** -0.5, dtype=y.dtype)


def build_radial_model(model: str, maps: str = "espirit") -> torch.nn.Module:
    """The trained model: ``model`` with :data:`MODELS` settings, wrapped with a sensitivity
    network for ``maps="learned"``."""
    if maps not in MAPS:
        raise ValueError(f"train_radial: maps must be one of {MAPS}, got {maps!r}")
    if maps == "espirit":
        return build_model(model, **MODELS[model])
    return build_model("learned_maps", model=model, model_params=dict(MODELS[model]), **SENSITIVITY)


@dataclass
class RadialSample:
    """One slice: data ``(1, coils, spokes, samples)``, maps ``(1, coils, H, W)``, target ``(1, H, W)``."""

    y: torch.Tensor
    maps: torch.Tensor
    target: torch.Tensor


def radial_samples(volumes: int, slices: int, size: int, spokes: int, seed: int,
                   coils: tuple[int, int] = COILS) -> tuple[list[RadialSample], torch.Tensor, torch.Tensor]:
    """Simulated radial slices, the trajectory and its ramp weights."""
    traj, density = make_trajectory("radial", (size, size), spokes)
    out = []
    for v in range(volumes):
        vol = simulate_mri_volume(v, slices=slices, coils=coils, size=(size, size), seed=seed,
                                  resolution=2)
        op = nufft_sense(vol.maps.to(torch.complex64), traj, toeplitz=False)
        k = op(vol.image.to(torch.complex64))
        sigma = float(vol.parameters["noise_sigma"])
        g = torch.Generator().manual_seed(seed * 1000 + v)
        k = k + sigma * torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
        for s in range(slices):
            maps = noncartesian_maps(k[s], traj, (size, size), calib_width=24, weights=density, crop=0.0)
            out.append(RadialSample(k[s:s + 1], maps[None], vol.image[s:s + 1].abs().float()))
    return out, traj, density


def _metrics(samples, recon) -> dict[str, float]:
    gts = [s.target[0].numpy().astype(np.float64) for s in samples]
    preds = [recon(s).numpy().astype(np.float64) for s in samples]
    report = evaluate_volumes([np.stack(gts)], [np.stack(preds)], crop=False,
                              metrics=("NMSE", "PSNR", "SSIM"))
    return {k: round(float(v[0]), 5) for k, v in report.values.items()}


def _known_failures(args: _Options, metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The card's "where this model is known to fail", from the training setup and its scores."""
    m, cg = metrics["model"]["PSNR"], metrics["cg_sense_10it"]["PSNR"]
    out = [f"Trained at one geometry only ({args.size} x {args.size} image, {args.spokes} golden-angle "
           f"spokes x {2 * args.size} samples, {COILS[0]}-{COILS[1]} simulated birdcage coils, white "
           "noise at 30 dB): other matrices, spoke counts or coil counts are outside its "
           "training_range and mrirecon run warns; real coil maps, noise correlation, gradient "
           "delays and off-resonance were never seen.",
           f"Simulated MNI152 brains only ({args.steps} steps on {args.volumes} volumes): other "
           "anatomy is untested."]
    if m < cg:
        out.append(f"A demonstration model: on its held-out slices it is below 10 CG-SENSE "
                   f"iterations ({m:.2f} vs {cg:.2f} dB PSNR).")
    return out


def train_radial(out: str | Path, *, model: str = "modl", maps: str = "espirit", steps: int = 400,
                 size: int = 64, spokes: int = 40, volumes: int = 10, slices: int = 4,
                 lr: float = 1e-3, seed: int = 0) -> dict:
    """Train, evaluate on held-out slices and write ``<out>.pt`` + ``<out>.yaml``; returns the card.

    ``seed`` sets the weight initialisation and the order of the training slices (the data are
    fixed: training seed 21, held-out seed 23)."""
    if model not in MODELS:
        raise ValueError(f"train_radial: model must be one of {sorted(MODELS)}, got {model!r}")
    if maps not in MAPS:
        raise ValueError(f"train_radial: maps must be one of {MAPS}, got {maps!r}")
    args = _Options(out=str(out), model=model, steps=steps, size=size, spokes=spokes,
                    volumes=volumes, slices=slices, lr=lr)
    learned_maps = maps == "learned"
    torch.manual_seed(seed)
    params = MODELS[args.model]
    t0 = time.time()
    train, traj, density = radial_samples(args.volumes, args.slices, args.size, args.spokes, seed=21)
    test, _, _ = radial_samples(2, args.slices, args.size, args.spokes, seed=23)
    print(f"data: {len(train)} train / {len(test)} held-out slices in {time.time() - t0:.0f} s", flush=True)
    model = build_radial_model(args.model, maps)

    def model_op(s):
        return nufft_sense(uniform_maps(s.y, args.size) if learned_maps else s.maps, traj)

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(seed)
    t1 = time.time()
    for step in range(args.steps):
        s = train[int(rng.integers(len(train)))]
        op = model_op(s)
        loss = (model(s.y, op).abs() - s.target).abs().mean() / s.target.abs().mean()
        loss_value = float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            print(f"step {step} loss {loss_value:.4f} ({time.time() - t1:.0f} s)", flush=True)
    wall = time.time() - t1
    model.eval()

    def learned(s):
        with torch.no_grad():
            return model(s.y, model_op(s))[0].abs()

    def gridding(s):
        return nufft_sense(s.maps, traj).H(density.float() * s.y)[0].abs()

    def cg(s):
        return run("cg_sense", s.y, nufft_sense(s.maps, traj), iterations=10)[0].abs()

    metrics = {"model": _metrics(test, learned), "gridding": _metrics(test, gridding),
               "cg_sense_10it": _metrics(test, cg)}
    if learned_maps:
        def cg_learned(s):
            with torch.no_grad():
                op = model_op(s)
                return run("cg_sense", s.y, op.with_maps(model.maps(s.y, op)), iterations=10)[0].abs()

        metrics["cg_sense_10it_learned_maps"] = _metrics(test, cg_learned)
    out = Path(args.out).with_suffix(".pt")
    name, card_params = args.model, params
    if learned_maps:
        name, card_params = "learned_maps", {"model": args.model, "model_params": dict(params), **SENSITIVITY}
    card = {
        "model": {"name": name, "params": card_params},
        "description": f"Small {args.model} for radial multi-coil MRI on the NUFFT operator "
                       "(data consistency through the Toeplitz gram), "
                       + ("coil maps estimated jointly by a sensitivity network from the gridded "
                          "centre; " if learned_maps else "ESPIRiT maps from the gridded centre (crop 0); ")
                       + "trained on CPU on simulated brain data; a "
                       "demonstration / test model, not for clinical use.",
        "data": {
            "source": "simulated multi-coil brain MRI (MNI152 template via nilearn, 2 mm; random "
                      "contrast, orientation, deformation, bias, phase; 4-8 birdcage coils; 30 dB "
                      f"SNR), {args.size} x {args.size}, golden-angle radial, {args.spokes} spokes x "
                      f"{2 * args.size} samples (Nyquist: {int(np.pi / 2 * args.size)} spokes)",
            "train": {"volumes": args.volumes, "slices": len(train), "seed": 21},
            "test_held_out": {"volumes": 2, "slices": len(test), "seed": 23},
            "reproduce": f"OMP_NUM_THREADS=1 mrirecon train radial --model {args.model} --maps {maps} "
                         f"--out {args.out} "
                         f"--steps {args.steps} --size {args.size} --spokes {args.spokes} "
                         f"--volumes {args.volumes} --slices {args.slices}"
                         + (f" --seed {seed}" if seed else ""),
        },
        "training": {"steps": args.steps, "wall_time_s": round(wall, 1), "loss": "relative L1 of magnitudes",
                     "optimizer": f"Adam lr {args.lr}, batch 1",
                     "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), shared",
                     "torch": str(torch.__version__)},
        "metrics_held_out": metrics,
        # what `mrirecon run` checks (mrirecon/pipeline/model_range.py): image grid, coils, spokes
        "training_range": {"matrix": {"min": [args.size, args.size], "max": [args.size, args.size]},
                           "coils": list(COILS), "spokes": [args.spokes, args.spokes],
                           "trajectory": ["radial"]},
        "known_failures": _known_failures(args, metrics),
    }
    write_weights(out, model.state_dict(), card)
    return card


@dataclass(frozen=True)
class _Options:
    out: str
    model: str
    steps: int
    size: int
    spokes: int
    volumes: int
    slices: int
    lr: float

