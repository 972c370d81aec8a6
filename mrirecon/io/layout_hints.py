"""Other datasets' layouts met where a mrirecon layout is expected, and how to convert them.

The readers refuse these files; the words here say what the file most likely is and the
conversion that makes it readable (audit a21: public datasets through ``mrirecon run``):

* a fastMRI-layout file whose ``ismrmrd_header`` names a non-Cartesian trajectory (radial
  spokes stored ``(slices, coils, spokes, samples)``, as stack-of-stars sets such as fastMRI
  breast keep them) or EPI with ramp sampling (fastMRI prostate DWI):
  :func:`fastmri_trajectory_problem`, read as a Cartesian grid before;
* 5-D k-space with a leading averages axis (fastMRI prostate) and datasets of other releases the
  reader does not use (``calibration_data``, ``coil_sens_maps``: :func:`unread_datasets_note`,
  passed over without a word before);
* float k-space with real and imaginary parts interleaved on the last axis (Calgary-Campinas
  ``(slices, H, W, 2 x coils)``) and MATLAB ``-v7.3`` complex, a compound ``real`` / ``imag``
  dtype in MATLAB's reversed axis order (CMRxRecon): :func:`kspace_dtype_hint`;
* converted arrays without an ``ismrmrd_header`` (:data:`MISSING_HEADER_HINT`) and HDF5 files
  of no layout mrirecon reads (:data:`READ_HDF5_LAYOUTS`).
"""

from __future__ import annotations

import numpy as np

from mrirecon.containers import Header
from mrirecon.io.ismrmrd_encoding import ramp_sampling
from mrirecon.io.ismrmrd_header import NONCARTESIAN_KINDS

#: What ``FastMRIFile`` adds to "ismrmrd_header: dataset missing".
MISSING_HEADER_HINT = (
    "the header gives the matrix, FOV and padding: write the k-space with "
    "mrirecon.io.write_fastmri and a Header (README: MRI from your own k-space)")

#: The HDF5 layouts :func:`mrirecon.io.probe.hdf5_layout` tells apart, for its refusal.
READ_HDF5_LAYOUTS = (
    "mrirecon reads fastMRI (a `kspace` dataset (slices, coils, H, W) or (slices, H, W) with an "
    "`ismrmrd_header`), ISMRMRD raw data (a `dataset` group holding `data` and `xml`) and "
    "LoDoPaB-layout CT sinograms (`observation`, `data` or `sinogram`); convert other layouts "
    "with mrirecon.io.write_fastmri (README: MRI from your own k-space) or "
    "mrirecon.io.lodopab.write_lodopab (CT from your own sinogram)")


def fastmri_trajectory_problem(header: Header) -> str | None:
    """Why a fastMRI-layout file cannot hold k-space of ``header``'s ``encoding/trajectory``
    (one of :data:`~mrirecon.io.ismrmrd_header.NONCARTESIAN_KINDS`, any case), else ``None``.
    The layout is a Cartesian grid: radial or spiral readouts stored in it were read as
    phase-encoding lines (exit 0, an image uncorrelated with the object)."""
    kind = str(header.extra.get("trajectory", "")).strip()
    if kind.lower() == "epi" and (ramped := ramp_sampling(header)):  # as check_epi refuses it
        return (f"'epi' with {ramped}: the fastMRI layout holds Cartesian k-space, and "
                "readouts sampled on the gradient ramps are not on its grid (fastMRI "
                "prostate DWI's own code regrids them, trapezoidal_regridding, and corrects the "
                "Nyquist ghost first); mrirecon does neither, so the image would be blurred and "
                "ghosted: write the regridded, ghost-corrected k-space with encoding/trajectory "
                "'cartesian'")
    if kind.lower() not in NONCARTESIAN_KINDS:
        return None
    return (f"{kind!r}: the fastMRI layout holds Cartesian k-space (slices, coils, H, W); "
            f"{kind} readouts cannot be placed without their k-space coordinates: write them as "
            "ISMRMRD raw data with traj (mrirecon.io.write_ismrmrd_noncartesian), which "
            "mrirecon reads as non-Cartesian data")


def kspace_dtype_hint(dtype: np.dtype, shape: tuple[int, ...]) -> str:
    """The conversion to add to "expected complex64 samples, got dtype ..." (``""`` when none
    applies): real / imaginary parts interleaved on an even last axis of floats, or a compound
    ``(real, imag)`` dtype (MATLAB ``-v7.3`` complex, its axes reversed)."""
    if dtype.kind == "c" and len(shape) == 5:
        return ("; 5-D k-space with a leading axis of averages (fastMRI prostate stores "
                "(averages, slices, coils, H, W)): combine the averages as the dataset's own code "
                "does (DWI also needs its EPI regridding) and write (slices, coils, H, W) with "
                "mrirecon.io.write_fastmri")
    names = tuple(n.lower() for n in dtype.names or ())
    if len(names) == 2 and names[0] in ("real", "r", "re") and names[1] in ("imag", "i", "im"):
        real, imag = dtype.names
        return (f"; a compound real/imag dtype (MATLAB -v7.3 complex): k = k[{real!r}] + 1j * "
                f"k[{imag!r}]; MATLAB's axes arrive reversed (its (H, W, coils, slices) reads as "
                "(slices, coils, W, H): np.swapaxes(k, -1, -2); README: MRI from your own "
                "k-space), then write it with mrirecon.io.write_fastmri")
    if dtype.kind == "f" and len(shape) == 5 and shape[-1] == 2:
        return ("; real/imag pairs on a last axis of 2 (the layout of fastMRI's "
                "transforms.to_tensor, (slices, coils, H, W, 2))? k = k[..., 0] + 1j * k[..., 1] "
                "gives (slices, coils, H, W); write it with mrirecon.io.write_fastmri")
    if dtype.kind == "f" and shape and shape[-1] % 2 == 0:
        return ("; real/imag interleaved on the last axis (Calgary-Campinas stores (slices, H, "
                "W, 2 x coils))? k = k[..., 0::2] + 1j * k[..., 1::2], then np.moveaxis(k, -1, "
                "1) gives (slices, coils, H, W); write it with mrirecon.io.write_fastmri")
    return ""


#: Datasets of other fastMRI releases that the fastMRI reader does not use, and what they are.
UNREAD_DATASETS = {
    "calibration_data": "a separate reference scan (fastMRI prostate)",
    "coil_sens_maps": "stored coil sensitivities",
}


def unread_datasets_note(keys) -> str | None:
    """The note for a fastMRI-layout file holding :data:`UNREAD_DATASETS` (``None`` without):
    they were passed over without a word, and a prostate file whose k-space has no fully sampled
    centre failed in ESPIRiT with advice that could not work (Walsh: all-zero maps)."""
    found = [f"{k} ({UNREAD_DATASETS[k]})" for k in UNREAD_DATASETS if k in keys]
    if not found:
        return None
    return (f"the file holds {', '.join(found)}, which the fastMRI reader does not use: the coil "
            "maps are calibrated from the k-space's own fully sampled centre band, as the "
            "calibrate settings say (k-space without one cannot be calibrated here: write the "
            "reference as ISMRMRD raw data's calibration lines, ACQ_IS_PARALLEL_CALIBRATION with "
            "calibrationMode separate, which mrirecon calibrates from)")
