"""The CT projectors' fast paths: the forward projection in row bands (the same sums as whole
windows), and the float64 tables cast to the data's dtype once, not at every call."""

import math

import numpy as np
import pytest
import torch

import mrirecon.functional.radon as radon_kernels
from mrirecon.core import relative_adjoint_error
from mrirecon.operators import FanBeam, ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry


def _whole_windows(x: np.ndarray, op: ParallelBeam) -> np.ndarray:
    """The shear kernel's forward projection with whole windows (every row over all ``M_v + 1``
    virtual rays of its view), in float64 numpy: the formula the bands regroup."""
    out = np.zeros(op.geometry.sinogram_shape)
    for meta in op._meta:
        img = x.T if meta.transpose else x
        xp = np.zeros((meta.steps, meta.padded_width))
        xp[:, meta.pad_left:meta.pad_left + meta.lateral] = img
        for j, v in enumerate(meta.views):
            m = int(meta.num_virtual[j])
            cols = meta.pad_left + meta.shift[j][:, None] + np.arange(m + 1)[None, :]
            y = meta.taps[j] @ np.take_along_axis(xp, cols, axis=1)  # (2, M + 1)
            virtual = y[0, :m] + y[1, 1:]
            idx, w = meta.det_index[j], meta.det_weight[j]
            out[v] = w[0] * virtual[idx[0]] + w[1] * virtual[idx[1]]
    return out


BAND_GEOMETRIES = {
    "tiny (fewer rows than bands)": CTGeometry.parallel((4, 5), 7, 9),
    "odd angles, wide detector": CTGeometry("parallel", (13, 11), (0.0, 0.3, math.pi / 4,
                                            1.1, 2.0, 3 * math.pi / 4, 2.9), 31),
    "narrow detector (truncated)": CTGeometry.parallel((31, 29), 12, 15, detector_spacing=0.8),
    "limited angle": CTGeometry("parallel", (24, 20), tuple(np.linspace(0.6, 1.0, 9)), 41),
    "full 2pi": CTGeometry("parallel", (17, 17), tuple(np.linspace(0, 2 * math.pi, 23)), 27),
}


@pytest.mark.parametrize("name", sorted(BAND_GEOMETRIES))
def test_banded_forward_equals_whole_windows(name, monkeypatch):
    """Bands of rows (their windows trimmed to the rays they meet) give the whole windows' sums
    in float64 to rounding, with 1-6 bands and one view per chunk; the adjoint still matches."""
    g = BAND_GEOMETRIES[name]
    x = torch.rand(2, *g.image_shape, generator=torch.Generator().manual_seed(3),
                   dtype=torch.float64)
    for bands, chunk in ((radon_kernels._BANDS, radon_kernels._CHUNK_ELEMENTS), (1, 1), (3, 1)):
        monkeypatch.setattr(radon_kernels, "_BANDS", bands)
        monkeypatch.setattr(radon_kernels, "_CHUNK_ELEMENTS", chunk)
        op = ParallelBeam(g)
        y = op(x)
        for b in range(2):
            ref = _whole_windows(x[b].numpy(), op)
            np.testing.assert_allclose(y[b].numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
        assert relative_adjoint_error(op, x, torch.rand_like(y)) < 1e-12


def test_bands_trim_the_forward_work_at_the_lodopab_geometry():
    """At 362^2 / 513 detectors (LoDoPaB), 30 views: the banded windows hold under 65 % of the
    whole windows' elements (rows meet ~W of up to ~2 W virtual rays), the reason the forward
    projection takes ~0.6 of its former time."""
    g = CTGeometry.parallel((362, 362), 1000, 513, pixel_size=0.7182, detector_spacing=0.7168)
    g = CTGeometry("parallel", g.image_shape, g.angles[::33][:30], 513, g.pixel_size,
                   g.detector_spacing)
    op = ParallelBeam(g)
    for meta, i in zip(op._meta, range(2)):
        whole = meta.steps * (int(meta.num_virtual.max()) + 1)
        bands, rows = getattr(op, f"_band_offset{i}").shape[1:]
        banded = bands * rows * meta.band_window
        assert banded < 0.65 * whole
    x = torch.rand(362, 362, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _whole_windows(x.numpy(), op)
    np.testing.assert_allclose(op(x).numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_the_projector_keeps_only_the_tables_its_kernels_read():
    """The band tables are derived buffers (moved by .to()) outside the state dict; the state
    dict holds the transpose's and the detector resampling's tables. The whole windows'
    ``shift_offset`` and the forward ``taps`` (a fifth of the tables, and a float32 copy of the
    taps once cast) stayed after the banded forward projection had replaced their only reader."""
    op = ParallelBeam(CTGeometry.parallel((9, 8), 7, 13))
    per_group = ("views", "back_offset", "taps_t", "det_index", "det_weight")
    assert set(op.state_dict()) == {f"_{n}{i}" for n in per_group for i in range(len(op._meta))}
    bands = {"band_offset", "band_taps", "band_start"}
    assert {n for n, _ in op.named_buffers() if n.startswith("_band")} == \
        {f"_{n}{i}" for n in bands for i in range(len(op._meta))}
    op.H(op(torch.rand(2, 9, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)))
    assert set(op._group(0, torch.float64)) == {"num_virtual", *per_group[1:], *bands}


def test_parallel_tables_are_cast_once_and_equal_the_buffers():
    op = ParallelBeam(CTGeometry.parallel((12, 10), 9, 17))
    first = op._group(0, torch.float32)
    assert op._group(0, torch.float32) is first  # was: three casts per group and call
    for name in ("taps_t", "det_weight", "band_taps"):
        buf = getattr(op, f"_{name}0")
        assert first[name].dtype == torch.float32
        assert torch.equal(first[name], buf.to(torch.float32))
        assert op._group(0, torch.float64)[name] is buf  # no copy in the tables' own dtype
    x = torch.rand(2, 12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y64 = op(x)
    y32 = op(x.float())
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=64 * eps * float(y64.abs().max()))


def test_moving_the_module_clears_the_cast_tables():
    op = FanBeam(CTGeometry.fan((8, 9), 7, 13))
    op(torch.ones(8, 9))
    assert op._cast
    op.to(torch.device("cpu"))
    assert not op._cast  # buffers may be new tensors: cast afresh
    start, _, _ = op._tables(torch.float32)
    assert torch.equal(start, op._start.float())


def test_tables_first_cast_in_inference_mode_are_normal_tensors():
    """A table first cast inside inference_mode (pipeline inference) is a normal tensor: a later
    differentiable use of the same shared operator (an FBP's row step saves it for backward)
    may keep it."""
    op = ParallelBeam(CTGeometry.parallel((11, 11), 8, 15))
    with torch.inference_mode():
        op(torch.ones(11, 11))
        op.H(torch.ones(8, 15))
    tables = op._group(0, torch.float32)
    assert not any(t.is_inference() for t in tables.values() if isinstance(t, torch.Tensor))
    x = torch.rand(11, 11, requires_grad=True)
    (op.H(op(x)) ** 2).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_cached_ct_tables_first_built_in_inference_mode_serve_autograd(beam):
    """The shared projector (``cached_ct_operator``) and the FBP's cached weights and tables,
    first built inside ``inference_mode`` (a pipeline's FBP), serve a later FBP / projection
    under autograd: they had been inference tensors ("Inference tensors cannot be saved for
    backward"). A geometry of its own, and the caches emptied, so that this test builds them
    first whatever ran before it in this process."""
    from mrirecon.operators import fbp as fbp_module
    from mrirecon.operators.ct import cached_ct_operator
    from mrirecon.operators.fbp import fbp

    for cache in (cached_ct_operator, fbp_module._interpolation_tables, fbp_module._weights):
        cache.cache_clear()
    g = (CTGeometry.parallel((22, 22), 19, 37) if beam == "parallel" else
         CTGeometry.fan((22, 22), 19, 37, source_isocenter=57.0, source_detector=113.0))
    y = torch.rand(1, 19, 37, dtype=torch.float64)
    with torch.inference_mode():
        first = fbp(y, g)
        cached_ct_operator(g)(torch.rand(1, 22, 22, dtype=torch.float64))
    y.requires_grad_()
    out = fbp(y, g)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), first)
    # FBP is linear: its gradient of the sum is the adjoint of ones, the same at every call
    grad = y.grad.clone()
    y.grad = None
    fbp(y, g).sum().backward()
    torch.testing.assert_close(y.grad, grad)
    x = torch.rand(1, 22, 22, dtype=torch.float64, requires_grad=True)
    cached_ct_operator(g)(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
