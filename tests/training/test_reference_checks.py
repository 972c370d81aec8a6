"""``mrirecon.training.reference_checks`` and the scale rule beside it
(``mrirecon.data.dataset.off_scale``): the orientation check's correlations and the scale check's
norms are those of the whole volume, computed a chunk of slices at a time (bounded memory: both
run on every evaluated volume, and their whole-volume float64 copies made ``mrirecon run``'s peak
grow with the slices)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import peak_rss_growth


def _direct(a: torch.Tensor, b: torch.Tensor) -> float:
    """The correlation of two whole volumes in one float64 piece (the definition)."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("shape", [(48, 40), (3, 40, 40), (40, 64, 64), (2, 3, 24, 32)])
def test_chunked_correlations_equal_the_whole_volume_definition(shape, monkeypatch):
    """Every transform's correlation equals the whole-volume float64 definition (chunks of a few
    slices forced, so a volume spans several chunks; a 2-D image and a 4-D stack included)."""
    from mrirecon.models.common import dihedral
    from mrirecon.training import reference_checks as rc

    monkeypatch.setattr(rc, "CHUNK_ELEMENTS", 3 * 64 * 64 - 1)  # 2 slices of 64^2 a chunk
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(shape, generator=g) + 0.5
    image = 0.7 * dihedral(reference, 0) + 0.3 * torch.rand(shape, generator=g)
    square = shape[-1] == shape[-2]
    transforms = [t for t in range(8) if square or t < 4]
    got = rc._correlations(reference, image, transforms)
    for t in transforms:
        want = _direct(dihedral(reference, t), image)
        # float64 sums of n products in another order: a few n * eps apart at most
        assert abs(got[t] - want) < 64 * reference.numel() * torch.finfo(torch.float64).eps, t
    assert rc._correlations(torch.ones(shape), image, [0]) == {0: 0.0}  # no variance: 0


def test_off_scale_norms_equal_the_whole_volume_definition(monkeypatch):
    from mrirecon.data import dataset

    monkeypatch.setattr(dataset, "NORM_CHUNK_ELEMENTS", 2 * 40 * 40)  # 2 slices a chunk
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(7, 40, 40, generator=g)
    for scale in (1.0, 25.0, 0.01):
        image = scale * torch.rand(7, 40, 40, generator=g)
        want = float(reference.double().norm() / image.double().norm())
        got = dataset.off_scale(reference, image)
        if dataset.REFERENCE_SCALE_FACTOR ** -1 <= want <= dataset.REFERENCE_SCALE_FACTOR:
            assert got is None
        else:
            assert abs(got - want) < 64 * reference.numel() * torch.finfo(torch.float64).eps * want
    assert dataset.off_scale(torch.zeros(7, 40, 40), reference) is None
    assert dataset.off_scale(reference, torch.full((7, 40, 40), float("inf"))) is None
    assert dataset.off_scale(torch.tensor(3.0), torch.tensor(0.1)) == pytest.approx(30.0)


_VOLUMES = """
from mrirecon.data.dataset import off_scale
from mrirecon.training.reference_checks import orientation_note
g = torch.Generator().manual_seed(0)
reference = torch.rand(64, 256, 256, generator=g)
image = reference.flip(-1).contiguous()  # noted: the reference matches flipped left-right
scaled = 30 * image  # made here: a 16 MiB temporary inside the measured call would count
"""
_CHECKS = {"orientation_note": "orientation_note({r}, {i}, 'it')", "off_scale": "off_scale({r}, {s})"}
#: the growth allowed, in volumes: the regressions held 9 float64 copies (orientation) and one
#: float64 copy (2 volumes, off_scale); the chunked code holds a few MiB plus the allocator's
#: run-to-run noise (4-17 MiB measured for off_scale)
_BOUND = {"orientation_note": 2.0, "off_scale": 1.5}


@pytest.mark.parametrize("check, result", [("orientation_note", "the reference matche"),
                                           ("off_scale", "0.0333")])
def test_the_reference_checks_memory_does_not_grow_with_the_volume(check, result):
    """Peak RSS growth of ``orientation_note`` and ``off_scale`` on a 64 x 256 x 256 float32
    volume (16 MiB) stays under two such volumes (1.5 for ``off_scale``): whole-volume float64 copies (two per
    correlation, nine correlations; one per norm) grew it by up to 9x the volume, so ``mrirecon
    run``'s peak grew with the slice count (40 slices of 320 x 320: 841 instead of 553 MiB)."""
    growth_mib, note = peak_rss_growth(
        _VOLUMES, _CHECKS[check].format(r="reference[:2]", i="image[:2]", s="scaled[:2]"),
        _CHECKS[check].format(r="reference", i="image", s="scaled"))  # warm-up, then measured
    assert note.startswith(result), note
    volume_mib = 64 * 256 * 256 * 4 / 2**20
    assert growth_mib < _BOUND[check] * volume_mib, growth_mib


def test_chunked_shifted_correlations_equal_the_rolled_definition(monkeypatch):
    """A shifted key ``(t, dr, dc)`` is the correlation of ``dihedral(reference, t)`` rolled by
    ``(dr, dc)`` (rows, columns), chunks of a few slices forced."""
    from mrirecon.models.common import dihedral
    from mrirecon.training import reference_checks as rc

    monkeypatch.setattr(rc, "CHUNK_ELEMENTS", 2 * 24 * 24)
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(5, 24, 24, generator=g) + 0.5
    image = 0.7 * reference.roll((1, -1), (-2, -1)) + 0.3 * torch.rand(5, 24, 24, generator=g)
    keys = [(t, dr, dc) for t in range(8) for dr, dc in rc.SHIFTS]
    got = rc._correlations(reference, image, keys)
    for t, dr, dc in keys:
        want = _direct(dihedral(reference, t).roll((dr, dc), (-2, -1)), image)
        assert abs(got[t, dr, dc] - want) < 64 * reference.numel() * torch.finfo(torch.float64).eps
    assert max(got, key=got.__getitem__) == (0, 1, -1)


def _zero_filled(rows: int, cols: int, forward) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reference, image)``: a Shepp-Logan magnitude with a smooth phase, 8 birdcage coils,
    fully sampled k-space made by ``forward`` (numpy, over the last two axes), and its RSS image
    by mrirecon's own ``ifft2c`` (the image a good reconstruction approaches: mri_cs at 4x
    correlated 0.998 with the rotated and shifted reference; 4x zero-filled, 0.82 only)."""
    import numpy as np
    import sigpy.mri as spmri

    from mrirecon.data.anatomy import shepp_logan
    from mrirecon.functional import ifft2c

    yy = np.mgrid[:rows, :cols][0] / max(rows, cols)
    x = shepp_logan((rows, cols)) * np.exp(1j * 0.8 * np.pi * (yy - 0.5) ** 2)
    maps = spmri.birdcage_maps((8, rows, cols), r=1.2)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    k = torch.from_numpy(forward(maps * x))
    image = ifft2c(k).abs().square().sum(0).sqrt()
    return torch.from_numpy(np.abs(x))[None].float(), image[None].float()


_AX = (-2, -1)


def _fft(pre, inverse=False):
    import numpy as np

    f = np.fft.ifft2 if inverse else np.fft.fft2
    return lambda v: np.fft.fftshift(f(pre(v, axes=_AX), axes=_AX, norm="ortho"), axes=_AX)


@pytest.mark.parametrize("rows, cols, which, cause, name", [
    (96, 96, "sign", "opposite FFT sign", "rotated 180 degrees and shifted 1 pixel (rows +1, columns +1)"),
    (63, 63, "sign", "opposite FFT sign", "rotated 180 degrees (correlation"),
    (96, 63, "sign", "opposite FFT sign", "rotated 180 degrees and shifted 1 pixel (rows +1)"),
    (63, 63, "shift", "fftshift / ifftshift in the wrong order", "shifted 1 pixel (rows -1, columns -1)"),
    (96, 63, "shift", "fftshift / ifftshift in the wrong order", "shifted 1 pixel (columns -1)"),
    # no centring before the FFT (fftshift(fft2(x))): the image rolled by half the field of
    # view, N // 2 along odd axes too (was: no word, 7.7 dB through mri_cs)
    (96, 96, "none", "fftshift(fft2(image)) instead of", "rolled by half the field of view (rows 48, columns 48)"),
    (63, 63, "none", "fftshift(fft2(image)) instead of", "rolled by half the field of view (rows 31, columns 31)"),
    (96, 63, "none", "fftshift(fft2(image)) instead of", "rolled by half the field of view (rows 48, columns 31)"),
    (96, 96, "right", None, None), (63, 63, "right", None, None), (96, 63, "right", None, None)])
def test_kspace_of_another_fft_convention_is_named(rows, cols, which, cause, name):
    """k-space made with ``ifft2`` as the forward transform (image rotated 180 degrees about
    N / 2: plus 1 pixel along even axes) or centred with fftshift before the FFT on an odd axis
    (1 pixel off): the orientation note names the transform and the FFT convention. Was: flips
    about the centre pixel only, so the rotation alone scored below as read + 0.2: no word
    (16.5-19.3 dB through mri_cs). k-space made right (fftshift(fft2(ifftshift))) stays silent."""
    import numpy as np

    from mrirecon.training.reference_checks import orientation_note

    forward = {"sign": _fft(np.fft.ifftshift, inverse=True), "shift": _fft(np.fft.fftshift),
               "none": _fft(lambda v, axes: v), "right": _fft(np.fft.ifftshift)}[which]
    note = orientation_note(*_zero_filled(rows, cols, forward), "the reconstruction")
    if cause is None:
        assert note is None, note
    else:
        assert note is not None and cause in note and f"far better {name}" in note, note


def _write_volume(path, change=None, *, size=(64, 48), oversampling=1):
    """A simulated coronal brain (2 slices, 8 coils, fastMRI layout) whose k-space is
    ``change(kspace)`` (numpy, ``(slices, coils, rows, columns)``), its reference as simulated."""
    from mrirecon.data.simulate_mri import simulate_mri_volume
    from mrirecon.io.fastmri import write_fastmri

    v = simulate_mri_volume(0, slices=2, coils=8, size=size, seed=1, orientations="coronal",
                            contrasts="PD", readout_oversampling=oversampling)
    kspace = v.kspace.numpy()
    return write_fastmri(path, change(kspace) if change else kspace, v.header, v.reference.numpy())


def _checker(k):
    """k-space made as fftshift(fft2(image)), without the ifftshift: (-1)^(row + col)."""
    import numpy as np

    rows, cols = np.ogrid[:k.shape[-2], :k.shape[-1]]
    return k * (-1.0) ** (rows + cols)


def _reference_warnings(path, out):
    """The reference warnings of ``mrirecon run mri_cs`` (exit 0) on ``path``."""
    import json

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    config = load_pipeline("mri_cs", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    assert run_pipeline(config, [str(path)], out, progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return [w for w in entry["warnings"] if "reference" in w and "fully sampled" not in w]


@pytest.mark.parametrize("case, name, cause", [
    # k-space flipped along the readout: the image flipped about N / 2 (up-down, 1 row off);
    # correlation 1.00 against 0.81 as read, short of the 0.2 margin: 14.5 dB, no word
    ("readout_flip", "flipped up-down and shifted 1 pixel (rows +1) (correlation 1.00)",
     "reversed along its rows (the readout"),
    # k-space times (-1)^(row + col): the image rolled by half the field of view, quadrants
    # swapped; -0.24 as read, nothing tried matched: 7.7 dB, no word
    ("checker", "rolled by half the field of view (rows 32, columns 24) (correlation 1.00)",
     "fftshift(fft2(image)) instead of fftshift(fft2(ifftshift(image)))"),
    ("right", None, None)])
def test_kspace_flipped_or_rolled_by_half_the_fov_is_reported_by_run(tmp_path, case, name, cause):
    """``mrirecon run mri_cs`` on a simulated brain whose k-space is flipped along the readout
    rows, or multiplied by (-1)^(row + col) (made without the ifftshift): the reference
    warning names the transform (and the FFT centring convention); correct k-space is silent."""
    change = {"readout_flip": lambda k: k[..., ::-1, :].copy(), "checker": _checker,
              "right": None}[case]
    notes = _reference_warnings(_write_volume(tmp_path / "x.h5", change), tmp_path / "out")
    if name is None:
        assert notes == []
        return
    (note,) = notes
    assert f"the reference matches the reconstruction far better {name}" in note, note
    assert cause is None or cause in note, note


@pytest.mark.parametrize("shape", ["shepp-logan", "ellipse", "ring"])
@pytest.mark.parametrize("acceleration, centre", [(1, 1.0), (4, 0.08), (8, 0.04), (8, 0.02)])
def test_correct_symmetric_objects_stay_silent_even_when_poorly_reconstructed(
        shape, acceleration, centre):
    """Objects whose flips match almost as the identity (centred on the FFT centre, where a flip
    and a 1-pixel shift is an exact symmetry), zero-filled down to 8x with a 2 % centre (0.39-0.95
    as read): no transform leaves half the residual as read (the relative rule) nor gains 0.2.
    Here the best transform gains up to +0.09 (a centred ellipse at 8x: above the 0.05 floor)
    and leaves 0.81 or more of the residual as read."""
    import numpy as np
    import sigpy.mri as spmri

    from mrirecon.data.anatomy import shepp_logan
    from mrirecon.functional import ifft2c
    from mrirecon.sampling.cartesian import create_mask_for_mask_type
    from mrirecon.training.reference_checks import orientation_note

    n = 64
    yy, xx = np.mgrid[:n, :n] - n // 2
    disk = (yy / (0.4 * n)) ** 2 + (xx / (0.35 * n)) ** 2 <= 1
    x = {"shepp-logan": shepp_logan((n, n)), "ellipse": disk.astype(float),
         "ring": disk - 0.7 * ((yy / (0.3 * n)) ** 2 + (xx / (0.25 * n)) ** 2 <= 1)}[shape]
    maps = spmri.birdcage_maps((8, n, n), r=1.2)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    k = torch.from_numpy(_fft(np.fft.ifftshift)(maps * x))
    k = k + 0.01 * k.abs().max() * torch.randn(k.shape, dtype=k.dtype,
                                               generator=torch.Generator().manual_seed(0))
    reference = ifft2c(k).abs().square().sum(0).sqrt()
    if acceleration > 1:
        k = k * create_mask_for_mask_type("random", [centre], [acceleration], seed=3)(n).to(k.dtype)
    image = ifft2c(k).abs().square().sum(0).sqrt()
    assert orientation_note(reference[None].float(), image[None].float(), "it") is None
