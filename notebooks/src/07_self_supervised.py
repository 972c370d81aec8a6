"""Source of notebooks/07_self_supervised.ipynb (see notebooks/_build.py)."""

# %% [markdown]
# # Learning without references: SSDU training and scan-specific adaptation (ZS-SSL)
#
# A clinical scan is acquired undersampled and stays that way: there is no fully sampled
# reference to train on. This notebook
#
# 1. writes undersampled-only multi-coil files (the layout of fastMRI test / challenge files:
#    `kspace` with zeroed columns and a `mask`, no `reconstruction_rss`),
# 2. trains MoDL on them with **SSDU** (Yaman et al., MRM 2020) through `mrirecon train`'s
#    function and `loss: {ssdu: {...}}`: each slice's acquired points are split into a
#    data-consistency set (the mask of the operator MoDL is given) and a held-out set on which
#    the loss compares MoDL's k-space with the measurement,
# 3. compares it with supervised training on the same k-space *with* references, on held-out
#    volumes,
# 4. adapts the shipped `modl_brain_sim` to one scan unlike its training data (**ZS-SSL**,
#    Yaman et al., ICLR 2022): before / after images, the validation-loss curve and the
#    step whose state is kept.
#
# `MRIRECON_NB_QUICK=1` (the test suite) shrinks everything to a few seconds of training.

# %%
import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import yaml

from mrirecon.data.simulate_mri import simulate_mri_dataset
from mrirecon.io import FastMRIFile, read_fastmri, write_fastmri
from mrirecon.metrics import metrics_table
from mrirecon.models.registry import build_model
from mrirecon.training.adapt import AdaptConfig, adapt_model
from mrirecon.training.config import LossConfig
from mrirecon.training.data_acquired import AcquiredMRISet
from mrirecon.training.losses import ReconstructionLoss
from mrirecon.training.run import train_from_config
from mrirecon.training.trainer import Trainer
from mrirecon.training.validation import (
    evaluate_reconstructor,
    make_validate_fn,
    model_reconstructor,
    zero_filled,
)
from mrirecon.training.weights import available_weights, load_pretrained
from mrirecon.viz import image_grid, results_folder

QUICK = os.environ.get("MRIRECON_NB_QUICK", "0") == "1"
# folder for a results JSON (used by the tests): created, or a clear error, before any work
OUT = results_folder(os.environ.get("MRIRECON_NB_OUT"))
SIZE = 48 if QUICK else 64
TRAIN_VOLUMES, TEST_VOLUMES, SLICES = (2, 1, 2) if QUICK else (4, 2, 4)
STEPS = 12 if QUICK else 300
VAL_EVERY = 6 if QUICK else 50
PARAMS = {"iterations": 2, "layers": 3, "features": 8, "cg_iterations": 3, "batchnorm": False} if QUICK \
    else {"iterations": 3, "layers": 4, "features": 16, "cg_iterations": 5, "batchnorm": False}
torch.set_num_threads(1 if QUICK else max(1, torch.get_num_threads()))
# data, checkpoints and logs go here; the last cell removes it (so does the kernel's exit)
work_dir = tempfile.TemporaryDirectory(prefix="mrirecon_nb07_", ignore_cleanup_errors=True)
work = Path(work_dir.name)
print(f"quick={QUICK}: {SIZE}x{SIZE}, {TRAIN_VOLUMES} training / {TEST_VOLUMES} held-out volumes, "
      f"{STEPS} steps; working folder {work}")

# %% [markdown]
# ## 1. Undersampled-only data
#
# `simulate_mri_dataset(acceleration=4)` writes test-like files (4x random column masks with a
# 16 % fully sampled centre, seeded by the file name) that still carry the reference. Copies
# without the reference are what a scanner user has: the self-supervised run reads only those.
# Held-out volumes (another seed: other anatomy, contrasts and coils) keep their reference for
# scoring.

# %%
t0 = time.time()
kw = {"slices": SLICES, "coils": 6, "size": (SIZE, SIZE), "acceleration": 4,
      "center_fraction": 0.16, "mask_type": "random", "resolution": 2}
with_ref = simulate_mri_dataset(work / "train_with_reference", volumes=TRAIN_VOLUMES, seed=3, **kw)
simulate_mri_dataset(work / "heldout", volumes=TEST_VOLUMES, seed=4, **kw)
(work / "train").mkdir()
for p in with_ref:  # drop reconstruction_rss: a fastMRI test-file layout
    k = read_fastmri(p)
    write_fastmri(work / "train" / p.name, k.data, k.header, mask=k.mask)
with FastMRIFile(next((work / "train").glob("*.h5"))) as f:
    print(f"{f.path.name}: kspace {f.shape}, reference: {f.reference_key}, "
          f"acquired columns {int(f.mask.sum())} of {f.shape[-1]}")
print(f"data written in {time.time() - t0:.1f} s")

# %% [markdown]
# ## 2. SSDU training from the YAML config
#
# `loss: {ssdu: ...}` switches the trainer to the self-supervised loss: `ratio` of the acquired
# points go to the loss set (Gaussian-weighted towards the k-space centre), the central 4 x 4
# block always stays in the data-consistency set, and a fresh split is drawn per (slice, epoch).
# The loss is SSDU's normalised L1 + L2 distance in k-space on the held-out points. Validation
# reports the same loss on fixed splits (no reference needed) and, because these held-out files
# carry references, the fastMRI metrics too.

# %%
config = {
    "name": "ssdu_notebook", "output_dir": str(work / "run_ssdu"), "seed": 0, "device": "cpu",
    "data": {"train": str(work / "train"), "val": str(work / "heldout"), "maps": "espirit"},
    "model": {"name": "modl", "params": PARAMS},
    "optim": {"lr": 3e-3, "max_steps": STEPS},
    "loss": {"ssdu": {"ratio": 0.4, "selection": "gaussian", "acs_block": [4, 4], "splits": 1}},
    "log_every": 1, "val_every": VAL_EVERY, "checkpoint_every": STEPS, "tensorboard": False,
}
config_path = work / "train_ssdu.yaml"
config_path.write_text(yaml.safe_dump(config, sort_keys=False))
print(config_path.read_text())
t0 = time.time()
ssdu = train_from_config(config_path, progress=not QUICK)
print(f"SSDU: {ssdu.steps} steps in {time.time() - t0:.1f} s")

# %% [markdown]
# ## 3. Supervised training on the same k-space, with references
#
# Same model, initialisation, optimiser, steps and inputs; the only difference is the loss:
# SSIM + L1 against `reconstruction_rss`. `AcquiredMRISet` reads k-space as acquired and keeps
# a file's reference as the target when there is one.

# %%
sup_cfg = replace(ssdu.config, name="supervised", output_dir=str(work / "run_supervised"),
                  loss=LossConfig(ssim=1.0, l1=1.0))
heldout = AcquiredMRISet(work / "heldout", maps="espirit", train=False)
torch.manual_seed(sup_cfg.seed)
supervised_model = build_model("modl", **PARAMS)
trainer = Trainer(sup_cfg, supervised_model, AcquiredMRISet(work / "train_with_reference", maps="espirit"),
                  loss_fn=ReconstructionLoss(sup_cfg.loss), validate_fn=make_validate_fn(heldout),
                  progress=not QUICK)
t0 = time.time()
sup_history = trainer.fit()
print(f"supervised: {trainer.step} steps in {time.time() - t0:.1f} s")

torch.manual_seed(0)
untrained = build_model("modl", **PARAMS).eval()
reports = {"zero-filled": evaluate_reconstructor(zero_filled, heldout),
           "MoDL untrained": evaluate_reconstructor(model_reconstructor(untrained), heldout),
           "MoDL SSDU (no reference)": evaluate_reconstructor(model_reconstructor(ssdu.model.eval()), heldout),
           "MoDL supervised": evaluate_reconstructor(model_reconstructor(supervised_model.eval()), heldout)}
print(metrics_table(reports))

ssdu_val = [(r["step"], r["val_PSNR"]) for r in ssdu.history if "val_PSNR" in r]
sup_val = [(r["step"], r["val_PSNR"]) for r in sup_history if "val_PSNR" in r]
fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 3))
ax1.plot([r["step"] for r in ssdu.history], [r["loss"] for r in ssdu.history], alpha=0.6)
ax1.set(xlabel="step", ylabel="SSDU k-space loss", title="SSDU training loss")
ax2.plot(*zip(*[(r["step"], r["val_ssdu_loss"]) for r in ssdu.history if "val_ssdu_loss" in r]), "o-")
ax2.set(xlabel="step", ylabel="held-out SSDU loss", title="SSDU validation (no reference)")
ax3.plot(*zip(*ssdu_val), "o-", label="SSDU (no reference)")
ax3.plot(*zip(*sup_val), "s-", label="supervised")
ax3.set(xlabel="step", ylabel="held-out PSNR (dB)", title="held-out volumes, 4x")
ax3.legend()
fig.tight_layout()

# %% [markdown]
# ## 4. Zero-shot adaptation of the shipped model to one scan
#
# `modl_brain_sim` was trained on simulated brains. Here it meets a Shepp-Logan slice with other
# coils and noise. `adapt_model` fine-tunes a *copy* on the scan's own k-space: 20 % of the
# acquired columns outside the centre are held back for validation, each step draws an SSDU
# split of the rest, and the state with the lowest validation loss is returned (the initial
# model if no step helps). `patience=4` would stop the run early after 4 validations (20 steps)
# without a new minimum; on this scan the validation loss is still falling when the step budget
# ends (60 steps, 20 in quick mode), so the whole budget runs and the last step is kept (the
# printout says why it stopped: `steps`, `patience` or `time_budget`). The pipeline stage
# `adapt:` does the same before each volume.

# %%
from mrirecon.data.anatomy import shepp_logan
from mrirecon.data.simulate_mri import birdcage_maps
from mrirecon.operators.mri import sense
from mrirecon.sampling import create_mask_for_mask_type

n = 48 if QUICK else 96
grid = (torch.arange(n, dtype=torch.float64) - n / 2) / (n / 2)
yy, xx = torch.meshgrid(grid, grid, indexing="ij")
maps = torch.from_numpy(birdcage_maps(6, xx.numpy(), yy.numpy())).to(torch.complex64)
truth = (torch.from_numpy(shepp_logan((n, n))) * torch.exp(0.5j * math.pi * xx)).to(torch.complex64)
mask = torch.as_tensor(create_mask_for_mask_type("random", [0.16], [4])(n, seed=10)).reshape(-1).bool()
op = sense(maps[None], mask)
g = torch.Generator().manual_seed(0)
y = op(truth[None])
y = y + 0.01 * float(y.abs().max()) * torch.randn(y.shape, dtype=torch.complex64, generator=g) * mask

shipped = "modl_brain_sim" in available_weights()
adapt_result = {}
if shipped:
    from mrirecon.metrics.metrics import psnr, ssim

    model = load_pretrained("modl_brain_sim").eval()
    cfg = AdaptConfig(steps=20 if QUICK else 60, lr=1e-3, val_every=5, patience=4, time_budget_s=None)
    adapted, report = adapt_model(model, [(y, op)], cfg)
    with torch.no_grad():
        before, after = model(y, op)[0].abs(), adapted(y, op)[0].abs()
    ref = truth.abs()
    scores = {name: {"PSNR": float(psnr(ref, im)), "SSIM": float(ssim(ref[None], im[None]))}
              for name, im in (("before", before), ("after", after))}
    print(f"adapted in {report.seconds:.1f} s: {report.steps} steps ({report.stopped}), best step "
          f"{report.best_step}; PSNR {scores['before']['PSNR']:.2f} -> {scores['after']['PSNR']:.2f} dB")
    image_grid([ref, before, after, (after - ref).abs() * 5],
               ["truth", "shipped MoDL", "adapted (ZS-SSL)", "|adapted - truth| x 5"],
               vmin=0, vmax=float(ref.max()), suptitle="zero-shot adaptation to one scan")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(report.val_steps, report.val_losses, "o-", label="validation loss (held-back k-space)")
    ax.axvline(report.best_step, color="k", ls="--", label=f"kept: step {report.best_step}")
    ax.set(xlabel="adaptation step", ylabel="normalised L1 + L2")
    ax.legend()
    fig.tight_layout()
    adapt_result = {"scores": scores, **report.as_dict()}
else:
    print("the shipped modl_brain_sim weights are not installed; skipping the adaptation demo")

# %%
results = {
    "settings": {"quick": QUICK, "size": SIZE, "steps": STEPS},
    "ssdu_steps": ssdu.steps,
    "ssdu_val_loss": [r["val_ssdu_loss"] for r in ssdu.history if "val_ssdu_loss" in r],
    "ssdu_val_psnr": [p for _, p in ssdu_val],
    "supervised_val_psnr": [p for _, p in sup_val],
    "metrics": {name: rep.mean() for name, rep in reports.items()},
    "shipped": shipped,
    "adapt": adapt_result,
}
if OUT:
    Path(OUT, "07_self_supervised.json").write_text(json.dumps(results, indent=1))
print(json.dumps(results["metrics"], indent=1))
work_dir.cleanup()  # simulated data, checkpoints, logs and model.pt (copy it out first to keep it)
print(f"removed the working folder {work}")
