"""Read the images reserved for held-out evaluation (never for training, tuning or simulation).

These are the medical images that ship inside installed packages and that the training recipes
do not use (see README, "Where the images come from"):

* MRI (magnitude): ``MR2_UNCR.dcm`` (shoulder, pydicom-data), ``MR-SIEMENS-DICOM-WithOverlays.dcm``
  (abdomen, pydicom-data) and matplotlib's ``s1045.ima.gz`` (a head slice, 256 x 256 raw 16 bit);
* CT (Hounsfield units): ``693_UNCR.dcm`` and ``explicit_VR-UN.dcm`` (pancreas), pydicom-data.

Nothing is downloaded: a missing file raises :class:`FileNotFoundError` naming the package. No
patient attribute is read or returned.
"""

from __future__ import annotations

import gzip

import numpy as np

HELDOUT_MR: tuple[str, ...] = ("MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "s1045.ima.gz")
HELDOUT_CT: tuple[str, ...] = ("693_UNCR.dcm", "explicit_VR-UN.dcm")


def _dicom_path(name: str) -> str:
    from mrirecon.io.ct_sources import packaged_dicom_file

    path = packaged_dicom_file(name)
    if path is None:
        raise FileNotFoundError(f"held-out image {name} is not installed; pip install pydicom-data")
    return path


def _dicom_pixels(name: str) -> np.ndarray:
    import pydicom

    path = _dicom_path(name)
    ds = pydicom.dcmread(path)
    try:
        px = ds.pixel_array.astype(np.float64)
    except Exception as e:  # noqa: BLE001 (any decoder failure)
        raise ValueError(f"{path}: PixelData cannot be decoded: {e}") from e
    if px.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D frame, got PixelData of shape {px.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return px * slope + intercept


def read_heldout_mr(name: str) -> np.ndarray:
    """Magnitude image ``(rows, cols)`` float64, scaled to ``[0, 1]``."""
    if name not in HELDOUT_MR:
        raise ValueError(f"read_heldout_mr: {name!r} is not a held-out MR image; one of {HELDOUT_MR}")
    if name == "s1045.ima.gz":
        from mrirecon.mpl import import_matplotlib

        import_matplotlib()  # an invalid MPLBACKEND failed at this import
        import matplotlib.cbook as cbook

        with cbook.get_sample_data(name) as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # some matplotlib versions hand out the compressed bytes
            raw = gzip.decompress(raw)
        img = np.frombuffer(raw, np.uint16).astype(np.float64)
        if img.size != 256 * 256:
            raise ValueError(f"matplotlib sample {name}: expected 256 x 256 uint16, got {img.size} values")
        img = img.reshape(256, 256)
    else:
        img = _dicom_pixels(name)
    img = np.clip(img - img.min(), 0, None)
    return img / max(float(np.percentile(img, 99.9)), 1e-12)


def read_heldout_ct(name: str) -> np.ndarray:
    """CT image ``(rows, cols)`` float64 in Hounsfield units, clipped to ``[-1024, 3071]``."""
    if name not in HELDOUT_CT:
        raise ValueError(f"read_heldout_ct: {name!r} is not a held-out CT image; one of {HELDOUT_CT}")
    return np.clip(_dicom_pixels(name), -1024.0, 3071.0)
