"""ESPIRiT's kernels come from the smaller of the two Gram matrices of the calibration matrix.

A calibration matrix ``(blocks, coils * k * k)`` is wide when the kernel nears the block width
(8 coils, block 24, kernel 16: 81 x 2048) and at the default block 24 / kernel 6 from 11 coils
up (16 coils: 361 x 576). Its ``cols x cols`` Gram matrix cost O((coils k^2)^3): 1.9 s for
81 x 2048 and 18 s for 81 x 4096 against a few ms through the ``rows x rows`` one.
"""

import numpy as np
import pytest
import sigpy
import sigpy.mri
import torch

import mrirecon.calib.espirit as esp
from mrirecon.calib import espirit_maps
from tests.calib.test_calib import _aligned_corr, _phantom


def _kernels_from_column_gram(calib, k, thresh):
    """The former route: right singular vectors from eigh of the cols x cols Gram matrix."""
    (kh, kw), c = (k, k) if isinstance(k, int) else k, calib.shape[0]
    mat = calib.unfold(1, kh, 1).unfold(2, kw, 1).permute(1, 2, 0, 3, 4).reshape(-1, c * kh * kw)
    e, v = torch.linalg.eigh(mat.mH @ mat)
    keep = e > thresh * thresh * e.max()
    return v[:, keep].mH.reshape(-1, c, kh, kw)


def _random_calib(c, width, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, width, width, dtype=dtype, generator=g)


@pytest.fixture
def eigh_shapes(monkeypatch):
    """The shapes of the matrices handed to torch.linalg.eigh."""
    shapes, eigh = [], torch.linalg.eigh

    def spy(a, *args, **kwargs):
        shapes.append(tuple(a.shape))
        return eigh(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", spy)
    return shapes


@pytest.mark.parametrize("coils, width, k", [(8, 24, 16), (8, 24, 24), (16, 24, 6), (32, 24, 6),
                                             (8, 24, 6), (4, 12, 8)])
def test_kernels_decompose_the_smaller_gram_matrix(eigh_shapes, coils, width, k):
    rows, cols = (width - k + 1) ** 2, coils * k * k
    kernels = esp.espirit_kernels(_random_calib(coils, width, torch.complex64), k, 0.02)
    side = rows if cols > esp.WIDE_GRAM_RATIO * rows else cols  # rows x rows in double: 2x
    assert eigh_shapes == [(side,) * 2]
    assert kernels.shape[1:] == (coils, k, k) and 0 < kernels.shape[0] <= min(rows, cols)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("coils, width, k, thresh", [(4, 12, 8, 0.02), (8, 24, 16, 0.02),
                                                     (16, 24, 6, 0.02), (4, 12, 6, 0.3)])
def test_wide_matrix_kernels_span_the_former_subspace(dtype, coils, width, k, thresh):
    """Same number of kernels, orthonormal, and the same kernel correlations (all the maps use:
    they sum K K^H) as the cols x cols route, to a dtype-derived tolerance: eigh's backward
    error (rows * eps relative to s_max^2) amplified in v = mat^H u / s by s_max / s_kept."""
    calib = _random_calib(coils, width, dtype, seed=coils + k)
    new = esp.espirit_kernels(calib, k, thresh)
    old = _kernels_from_column_gram(calib, k, thresh)
    assert new.shape == old.shape
    mat = calib.unfold(1, k, 1).unfold(2, k, 1).permute(1, 2, 0, 3, 4).reshape(-1, coils * k * k)
    s = torch.linalg.svdvals(mat.to(torch.complex128))
    assert len(s) == (width - k + 1) ** 2 < mat.shape[1]  # a wide matrix: the new route
    amplification = float(s.max() / s[s > thresh * s.max()].min())
    tol = len(s) * torch.finfo(new.real.dtype).eps * amplification
    flat = new.reshape(new.shape[0], -1)
    gram = flat @ flat.mH
    torch.testing.assert_close(gram, torch.eye(len(flat), dtype=dtype), rtol=0, atol=tol)
    r_new, r_old = esp._kernel_correlations(new), esp._kernel_correlations(old)
    assert float((r_new - r_old).abs().max() / r_old.abs().max()) < tol


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_maps_equal_former_route_and_sigpy_with_many_coils(monkeypatch, dtype):
    """16 coils at the default block 24 / kernel 6 give a wide 361 x 576 matrix: the maps equal
    those of the cols x cols route (converged power method: a 64 eps residual over the 0.05
    eigengap) and SigPy's EspiritCalib (SVD of the calibration matrix itself)."""
    _, _, ksp = _phantom(64, 48, 16, seed=2)
    k = torch.from_numpy(ksp).to(dtype)
    new, e_new = espirit_maps(k, coarse=1, return_eigenvalues=True)
    monkeypatch.setattr(esp, "espirit_kernels", _kernels_from_column_gram)
    old, e_old = espirit_maps(k, coarse=1, return_eigenvalues=True)
    eps = torch.finfo(e_new.dtype).eps
    atol = 64 * eps / 0.05 + (1e-5 if dtype == torch.complex64 else 1e-10)
    assert torch.equal(new.abs().sum(0) > 0, old.abs().sum(0) > 0)
    torch.testing.assert_close(new, old, rtol=0, atol=atol)
    torch.testing.assert_close(e_new, e_old, rtol=0, atol=64 * eps)
    ref_maps, ref_eig = sigpy.mri.app.EspiritCalib(
        ksp.astype(np.complex128 if dtype == torch.complex128 else np.complex64),
        show_pbar=False, output_eigenvalue=True).run()
    if dtype == torch.complex128:
        np.testing.assert_allclose(new.numpy(), ref_maps, atol=1e-10)
        np.testing.assert_allclose(e_new.numpy(), ref_eig[0], atol=1e-10)
    else:
        assert float(_aligned_corr(new, torch.from_numpy(ref_maps))[new.abs().sum(0) > 0].min()) \
            > 1 - 1e-4


@pytest.mark.parametrize("coils", [16, 32])  # the cols x cols route, the rows x rows one
@pytest.mark.parametrize("thresh", [1e-3, 1e-4])
def test_complex64_kernels_at_a_small_threshold_stay_orthonormal_and_match_sigpy(thresh, coils):
    """thresh 0.001 (BART's ``ecalib -t 1e-6``; BART's default ``-t 0.001`` is thresh 0.0316)
    keeps eigenvalues down to 1e-6 of the largest: the wide route in complex64 gave kernels far
    from orthonormal (max |K K^H - I| 0.24) and a crop mask 165 pixels off SigPy's (16 coils,
    phantom); it runs in double precision now."""
    _, _, ksp = _phantom(64, 48, coils, noise=1e-3, seed=2)
    k64 = torch.from_numpy(ksp).to(torch.complex64)
    kernels = esp.espirit_kernels(esp.calibration_region(k64 / k64.abs().max(), (24, 24)), 6,
                                  thresh)
    flat = kernels.reshape(kernels.shape[0], -1)
    eye = torch.eye(flat.shape[0], dtype=flat.dtype)
    # unit kernels in float32: rounding of a norm-1 vector of coils * k^2 entries
    assert float((flat @ flat.mH - eye).abs().max()) < 64 * torch.finfo(torch.float32).eps
    maps = espirit_maps(k64, coarse=1, thresh=thresh)
    ref = torch.from_numpy(sigpy.mri.app.EspiritCalib(ksp.astype(np.complex64), thresh=thresh,
                                                      show_pbar=False).run())
    ours, theirs = maps.abs().sum(0) > 0, ref.abs().sum(0) > 0
    assert int((ours ^ theirs).sum()) <= 20  # pixels at the crop's edge (eigenvalue ~ crop)
