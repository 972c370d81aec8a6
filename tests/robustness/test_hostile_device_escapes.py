"""Tensors that escape the data's device, found without a GPU (tests/device_escape.py): every
operator, every classical reconstruction, every registry model (one training step), coil
calibration from radial data, and scan-specific adaptation (MRI and CT) run with the host playing
the device. Before the fixes,
``learned_maps`` (the shipped ``modl_radial_learned_maps_sim``) multiplied host Pipe-Menon
weights into the device taper, and CT adaptation projected with operators built on the host at
every step: both failed on CUDA at their first input."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models.registry import available_models
from mrirecon.operators import FanBeam, FiniteDifference, Wavelet, nufft_sense
from mrirecon.operators.ct import cached_ct_operator, ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.training.adapt import AdaptConfig, adapt_model
from tests.device_escape import DeviceEscape, device_escapes, is_stray
from tests.models.problems import ct_phantom_mu, ct_problem, mri_problem, radial_problem
from tests.models.tiny import TINY, run_model, tiny_model, tiny_problem

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ---- the helper catches what CUDA refuses and passes what CUDA accepts ------------------------


def test_a_host_tensor_meeting_device_data_is_caught_and_a_moved_one_passes():
    from mrirecon.functional import density

    _, _, traj = radial_problem(16, 2, 8)
    geo = CTGeometry.parallel((16, 16), 6)
    x = torch.rand(1, 16, 16)
    with device_escapes() as log:
        w = density.pipe_menon_density(traj, (16, 16))  # on the host by design (finufft)
        assert is_stray(w) and w.device.type == "meta" and log
        with pytest.raises(DeviceEscape, match=r"mul: a host tensor \(8, 32\)"):
            _ = w * traj[..., 0]
        assert not is_stray(w.to(traj.device) * traj[..., 0])  # moved: fine
        assert float(w.sum()) > 0 and len(w.tolist()) == 8  # host reads: fine
        assert is_stray(traj.to(w.device)) and is_stray(torch.ones(3, device=w.device))
        with pytest.raises(DeviceEscape):  # buffers from numpy, never moved
            ct_operator(geo)(x)
        assert not is_stray(cached_ct_operator(geo, str(x.device))(x))
    assert torch.from_numpy.__module__ == "torch"  # everything restored
    assert not is_stray(density.pipe_menon_density(traj, (16, 16)))


# ---- operators --------------------------------------------------------------------------------


def _operators():
    x, _, op = mri_problem()
    xc, _, opc = ct_problem()
    target, maps, traj = radial_problem(16, 2, 8, 2, normalise=True)
    fan = FanBeam(CTGeometry.fan((16, 16), 12))
    return {"sense": (op, x), "parallel": (opc, xc), "fan": (fan, xc),
            "wavelet": (Wavelet((32, 24)), x), "grad": (FiniteDifference(2, (32, 24)), x),
            "nufft": (nufft_sense(maps, traj), target),
            "nufft_weighted": (nufft_sense(maps, traj, weights=torch.rand(8, 32) + 0.5), target)}


@pytest.mark.parametrize("name", ["sense", "parallel", "fan", "wavelet", "grad", "nufft",
                                  "nufft_weighted"])
def test_operators_stay_on_the_data_device(name):
    op, x = _operators()[name]
    y = op(x)
    with device_escapes():
        assert not is_stray(op(x)) and not is_stray(op.H(y)) and not is_stray(op.gram(x))
        assert op.operator_norm(x, iterations=3) > 0


# ---- classical reconstructions ----------------------------------------------------------------

RECON = {"cg_sense": dict(iterations=3), "l1_wavelet": dict(lam=1e-3, iterations=3, random_shift=True),
         "tv": dict(lam=1e-3, iterations=3), "tv_ct": dict(lam=1e-3, iterations=3),
         "tgv": dict(lam=1e-3, iterations=3), "sirt": dict(iterations=3), "grappa": dict(calib=6),
         "dlmri": dict(iterations=1, cg_iterations=2, init_iterations=2),
         "epll": dict(iterations=1, cg_iterations=2),
         "pnp_bm3d": dict(iterations=1, cg_iterations=2, init_iterations=2),
         "pnp_nlm": dict(iterations=1, cg_iterations=2, init_iterations=2)}


def _recon_cases():
    from mrirecon import recon
    from mrirecon.recon.registry import _lookup

    cases = []
    for name in recon.available():
        for modality in ("mri", "ct"):
            if modality in _lookup(name).modality:
                methods = ("admm", "pdhg") if name in ("tv", "tgv") else (None,)
                cases += [(name, modality, m) for m in methods]
    return cases


@pytest.mark.parametrize(("name", "modality", "method"), _recon_cases())
def test_classical_reconstruction_stays_on_the_data_device(name, modality, method):
    from mrirecon import recon
    from mrirecon.recon.registry import package_problem

    if package_problem(name):
        pytest.skip(package_problem(name))
    _, y, op = mri_problem(1) if modality == "mri" else ct_problem(1)
    params = dict(RECON.get(name, {}), **({"method": method} if method else {}))
    with device_escapes():
        assert not is_stray(recon.run(name, y[0], op, **params))


# ---- every registry model, one training step --------------------------------------------------


def test_every_registry_model_is_swept():
    assert sorted(TINY) == available_models()


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_training_step_stays_on_the_data_device(name):
    x, y, op = tiny_problem(TINY[name][1])
    model = tiny_model(name).train()
    with device_escapes():
        out = run_model(model, y, op)
        (out - x).abs().square().mean().backward()
    assert not is_stray(out)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_learned_maps_inference_and_radial_calibration_stay_on_the_data_device():
    from mrirecon.calib.noncartesian import noncartesian_maps

    _, y, op = tiny_problem("radial_own_maps")
    model = tiny_model("learned_maps").eval()
    with device_escapes(), torch.no_grad():
        assert not is_stray(model(y, op))
        for method in ("espirit", "walsh"):  # weights=None: Pipe-Menon on the host
            maps = noncartesian_maps(y[0], op.trajectory, (16, 16), method=method, calib_width=8)
            assert not is_stray(maps) and maps.shape == (2, 16, 16)


def test_density_weights_are_moved_to_the_data_device_once():
    """The Pipe-Menon weights (computed on the host) are cached on the trajectory's device: the
    cache held the host weights, and learned_maps' calibration and density_weighted copied them
    to the device again at every forward pass."""
    from mrirecon.functional.density import cached_pipe_menon_density
    from mrirecon.models.unrolled.density_weighted import density_weighted

    _, y, op = tiny_problem("radial_own_maps")
    model = tiny_model("learned_maps").eval()
    with device_escapes():
        w = cached_pipe_menon_density(op.trajectory, op.image_shape)
        assert not is_stray(w)  # on the device
        assert cached_pipe_menon_density(op.trajectory, op.image_shape) is w  # no second copy
        assert model.sensitivity.density(op) is w
        assert not is_stray(density_weighted(y, op)[1].weights)
    torch.testing.assert_close(w, cached_pipe_menon_density(op.trajectory, op.image_shape),
                               rtol=0, atol=0)  # the same weights outside the harness


# ---- scan-specific adaptation -----------------------------------------------------------------


def _ct_slice(n=32, views=12):
    geo = CTGeometry.parallel((n, n), views)
    mu = torch.from_numpy(ct_phantom_mu(n, 0))[None]
    with torch.no_grad():
        y = ct_operator(geo)(mu).float()
    return y, cached_ct_operator(geo, str(y.device))


def test_ct_adaptation_stays_on_the_data_device():
    y, op = _ct_slice()
    model = tiny_model("primal_dual")  # the caller's, on the device
    with device_escapes():
        _, report = adapt_model(model, [(y, op)], AdaptConfig(steps=2, val_every=1))
    assert len(report.val_losses) == 3  # the initial validation and one after each step


@pytest.mark.parametrize("loss", ["supervised", "ssdu"])
def test_ct_training_steps_stay_on_the_data_device(loss):
    """Fails if a CT training step builds its projectors on the host: the supervised step's
    ``CTSample.operator()`` and the self-supervised view-split loss (``ct_view_loss``) both did,
    so CT training on CUDA failed at its first step (adaptation had been fixed alone)."""
    from mrirecon.operators.ct import projector_norm
    from mrirecon.training.config import SSDUConfig
    from mrirecon.training.data_ct import CTSample
    from mrirecon.training.ssdu import ct_view_loss

    geo = CTGeometry.parallel((16, 16), 12)
    mu = torch.from_numpy(ct_phantom_mu(16, 0))[None].float()
    norm = float(projector_norm(geo))
    with torch.no_grad():
        y = ct_operator(geo)(mu).float() / norm
    sample = CTSample(y=y, geometry=geo, target=mu, max_value=torch.ones(1), fname="x",
                      slice_index=0, norm=norm)
    model = tiny_model("primal_dual")
    with device_escapes():
        if loss == "ssdu":
            value = ct_view_loss(model, sample, torch.Generator().manual_seed(0), SSDUConfig())
        else:
            value = (model(sample.y, sample.operator()) - sample.target).abs().mean()
        value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_ct_data_checks_stay_on_the_data_device(beam):
    """Every CT pipeline runs ``stages_ct.data_warnings`` on each slice after it is moved to the
    device: its pre-log check built ``torch.quantile``'s levels on the host, which CUDA refuses
    ("q tensor must be on the same device as the input tensor"), failing every CT input."""
    from mrirecon.pipeline.stages_ct import data_warnings

    geo = (CTGeometry.parallel if beam == "parallel" else CTGeometry.fan)((32, 32), 12)
    mu = torch.from_numpy(ct_phantom_mu(32, 0))[None]
    with torch.no_grad():
        y = ct_operator(geo)(mu)[0].float()
    with device_escapes():
        data_warnings(y, geo)


def test_patch_gmm_fits_on_the_patches_device():
    from mrirecon.models.gmm import PatchGMM

    patches = torch.rand(400, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with device_escapes():
        gmm = PatchGMM.fit(patches, 8, iterations=1)
    assert torch.isfinite(gmm.means).all()


def test_mri_adaptation_stays_on_the_data_device():
    _, y, op = mri_problem(b=1)
    model = tiny_model("modl")
    with device_escapes():
        _, report = adapt_model(model, [(y, op)], AdaptConfig(steps=2, val_every=1, acs_block=(2, 2)))
    assert len(report.val_losses) == 3


def test_ct_adaptation_pairs_get_the_full_device(monkeypatch):
    """``--device cuda:1``: the sinogram's device, index included, reaches the pairs (its type
    alone, "cuda", put data and projector on cuda:0 while the model was on cuda:1)."""
    from types import SimpleNamespace

    from mrirecon.pipeline import adapt_stage

    seen = []
    monkeypatch.setattr(adapt_stage, "ct_pair", lambda s, device: seen.append(device))
    monkeypatch.setattr(adapt_stage, "adapt_volume", lambda *a: a[1])
    config = SimpleNamespace(modality="ct", reconstruct=SimpleNamespace(method="learned_adapt"))
    sinogram = SimpleNamespace(device=torch.device("cuda", 1))  # no GPU needed
    hook = adapt_stage.volume_hook(config, None, "v", None)
    hook(torch.nn.Identity(), [SimpleNamespace(sinogram=sinogram)])
    assert seen == ["cuda:1"]


# ---- the same on a GPU, where there is one ----------------------------------------------------


@CUDA
def test_learned_maps_on_cuda():
    pytest.importorskip("cufinufft")
    _, y, op = tiny_problem("radial_own_maps")
    model = tiny_model("learned_maps").eval()
    with torch.no_grad():
        want = model(y, op)
        got = model.cuda()(y.cuda(), op.cuda())
    assert got.device.type == "cuda"
    # float32 through MoDL's CG and two NUFFT backends: a loose relative bound
    assert float((got.cpu() - want).norm() / want.norm()) < 1e-3


@CUDA
def test_ct_adaptation_on_cuda():
    y, _ = _ct_slice()
    y = y.cuda()
    _, report = adapt_model(tiny_model("primal_dual").cuda(), [(y, cached_ct_operator(
        CTGeometry.parallel((32, 32), 12), str(y.device)))], AdaptConfig(steps=2, val_every=1))
    assert len(report.val_losses) == 3
