"""The MRI slice that flows through the pipeline's stages (:mod:`mrirecon.pipeline.stages_mri`),
how a reader's ``KSpace`` becomes one (:func:`make_slice`), its forward operator and the checks
that refuse a slice no stage can use.

Split from ``stages_mri`` (which had reached the project's 600-line limit); the stages import
everything here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from mrirecon.containers import Header
from mrirecon.core.checks import finite_and_nonzero
from mrirecon.functional import ifft2c
from mrirecon.operators import nufft_sense, sense
from mrirecon.pipeline.sampling_mri import partial_fourier_note, sampling_mask, zero_rows_echo
from mrirecon.recon.mri import gridded_coil_images as recon_gridded


@dataclass
class MRISlice:
    """The state of one slice as it flows through the stages.

    Attributes
    ----------
    kspace
        ``(coils, H, W)`` complex; after ``undersample`` only sampled columns are non-zero.
    mask
        ``(W,)`` bool sampled columns (all acquired columns for fully sampled data).
    header
        The volume's header (recon size, padding, geometry).
    reference
        ``(h, w)`` reference magnitude (``reconstruction_rss``) or ``None``.
    noise
        ``(coils, samples)`` noise scan or ``None``.
    maps
        ``(coils, H, W)`` sensitivities after ``calibrate`` (``None`` for methods that do not
        need them).
    image
        ``(H, W)`` complex reconstruction after ``reconstruct``.
    trajectory, density
        Non-Cartesian only: ``(readouts, samples, 2)`` normalised coordinates and
        ``(readouts, samples)`` density weights; ``kspace`` is then ``(coils, readouts,
        samples)`` and ``mask`` is all true.
    full_fov_maps
        ``(coils, H, W)`` uncropped ESPIRiT maps for learned models trained with them (the
        benchmark's per-method calibration, :class:`MRIStages`), else ``None``.
    notes
        What the reader found suspicious but not fatal (``{kind: message}``), e.g. columns the
        mask marks sampled that hold no data; :meth:`MRIStages.data_messages` warns of them.
    calibration
        ``(coils, H, W)`` the lines of a separate reference scan (``KSpace.calibration``), zero
        elsewhere, or ``None``: every preprocess transform of ``kspace`` is applied to it too,
        and ``calibrate`` / GRAPPA calibrate from it (:mod:`mrirecon.pipeline.reference_mri`).
    acquired_rows
        Readout samples as acquired when ``preprocess`` cropped the readout oversampling (exact),
        else ``None``: a learned model's training range is checked against the data as acquired.
    espirit
        ``(band, block, kernel)`` of the Cartesian ESPIRiT calibration ``calibrate`` ran: the
        centre band's columns, the calibration block and the kernel ``(readout, phase
        encoding)`` it used (:func:`mrirecon.calib.espirit_block`), else ``None``.
    espirit_crop
        The ESPIRiT crop ``calibrate`` applied (``calibrate.crop``, or the lower one
        :func:`mrirecon.calib.centre.safe_crop` chose), exactly; ``None`` without Cartesian
        ESPIRiT maps. ``provenance.json`` lists it per slice (``files[].calibration``).
    """

    kspace: Tensor
    mask: Tensor
    header: Header
    file_name: str
    index: int
    reference: Tensor | None = None
    noise: Tensor | None = None
    maps: Tensor | None = None
    image: Tensor | None = None
    num_low_frequencies: int | None = None
    trajectory: Tensor | None = None
    density: Tensor | None = None
    full_fov_maps: Tensor | None = None
    notes: dict[str, str] = field(default_factory=dict)
    calibration: Tensor | None = None
    acquired_rows: int | None = None
    espirit: tuple[int, tuple[int, int], tuple[int, int]] | None = None
    espirit_crop: float | None = None

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image grid."""
        if self.trajectory is None:
            return tuple(self.kspace.shape[-2:])
        return tuple(self.header.encoded_matrix[:2])


def operator(s: MRISlice, maps: Tensor) -> torch.nn.Module:
    """The forward operator of a slice for ``maps`` ``(..., coils, H, W)``: ``sense`` for
    Cartesian data, ``nufft_sense`` for non-Cartesian data."""
    if s.trajectory is None:  # (H, W) for a partial echo: its never-sampled rows stay unsampled
        return sense(maps, sampling_mask(s))
    return nufft_sense(maps, s.trajectory.to(maps.device))


def gridded_coil_images(s: MRISlice) -> Tensor:
    """Zero-filled (Cartesian) or density-compensated gridded (non-Cartesian) coil images."""
    if s.trajectory is None:
        return ifft2c(s.kspace)
    return recon_gridded(s.kspace, s.trajectory, s.image_shape, s.density)


def make_slice(ks, index: int, file_name: str, file_mask: Tensor | None) -> MRISlice:
    """``KSpace`` (one slice) from a reader -> :class:`MRISlice`.

    The mask is ``file_mask``, else the reader's mask, else the acquired (non-padding) columns;
    a per-slice mask ``(slices, W)`` (ISMRMRD with slice-dependent sampling) gives row ``index``.
    """
    data = ks.data[0]
    w = data.shape[-1]
    if getattr(ks, "trajectory", None) is not None:
        ref = ks.reference[0] if ks.reference is not None else None
        from mrirecon.pipeline.checks_mri import lost_readouts, trajectory_warnings
        from mrirecon.pipeline.checks_noncart import check_readouts

        # readouts named as stored, before lost ones are dropped
        check_readouts(data, ks.trajectory, ks.header.encoded_matrix[:2],
                       f"{file_name}: slice {index}")
        data, trajectory, density, lost = lost_readouts(data, ks.trajectory, ks.density, ks.header)
        notes = {**reader_notes(ks.header), **lost,
                 **trajectory_warnings(trajectory, ks.header.encoded_matrix[:2])}
        return MRISlice(data, torch.ones(w, dtype=torch.bool), ks.header, file_name, index, ref,
                        ks.noise, trajectory=trajectory, density=density, notes=notes)
    mask = file_mask if file_mask is not None else ks.mask
    if mask is None:
        mask = ks.header.acquired_columns(w)
    elif mask.ndim == 2 and mask.shape[0] > 1:
        if index >= mask.shape[0]:
            raise ValueError(f"{file_name}: mask: {mask.shape[0]} per-slice rows, slice {index} "
                             "has none")
        mask = mask[index]
    mask = mask.reshape(-1).bool()
    if mask.numel() != w:
        raise ValueError(f"{file_name}: mask: {mask.numel()} entries for {w} k-space columns")
    from mrirecon.pipeline.checks_mri import check_kspace, reconcile_mask
    from mrirecon.training.readout_roll import readout_roll_warning

    where = f"{file_name}: slice {index}"
    check_kspace(data, where)
    header = zero_rows_echo(ks.header, data)  # a fastMRI file's partial echo, as ISMRMRD's
    mask, notes = reconcile_mask(data, mask, where, header.acquired_columns(w))
    notes.update(reader_notes(header))
    # the oversampled readout as read, before preprocess crops it: a half-FOV roll cut away
    notes.update(readout_roll_warning(data, header))
    pf = partial_fourier_note(header)
    if pf:
        notes["partial_fourier"] = pf
    rc, slices = header.extra.get("receiver_channels"), header.extra.get("file_slices")
    # (8, H, W) read as 8 single-coil slices; fastMRI's single-coil files (reconstruction_esc)
    # keep the scanner's channel count, which may equal their slice count
    if rc and slices and rc == slices != data.shape[0] and \
            not header.extra.get("emulated_single_coil"):
        notes["coil_axis"] = (f"the header names {rc} receiver channels, but the k-space has "
                              f"{data.shape[0]} coil(s) and {slices} slices: is the slice axis "
                              "missing (one slice stored as (coils, H, W)) or swapped with the "
                              "coil axis?")
    ref = ks.reference[0] if ks.reference is not None else None
    cal = ks.calibration
    cal = cal[0] if cal is not None and bool((cal[0] != 0).any()) else None
    return MRISlice(data, mask, header, file_name, index, ref, ks.noise, notes=notes,
                    calibration=cal)


def reader_notes(header: Header) -> dict[str, str]:
    """What a reader noted in ``header.extra["<kind>_note"]`` (a second encoding space, a partial
    echo, a short trajectory, rescaled density weights), as ``{kind: message}``."""
    kinds = {"trajectory": "trajectory_extent"}  # the non-Cartesian reader's name for it
    return {kinds.get(key[: -len("_note")], key[: -len("_note")]): str(value)
            for key, value in header.extra.items() if key.endswith("_note") and value}


def column_counts(s: MRISlice) -> tuple[int, int]:
    """``(sampled, acquirable)`` k-space columns of a Cartesian slice (padding excluded)."""
    acquirable = s.header.acquired_columns(s.mask.numel())
    return int((s.mask.reshape(-1).bool().cpu() & acquirable).sum()), int(acquirable.sum())


def check_slice(s: MRISlice, stage: str, reference: bool = True) -> None:
    """Refuse a slice that cannot give a meaningful image, naming the file, slice and reason:
    non-finite k-space, an empty mask, non-finite maps or reference. All-zero k-space is
    :class:`BlankSlices`' to judge (one blank slice of a volume is written as zeros)."""
    where = f"{s.file_name}: slice {s.index}"
    if not bool(s.mask.any()):
        raise ValueError(f"{where}: the sampling mask selects no k-space column ({stage}); "
                         "nothing was acquired to reconstruct")
    finite, _ = finite_and_nonzero(s.kspace)
    if not finite:
        raise ValueError(f"{where}: k-space holds NaN or Inf samples ({stage})")
    # an all-zero slice is BlankSlices' (written as zeros; refused when every slice is)
    if s.maps is not None:
        finite, nonzero = finite_and_nonzero(s.maps)
        if not finite:
            raise ValueError(f"{where}: coil maps hold NaN or Inf values (calibrate)")
        if not nonzero:  # e.g. a noise-only edge slice: loud, but not fatal
            import logging

            logging.getLogger("mrirecon.pipeline").warning(
                "%s: coil maps are all zero (%s); this slice will be zero", where, _zero_maps(s))
    if reference and s.reference is not None and not bool(torch.isfinite(s.reference).all()):
        raise ValueError(f"{where}: the reference image (the fastMRI file's reconstruction_rss, "
                         "or reconstruction_esc of a single-coil file) holds NaN or Inf values; "
                         "metrics would be meaningless (set evaluate.enabled=false to skip them)")


def _zero_maps(s: MRISlice) -> str:
    """Why ``calibrate`` may have given all-zero maps, for the method it ran: ESPIRiT when it
    recorded its block (``s.espirit``), Walsh for other Cartesian maps (the two methods that
    make them); a non-Cartesian slice does not record which. The warning blamed ESPIRiT's
    threshold and advised calibrate.method=walsh when Walsh was in use."""
    if s.espirit is not None:
        return ("calibrate.method=espirit: no signal above the ESPIRiT threshold; try "
                "calibrate.crop=0 or calibrate.method=walsh")
    if s.trajectory is None:
        return ("calibrate.method=walsh: the calibration centre band holds no signal; was the "
                "k-space centre acquired?")
    return ("calibrate: no signal in the gridded k-space centre; with ESPIRiT, try "
            "calibrate.crop=0 or calibrate.method=walsh")


#: The warning of a blank slice (``SliceMessages`` prefixes ``FILE: slice N of M:``).
BLANK_NOTE = ("k-space is all zero; written as zeros (no calibration or reconstruction ran on "
              "it; the other slices are reconstructed as usual)")


def is_blank(s: MRISlice) -> bool:
    """Whether slice ``s``'s k-space is all zero (a slice the scanner or an export left empty)."""
    return not bool((s.kspace != 0).any())


def blank_image(s: MRISlice) -> MRISlice:
    """A blank slice's reconstruction: zeros on the image grid, as no method is run on it."""
    return replace(s, image=torch.zeros(s.image_shape, dtype=s.kspace.dtype,
                                        device=s.kspace.device))


class BlankSlices:
    """The all-zero slices of one volume of ``slices`` slices (``None``: not known, each blank
    slice is refused). A blank slice among others is written as zeros with a warning naming it
    (:data:`BLANK_NOTE`) and is kept from calibration and reconstruction: ESPIRiT would
    calibrate from no data, CG and the networks would reconstruct none, and no estimate of the
    volume sees it. Was: one blank slice failed the whole volume ("slice 0: k-space is all
    zero"), exit 1, no output. Only a volume blank in every slice is refused."""

    def __init__(self, slices: int | None = None) -> None:
        self.slices, self.found = slices, set()

    def mark(self, s: MRISlice, stage: str) -> MRISlice:
        """``s``, with the blank-slice warning (instead of one dead coil per coil) when it is
        blank; raises when every slice of the volume is."""
        if not is_blank(s):
            return s
        self.found.add(s.index)
        if self.slices is None or len(self.found) >= self.slices:
            where = (f"slice {s.index}" if self.slices in (None, 1) else
                     f"all {self.slices} slices")
            raise ValueError(f"{s.file_name}: {where}: k-space is all zero ({stage}); the file "
                             "holds no signal")
        notes = {k: v for k, v in s.notes.items() if k != "dead_coils"}
        note = BLANK_NOTE
        if s.reference is not None and bool((s.reference != 0).any()):  # scored as fastMRI does
            note += "; its reference image is not blank: the metrics score the zeros against it"
        return replace(s, notes={**notes, "blank_slice": note})
