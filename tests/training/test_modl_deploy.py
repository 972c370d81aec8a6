"""Deployment-geometry MoDL data (``mrirecon.training.deploy_mri``): bands are exact smaller
SENSE problems, the slice scale is the model's normalisation, masks follow fastMRI's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrirecon.operators import sense
from mrirecon.training.deploy_mri import CENTRE_FRACTIONS, centre_band, row_band, simulate_slice
from tests.helpers import DISC_COLS as COLS, DISC_ROWS as ROWS, DiscSource as _Disc

@pytest.fixture(scope="module", params=[4, 8])
def slice_(request):
    torch.set_num_threads(1)
    return simulate_slice(np.random.default_rng(request.param), _Disc(), request.param, coils=8,
                          rows=ROWS, cols=COLS)


def test_slice_is_scaled_like_the_models_normalisation(slice_):
    aty = sense(slice_["maps"], slice_["mask"]).H(slice_["kspace"])
    # max |A^H y| of the scaled data is 1 up to float32 rounding of the FFTs (eps * log2 N)
    assert abs(float(aty.abs().max()) - 1) < 50 * torch.finfo(torch.float32).eps * np.log2(ROWS * COLS)
    assert slice_["kspace"].shape == (8, ROWS, COLS) and slice_["maps"].shape == (8, ROWS, COLS)
    # target: RSS of the fully sampled coil images, zero-free only where the object is
    t = slice_["target"]
    assert t.shape == (ROWS, COLS) and slice_["max_value"] == pytest.approx(float(t[32:96].max()))


def test_mask_has_fastmri_acceleration_and_centre_band(slice_):
    acc = slice_["acceleration"]
    mask = slice_["mask"].bool()
    band = centre_band(mask)
    assert int(band.sum()) == round(COLS * CENTRE_FRACTIONS[acc])
    assert abs(int(mask.sum()) - COLS / acc) <= 2
    # k-space is zero on the columns not acquired
    assert float(slice_["kspace"][..., ~mask].abs().max()) == 0.0


def test_row_band_is_an_exact_smaller_sense_problem(slice_):
    start, height = 40, 24
    band = row_band(slice_, start, height)
    full = sense(slice_["maps"], slice_["mask"]).H(slice_["kspace"])[start:start + height]
    part = sense(band.maps, band.mask).H(band.kspace)
    # the mask acts on columns only: the rows of hybrid space are independent problems, so the
    # band's adjoint equals the rows of the whole slice's up to float32 FFT rounding
    tol = 50 * torch.finfo(torch.float32).eps * np.log2(ROWS * COLS) * float(full.abs().max())
    assert float((full - part).abs().max()) < tol
    assert torch.equal(band.target, slice_["target"][start:start + height])
    assert float(band.kspace[..., ~slice_["mask"].bool()].abs().max()) < tol


def test_half_save_loads_back_into_float32_parameters(tmp_path):
    """``train_varnet`` writes its best state as float16 (the shipped file's storage)."""
    from mrirecon.models.unrolled.varnet import VarNet
    from mrirecon.training.modl_deploy import _save

    model = VarNet(iterations=1, chans=2, pools=1, sens_chans=2, sens_pools=1, init_seed=0)
    _save(model, tmp_path / "v.pt", half=True)
    state = torch.load(tmp_path / "v.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    back = VarNet(iterations=1, chans=2, pools=1, sens_chans=2, sens_pools=1, init_seed=1)
    back.load_state_dict(state)
    for (name, p), q in zip(model.state_dict().items(), back.state_dict().values()):
        assert q.dtype == p.dtype and torch.equal(q, p.half().to(p.dtype)), name
