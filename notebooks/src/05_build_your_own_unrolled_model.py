"""Source of notebooks/05_build_your_own_unrolled_model.ipynb (see notebooks/_build.py)."""

# %% [markdown]
# # Build your own unrolled model in a dozen lines
#
# Every learned reconstruction in `mrirecon` is `model(y, op) -> x`: the network receives the
# measured data `y` **and** the physics operator `op` (a `LinearOperator` with `op(x)`,
# `op.H(y)`, `op.gram(x)`). Nothing in a model knows whether `op` is multi-coil MRI or CT, so
# three interchangeable parts make a new model:
#
# 1. a **data-consistency block** from `mrirecon.models.blocks` (gradient step, CG proximal
#    step, soft k-space DC, hard projection),
# 2. a **backbone** CNN from `mrirecon.models.backbones` (U-Net, DnCNN, ResNet: real
#    2-channel networks), wrapped in `ComplexImageCNN` so that complex MRI images and real CT
#    images both work (`NormUnet` takes complex images itself: see the last section),
# 3. an **operator**: `mrirecon.operators.sense(maps, mask)` or
#    `mrirecon.operators.ct_operator(geometry)`.
#
# We write a small unrolled proximal-gradient network, then train one copy on simulated brain
# MRI and one on simulated low-dose CT, without changing a line of the model.
#
# Set `MRIRECON_NB_QUICK=1` for a fast run (the test suite does); the defaults are sized for a
# laptop CPU (a few minutes).

# %%
import json
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

from mrirecon.data.simulate_ct import simulate_ct_samples
from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.metrics import psnr, ssim
from mrirecon.models import UnrolledModel
from mrirecon.models.backbones import ComplexImageCNN, DnCNN
from mrirecon.models.blocks import GradientDC
from mrirecon.operators import ct_operator, sense
from mrirecon.operators.fbp import fbp
from mrirecon.sampling import create_mask_for_mask_type
from mrirecon.viz import image_grid, results_folder

QUICK = os.environ.get("MRIRECON_NB_QUICK", "0") == "1"
# folder for a results JSON (used by the tests): created, or a clear error, before any work
OUT = results_folder(os.environ.get("MRIRECON_NB_OUT"))
SIZE = 48 if QUICK else 96
STEPS = 40 if QUICK else 300
torch.manual_seed(0)
print(f"quick={QUICK}: {SIZE}x{SIZE} images, {STEPS} training steps per modality")

# %% [markdown]
# ## The model
#
# Unrolled proximal gradient: `x <- CNN_k(x - eta_k A^H (A x - y))`, starting from `A^H y`.
# `GradientDC` is the gradient step (with a learned `eta_k`), `ComplexImageCNN(DnCNN(...))`
# the learned proximal map. The last convolution of each CNN starts at zero, so the untrained
# network is exactly gradient descent on `||A x - y||^2`: training can only add to that.
#
# The model subclasses `mrirecon.models.UnrolledModel`, the template every unrolled model of
# the package uses: it only says how many steps there are and what one step does. The
# template's `forward` checks the batch axis, scales the data so that `max |A^H y| = 1`
# (networks like a fixed input range; `normalize = True`), starts from `A^H y`, runs the steps
# and undoes the scale at the end, which is valid because `op` is linear.

# %%
class UnrolledNet(UnrolledModel):
    """x_{k+1} = CNN_k(x_k - eta_k A^H (A x_k - y)) for any LinearOperator A."""

    normalize = True

    def __init__(self, iterations: int = 5, features: int = 32, depth: int = 5):
        super().__init__()
        self.dc = nn.ModuleList(GradientDC(eta=1.0) for _ in range(iterations))
        self.cnn = nn.ModuleList(
            ComplexImageCNN(DnCNN(2, 2, depth=depth, features=features, batchnorm=False))
            for _ in range(iterations))
        for c in self.cnn:
            nn.init.zeros_(c.cnn.net[-1].weight)
            nn.init.zeros_(c.cnn.net[-1].bias)

    def num_steps(self) -> int:
        return len(self.dc)

    def step(self, k: int, x: torch.Tensor, y: torch.Tensor, op, aty: torch.Tensor) -> torch.Tensor:
        return self.cnn[k](self.dc[k](x, y, op, aty))


print(sum(p.numel() for p in UnrolledNet().parameters()), "parameters")

# %% [markdown]
# A gradient step of size 1 is stable when `||A|| <= 1`. Instead of tuning `eta` per
# modality, we normalise the operator once with the operator algebra: `op / op.operator_norm(x)`
# is again a `LinearOperator` (with its closed-form `gram` kept), and the data are divided by
# the same number.
#
# ## MRI: simulated multi-coil brain, 4x equispaced fastMRI masks
#
# `simulate_mri_volume` cuts slices from a deformed MNI152 template, multiplies them by
# birdcage coil maps and adds noise. We use the known maps here (notebook 1 estimates them
# with ESPIRiT), draw a fresh fastMRI mask for every training step and keep the last volume
# for testing.

# %%
COILS, SLICES, TRAIN_VOLUMES = 4, 6, (1 if QUICK else 4)
vols = [simulate_mri_volume(i, slices=SLICES, coils=COILS, size=(SIZE, SIZE), seed=5, resolution=2,
                            orientations="axial", snr_db=35.0) for i in range(TRAIN_VOLUMES + 1)]
train_mri = (torch.cat([v.kspace for v in vols[:-1]]), torch.cat([v.maps for v in vols[:-1]]).to(torch.complex64),
             torch.cat([v.image for v in vols[:-1]]).to(torch.complex64))
test_mri = (vols[-1].kspace, vols[-1].maps.to(torch.complex64), vols[-1].image.to(torch.complex64))
mask_fn = create_mask_for_mask_type("equispaced_fraction", [0.08], [4])


def mri_problem(kspace, maps, image, index, seed):
    """(y, op, target) for one slice: 4x undersampled k-space, normalised SENSE operator."""
    mask = mask_fn(SIZE, seed=seed)
    op = sense(maps[index:index + 1], mask)
    norm = op.operator_norm(image[index:index + 1], iterations=20, generator=torch.Generator().manual_seed(0))
    return kspace[index:index + 1] * mask / norm, op / norm, image[index:index + 1]


y, op, x_true = mri_problem(*test_mri, index=SLICES // 2, seed=123)
print(op)
print("data", tuple(y.shape), y.dtype, "-> image", tuple(op.H(y).shape), op.H(y).dtype)

# %% [markdown]
# ## CT: simulated low-dose parallel beam
#
# `simulate_ct_samples` draws random body phantoms (Hounsfield units -> attenuation in 1/mm),
# projects them with the package's ray transform and adds Poisson noise for `I0` photons per
# detector bin. Same recipe: operator, normalise, data.

# %%
VIEWS, PHOTONS = (60, 2e4)
ct = simulate_ct_samples(2 * SLICES, "parallel", views=VIEWS, photons=PHOTONS, size=SIZE, seed=3,
                         sources="phantom")
ct_op = ct_operator(ct.geometry)
mu = torch.from_numpy(ct.attenuation).float()
sino = torch.from_numpy(ct.sinogram).float()
ct_norm = ct_op.operator_norm(mu[:1], iterations=30, generator=torch.Generator().manual_seed(0))
ct_op_n = ct_op / ct_norm
print(ct_op, f"||A|| = {float(ct_norm):.1f}")


def ct_problem(index):
    return sino[index:index + 1] / ct_norm, ct_op_n, mu[index:index + 1]


# %% [markdown]
# ## One training loop for both
#
# The loss is the normalised squared error `||x - x_true||^2 / ||x_true||^2`, which is
# scale-free and works for complex MRI and real CT images alike.

# %%
def nmse_loss(x, target):
    return (x - target).abs().pow(2).sum() / target.abs().pow(2).sum()


def train(model, draw, steps, lr=2e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        y, op, target = draw(step)
        loss = nmse_loss(model(y, op), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


t0 = time.time()
mri_model = UnrolledNet()
with torch.no_grad():
    mri_untrained = float(nmse_loss(mri_model(y, op), x_true))
mri_losses = train(mri_model, lambda s: mri_problem(*train_mri, index=s % len(train_mri[0]), seed=s), STEPS)
t_mri = time.time() - t0

t0 = time.time()
ct_model = UnrolledNet()  # the very same class
ct_losses = train(ct_model, lambda s: ct_problem(s % SLICES), STEPS)
t_ct = time.time() - t0
print(f"MRI: {t_mri:.1f} s, CT: {t_ct:.1f} s for {STEPS} steps each")

fig, ax = plt.subplots(figsize=(6, 3))
window = max(1, STEPS // 10)
for name, losses in (("MRI", mri_losses), ("CT", ct_losses)):
    smooth = torch.tensor(losses).unfold(0, window, 1).mean(1)
    ax.semilogy(range(window - 1, STEPS), smooth, label=name)
ax.set_xlabel("step")
ax.set_ylabel("training NMSE (moving average)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Results on held-out data
#
# MRI: a volume the model never saw, compared with the zero-filled SENSE combination `A^H y`
# and the untrained network (plain gradient descent). CT: held-out phantoms, compared with
# filtered back-projection (`mrirecon.operators.fbp.fbp`). Metrics are the fastMRI
# definitions from `mrirecon.metrics` on magnitudes, with the ground truth's maximum as range.

# %%
def scores(target, pred):
    t, p = target.abs().double(), pred.abs().double()
    return {"PSNR": float(psnr(t, p)), "SSIM": float(ssim(t, p))}


results = {"mri": {}, "ct": {}}
with torch.no_grad():
    mri_model.eval()
    per_method = {"zero-filled": [], "network": []}
    for i in range(SLICES):
        y, op, x_true = mri_problem(*test_mri, index=i, seed=10_000 + i)
        zf = op.H(y)
        zf = zf * (zf.abs() * x_true.abs()).sum() / zf.abs().pow(2).sum()  # best scale, to be fair
        per_method["zero-filled"].append((x_true, zf))
        per_method["network"].append((x_true, mri_model(y, op)))
    for name, pairs in per_method.items():
        t = torch.cat([a for a, _ in pairs])
        p = torch.cat([b for _, b in pairs])
        results["mri"][name] = scores(t, p)
    mri_show = [x_true[0], zf[0], per_method["network"][-1][1][0]]

    ct_model.eval()
    idx = slice(SLICES, 2 * SLICES)
    x_fbp = fbp(sino[idx], ct_op)
    x_net = torch.cat([ct_model(*ct_problem(i)[:2]) for i in range(SLICES, 2 * SLICES)])
    results["ct"]["FBP"] = scores(mu[idx], x_fbp.clamp_min(0))
    results["ct"]["network"] = scores(mu[idx], x_net.clamp_min(0))
    ct_show = [mu[2 * SLICES - 1], x_fbp[-1], x_net[-1]]

for modality, table in results.items():
    for name, m in table.items():
        print(f"{modality.upper():4s}{name:12s} PSNR {m['PSNR']:6.2f} dB  SSIM {m['SSIM']:.4f}")

fig, axes = image_grid(mri_show + ct_show, ["MRI truth", "MRI A^H y", "MRI network",
                                            "CT truth", "CT FBP", "CT network"], ncols=3, vmin=0)

# %% [markdown]
# ## What changed between MRI and CT?
#
# Nothing in the model. The operator carries the physics (coils, FFTs and masks; ray geometry
# and detector), `GradientDC` only calls `op.gram` and `op.H`, and `ComplexImageCNN` feeds a
# complex image as two real channels and a real image with a zero imaginary channel. Swapping
# parts is one line each:
#
# * `ProximalDC(lam=0.05)` (CG on `A^H A + lam I`, as in MoDL) instead of `GradientDC`;
# * `ComplexImageCNN(ResNet())` (or another real 2-in / 2-out network) instead of
#   `ComplexImageCNN(DnCNN(...))`;
# * `op` from any other `LinearOperator`: fan-beam CT, single-coil MRI, a composition `A @ B`.
#
# `NormUnet` (E2E-VarNet's normalised U-Net) is different: it takes complex `(B, C, H, W)`
# images, splits them into channels itself and returns complex images, so it goes in without
# `ComplexImageCNN` (which refuses it) and with a channel axis added and removed. It suits
# MRI only: for a real CT image it would return a complex one. The cell below runs each swap
# once on the MRI test slice (untrained: shapes and dtypes only).
#
# The package's own models (`mrirecon.models.MoDL`, `VarNet`, `LearnedPrimalDual`, ...) are
# built the same way.

# %%
from mrirecon.models.backbones import NormUnet, ResNet
from mrirecon.models.blocks import ProximalDC


class NormUnetStep(nn.Module):
    """NormUnet as the learned step of an MRI model: (B, H, W) complex -> (B, H, W) complex."""

    def __init__(self, chans: int = 8, num_pools: int = 2):
        super().__init__()
        self.unet = NormUnet(chans=chans, num_pools=num_pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x.unsqueeze(-3)).squeeze(-3)


y, op, x_true = mri_problem(*test_mri, index=SLICES // 2, seed=123)
x0 = op.H(y)
with torch.no_grad():
    swaps = {"ProximalDC(lam=0.05)": ProximalDC(lam=0.05)(x0, y, op, x0),
             "ComplexImageCNN(ResNet())": ComplexImageCNN(ResNet())(x0),
             "NormUnetStep()": NormUnetStep()(x0)}
for name, out in swaps.items():
    print(f"{name:26s} {tuple(x0.shape)} {x0.dtype} -> {tuple(out.shape)} {out.dtype}")
try:
    ComplexImageCNN(NormUnet(chans=8, num_pools=2))
except TypeError as err:
    print("refused:", err)

# %%
results["train_loss"] = {
    "mri_first": sum(mri_losses[:5]) / 5, "mri_last": sum(mri_losses[-5:]) / 5,
    "ct_first": sum(ct_losses[:5]) / 5, "ct_last": sum(ct_losses[-5:]) / 5,
    "mri_untrained_test": mri_untrained,
}
results["settings"] = {"quick": QUICK, "size": SIZE, "steps": STEPS}
if OUT:
    Path(OUT, "05_build_your_own_unrolled_model.json").write_text(json.dumps(results, indent=1))
print(json.dumps(results["train_loss"], indent=1))
