"""E2E-VarNet: equivalence with the fastMRI reference (live and stored fixture), ACS detection,
gradient checkpointing, slice-by-slice inference."""

from __future__ import annotations


from tests.helpers import FIXTURES
import pytest
import torch
from tests.models.problems import coil_maps, column_mask, mri_problem

from mrirecon.functional import rss
from mrirecon.models import VarNet, fastmri_varnet_state_dict, reconstruct_slices
from mrirecon.sampling import acs_bounds
from mrirecon.operators import sense

FIXTURE = FIXTURES / "varnet_tiny_fastmri.pt"
TINY = dict(iterations=2, sens_chans=4, sens_pools=2, chans=4, pools=2)
EPS32 = torch.finfo(torch.float32).eps


def _ours_from_reference_format(masked_kspace, mask5):
    """Reference inputs -> (y complex (B, C, H, W), sense operator with placeholder maps)."""
    y = torch.view_as_complex(masked_kspace.contiguous())
    b, c, h, w = y.shape
    op = sense(torch.ones(c, h, w, dtype=y.dtype), mask5[:, 0, 0, :, 0][:, None, :])
    return y, op


def test_stored_fastmri_fixture_matches():
    data = torch.load(FIXTURE, weights_only=True)
    with pytest.warns(FutureWarning, match="'num_cascades' is deprecated"):  # fastMRI's name
        model = VarNet(**data["config"]).eval()
    model.load_state_dict(fastmri_varnet_state_dict(data["state_dict"]), strict=True)
    y, op = _ours_from_reference_format(data["masked_kspace"], data["mask"])
    with torch.no_grad():
        out = model.rss(y, op)
        image = model(y, op)
    # the complex output's magnitude is the RSS (the magnitude of a unit phase is 1 to a few eps)
    assert image.is_complex() and torch.allclose(image.abs(), out, rtol=4 * EPS32, atol=0)
    assert out.shape == data["output"].shape and out.dtype == torch.float32
    assert torch.allclose(out, data["output"], atol=1e-4, rtol=0)
    assert float((out - data["output"]).abs().max()) < 1e-4 * float(data["output"].abs().max())


def test_live_fastmri_checkpoint_matches():
    fm = pytest.importorskip("fastmri.models")
    torch.manual_seed(3)
    ref = fm.VarNet(num_cascades=TINY["iterations"], **{k: v for k, v in TINY.items() if k != "iterations"}).eval()
    # the state dict saved by the reference package and loaded back weights-only
    import io

    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    ours = VarNet(**TINY).eval()
    ours.load_state_dict(fastmri_varnet_state_dict({"varnet." + k: v for k, v in state.items()}), strict=True)
    x, y, op = mri_problem(b=2)
    y = y * 1e3  # realistic k-space magnitude
    mask5 = op.mask[None, None, :, :, None].expand(2, 1, 1, -1, 1).bool()
    with torch.no_grad():
        ref_out = ref(torch.view_as_real(y), mask5, None)
        out = ours(y, op).abs()
        ref_nlf = ref(torch.view_as_real(y), mask5, 4)
        out_nlf = ours.rss(y, op, num_low_frequencies=4)
    scale = float(ref_out.abs().max())
    assert float((out - ref_out).abs().max()) < 1e-4 * scale
    assert float((out_nlf - ref_nlf).abs().max()) < 1e-4 * float(ref_nlf.abs().max())
    assert float((out_nlf - out).abs().max()) > 1e-3 * scale  # the ACS width matters


def test_convert_rejects_unknown_keys_and_drops_loss_buffers():
    with pytest.raises(KeyError, match="not a fastMRI VarNet parameter"):
        fastmri_varnet_state_dict({"cascades.0.something": torch.zeros(1)})
    out = fastmri_varnet_state_dict({"varnet.cascades.3.dc_weight": torch.ones(1), "loss.w": torch.ones(1)})
    assert list(out) == ["cascades.3.dc.weight"]


def test_acs_detection_matches_fastmri_rule():
    cols = torch.zeros(3, 16, dtype=torch.bool)
    cols[0, 6:10] = True  # symmetric band of 4 around 8
    cols[1, 5:10] = True  # 3 left of centre, 2 right -> 2 * min = 4
    cols[2, 3] = True  # centre unsampled -> 1 column
    start, stop = acs_bounds(cols)
    assert (stop - start).tolist() == [4, 4, 1]
    assert start.tolist() == [6, 6, 8]
    start, stop = acs_bounds(cols, 6)
    assert start.tolist() == [5, 5, 5] and (stop - start).tolist() == [6, 6, 6]


def test_a_partial_echo_mask_keeps_the_acs_columns():
    """A 2-D mask whose first readout rows were never sampled (a partial echo, as the pipeline
    builds it): the sensitivity network took the ACS band from row 0, found no column and
    failed; it now reads the columns sampled in any row, the same maps as the column mask."""
    x, _, op = mri_problem(b=1)
    rows = torch.ones(x.shape[-2], dtype=torch.bool)
    rows[:8] = False
    echo = sense(op.maps, rows[:, None] & op.mask.reshape(1, -1).bool())
    y = echo(x)
    model = VarNet(**TINY)
    with torch.no_grad():
        assert torch.equal(model.sensitivity(y, echo), model.sensitivity(y, sense(op.maps, op.mask)))
        assert torch.isfinite(model(y, echo)).all()


def test_varnet_shapes_image_and_given_maps():
    x, y, op = mri_problem(b=2)
    model = VarNet(**TINY)
    out = model(y, op)
    assert out.shape == (2, 32, 24) and out.dtype == torch.complex64 and torch.isfinite(out).all()
    img = model.image(y, op)
    assert img.shape == (2, 32, 24) and img.is_complex()
    # output contract: magnitude = RSS of the coil images, phase = that of S^H F^H k
    magnitude = model.rss(y, op)
    assert magnitude.dtype == torch.float32
    assert torch.allclose(out.abs(), magnitude, rtol=4 * EPS32, atol=0)
    nz = img.detach().abs() > 1e-3 * float(img.detach().abs().max())
    assert torch.allclose((out / out.abs())[nz], (img / img.abs())[nz], atol=8 * EPS32)
    # |S^H F^H k| <= RSS (Cauchy-Schwarz with maps of unit RSS)
    assert bool((img.abs() <= magnitude * (1 + 8 * EPS32)).all())
    k, op_used = model.kspace(y, op)
    assert torch.allclose(rss(op_used.maps, dim=1), torch.ones(()), atol=1e-5)  # RSS-normalised maps
    fixed = VarNet(**TINY, estimate_sensitivities=False)
    k2, op2 = fixed.kspace(y, op)
    assert op2 is op and not any("sensitivity" in n for n, _ in fixed.named_parameters())
    with pytest.raises(TypeError, match="needs a SenseOperator"):
        model(y, op.H)


def test_varnet_gradients_and_checkpointing_identical():
    x, y, op = mri_problem(b=2)
    grads = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = VarNet(**TINY, checkpointing=ckpt)
        loss = (model(y, op).abs() - x.abs()).square().mean()
        loss.backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in model.named_parameters()}
        for n, g in grads[ckpt].items():
            assert torch.isfinite(g).all(), n
            if n == "cascades.0.dc.weight":
                # the first cascade starts at k = y, so M (k - y) = 0 (as in fastMRI)
                assert float(g.abs().sum()) == 0.0
            else:
                assert g.abs().sum() > 0, n
    for n in grads[False]:
        assert torch.allclose(grads[False][n], grads[True][n], rtol=1e-5, atol=1e-7), n


def test_varnet_training_lowers_loss():
    x, y, op = mri_problem(b=2)
    torch.manual_seed(0)
    model = VarNet(**TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = (model(y, op).abs() - x.abs()).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_reconstruct_slices_matches_batched_and_restores_mode():
    x, y, op = mri_problem(b=3)
    model = VarNet(**TINY).train()
    out = reconstruct_slices(model, y, op)
    assert model.training and not out.requires_grad and out.shape == (3, 32, 24)
    model.eval()
    with torch.no_grad():
        batched = model(y, op)
    # batched and per-slice runs round differently: compare the RSS magnitudes to 1e-5 and the
    # complex images relative to their peak (the phase is ill-conditioned where S^H F^H k ~ 0)
    assert torch.allclose(out.abs(), batched.abs(), rtol=1e-5, atol=1e-5 * float(batched.abs().max()))
    assert float((out - batched).abs().max()) < 1e-4 * float(batched.abs().max())
    ops = [op] * 3
    assert torch.allclose(reconstruct_slices(model, list(y), ops), out)
    with pytest.raises(ValueError, match="3 slices of data but 2 operators"):
        reconstruct_slices(model, y, ops[:2])


@pytest.mark.parametrize("prefix", ["module.", "varnet.", "module.varnet.", "varnet.module."])
def test_fastmri_state_dict_strips_dataparallel_and_lightning_prefixes(prefix):
    """fastMRI checkpoints saved under DataParallel (``module.``) or Lightning (``varnet.``) load
    strictly once converted: the documented renaming undone on our own keys, prefixed, and
    converted back gives every key."""
    model = VarNet(iterations=1, sens_chans=2, sens_pools=1, chans=2, pools=1)
    ours = model.state_dict()

    def to_fastmri(k: str) -> str:
        k = k.replace("sensitivity.norm_unet.unet.", "sens_net.norm_unet.unet.")
        return k.replace(".denoiser.unet.", ".model.unet.").replace(".dc.weight", ".dc_weight")

    mapped = fastmri_varnet_state_dict({prefix + to_fastmri(k): v for k, v in ours.items()})
    assert set(mapped) == set(ours)
    VarNet(iterations=1, sens_chans=2, sens_pools=1, chans=2, pools=1).load_state_dict(mapped, strict=True)


def test_varnet_output_phase_carries_no_gradient():
    """The docstring's "the phase carries no gradient": a loss on ``x / |x|`` alone gives every
    parameter a gradient at rounding level (float64)."""
    _, y, op = mri_problem(dtype=torch.complex128)
    model = VarNet(iterations=2, sens_chans=4, sens_pools=2, chans=4, pools=2, init_seed=0).double()
    x = model(y, op)
    phase = x / x.abs().clamp_min(torch.finfo(torch.float64).tiny)
    w = torch.randn(phase.shape, dtype=phase.dtype, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((phase * w).real.sum(), list(model.parameters()), allow_unused=True)
    total = sum(float(g.abs().sum()) for g in grads if g is not None)
    scale = sum(float(p.detach().abs().sum()) for p in model.parameters())
    assert total <= 1e3 * torch.finfo(torch.float64).eps * scale, total


def test_varnet_ignores_data_outside_the_operators_mask():
    """Fails if varnet.py: ``y = torch.where(mask, y, 0)`` dropped. Fully sampled k-space
    with an undersampling operator is accepted (SSDU-style splits, mask_mismatch); the model must
    see only the samples its mask keeps, so the result equals that of the masked data."""
    x, _, op = mri_problem(b=1)
    full = sense(coil_maps(), torch.ones(op.mask.shape[-1], dtype=torch.bool))(x)
    mask = column_mask().reshape(1, 1, 1, -1)
    model = VarNet(**TINY, init_seed=0).eval()
    with torch.no_grad():
        a = model(full, op)
        b = model(full * mask, op)
    # the same float32 computation on identical inputs: equal to rounding of a few ops
    assert torch.allclose(a, b, rtol=0, atol=64 * EPS32 * float(b.abs().max()))


def test_varnet_magnitude_is_the_rss_where_the_maps_vanish():
    """Fails if varnet.py: ``phase = torch.where(combined == 0, one, sgn(combined))`` ->
    ``sgn(combined)``. With given maps that are zero on part of the image (ESPIRiT's crop),
    ``S^H F^H k`` is exactly 0 there but the RSS of the coil images is not: the documented
    output keeps ``|x| = RSS`` everywhere (phase 0, not magnitude 0)."""
    _, y, _ = mri_problem(b=1)
    maps = coil_maps().clone()
    maps[:, :4, :] = 0  # a band outside the support
    op = sense(maps, column_mask())
    model = VarNet(**TINY, estimate_sensitivities=False, init_seed=0).eval()
    with torch.no_grad():
        image = model(y, op)
        rss = model.rss(y, op)
    assert float(rss[..., :4, :].abs().min()) > 0  # the band holds signal in the RSS
    assert torch.allclose(image.abs(), rss, rtol=4 * EPS32, atol=0)


def test_varnet_image_is_the_combination_of_the_final_kspace():
    """Fails if varnet.py ``image``: the power-of-two rescale ``* scale`` dropped. ``image``
    is documented as ``S^H F^H k`` of the final k-space that ``kspace`` returns (data units)."""
    _, y, op = mri_problem(b=2)
    y = y * 1e3  # realistic magnitude: the internal power-of-two scale is not 1
    model = VarNet(**TINY, init_seed=0).eval()
    with torch.no_grad():
        k, used = model.kspace(y, op)
        want = used.reduce(k)
        got = model.image(y, op)
    assert torch.allclose(got, want, rtol=0, atol=16 * EPS32 * float(want.abs().max()))


def _mask_with_block(h, w, block, seed=0):
    """A random 2-D pattern with the fully sampled rectangle ``block`` (top, bottom, left,
    right) about the centre, its border rows and columns cleared so it cannot grow."""
    t, b, l, r = block
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < 0.4
    mask[max(t - 1, 0):b + 1, max(l - 1, 0):r + 1] = False
    mask[t:b, l:r] = True
    return mask


def test_the_centre_block_of_a_2d_mask_is_its_fully_sampled_rectangle():
    """Fails if the calibration rectangle grown from k-space centre stops short of a sampled
    edge, runs past an unsampled one, or is not empty for an unsampled centre."""
    from mrirecon.models.unrolled.varnet import _centre_block

    for block in [(12, 20, 9, 15), (10, 22, 11, 13), (16, 17, 12, 13)]:
        assert _centre_block(_mask_with_block(32, 24, block)) == block
    full = torch.ones(32, 24, dtype=torch.bool)
    assert _centre_block(full) == (0, 32, 0, 24)
    hole = full.clone()
    hole[16, 12] = False
    t, b, l, r = _centre_block(hole)
    assert b == t and r == l


def test_a_2d_mask_gives_the_maps_of_its_fully_sampled_centre_block():
    """Fails if VarNet's sensitivity network reads the band of columns sampled in any row of a
    2-D (Poisson-disc-like) mask - nearly every column, so maps from aliased k-space - instead
    of the fully sampled centre block: zeroing the k-space outside the block must not change
    the maps, and a mask without a sampled centre is refused naming the calibration region."""
    x, _, op = mri_problem(b=1)
    h, w = x.shape[-2:]
    block = (12, 20, 9, 15)
    mask = _mask_with_block(h, w, block)
    op2 = sense(op.maps, mask)
    y = op2(x)
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[12:20, 9:15] = True
    model = VarNet(**TINY)
    with torch.no_grad():
        assert torch.equal(model.sensitivity(y, op2), model.sensitivity(y * inside, op2))
        no_centre = mask.clone()
        no_centre[h // 2, w // 2] = False
        with pytest.raises(ValueError, match="calibration region"):
            model(y * no_centre, sense(op.maps, no_centre))


@pytest.mark.parametrize("two_d", [False, True])
def test_an_all_zero_sample_gives_zero_beside_its_neighbour(two_d):
    """A blank slice in a batch (padding, a zeroed block) failed the whole batch: "sample 1's
    k-space centre (columns 9-14 of 24) holds no data ... the mask must sample column 12", which
    it did; every other model returns 0 there. A sample with data but no centre is still
    refused."""
    from mrirecon.sampling import poisson_disc

    x, y, op = mri_problem(b=2)
    if two_d:
        mask = torch.as_tensor(poisson_disc((32, 24), 2, calib=(8, 8), seed=0)).bool()
        op = sense(op.maps, mask)
        y = op(x)
    model = VarNet(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():  # nonzero biases everywhere, as after training
            p.add_(0.05)
    blank = y.clone()
    blank[1] = 0
    out = model(blank, op)
    assert torch.count_nonzero(out[1]) == 0
    torch.testing.assert_close(out[0], model(y[:1], op)[0])
    loss = out.abs().square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    centre_less = y.clone()
    centre = slice(3, 21) if two_d else slice(8, 16)
    centre_less[1, ..., centre] = 0  # the centre (block) emptied, data left beside it
    assert centre_less[1].abs().amax() > 0
    with pytest.raises(ValueError, match=r"sample 1's .*(k-space centre|does not sample)"):
        model(centre_less, op)
