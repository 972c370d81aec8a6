"""Train an unrolled network on simulated radial data (``modl_radial_sim``,
``modl_radial_learned_maps_sim``).

Data are made in memory, exactly as ``mrirecon simulate mri --trajectory radial`` makes them
(object, birdcage maps and noise of :func:`~mrirecon.data.simulate_mri.simulate_mri_volume`,
golden-angle spokes through :func:`~mrirecon.operators.nufft_sense`), and each slice is
reconstructed as the pipeline does: ESPIRiT maps from the gridded centre (crop 0), operator
``nufft_sense(maps, trajectory)``. The loss is the L1 distance of magnitudes (the maps fix the
image phase only up to a smooth reference). Usage::

    OMP_NUM_THREADS=1 mrirecon train radial --model modl --out runs/modl_radial_sim

writes ``<out>.pt`` (state dict) and ``<out>.yaml`` (model card with held-out metrics).

``--weighting density`` (default) wraps the model in density-weighted data consistency
(:mod:`mrirecon.models.unrolled.density_weighted`). The first shipped radial models (2026-12-01)
were trained without it, on the plain gram, whose eigenvalues differ about 30x between the
k-space centre and edge of a radial trajectory: 6 CG steps per unroll could not invert it and
the models stayed near gridding (held-out PSNR 23.5 / 25.1 dB, below 10 CG-SENSE iterations).
The same MoDL with the weighting, 400 steps: 34.1 dB; 3000 steps with a cosine learning rate
(about 15 min on one thread): 37.7 dB; 9000 steps on the same 10 training volumes: 37.7 dB again,
and 40 volumes (160 slices, the default) for 3000 steps: 39.1 dB, 6000 steps: 39.7 dB (22 min),
so the training slices were the limit. The shipped ``modl_radial_sim`` adds 40 volumes at 128 x 128
/ 96 spokes (``--size 64 128 --spokes 40 96 --steps 8000``, 63 min): 40.0 dB here, and through the
pipeline 47.4 instead of 44.0 dB at 128 x 128. More unrolls did not pay on one thread: 8 unrolls, 1500 steps in the same time, 35.7 dB.

``--maps learned`` trains the model jointly with a coil-sensitivity network
(:class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel`, registry name
``learned_maps``): the operator then carries uniform maps ``1 / sqrt(C)`` (as the pipeline's
when ``calibrate`` is skipped) and the network estimates the maps from the gridded centre; the
card also reports CG-SENSE with those maps against CG-SENSE with the ESPIRiT maps.

The card's classical row is TV as ``mri_radial_cs`` runs it (:data:`TV`); the models' cards
record the pipeline-level comparison on simulated files, where tuned TV is still ahead at the
training point.
"""

from __future__ import annotations

import logging
import math
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
from mrirecon.models.unrolled.density_weighted import density_weighted
from mrirecon.operators import nufft_sense
from mrirecon.recon import data_scale, run
from mrirecon.sampling.nonuniform import nyquist_fraction
from mrirecon.threads import use_threads

_log = logging.getLogger("mrirecon.train")

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
#: data consistency: ``density`` wraps the model in ``density_weighted`` (Pipe-Menon weights of
#: the trajectory, :mod:`mrirecon.models.unrolled.density_weighted`); ``none`` is the plain
#: least-squares gram the first shipped radial models were trained with (22-25 dB, see the module
#: docstring)
WEIGHTING = ("density", "none")
#: the classical row of the card: ``mri_radial_cs``'s TV at its pipeline defaults (tuned on the
#: validation files, seed 27; see pipelines/mri_radial_cs.yaml)
TV = dict(lam=0.002, rho=0.05, iterations=100)


def uniform_maps(y: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, size, size)`` maps ``1 / sqrt(C)``: the operator's maps for a model that
    estimates its own (only the coil count matters), as the pipeline builds them."""
    b, c = y.shape[:2]
    return torch.full((b, c, size, size), c ** -0.5, dtype=y.dtype)


def radial_architecture(model: str, maps: str = "espirit", weighting: str = "density") -> tuple[str, dict]:
    """Registry name and parameters of the trained model: ``model`` with :data:`MODELS` settings,
    wrapped with a sensitivity network for ``maps="learned"`` and in density-weighted data
    consistency for ``weighting="density"``."""
    if maps not in MAPS:
        raise ValueError(f"train_radial: maps must be one of {MAPS}, got {maps!r}")
    if weighting not in WEIGHTING:
        raise ValueError(f"train_radial: weighting must be one of {WEIGHTING}, got {weighting!r}")
    name, params = model, dict(MODELS[model])
    if maps == "learned":
        name, params = "learned_maps", {"model": name, "model_params": params, **SENSITIVITY}
    if weighting == "density":
        name, params = "density_weighted", {"model": name, "model_params": params}
    return name, params


@dataclass
class RadialSample:
    """One slice: data ``(1, coils, spokes, samples)``, maps ``(1, coils, H, W)``, target
    ``(1, H, W)``, with the trajectory ``(spokes, samples, 2)`` and ramp weights of its geometry
    (the same tensors for every slice of one geometry, so per-trajectory caches hit)."""

    y: torch.Tensor
    maps: torch.Tensor
    target: torch.Tensor
    traj: torch.Tensor
    density: torch.Tensor

    @property
    def size(self) -> int:
        return self.target.shape[-1]


def radial_samples(volumes: int, slices: int, size: int, spokes: int, seed: int,
                   coils: tuple[int, int] = COILS, first: int = 0
                   ) -> tuple[list[RadialSample], torch.Tensor, torch.Tensor]:
    """Simulated radial slices of volumes ``first .. first + volumes - 1`` of ``seed``, the
    trajectory and its ramp weights."""
    traj, density = make_trajectory("radial", (size, size), spokes)
    out = []
    for v in range(first, first + volumes):
        vol = simulate_mri_volume(v, slices=slices, coils=coils, size=(size, size), seed=seed,
                                  resolution=2)
        op = nufft_sense(vol.maps.to(torch.complex64), traj, toeplitz=False)
        k = op(vol.image.to(torch.complex64))
        sigma = float(vol.parameters["noise_sigma"])
        g = torch.Generator().manual_seed(seed * 1000 + v)
        k = k + sigma * torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
        for s in range(slices):
            maps = noncartesian_maps(k[s], traj, (size, size), calib_width=24, weights=density, crop=0.0)
            out.append(RadialSample(k[s:s + 1], maps[None], vol.image[s:s + 1].abs().float(),
                                    traj, density))
    return out, traj, density


def geometries(size: int | tuple[int, ...], spokes: int | tuple[int, ...]) -> list[tuple[int, int]]:
    """``[(size, spokes), ...]``: ``size`` and ``spokes`` paired in order (one value each, or
    lists of the same length)."""
    sizes = (size,) if isinstance(size, int) else tuple(size)
    counts = (spokes,) if isinstance(spokes, int) else tuple(spokes)
    if not sizes or len(sizes) != len(counts):
        raise ValueError(f"train_radial: size {list(sizes)} and spokes {list(counts)} must pair up "
                         "(one spoke count per image size)")
    return [(int(n), int(k)) for n, k in zip(sizes, counts)]


def _geometry_text(geoms: list[tuple[int, int]]) -> str:
    return " and ".join(f"{n} x {n} image, {k} golden-angle spokes x {2 * n} samples" for n, k in geoms)


def _metrics(samples, recon) -> dict[str, float]:
    gts = [s.target[0].numpy().astype(np.float64) for s in samples]
    preds = [recon(s).numpy().astype(np.float64) for s in samples]
    report = evaluate_volumes([np.stack(gts)], [np.stack(preds)], crop=False,
                              metrics=("NMSE", "PSNR", "SSIM"), nonfinite="nan")
    return {k: round(float(v[0]), 5) for k, v in report.values.items()}


def _known_failures(args: _Options, metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The card's "where this model is known to fail", from the training setup and its scores
    (``metrics``: held-out scores at the first geometry)."""
    geoms = geometries(args.size, args.spokes)
    m, tv = metrics["model"]["PSNR"], metrics["tv_mri_radial_cs"]["PSNR"]
    where = "one geometry only" if len(geoms) == 1 else f"{len(geoms)} geometries only"
    out = [f"Trained at {where} ({_geometry_text(geoms)}, {COILS[0]}-{COILS[1]} simulated "
           "birdcage coils, white noise at 30 dB): other matrices, spoke counts, undersampling "
           "(spokes per Nyquist's pi/2 N) or coil counts are outside its training_range and "
           "mrirecon run warns; real coil maps, noise correlation, gradient delays and "
           "off-resonance were never seen.",
           f"Simulated MNI152 brains only ({args.steps} steps on {args.volumes} volumes per "
           "geometry): other anatomy is untested."]
    if m < tv:
        n, k = geoms[0]
        out.append(f"Below the classical radial pipeline on its own held-out slices: TV as "
                   f"mri_radial_cs runs it scores {tv:.2f} dB PSNR against {m:.2f} dB"
                   + ("." if len(geoms) == 1 else f" at {n} x {n}, {k} spokes."))
    return out


def train_radial(out: str | Path, *, model: str = "modl", maps: str = "espirit",
                 weighting: str = "density", steps: int = 6000, size: tuple[int, ...] = (64,),
                 spokes: tuple[int, ...] = (40,), volumes: int = 40, slices: int = 4,
                 lr: float = 1e-3, seed: int = 0, threads: int | None = None) -> dict:
    """Train, evaluate on held-out slices and write ``<out>.pt`` + ``<out>.yaml``; returns the card.

    ``size`` and ``spokes`` pair up into geometries (``--size 64 128 --spokes 40 96``: 64 x 64
    with 40 spokes and 128 x 128 with 96); each gets ``volumes`` training volumes of its own
    (volume indices continue from one geometry to the next, so no anatomy repeats) and the same 2
    held-out volumes; a training step draws one slice of any geometry. The card's
    ``metrics_held_out`` are the first geometry's, ``metrics_held_out_by_geometry`` all of them.
    Adam at ``lr`` with a cosine decay to 0 over ``steps``. ``seed`` sets the weight
    initialisation and the order of the training slices (the data are fixed: training seed 21,
    held-out seed 23). The card records this run (``training``: the command with ``--threads``,
    seed, steps, wall time, threads) and its own held-out scores; over an earlier card of the
    same model, training range and recipe (all options but ``steps``) only that card's
    descriptive sections the run does not write stay
    (:func:`~mrirecon.training.run_card.rebuilt_card`), never its run record or metrics."""
    options = {k: v for k, v in locals().items() if k not in ("out", "threads")}  # for the card
    from mrirecon.training.run_card import trainer_command
    from mrirecon.training.run_card import earlier_card, trainer_card

    if model not in MODELS:
        raise ValueError(f"train_radial: model must be one of {sorted(MODELS)}, got {model!r}")
    name, card_params = radial_architecture(model, maps, weighting)  # checks maps / weighting
    geoms = geometries(size, spokes)
    args = _Options(out=str(out), model=model, steps=steps, size=tuple(n for n, _ in geoms),
                    spokes=tuple(k for _, k in geoms), volumes=volumes, slices=slices, lr=lr)
    learned_maps = maps == "learned"
    earlier = earlier_card(Path(args.out).with_suffix(".pt"))  # before this run replaces it
    threads = use_threads(threads)
    # the command records the pairs of geometries as run (a single --size 64 is a tuple)
    options = {"threads": threads, **options, "size": args.size, "spokes": args.spokes}
    command = trainer_command("radial", Path(args.out), options)
    torch.manual_seed(seed)
    t0 = time.time()
    train, tests = [], {}
    for i, (n, k) in enumerate(geoms):
        train += radial_samples(args.volumes, args.slices, n, k, seed=21, first=i * args.volumes)[0]
        tests[f"{n}x{k}"] = radial_samples(2, args.slices, n, k, seed=23)[0]
    _log.info("data: %d train / %d held-out slices in %.0f s", len(train),
              sum(map(len, tests.values())), time.time() - t0)
    net = build_model(name, **card_params)

    def model_op(s):  # the pipeline's operator: unweighted, uniform maps when the model makes its own
        return nufft_sense(uniform_maps(s.y, s.size) if learned_maps else s.maps, s.traj)

    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(args.steps, 1))
    rng = np.random.default_rng(seed)
    t1 = time.time()
    for step in range(args.steps):
        s = train[int(rng.integers(len(train)))]
        loss = (net(s.y, model_op(s)).abs() - s.target).abs().mean() / s.target.abs().mean()
        loss_value = float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0:
            _log.info("step %d loss %.4f (%.0f s)", step, loss_value, time.time() - t1)
    wall = time.time() - t1
    net.eval()

    def learned(s):
        with torch.no_grad():
            return net(s.y, model_op(s))[0].abs()

    def gridding(s):
        return nufft_sense(s.maps, s.traj).H(s.density.float() * s.y)[0].abs()

    def cg(s):
        return run("cg_sense", s.y, nufft_sense(s.maps, s.traj), iterations=10)[0].abs()

    def tv(s):  # as mri_radial_cs runs it: y over the gridded RSS maximum, then scaled back
        scale = data_scale(s.y, s.traj, (s.size, s.size), s.density.float())
        return (run("tv", s.y / scale, nufft_sense(s.maps, s.traj), **TV) * scale)[0].abs()

    methods = {"model": learned, "gridding": gridding, "cg_sense_10it": cg, "tv_mri_radial_cs": tv}
    if learned_maps:
        inner = net.model if weighting == "density" else net

        def cg_learned(s):  # plain CG-SENSE with the maps the model estimates for itself
            with torch.no_grad():
                plain = model_op(s)
                y, op = density_weighted(s.y, plain) if weighting == "density" else (s.y, plain)
                return run("cg_sense", s.y, plain.with_maps(inner.maps(y, op)), iterations=10)[0].abs()

        methods["cg_sense_10it_learned_maps"] = cg_learned
    by_geometry = {g: {k: _metrics(test, f) for k, f in methods.items()} for g, test in tests.items()}
    metrics = next(iter(by_geometry.values()))
    out = Path(args.out).with_suffix(".pt")
    dc = ("density-weighted data consistency (Pipe-Menon weights of the trajectory) through the "
          "Toeplitz gram" if weighting == "density" else "data consistency through the Toeplitz gram")
    card = {
        "model": {"name": name, "params": card_params},
        "description": f"{args.model} for radial multi-coil MRI on the NUFFT operator ({dc}), "
                       + ("coil maps estimated jointly by a sensitivity network from the gridded "
                          "centre; " if learned_maps else "ESPIRiT maps from the gridded centre (crop 0); ")
                       + "trained on CPU on simulated brain data; not for clinical use.",
        "data": {
            "source": "simulated multi-coil brain MRI (MNI152 template via nilearn, 2 mm; random "
                      "contrast, orientation, deformation, bias, phase; 4-8 birdcage coils; 30 dB "
                      "SNR), golden-angle radial: " + "; ".join(
                          f"{n} x {n}, {k} spokes x {2 * n} samples (Nyquist: {int(np.pi / 2 * n)} "
                          "spokes)" for n, k in geoms),
            "train": {"volumes": args.volumes * len(geoms), "slices": len(train), "seed": 21},
            "test_held_out": {"volumes": 2 * len(geoms), "slices": sum(map(len, tests.values())),
                              "seed": 23},
            "reproduce": command,
        },
        "training": {"command": command, "seed": seed, "steps": args.steps,
                     "wall_time_s": round(wall, 1), "loss": "relative L1 of magnitudes",
                     "optimizer": f"Adam lr {args.lr}, cosine decay to 0, batch 1",
                     "hardware": f"{platform.machine()} CPU, {threads} thread(s)",
                     "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d")},
        "metrics_held_out": metrics,
        **({"metrics_held_out_by_geometry": by_geometry} if len(geoms) > 1 else {}),
        # what `mrirecon run` checks (mrirecon/pipeline/model_range.py): image grid, coils, spokes
        "training_range": {"matrix": {"min": [min(args.size)] * 2, "max": [max(args.size)] * 2},
                           "coils": list(COILS), "spokes": [min(args.spokes), max(args.spokes)],
                           # the undersampling of the geometries (matrix and spokes, checked
                           # one by one, cannot say it)
                           "nyquist_fraction": nyquist_fraction_range(geoms),
                           "trajectory": ["radial"]},
        "known_failures": _known_failures(args, metrics),
    }
    card = trainer_card(train_radial, card, earlier, options, ("steps",))
    write_weights(out, net.state_dict(), card)
    return card


def nyquist_fraction_range(geoms) -> list[float]:
    """``[min, max]`` of the training geometries' ``spokes / (pi/2 N)`` (``geoms``: pairs
    ``(N, spokes)``), rounded outward to 3 decimals: the card's ``training_range.nyquist_fraction``,
    which ``mrirecon run`` checks (:func:`mrirecon.sampling.nonuniform.nyquist_fraction`). The card's
    intervals of matrix and spokes, checked one by one, let 128 x 128 with 40 spokes (0.20 of
    Nyquist) pass for a model trained at 0.40 and 0.48."""
    fractions = [nyquist_fraction(k, (n, n)) for n, k in geoms]
    return [math.floor(min(fractions) * 1000) / 1000, math.ceil(max(fractions) * 1000) / 1000]


@dataclass(frozen=True)
class _Options:
    out: str
    model: str
    steps: int
    size: tuple[int, ...]
    spokes: tuple[int, ...]
    volumes: int
    slices: int
    lr: float

