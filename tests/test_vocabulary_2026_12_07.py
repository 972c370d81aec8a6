"""The vocabulary of ``core/names.py`` where it was still broken (API review b89, 2026-12-07):
``StagedCTNet`` / ``train staged_ct`` take ``iterations`` (``stages`` deprecated), the model
blocks take ``lam`` / ``cg_iterations`` (``nu`` / ``iterations`` deprecated), ``tgv``'s
``return_v`` is no config setting, one ``callback(iteration, image, value)`` serves every
``recon.run`` method (``tgv``, ``epll`` too), and ``zero_filled_rss`` names a numpy array's
type. Every old spelling still works, with a FutureWarning."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml

from mrirecon import recon
from mrirecon.models import HardProjectionDC, ProximalDC, build_model
from mrirecon.models.unrolled.staged_ct import StagedCTNet
from mrirecon.operators import ParallelBeam, sense
from mrirecon.operators.ct_geometry import CTGeometry

TINY_CT = dict(chans=4, num_pools=1, init_seed=0)


def _quiet(fn, *args, **kwargs):
    """``fn(...)`` with any FutureWarning an error (the new names warn about nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        return fn(*args, **kwargs)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


# -- 1. StagedCTNet: iterations, stages deprecated ---------------------------------------------

def test_staged_ct_takes_iterations_and_stages_still_works_with_a_warning():
    new = _quiet(build_model, "staged_ct", iterations=3, **TINY_CT)
    assert len(new.nets) == 3
    with pytest.warns(FutureWarning, match=r"build_model\('staged_ct'\): 'stages' is deprecated, "
                                           r"use 'iterations'"):
        old = build_model("staged_ct", stages=3, **TINY_CT)
    _same_state(new, old)  # state-dict keys nets.* unchanged
    assert set(new.state_dict()) == {k for k in new.state_dict() if k.startswith("nets.")}
    with pytest.warns(FutureWarning, match=r"StagedCTNet.__init__: 'stages' is deprecated"):
        assert len(StagedCTNet(stages=2, **TINY_CT).nets) == 2
    with pytest.raises(ValueError, match="both 'stages' .* and 'iterations'"):
        StagedCTNet(stages=2, iterations=2, **TINY_CT)
    from mrirecon.models.registry import model_defaults

    assert "iterations" in model_defaults("staged_ct") and "stages" not in model_defaults("staged_ct")


def test_staged_ct_forward_runs_the_first_iterations_stages():
    op = ParallelBeam(CTGeometry.parallel((32, 32), num_views=16))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    y = op(((xx**2 + yy**2) < 0.5).float())[None]
    model = StagedCTNet(iterations=2, chans=4, num_pools=1, lam=0.1, init_seed=0).eval()
    with torch.no_grad():
        one = _quiet(model, y, op, iterations=1)
        with pytest.warns(FutureWarning, match=r"StagedCTNet.forward: 'stages' is deprecated"):
            old = model(y, op, stages=1)
        both = model(y, op)
    torch.testing.assert_close(one, old, rtol=0, atol=0)
    assert not torch.equal(one, both)  # the second stage ran only in the full model


def test_shipped_staged_ct_card_loads_without_a_warning_and_an_old_card_still_loads(tmp_path):
    from mrirecon.io.weights import read_state_dict
    from mrirecon.training.weights import load_pretrained, model_card

    card = model_card("staged_ct_lodopab")
    params = card["model"]["params"]
    assert params["iterations"] == 1 and "stages" not in params
    assert "--stages" not in str(card["training"])  # the commands name --iterations
    shipped = _quiet(load_pretrained, "staged_ct_lodopab")
    stored = read_state_dict("staged_ct_lodopab")
    assert set(shipped.state_dict()) == set(stored)  # the shipped .pt loads unchanged
    # a card written before 2026-12-07 (params.stages) still loads, with a FutureWarning
    from mrirecon.io.weights import resolve_weights

    src = resolve_weights("staged_ct_lodopab")
    shutil.copy(src, tmp_path / "old.pt")
    old = dict(card, model={"name": "staged_ct", "params": {
        ("stages" if k == "iterations" else k): v for k, v in params.items()}})
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    with pytest.warns(FutureWarning, match="'stages' is deprecated, use 'iterations'"):
        loaded = load_pretrained(tmp_path / "old.pt")
    _same_state(loaded, shipped)


def test_train_staged_ct_init_card_with_stages_is_read_as_iterations(tmp_path):
    from mrirecon.training.init_card import check_init_card

    init = tmp_path / "w.pt"
    init.write_bytes(b"")
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "staged_ct", "params": {"stages": 1, "chans": 4}}}))
    with pytest.warns(FutureWarning, match="model.params: 'stages' is deprecated"):
        check_init_card(init, "staged_ct", "staged_ct", {"iterations": 1, "chans": 4}, StagedCTNet)
    with pytest.warns(FutureWarning), pytest.raises(
            ValueError, match=r"model\.params\.iterations = 1, this run 2"):
        check_init_card(init, "staged_ct", "staged_ct", {"iterations": 2, "chans": 4}, StagedCTNet)


def test_train_staged_ct_takes_iterations_and_stages_with_a_warning(tmp_path, capsys):
    import inspect

    from mrirecon import cli
    from mrirecon.training.ct_staged import train_staged_ct

    assert "iterations" in inspect.signature(train_staged_ct).parameters
    assert "stages" not in inspect.signature(train_staged_ct).parameters
    # refused at once (the budget keeps 60 s per stage): the count reached the trainer
    with pytest.warns(FutureWarning, match="'stages' is deprecated"), pytest.raises(
            ValueError, match=r"each of the 3 stages keeps 60 s"):
        train_staged_ct(tmp_path / "m.pt", budget_s=100.0, stages=3, log=lambda m: None)
    parser = cli.build_parser()
    args = _quiet(parser.parse_args, ["train", "staged_ct", "--out", "m.pt", "--iterations", "3"])
    assert args.iterations == 3 and "iterations" in args._options
    with pytest.warns(FutureWarning, match="--stages is deprecated, use --iterations"):
        args = parser.parse_args(["train", "staged_ct", "--out", "m.pt", "--stages", "2"])
    assert args.iterations == 2
    assert parser.parse_args(["train", "staged_ct", "--out", "m.pt"]).iterations == 2  # default
    with pytest.raises(SystemExit) as exit_, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # --stages's own, before the refusal
        parser.parse_args(["train", "staged_ct", "--out", "m.pt", "--stages", "2",
                           "--iterations", "3"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err  # argparse's own words
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "staged_ct", "--help"])
    out = capsys.readouterr().out
    assert "--iterations" in out and "--stages" not in out


# -- 2. tgv's return_v: no config setting, refused by recon.run before solving ----------------

def _mri(n=16):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, n, n, dtype=torch.complex128, generator=g)
    maps = maps / maps.abs().pow(2).sum(0).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::2] = True
    mask[n // 2 - 2: n // 2 + 2] = True
    op = sense(maps, mask)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    x = (((xx**2 + yy**2) < 0.6) + 0.5 * (xx > 0.3)).to(torch.complex128)
    return op, op(x)


def test_tgv_return_v_is_refused_at_config_load_and_before_solving():
    from mrirecon.core.config import ConfigError
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.recon.registry import settable_parameters

    assert "return_v" not in settable_parameters("tgv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the l1_wavelet table dropped for another method
        with pytest.raises(ConfigError, match=r"reconstruct\.params\.return_v: tgv has no "
                                              r"parameter 'return_v'"):
            load_pipeline("mri_cs", ["reconstruct.method=tgv", "reconstruct.params.return_v=true"])
    op, y = _mri()
    calls = []
    with pytest.raises(TypeError, match=r"recon.run: tgv's return_v=True returns a tuple, not an "
                                        r"image; call mrirecon.recon.tgv"):
        recon.run("tgv", y, op, lam=1e-3, iterations=2, return_v=True,
                  callback=lambda *a: calls.append(a))
    assert calls == []  # refused before the solve
    x = recon.run("tgv", y, op, lam=1e-3, iterations=2, return_v=False)
    torch.testing.assert_close(x, recon.tgv(y, op, 1e-3, iterations=2, return_v=True)[0],
                               rtol=0, atol=0)


# -- 3. one callback(iteration, image, value) for every recon.run method ----------------------

def _recorder():
    seen = []

    def cb(i, x, value):
        seen.append((i, x.detach().clone(), value))

    return seen, cb


@pytest.mark.parametrize("method, params", [
    ("cg_sense", dict(iterations=3)),
    ("tv", dict(lam=1e-3, iterations=3)),
    ("tgv", dict(lam=1e-3, iterations=3)),
    ("tgv", dict(lam=1e-3, iterations=3, method="pdhg")),
    ("epll", dict(sigmas=[0.1, 0.05], stage_iterations=2, cg_iterations=3, stride=4)),
])
def test_one_callback_gets_iteration_image_and_float_from_every_method(method, params):
    """The last call's image is the returned image (data units, not tgv's stacked (3, H, W)
    state nor epll's normalised image) and the iterations count 0, 1, ... across epll's stages."""
    op, y = _mri()
    seen, cb = _recorder()
    x = recon.run(method, y, op, callback=cb, **params)
    assert [i for i, _, _ in seen] == list(range(len(seen))) and len(seen) >= 3
    assert all(type(v) is float and np.isfinite(v) for _, _, v in seen)
    assert all(xk.shape == x.shape for _, xk, _ in seen)
    if method in ("tgv", "epll"):  # cg_sense / tv return their last iterate as well
        torch.testing.assert_close(seen[-1][1], x, rtol=0, atol=0)
    if method == "epll":
        assert len(seen) == 4  # 2 stages x 2 alternations, one count


def test_tgv_admm_callback_image_is_projected_as_returned_for_ct():
    op = ParallelBeam(CTGeometry.parallel((24, 24), num_views=12))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24, dtype=torch.float64),
                            torch.linspace(-1, 1, 24, dtype=torch.float64), indexing="ij")
    y = op(((xx**2 + yy**2) < 0.5).double())
    seen, cb = _recorder()
    x = recon.tgv(y, op, 0.05, iterations=4, callback=cb)
    assert all(float(xk.min()) >= 0 and xk.shape == (24, 24) for _, xk, _ in seen)
    torch.testing.assert_close(seen[-1][1], x, rtol=0, atol=0)


# -- 4. model blocks: lam, cg_iterations --------------------------------------------------------

def test_hard_projection_dc_takes_lam_and_nu_with_a_warning():
    g = torch.Generator().manual_seed(0)
    k, y = (torch.randn(2, 8, 8, dtype=torch.complex64, generator=g) for _ in range(2))
    mask = torch.rand(8, 8, generator=g) < 0.5
    new = _quiet(HardProjectionDC, lam=0.5, learnable=True)
    with pytest.warns(FutureWarning, match=r"HardProjectionDC.__init__: 'nu' is deprecated, use "
                                           r"'lam'"):
        old = HardProjectionDC(nu=0.5, learnable=True)
    _same_state(new, old)
    assert list(new.state_dict()) == ["nu"]  # the state-dict key stays
    torch.testing.assert_close(new(k, y, mask), old(k, y, mask), rtol=0, atol=0)
    assert not torch.equal(new(k, y, mask), HardProjectionDC()(k, y, mask))


def test_proximal_dc_takes_cg_iterations_and_iterations_with_a_warning():
    new = _quiet(ProximalDC, lam=0.1, cg_iterations=3)
    assert new.cg_iterations == 3
    with pytest.warns(FutureWarning, match=r"ProximalDC.__init__: 'iterations' is deprecated, use "
                                           r"'cg_iterations'"):
        old = ProximalDC(lam=0.1, iterations=3)
    assert old.cg_iterations == 3
    with pytest.warns(FutureWarning, match="'max_iterations' is deprecated, use 'cg_iterations'"):
        assert ProximalDC(max_iterations=4).cg_iterations == 4
    with pytest.raises(ValueError, match="both 'iterations' .* and 'cg_iterations'"):
        ProximalDC(iterations=3, cg_iterations=3)
    _same_state(new, old)
    modl = _quiet(build_model, "modl", iterations=2, layers=2, features=4, cg_iterations=5)
    assert modl.dc.cg_iterations == 5


# -- 6. zero_filled_rss on a numpy array names the type ----------------------------------------

def test_zero_filled_rss_names_a_numpy_array_as_the_wrong_type():
    k = np.zeros((2, 8, 8), dtype=np.complex64)
    with pytest.raises(TypeError, match=r"zero_filled_rss: kspace must be a torch.Tensor .*got "
                                        r"numpy.ndarray \(2, 8, 8\); convert it with "
                                        r"torch.from_numpy"):
        recon.zero_filled_rss(k)
    with pytest.raises(ValueError, match=r"kspace must be a tensor \(\.\.\., coils, H, W\), got "
                                         r"\(8, 8\)"):
        recon.zero_filled_rss(torch.zeros(8, 8, dtype=torch.complex64))


def test_proximal_dc_iterations_attribute_still_reads_and_sets_the_cg_count():
    """``model.dc.iterations = 7`` (docs/robustness.md's example of a setting changed after
    building) must still change the CG count, with a FutureWarning, and save_model see it; after
    the rename it made an unused attribute and the model kept 3 steps."""
    from mrirecon.models import build_model

    m = build_model("modl", iterations=2, cg_iterations=3, features=8, layers=3)
    with pytest.warns(FutureWarning, match="cg_iterations"):
        assert m.dc.iterations == 3
    with pytest.warns(FutureWarning, match="cg_iterations"):
        m.dc.iterations = 7
    assert m.dc.cg_iterations == 7
