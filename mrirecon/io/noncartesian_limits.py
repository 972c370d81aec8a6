"""The non-Cartesian reader's refusal of an ``encodedSpace`` matrix that its readouts cannot
resolve or the memory here cannot reconstruct (:func:`check_noncartesian_matrix`), before any
sample is read, NUFFT planned or grid allocated.

The image grid of radial and spiral data is the header's encoded matrix ``H x W``: the NUFFT,
its Toeplitz kernel and the gridded calibration images are all that size, whatever the samples.
A header matrix of 3000 (or 20000, or 10^6) on 32 spokes of 64 samples ran 33 s and 1.4 GB to
fail in the calibration ("no samples within the calibration disc"), asked for a 23.8 GiB
``(40000, 40000)`` Toeplitz kernel, or failed in FINUFFT ("general malloc failure", blamed on
``dataset/data``); none of them named the matrix.
"""

from __future__ import annotations

from mrirecon.containers import Header
from mrirecon.io.errors import memory_bytes

#: The largest encoded matrix (pixels across) per sample of a readout. A readout of ``S``
#: samples whose steps along k-space are at most the Nyquist step ``1 / FOV`` resolves ``S``
#: pixels across when it spans the whole extent (a full spoke; readout oversampling only adds
#: samples), ``2 S`` when it runs from the centre to the edge (centre-out spokes, spiral arms,
#: partial echoes). Gradient-limited readouts step further: ``gamma Gmax dwell FOV`` = 42.58
#: MHz/T x 80 mT/m x 4 us x 0.6 m = 8.2 Nyquist steps a sample at the extremes of clinical
#: hardware (mrirecon's spirals: N / S <= 3 at 40 mT/m, 0.24 m). 2 x 8 = 16: a matrix above
#: 16 samples' worth is beyond what any readout resolves (a corrupt header), not a design.
MAX_MATRIX_PER_SAMPLE = 16

#: Bytes the reconstruction of one slice holds per pixel of the ``H x W`` grid, beside the
#: k-space samples (which the reader's allocation check counts): the Toeplitz kernel's type-1
#: NUFFT onto the ``2H x 2W`` grid in complex128 on FINUFFT's 2x fine grid (``4H x 4W``: 256
#: bytes a pixel), the kernel itself (``2H x 2W`` complex128 then float64: 96); and per coil the
#: image, its ``2H x 2W`` zero-padded copy and its sensitivity map in complex64 (8 + 32 + 8).
GRID_BYTES_PER_PIXEL = 256 + 96
COIL_BYTES_PER_PIXEL = 8 + 32 + 8

MATRIX_FIELD = "ismrmrd_header/encoding/encodedSpace/matrixSize"


def check_noncartesian_matrix(header: Header, samples: int, channels: int, fail) -> None:
    """Refuse (``fail(field, problem)``, the reader's error naming the file) an encoded matrix
    ``(x, y)`` of ``header`` that readouts of ``samples`` samples cannot resolve
    (:data:`MAX_MATRIX_PER_SAMPLE`), or whose per-slice grids for ``channels`` coils
    (:data:`GRID_BYTES_PER_PIXEL`, :data:`COIL_BYTES_PER_PIXEL`) need more than half the memory
    here, as the Cartesian reader refuses a grid above half of it
    (:func:`~mrirecon.io.ismrmrd_raw._check_allocation`)."""
    h, w = (int(n) for n in header.encoded_matrix[:2])
    most = MAX_MATRIX_PER_SAMPLE * samples
    if max(h, w) > most:
        raise fail(MATRIX_FIELD, (
            f"(x, y) = ({h}, {w}) but each readout has {samples} samples, which resolve at most "
            f"{most} pixels across ({MAX_MATRIX_PER_SAMPLE} a sample, allowing centre-out and "
            "gradient-limited readouts): the header's matrix size (or number_of_samples / "
            "discard_pre / discard_post) is corrupt: a full radial spoke has about as many "
            "samples as the matrix has pixels across"))
    need = h * w * (GRID_BYTES_PER_PIXEL + COIL_BYTES_PER_PIXEL * max(channels, 1))
    allowed = memory_bytes() // 2
    if need > allowed:
        raise fail(MATRIX_FIELD, (
            f"(x, y) = ({h}, {w}) with {channels} coils: reconstructing a slice on this grid "
            f"needs about {need / 2**30:.2f} GiB, the memory here allows {allowed / 2**30:.2f} "
            "GiB (half of it): a smaller matrix in the header, fewer coils (coil compression), "
            "or more memory"))
