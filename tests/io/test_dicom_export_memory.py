"""DICOM export of a large volume: no whole-volume float64 copies (``io.dicom_quantise.CHUNK_VOXELS``),
and the files' pixels, rescale and window exactly those of the whole-volume float64 computation
the writer used before (written out here as the reference)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest
import torch

from mrirecon.data import Image, ImageGeometry
from mrirecon.io import dicom_quantise as dicom
from mrirecon.io.dicom import write_dicom_series
from mrirecon.io.dicom_quantise import quantisation_warning
from mrirecon.io.dicom_strings import _ds


# ------------------------------------------------------------------- the reference (as before)

def reference_ct(x: np.ndarray) -> tuple[np.ndarray, str, str, float, float]:
    """The writer's CT quantisation and window on a whole-volume float64 copy."""
    x = np.asarray(x, dtype=np.float64)
    top = 32767
    span = max(abs(float(x.min())), abs(float(x.max())))
    if np.array_equal(x, np.round(x)) and span <= top:
        slope = "1"
    else:
        slope = _ds(span / (top - 0.5) if span > 0 else 1.0)
    stored = np.clip(np.round(x / float(slope)), -top, top).astype(np.int16)
    lo, hi = (float(v) for v in np.percentile(x.ravel(), (0.5, 99.5)))
    center, width = (lo + hi) / 2, max(hi - lo, np.finfo(np.float32).tiny)
    return stored, slope, "0", float(f"{center:.4g}"), float(f"{width:.4g}")


def reference_mr(x: np.ndarray) -> tuple[np.ndarray, str, float, float]:
    x = np.asarray(x, dtype=np.float64)
    hi = float(x.max())
    slope = _ds(hi / (4095 - 0.5) if hi > 0 else 1.0)
    stored = np.clip(np.round(x / float(slope)), 0, 4095).astype(np.uint16)
    values = stored[stored > 0] if np.any(stored > 0) else stored.ravel()
    lo, top = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    return stored, slope, (lo + top) / 2, max(top - lo, 1.0)


def reference_warning(x: np.ndarray, modality: str) -> str | None:
    """quantisation_warning as it was: whole-volume float64."""
    x = np.asarray(x, dtype=np.float64)
    if modality == "CT":
        slope = float(reference_ct(x)[1])
        if slope > dicom.MAX_CT_STEP_HU:
            return (f"DICOM export: the CT values span {x.min():.4g} .. {x.max():.4g} HU, beyond "
                    f"the 16-bit range, so the DICOM files store them in steps of {slope:.3g} HU "
                    "(soft-tissue contrast is a few HU); the NIfTI and HDF5 outputs keep the "
                    "exact values")
        return None
    slope = float(reference_mr(x)[1])
    positive = x[x > 0]
    bulk = float(np.percentile(positive, 99.5))
    levels = bulk / slope
    if levels < dicom.MIN_TISSUE_LEVELS:
        return (f"DICOM export: the MR maximum {x.max():.4g} is {x.max() / bulk:.3g}x the 99.5th "
                f"percentile {bulk:.4g}, so in the 12-bit DICOM files the image below that "
                f"percentile keeps only {int(levels) + 1} grey levels (hot voxels?); the "
                "NIfTI and HDF5 outputs keep the exact values")
    return None


def ct_volume(kind: str, shape=(6, 40, 36)) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    hu = torch.rand(shape, generator=g) * 3000 - 1024  # float32, as the pipeline's HU
    if kind == "integer":
        return hu.round()
    if kind == "wide":  # beyond int16: slope above 1
        hu[0, 0, 0], hu[-1, -1, -1] = 91234.5, -45678.25
    return hu


def mr_volume(shape=(6, 40, 36), hot: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(8)
    x = torch.rand(shape, generator=g) * 3.7e-4
    x[:, :4] = 0  # background
    if hot:
        x[2, 20, 20] = 1.0  # a spike: the tissue keeps few grey levels
    return x


def placed(data: torch.Tensor, modality: str) -> Image:
    geometry = ImageGeometry(spacing=(2.0, 0.8, 0.8), origin=(-10.0, 5.0, 3.0))
    kind = "hu" if modality == "CT" else "magnitude"
    return Image(data, geometry, kind=kind, modality=modality)


# ------------------------------------------------------------------------------- identity

@pytest.mark.parametrize("kind", ["fractional", "integer", "wide"])
def test_ct_series_pixels_rescale_and_window_are_the_float64_ones(tmp_path, kind, monkeypatch):
    monkeypatch.setattr(dicom, "CHUNK_VOXELS", 1000)  # chunks that split slices and rows
    vol = ct_volume(kind)
    stored, slope, intercept, center, width = reference_ct(vol.numpy())
    paths = write_dicom_series(placed(vol, "CT"), tmp_path / "s")
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.PixelData == stored[k].astype("<i2").tobytes()
        assert (str(ds.RescaleSlope), str(ds.RescaleIntercept)) == (slope, intercept)
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (center, width)
    assert (slope == "1") == (kind == "integer")
    assert (float(slope) > 1) == (kind == "wide")


@pytest.mark.parametrize("hot", [False, True])
def test_mr_series_pixels_scale_and_window_are_the_float64_ones(tmp_path, hot, monkeypatch):
    monkeypatch.setattr(dicom, "CHUNK_VOXELS", 1000)
    vol = mr_volume(hot=hot)
    stored, slope, center, width = reference_mr(vol.numpy())
    paths = write_dicom_series(placed(vol, "MR"), tmp_path / "s")
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.PixelData == stored[k].astype("<u2").tobytes()
        assert float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope) == float(slope)
        assert float(ds.WindowCenter) == float(_ds(center))
        assert float(ds.WindowWidth) == float(_ds(width))


@pytest.mark.parametrize("modality, data, warns", [
    ("CT", ct_volume("fractional"), False), ("CT", ct_volume("wide"), True),
    ("MR", mr_volume(), False), ("MR", mr_volume(hot=True), True)])
def test_quantisation_warning_is_the_float64_ones(modality, data, warns, monkeypatch):
    monkeypatch.setattr(dicom, "CHUNK_VOXELS", 1000)
    expected = reference_warning(data.numpy(), modality)
    assert quantisation_warning(data.numpy(), modality) == expected
    assert (expected is not None) == warns


def test_choose_rescale_in_any_precision_equals_its_float64_result(monkeypatch):
    monkeypatch.setattr(dicom, "CHUNK_VOXELS", 333)
    x32 = ct_volume("fractional").numpy()
    for modality in ("CT", "MR"):
        a = dicom.choose_rescale(x32, modality)
        b = dicom.choose_rescale(x32.astype(np.float64), modality)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    ints = np.arange(-50, 50, dtype=np.int32).reshape(2, 5, 10)
    stored, slope, intercept = dicom.choose_rescale(ints, "CT")
    assert (slope, intercept) == ("1", "0")
    np.testing.assert_array_equal(stored, ints)


# ------------------------------------------------------------------------------- memory

def _peak_over_start(fn) -> int:
    """Bytes ``fn()`` allocates at its peak (Python and numpy allocations, tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_write_dicom_series_holds_no_whole_volume_float64_copy(tmp_path, modality):
    """A 32 x 256 x 256 float32 volume (8 MiB): the export holds at most one float64 copy (the
    CT window's percentiles, 2 volumes) and the 16-bit integers (half a volume), below 3 volumes;
    it held 6.5 (two float64 copies, then float64 temporaries of the rescale)."""
    vol = ct_volume("fractional", (32, 256, 256)) if modality == "CT" else mr_volume((32, 256, 256))
    image = placed(vol, modality)
    nbytes = vol.numel() * vol.element_size()
    slack = 4 * dicom.CHUNK_VOXELS * 8 + 4 * 256 * 256 * 2  # float64 chunks, a slice's file
    peak = _peak_over_start(lambda: write_dicom_series(image, tmp_path / "s"))
    assert peak < 3 * nbytes, f"peak {peak / 2**20:.1f} MiB for a {nbytes / 2**20:.0f} MiB volume"
    limit = (2.5 if modality == "CT" else 1.5) * nbytes + slack
    assert peak < limit, f"peak {peak / 2**20:.1f} MiB, expected below {limit / 2**20:.1f} MiB"
    warn_peak = _peak_over_start(lambda: quantisation_warning(vol.numpy(), modality))
    assert warn_peak < (2 if modality == "MR" else 0) * nbytes + slack  # MR: the >0 values
