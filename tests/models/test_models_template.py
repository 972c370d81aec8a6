"""The unrolled-model template (:class:`mrirecon.models.template.UnrolledModel`): every model on
it is scale equivariant, treats batch items independently, checks the batch axis, and takes
``init_seed`` like every other model; old keyword names still work with a FutureWarning."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models import (
    RED,
    ADMMCSNet,
    CascadeNet,
    ComplexImageCNN,
    DnCNN,
    ISTANetPlus,
    LearnedPrimalDual,
    MoDL,
    PnPADMM,
    PnPHQS,
    VariationalNetwork,
    build_model,
)
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel
from mrirecon.models.unrolled.gram_varnet import GramVarNet
from mrirecon.operators import sense
from tests.models.problems import coil_maps, phantom
from tests.models.problems import mri_problem

EPS32 = torch.finfo(torch.float32).eps


def _denoiser(seed=0):
    with seeded_init(seed):
        return ComplexImageCNN(DnCNN(2, 2, depth=2, features=4, batchnorm=False))


# the seven models on the template (plus GramVarNet), small
TEMPLATE_MODELS = {
    "modl": lambda: MoDL(iterations=2, layers=2, features=4, cg_iterations=3, init_seed=0),
    "cascade": lambda: CascadeNet(iterations=2, layers=2, features=4, init_seed=0),
    "vn": lambda: VariationalNetwork(iterations=2, num_filters=3, kernel_size=3, num_rbf=5),
    "admm_csnet": lambda: ADMMCSNet(iterations=2, num_filters=3, num_points=11),
    "primal_dual": lambda: LearnedPrimalDual(iterations=2, n_primal=2, n_dual=2, features=4, init_seed=0),
    "ista_net_plus": lambda: ISTANetPlus(iterations=2, features=4, init_seed=0),
    "pnp_admm": lambda: PnPADMM(_denoiser(), iterations=2, cg_iterations=3),
    "pnp_hqs": lambda: PnPHQS(_denoiser(), iterations=2, cg_iterations=3),
    "red": lambda: RED(_denoiser(), iterations=2, cg_iterations=3),
    "gram_varnet": lambda: GramVarNet(iterations=2, chans=2, pools=1, init_seed=0),
}


@pytest.mark.parametrize("name", sorted(TEMPLATE_MODELS))
def test_template_models_are_scale_equivariant_and_batch_independent(name):
    model = TEMPLATE_MODELS[name]().eval()
    assert isinstance(model, UnrolledModel)
    _, y, op = mri_problem(b=2)
    with torch.no_grad():
        ref = model(y, op)
        # normalisation by max |A^H y| makes model(c y) = c model(y); c = 4 is exact in binary
        # floating point, so only the data-dependent reductions' rounding differs
        scaled = model(4.0 * y, op)
        single = torch.cat([model(y[i : i + 1], op) for i in range(2)])
    peak = float(ref.abs().max())
    assert float((scaled - 4.0 * ref).abs().max()) <= 64 * EPS32 * 4.0 * peak
    # batch items are independent (per-sample scale; batched and single convolutions round
    # differently, a few eps per layer). GramVarNet is not: its 10 power iterations for L start
    # from a random vector drawn for the whole batch, so L differs slightly with the batch.
    if name != "gram_varnet":
        assert float((single - ref).abs().max()) <= 1e3 * EPS32 * peak


@pytest.mark.parametrize("name", sorted(TEMPLATE_MODELS))
def test_template_checks_the_batch_axis(name):
    _, y, op = mri_problem(b=1)
    model = TEMPLATE_MODELS[name]()
    with pytest.raises(ValueError, match=f"{type(model).__name__}: data y must have a leading batch axis"):
        model(y.reshape(-1), op)


def test_checkpointing_changes_nothing():
    _, y, op = mri_problem(b=1)
    outs = []
    for ckpt in (False, True):
        model = ISTANetPlus(iterations=2, features=4, init_seed=3, checkpointing=ckpt)
        x, sym = model.forward_with_symmetry(y, op)
        (x.abs().mean() + sym).backward()
        outs.append((x.detach(), sym.detach(), model.phases[0].conv_d.weight.grad.clone()))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_init_seed_is_reproducible_and_leaves_the_global_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("modl", iterations=2, layers=2, features=4, init_seed=7)
    after = torch.rand(3)
    assert torch.equal(after, expected)  # the global generator did not advance
    b = build_model("modl", iterations=2, layers=2, features=4, init_seed=7)
    c = build_model("modl", iterations=2, layers=2, features=4, init_seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    # None keeps the caller's seeding (what the trainer relies on)
    torch.manual_seed(5)
    d = build_model("modl", iterations=2, layers=2, features=4)
    torch.manual_seed(5)
    e = build_model("modl", iterations=2, layers=2, features=4)
    assert all(torch.equal(v, e.state_dict()[k]) for k, v in d.state_dict().items())
    with pytest.raises(TypeError, match="init_seed must be an int"):
        build_model("modl", init_seed=1.5)


@pytest.mark.parametrize("name", ["varnet", "gram_varnet", "vn", "modl", "admm_csnet", "ista_net_plus",
                                  "cascade", "primal_dual", "fbpconvnet", "ldamp", "pnp_dpir", "pnp_admm",
                                  "red", "dncnn", "unet"])
def test_every_model_takes_init_seed(name):
    small = {"varnet": dict(iterations=1, chans=2, pools=1, sens_chans=2, sens_pools=1),
             "gram_varnet": dict(iterations=1, chans=2, pools=1), "ldamp": dict(iterations=1, depth=2, features=2),
             "pnp_dpir": dict(depth=2, features=2), "fbpconvnet": dict(chans=2, num_pools=1),
             "pnp_admm": dict(denoiser="dncnn", denoiser_params=dict(depth=2, features=2)),
             "red": dict(denoiser="dncnn", denoiser_params=dict(depth=2, features=2)),
             "dncnn": dict(depth=2, features=2), "unet": dict(chans=2, num_pool_layers=1)}.get(name, {})
    a = build_model(name, init_seed=11, **small).state_dict()
    b = build_model(name, init_seed=11, **small).state_dict()
    c = build_model(name, init_seed=12, **small).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_old_keyword_names_are_deprecated_aliases_with_unchanged_state_dict_keys():
    with pytest.warns(FutureWarning, match="'num_cascades' is deprecated, use 'iterations'"), \
            pytest.warns(FutureWarning, match="'nu' is deprecated, use 'lam'"):
        old = CascadeNet(num_cascades=2, layers=2, features=4, nu=0.5, init_seed=0)
    new = CascadeNet(iterations=2, layers=2, features=4, lam=0.5, init_seed=0)
    assert list(old.state_dict()) == list(new.state_dict())
    assert "cascades.0.dc.nu" in new.state_dict()  # the checkpoint key keeps the paper's name
    for cls, old_name in ((VariationalNetwork, "num_stages"), (ADMMCSNet, "num_stages"),
                          (ISTANetPlus, "num_phases")):
        with pytest.warns(FutureWarning, match=f"'{old_name}' is deprecated"):
            m = cls(**{old_name: 1})
        assert m.num_steps() == 1
    with pytest.warns(FutureWarning, match=r"build_model\('varnet'\): 'num_cascades' is deprecated"):
        v = build_model("varnet", num_cascades=1, chans=2, pools=1, sens_chans=2, sens_pools=1)
    assert len(v.cascades) == 1
    with pytest.raises(ValueError, match="both 'num_cascades' \\(deprecated\\) and 'iterations'"):
        CascadeNet(num_cascades=1, iterations=1)


def test_pipeline_configs_accept_old_model_keywords_and_init_seed():
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.core.config import ConfigError

    base = ["reconstruct.weights=", "reconstruct.params.chans=2"]
    with pytest.warns(FutureWarning, match="reconstruct.params: 'num_cascades' is deprecated"):
        config, _ = load_pipeline("mri_varnet", [*base, "reconstruct.params.num_cascades=2",
                                                  "reconstruct.params.init_seed=1"])
    # renamed once, at load (the config and provenance carry the new name)
    assert config.reconstruct.params["iterations"] == 2
    assert "num_cascades" not in config.reconstruct.params
    assert config.reconstruct.params["init_seed"] == 1
    with pytest.raises(ConfigError, match="varnet has no parameter 'num_stagez'"):
        load_pipeline("mri_varnet", [*base, "reconstruct.params.num_stagez=2"])


def test_gram_varnet_starts_from_adjoint_over_lipschitz():
    """Fails if gram_varnet.py ``initial_state``: ``step * aty`` -> ``aty``. For ``3 A`` with
    a fully sampled unit-RSS SENSE operator, ``A^H A = I`` so ``L = 9`` exactly: ``x_0 = A^H y / 9``."""
    x = phantom(1)
    op = sense(coil_maps(), torch.ones(x.shape[-1], dtype=torch.bool)) * 3.0
    y = op(x)
    aty = op.H(y)
    model = GramVarNet(iterations=1, chans=4, pools=2, init_seed=0)
    with torch.no_grad():
        x0, step = model.initial_state(y, op, aty)
    assert float(step.flatten()[0]) == pytest.approx(1 / 9, rel=1e-5)
    torch.testing.assert_close(x0, aty / 9, rtol=1e-5, atol=1e-5 * float(aty.abs().max()))
