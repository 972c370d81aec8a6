"""Scan-specific adaptation (ZS-SSL): a copy is adapted, early stopping keeps the initial model
when adaptation only hurts, and adaptation helps a model on data unlike its training set."""

from __future__ import annotations

import hashlib
import math
import types

import pytest
import torch

from mrirecon.operators.mri import sense
from mrirecon.sampling import create_mask_for_mask_type
from mrirecon.sampling.split import centre_block
from mrirecon.training import adapt as adapt_mod
from mrirecon.training.adapt import AdaptConfig, adapt_model
from mrirecon.training.weights import available_weights, load_pretrained

#: the model of pipelines/mri_learned_adapt.yaml (and mri_learned / mri_modl)
SHIPPED = "modl_fastmri_diverse"
pytestmark = pytest.mark.skipif(SHIPPED not in available_weights(),
                                reason=f"shipped {SHIPPED} weights not available")


def _phantom_scan(n: int = 48, slices: int = 2, coils: int = 6, seed: int = 0):
    """Shepp-Logan slices (not brains: unlike the model's training data) with a smooth phase,
    birdcage coils, a 4x random column mask and k-space noise; ``(y, op)`` pairs and truths."""
    from mrirecon.data.anatomy import shepp_logan
    from mrirecon.data.simulate_mri import birdcage_maps
    from mrirecon.sampling import create_mask_for_mask_type

    g = torch.Generator().manual_seed(seed)
    grid = (torch.arange(n, dtype=torch.float64) - n / 2) / (n / 2)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    maps = torch.from_numpy(birdcage_maps(coils, xx.numpy(), yy.numpy())).to(torch.complex64)
    mask_fn = create_mask_for_mask_type("random", [0.16], [4])
    pairs, truths = [], []
    for k in range(slices):
        img = torch.from_numpy(shepp_logan((n, n))).roll(2 * k, -1) * torch.exp(0.5j * math.pi * xx)
        img = img.to(torch.complex64)
        mask = torch.as_tensor(mask_fn(n, seed=10 + k)).reshape(-1).bool()
        op = sense(maps[None], mask)
        y = op(img[None])
        y = y + 0.01 * float(y.abs().max()) * torch.randn(y.shape, dtype=torch.complex64, generator=g) * mask
        pairs.append((y, op))
        truths.append(img)
    return pairs, torch.stack(truths)  # complex images


@torch.no_grad()
def _psnr(model, pairs, truths) -> float:
    from mrirecon.metrics.metrics import psnr

    pred = torch.stack([model(y, op)[0].abs() for y, op in pairs])
    return float(psnr(truths.abs(), pred))


def _shipped_file():
    from mrirecon.training.weights import WEIGHTS_DIR

    return WEIGHTS_DIR / f"{SHIPPED}.pt"


def test_adaptation_changes_a_copy_never_the_shipped_weights():
    path = _shipped_file()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_pretrained(SHIPPED).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs, _ = _phantom_scan(n=32, slices=1)
    adapted, report = adapt_model(model, pairs, AdaptConfig(steps=4, val_every=2, patience=10,
                                                            lr=1e-3, time_budget_s=None))
    assert adapted is not model and not adapted.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert report.steps == 4 and report.val_steps == [0, 2, 4] and len(report.train_losses) == 4
    if report.best_step > 0:  # the returned state is the best one, a changed copy
        changed = any(not torch.equal(before[k], v) for k, v in adapted.state_dict().items())
        assert changed


class _FreeImage(torch.nn.Module):
    """A "model" that is one free image, started at the noise-free truth: it can only fit the noise of
    the points it is trained on, so on independent held-back points it can only get worse."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = torch.nn.Parameter(torch.view_as_real(image.clone()))

    def forward(self, y, op):
        return torch.view_as_complex(self.image)[None]


def test_early_stopping_returns_the_initial_model_when_adaptation_only_hurts():
    """ZS-SSL's guard against over-fitting one scan: with a model that can only fit the
    training points' noise, every validation after the start is worse, and the initial state
    comes back unchanged after ``patience`` validations."""
    pairs, truths = _phantom_scan(n=32, slices=2)
    model = _FreeImage(truths[0])
    start = model.image.detach().clone()
    adapted, report = adapt_model(model, pairs[:1], AdaptConfig(steps=50, lr=0.05, val_every=1,
                                                                patience=3, time_budget_s=None))
    assert all(v > report.val_losses[0] for v in report.val_losses[1:]), report.val_losses
    assert report.best_step == 0 and report.stopped == "patience" and report.steps == 3
    assert torch.equal(adapted.image, start) and torch.equal(model.image, start)


def test_adaptation_improves_psnr_on_data_unlike_the_training_set():
    model = load_pretrained(SHIPPED).eval()
    pairs, truths = _phantom_scan(n=40, slices=1)
    adapted, report = adapt_model(model, pairs, AdaptConfig(steps=12, lr=1e-3, val_every=4, patience=3,
                                                            time_budget_s=None, seed=0))
    before, after = _psnr(model, pairs, truths), _psnr(adapted, pairs, truths)
    assert report.best_step > 0 and report.best_val_loss < report.initial_val_loss
    assert after > before, (before, after, report.val_losses)


def test_readout_stripes_are_exact_sense_problems():
    from mrirecon.training.adapt import _stripe

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(1, 3, 40, 24, dtype=torch.complex128, generator=g)
    x = torch.randn(1, 40, 24, dtype=torch.complex128, generator=g)
    mask = torch.zeros(24, dtype=torch.bool)
    mask[::3] = True
    op = sense(maps, mask)
    ys, ops = _stripe(op(x), op, 7, 16)
    err = float((ops(x[..., 7:23, :]) - ys).abs().max() / ys.abs().max())
    assert err < 100 * torch.finfo(torch.float64).eps * math.log2(40 * 24)


def test_stripe_adaptation_runs_and_reports():
    model = load_pretrained(SHIPPED).eval()
    pairs, _ = _phantom_scan(n=48, slices=1)
    seen = []
    _, report = adapt_model(model, pairs, AdaptConfig(rows=16, steps=3, val_every=3, val_stripes=2,
                                                      time_budget_s=None),
                            progress=lambda step, loss, val: seen.append(step))
    assert seen == [1, 2, 3] and report.val_steps == [0, 3]
    assert all(math.isfinite(v) for v in report.val_losses)


def test_ct_view_splitting_adaptation_runs():
    if "primal_dual_ct_sim" not in available_weights():
        pytest.skip("shipped primal_dual_ct_sim weights not available")
    from mrirecon.operators.ct import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    geometry = CTGeometry.parallel(image_shape=(32, 32), num_views=30, num_detectors=45)
    x = torch.zeros(1, 32, 32)
    x[:, 8:24, 10:22] = 0.02
    op = ct_operator(geometry)
    model = load_pretrained("primal_dual_ct_sim").eval()
    _, report = adapt_model(model, [(op(x), op)], AdaptConfig(steps=2, val_every=1, time_budget_s=None))
    assert report.steps == 2 and len(report.val_losses) == 3
    assert all(math.isfinite(v) for v in report.val_losses)


def test_bad_settings_are_refused():
    pairs, _ = _phantom_scan(n=32, slices=1)
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        adapt_model(torch.nn.Identity(), pairs, AdaptConfig(validation_fraction=1.5))
    with pytest.raises(ValueError, match="no slices"):
        adapt_model(torch.nn.Identity(), [], AdaptConfig())
    # a negative ACS block was accepted (and meant "no protected centre" by slicing accident)
    with pytest.raises(ValueError, match=r"acs_block must be two integers >= 0 .* got \(4, -2\)"):
        adapt_model(torch.nn.Identity(), pairs, AdaptConfig(acs_block=(4, -2)))


@pytest.mark.parametrize("fraction, views, message", [
    (0.99, 30, r"validation_fraction 0.99: CT holds back every k-th view, k = round\(1 / "
               r"validation_fraction\) = 1; at most 0.5"),  # was 50 % held back silently
    (0.01, 30, r"holds back every 100th view, but the sinogram has 30 views: none"),  # "no view selected"
])
def test_ct_validation_fraction_that_cannot_be_honoured_is_refused(fraction, views, message):
    from mrirecon.operators.ct import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    op = ct_operator(CTGeometry.parallel(image_shape=(16, 16), num_views=views, num_detectors=23))
    y = op(torch.ones(1, 16, 16))
    with pytest.raises(ValueError, match=message):
        adapt_model(torch.nn.Identity(), [(y, op)], AdaptConfig(validation_fraction=fraction, steps=1))


def _tiny_modl(normalize: bool):
    from mrirecon.models.unrolled.modl import MoDL

    return MoDL(iterations=2, layers=3, features=8, batchnorm=False, cg_iterations=3,
                normalize=normalize, init_seed=3).eval()


def test_normalising_model_is_adapted_at_the_whole_slice_scale():
    """A model with ``normalize`` on (the deployment MoDL: trained on row bands divided by their
    whole slice's ``max |A^H y|``, deployed with normalize on) must be adapted at the scale it
    will see at inference: readout stripes and SSDU subsets keep the whole slice's scale rather
    than being renormalised to their own peak. So adapting it equals adapting the same weights
    with normalize off on data divided once by the whole slice's scale, and the returned copy
    normalises again."""
    from mrirecon.functional import fftc, ifftc
    from mrirecon.models.common import normalized_data

    pairs, _ = _phantom_scan(n=48, slices=1)
    (y, op), = pairs
    ramp = torch.linspace(0.1, 1.0, 48).reshape(1, 1, 48, 1)  # image rows of unequal signal
    y = fftc(ifftc(y, dim=-2) * ramp, dim=-2)  # (column mask: still zero where not acquired)
    scale = normalized_data(y, op)[2].reshape(1, 1, 1, 1)
    cfg = AdaptConfig(rows=16, steps=4, val_every=2, val_stripes=2, lr=1e-2, time_budget_s=None,
                      patience=10)
    on = _tiny_modl(True)
    adapted, report = adapt_model(on, [(y, op)], cfg)
    reference, ref_report = adapt_model(_tiny_modl(False), [(y / scale, op)], cfg)
    assert adapted.normalize and on.normalize and not reference.normalize
    assert report.val_losses == ref_report.val_losses
    for k, v in adapted.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k
    # and the scale of the data still does not matter (normalize undoes it at inference)
    big, _ = adapt_model(on, [(y * 1e3, op)], cfg)
    tol = 1e3 * torch.finfo(torch.float32).eps
    for k, v in adapted.state_dict().items():
        torch.testing.assert_close(big.state_dict()[k], v, rtol=tol, atol=tol * float(v.abs().max()))


def test_a_model_no_better_than_zero_through_the_maps_is_not_adapted():
    # cropped ESPIRiT maps left MoDL / PnP at a validation loss of 2.4-2.8, worse than an all-zero
    # prediction's 2: the loss then fell while PSNR fell 0.6-0.8 dB. Here the maps are cut to a
    # central disc of half the field of view (the object reaches beyond it): no step is taken,
    # the model is returned unchanged, and the report says why.
    from mrirecon.training.adapt import UNRELIABLE_LOSS

    pairs, _ = _phantom_scan(seed=3)
    model = load_pretrained(SHIPPED)
    grid = (torch.arange(48) - 24) / 24
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disc = xx ** 2 + yy ** 2 < 0.5 ** 2
    bad = [(y, sense(op.maps * disc, op.mask)) for y, op in pairs]
    adapted, report = adapt_model(model, bad, AdaptConfig(steps=4, val_every=1, time_budget_s=None))
    assert report.stopped == "unreliable" and report.steps == 0 and report.best_step == 0
    assert report.initial_val_loss > UNRELIABLE_LOSS
    assert all(torch.equal(a, b) for a, b in zip(adapted.state_dict().values(),
                                                 model.state_dict().values()))
    _, fine = adapt_model(model, pairs, AdaptConfig(steps=2, val_every=1, time_budget_s=None))
    assert fine.stopped != "unreliable" and fine.initial_val_loss <= UNRELIABLE_LOSS


def test_adaptation_that_changes_nothing_keeps_the_initial_model_and_stops_on_patience():
    """A tie is no improvement: with a parameter the output does not depend on, every
    validation loss ties the initial one, so the initial model is kept (``best_step`` 0) and
    adaptation stops after ``patience`` validations."""
    pairs, truths = _phantom_scan(n=32, slices=1)

    class Frozen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.register_buffer("img", truths[0].clone())

        def forward(self, y, op):
            return (self.img + 0 * self.w)[None]

    _, report = adapt_model(Frozen(), pairs, AdaptConfig(steps=20, lr=0.05, val_every=1, patience=3,
                                                         time_budget_s=None))
    assert len(set(report.val_losses)) == 1, report.val_losses
    assert report.best_step == 0 and report.stopped == "patience" and report.steps == 3


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5])
@pytest.mark.parametrize("views", [7, 30, 61])
def test_ct_adaptation_holds_back_views_disjoint_from_its_training_views(fraction, views):
    """Fails if adapt.py:406 ``% k == k // 2`` -> ``% k == 0`` for the held-back views: the
    CT hold-out must be disjoint from the training views (a held-back view that is also trained
    on leaks the validation data into the steps) and the two must cover every view."""
    y = torch.zeros(1, views, 8)
    op = types.SimpleNamespace(geometry=object())  # _ct_setup only passes the geometry on
    [(_, _, train, val)] = adapt_mod._ct_setup([(y, op)], AdaptConfig(validation_fraction=fraction))
    t, v = set(train.tolist()), set(val.tolist())
    assert v and len(t) >= 2
    assert not (t & v), sorted(t & v)
    assert t | v == set(range(views))


def test_mri_holdout_leaves_a_column_outside_the_centre_block_for_training():
    """Fails if adapt.py:268 ``cand.numel() - 1`` -> ``cand.numel()``: whatever
    ``validation_fraction`` asks, at least one acquired column outside ``acs_block`` stays for
    the training steps (the docstring's promise; otherwise the steps split the centre alone)."""
    w, coils = 16, 2
    keep = centre_block((1, w), (1, 4))[0]
    mask = keep.clone()
    mask[[1, w - 2]] = True  # two acquired columns outside the centre block
    op = sense(torch.ones(1, coils, 8, w, dtype=torch.complex64) / math.sqrt(coils), mask)
    cfg = AdaptConfig(validation_fraction=0.9, acs_block=(4, 4))
    train, val = adapt_mod._holdout(op, (8, w), cfg, torch.Generator().manual_seed(0))
    train, val = train.reshape(-1), val.reshape(-1)
    assert int((val & ~keep).sum()) >= 1
    assert int((train & ~keep).sum()) >= 1
    assert not bool((train & val).any()) and torch.equal(train | val, mask)


class _ZeroStartImage(torch.nn.Module):
    """A "model" that is one free image started at zero: adaptation can only improve it."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.image = torch.nn.Parameter(torch.zeros(*shape, 2))

    def forward(self, y, op):
        return torch.view_as_complex(self.image)[None]


def _box_problem():
    """A 32 x 32 4-coil SENSE problem at 4x and a box image: ``(n, op, truth)``."""
    n, coils = 32, 4
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(1, coils, n, n, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().square().sum(1, keepdim=True).sqrt()
    mask = torch.as_tensor(create_mask_for_mask_type("random", [0.16], [4])(n, seed=1)).reshape(-1).bool()
    op = sense(maps, mask)
    truth = torch.zeros(1, n, n, dtype=torch.complex64)
    truth[:, 8:24, 10:22] = 1.0
    return n, op, truth


def test_a_time_budget_stop_between_validations_scores_and_can_keep_the_last_state(monkeypatch):
    """Fails if adapt.py:582, the closing validation after a stop between validations never
    adopts the last state: a run the time budget ends between validations validates its last
    state, and keeps it when it is the best. A fake clock (1 s per reading) makes the stop
    deterministic."""
    n, op, truth = _box_problem()
    y = op(truth)

    clock = iter(range(10**6))
    monkeypatch.setattr(adapt_mod, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    cfg = AdaptConfig(steps=1000, val_every=1000, patience=10, lr=0.05, time_budget_s=40.0,
                      acs_block=(2, 2), selection="uniform")
    adapted, report = adapt_model(_ZeroStartImage((n, n)), [(y, op)], cfg)
    assert report.stopped == "time_budget" and 0 < report.steps < cfg.val_every
    assert report.val_steps == [0, report.steps]  # the last state was scored
    assert report.val_losses[-1] < report.val_losses[0]  # a free image fits the data
    assert report.best_step == report.steps
    # and the returned model is that last state, not the initial zeros
    assert float(adapted.image.detach().abs().sum()) > 0


def test_no_step_starts_that_would_end_past_the_time_budget(monkeypatch):
    """A clock that moves only inside a training step, 3 s per step: with a 10 s budget the run
    takes 3 steps (ending at 9 s); a fourth would end at 12 s, past the budget, and must not
    start (the check adds the mean step duration to the time spent; without it the run ended
    at 12 s)."""
    n, op, truth = _box_problem()

    now = [0.0]
    real_step = adapt_mod._take_step

    def timed_step(*args, **kwargs):
        now[0] += 3.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(adapt_mod, "_take_step", timed_step)
    monkeypatch.setattr(adapt_mod, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    cfg = AdaptConfig(steps=1000, val_every=1000, patience=10, lr=0.05, time_budget_s=10.0,
                      acs_block=(2, 2), selection="uniform")
    _, report = adapt_model(_ZeroStartImage((n, n)), [(op(truth), op)], cfg)
    assert report.stopped == "time_budget"
    assert report.steps == 3 and report.seconds == 9.0 <= cfg.time_budget_s


def test_a_ct_hold_out_other_than_asked_is_said():
    """Fails if the CT hold-out (every k-th view, k = round(1 / validation_fraction)) differs
    from the fraction asked without a word, as the MRI hold-out's would not: 0.4 of 30 views
    held back 15 (k = 2)."""
    from mrirecon.operators.ct import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    class Backprojection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, y, op):
            return op.H(y) * self.scale

    op = ct_operator(CTGeometry.parallel(image_shape=(16, 16), num_views=30, num_detectors=23))
    y = op(torch.ones(1, 16, 16))
    _, report = adapt_model(Backprojection(), [(y, op)],
                            AdaptConfig(validation_fraction=0.4, steps=0))
    assert any("0.4 of 30 acquired views asks 12, but 15 (0.50) are held back: CT holds back "
               "every k-th view, k = round(1 / validation_fraction) = 2" in w
               for w in report.warnings), report.warnings
    _, report = adapt_model(Backprojection(), [(y, op)],
                            AdaptConfig(validation_fraction=0.1, steps=0))
    assert not report.warnings  # 3 of 30, as asked


@pytest.mark.parametrize("setting, field", [
    ("adapt.validation_fraction=0.7", "adapt.validation_fraction"),  # CT: k = 1
    ("adapt.seed=99999999999999999999", "adapt.seed"),  # torch: "Overflow when unpacking"
    ("adapt.seed=-1", "adapt.seed")])
def test_adapt_settings_no_input_can_honour_are_refused_at_load(setting, field):
    """Fails if a CT ``validation_fraction`` above 2/3 or a seed torch cannot take is refused
    only per input, after each file was read (exit 1, the key named nowhere or late), instead of
    when the pipeline loads (exit 2, naming the key)."""
    from mrirecon.core.config import ConfigError
    from mrirecon.pipeline.definitions import load_pipeline

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_pipeline("ct_learned_adapt", [setting])
