"""A reference-free check of readout-oversampled Cartesian k-space for the half-field-of-view
roll of ``fftshift(fft2(image))`` written without the ``ifftshift``: k-space times
``(-1)^row`` (or ``(-1)^(row + column)``), whose image is rolled by half the field of view.

On such data the object sits at the readout's ends, in the oversampled region, and the crop to
the recon rows (``preprocess.remove_oversampling``, ``postprocess.crop: recon_size``) keeps the
oversampled air between: the image written is cut, exit 0. A reference, when the file has one,
cannot tell (``training.reference_checks.orientation_note``: no roll of it matches that crop), so
the k-space itself is read: the energy of the zero-filled image per readout row (one 1-D inverse
FFT along the readout, Parseval across phase encoding) inside the crop window as stored against
the same rolled by half the readout. Tissue in the oversampled region is legitimate (oversampling
exists to keep it from wrapping: a leg filling the whole readout puts about half the energy
outside the window), so only energy far more concentrated outside the window than inside, and
brought into it by the roll, is warned of (:data:`ROLL_OUTSIDE_SHARE`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.containers import Header

#: Share of the zero-filled image's energy outside the readout crop window (and, rolled by half
#: the readout, inside it; on 2x oversampling the two are one figure) above which readout-
#: oversampled k-space is called rolled by half the field of view. Calibrated on correct data,
#: 120 slices of simulated brains (``simulate mri``, 2x oversampling, 64 x 48 .. 320 x 320,
#: axial / coronal / sagittal, T1 / T2 / PD / FLAIR, SNR 5 .. 40 dB and noise-free, fully
#: sampled and 4x / 8x at centre fractions 0.08 / 0.04): at most 0.44 outside (a 96 x 80
#: sagittal slice whose 544 mm readout holds the neck: legitimate tissue in the oversampled
#: region), median 0.05. Hand-made correct cases: the recon rows' image tiled over the whole
#: oversampled readout (a limb filling it) 0.50, the image stretched 2x along the readout at most
#: 0.32, shifted by 1/8 / 1/4 of the recon rows at most 0.48 / 0.52, noise alone 0.50. The same
#: slices rolled (rows only or both axes: the same row energies) read at least 0.56 (that
#: sagittal slice; 3 of 120 below 0.7, each with 0.35-0.44 outside as simulated), 0.87 and more at
#: 5 dB, median 0.95. 0.7 keeps 0.18 above every correct case and misses only rolls of objects
#: that fill much of the oversampled readout themselves.
ROLL_OUTSIDE_SHARE = 0.7


def row_energy(kspace: Tensor) -> Tensor:
    """``(H,)`` float64: the zero-filled coil images' energy per readout row of Cartesian
    k-space ``(coils, H, W)``, summed over the coils and the columns, from the columns that hold
    data only. One centred 1-D inverse FFT along the readout (:func:`~mrirecon.functional.
    ifftc`): across phase encoding Parseval gives the image's row energy without the second
    FFT."""
    from mrirecon.functional import ifftc

    cols = (kspace != 0).flatten(0, -3).any(0).any(0)  # (W,) columns holding data
    hybrid = ifftc(kspace[..., cols], dim=-2)
    return hybrid.abs().square().flatten(0, -3).sum(0).sum(-1).double().cpu()


def roll_shares(energy: Tensor, rows: int) -> tuple[float, float, int]:
    """``(outside, rolled_inside, start)``: the shares of the row energy ``energy`` ``(H,)``
    outside the crop window of ``rows`` rows (``center_crop``'s, from ``start = (H - rows) //
    2``) and inside it once rolled by half the readout (``H // 2``)."""
    h = energy.numel()
    start = (h - rows) // 2
    total = float(energy.sum())
    if not 0 < total < float("inf"):  # blank, or NaN / Inf samples (check_slice refuses those)
        return 0.0, 0.0, start
    inside = float(energy[start:start + rows].sum())
    rolled = float(torch.roll(energy, h // 2)[start:start + rows].sum())
    return 1 - inside / total, rolled / total, start


def readout_roll_warning(kspace: Tensor, header: Header) -> dict[str, str]:
    """``{"readout_roll": message}`` when readout-oversampled k-space ``(coils, H, W)`` (the
    header's encoded readout above its recon rows, :meth:`~mrirecon.containers.Header.
    oversampled_readout_rows`) holds more than :data:`ROLL_OUTSIDE_SHARE` of its zero-filled
    image energy outside the readout crop window and as much inside it once rolled by half the
    readout (:func:`roll_shares`), else ``{}``; also ``{}`` without oversampling, where a roll
    cannot be told from off-centre anatomy."""
    rows = header.oversampled_readout_rows(kspace.shape[-2])
    if rows is None or not bool((kspace != 0).any()):
        return {}
    h = kspace.shape[-2]
    outside, rolled, start = roll_shares(row_energy(kspace), rows)
    if min(outside, rolled) <= ROLL_OUTSIDE_SHARE:
        return {}
    return {"readout_roll": (
        f"{100 * outside:.0f} % of the image energy lies outside the readout crop (rows "
        f"{start}..{start + rows - 1} of {h}, the recon rows of the oversampled readout) and "
        f"rolling the image by half the readout ({h // 2} rows) brings {100 * rolled:.0f} % "
        "inside: was the k-space made as fftshift(fft2(image)) instead of "
        "fftshift(fft2(ifftshift(image))) (k-space times (-1)^row, or (-1)^(row + column): the "
        "image comes out rolled by half the field of view, the object at the readout's ends), or "
        "is an image-domain fftshift missing? The crop to the recon rows keeps the oversampled "
        "air between the ends and cuts the object away. Multiply the k-space by (-1)^row (and by (-1)^column "
        "too if the image then shows its left and right halves swapped), or make it as "
        "fftshift(fft2(ifftshift(image)))")}


def check_readout_roll(kspace: Tensor, header: Header, where: str) -> None:
    """Refuse training data (``where`` names the file and slice) whose k-space
    :func:`readout_roll_warning` calls rolled by half the field of view: the readout crop keeps
    the oversampled air, and the model would learn to map it to the reference. Such files
    trained with exit 0 and no word: no roll of the reference matches the cropped image, so the
    reference checks could not tell."""
    if note := readout_roll_warning(kspace, header).get("readout_roll"):
        raise ValueError(f"{where}: kspace: {note}. Training would teach the model to map what "
                         "the crop keeps to the reference: correct the k-space, or remove the file")
