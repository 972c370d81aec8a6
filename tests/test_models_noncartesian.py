"""Unrolled networks on the NUFFT operator: MoDL, the variational network and the gram cascade
run and train on radial data without any change (they only call op, op.H, op.gram)."""

import numpy as np
import pytest
import torch

from mrirecon.data.anatomy import shepp_logan
from mrirecon.data.simulate_mri import birdcage_maps
from mrirecon.models.registry import build_model
from mrirecon.operators import nufft_sense
from mrirecon.sampling import golden_angle_radial

N = 32
SMALL = {
    "modl": dict(iterations=2, layers=3, features=8, cg_iterations=4),
    "vn": dict(iterations=2, num_filters=4, kernel_size=5, num_rbf=11),
    "gram_varnet": dict(iterations=2, chans=4, pools=2),
}


def _batch():
    img = torch.from_numpy(shepp_logan((N, N))).to(torch.complex64)
    target = torch.stack([img, img.flip(-1)])
    yy, xx = np.mgrid[:N, :N]
    maps = torch.from_numpy(birdcage_maps(4, (xx - N / 2) / (N / 2), (yy - N / 2) / (N / 2)))
    maps = maps.to(torch.complex64).expand(2, 4, N, N).clone()
    op = nufft_sense(maps, golden_angle_radial(20, 2 * N))
    return op(target), op, target


@pytest.mark.parametrize("name", sorted(SMALL))
def test_unrolled_models_train_on_radial(name):
    torch.manual_seed(0)
    y, op, target = _batch()
    model = build_model(name, **SMALL[name])
    out = model(y, op)
    assert out.shape == target.shape and out.is_complex()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = (model(y, op) - target).abs().pow(2).mean()
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
