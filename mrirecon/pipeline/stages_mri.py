"""MRI pipeline stages: small functions with typed input and output, one slice at a time.

``load -> preprocess -> undersample -> calibrate -> reconstruct -> postprocess`` act on a
:class:`~mrirecon.pipeline.slice_mri.MRISlice` (made, checked and given its operator in
:mod:`mrirecon.pipeline.slice_mri`); evaluation and export act on whole (small, reconstructed)
volumes in the runner.

Non-Cartesian slices (radial, spiral: ``trajectory`` set) flow through the same stages; the
only differences are the operator (:func:`~mrirecon.pipeline.slice_mri.operator`: ``nufft_sense`` instead of ``sense``),
coil maps from the gridded centre and gridding (``A^H w y``) where Cartesian data are
zero-filled.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from mrirecon.containers import Header, ImageGeometry
from mrirecon.functional import center_crop, crop_readout, ifft2c, rss
from mrirecon.operators import sense
from mrirecon.sampling.acs import acs_width
from mrirecon.pipeline.schema import (
    CalibrateConfig,
    LoadConfig,
    PipelineConfig,
    PostprocessConfig,
    PreprocessConfig,
    ReconstructConfig,
    UndersampleConfig,
)
from mrirecon.pipeline.sampling_mri import (complete_partial_fourier, drawn_mask_note,
                                           grappa_note, grappa_params,
                                           partial_echo_note, partial_fourier_note,
                                           phase_constrained, pocs_applies,
                                           symmetric_mask, unreachable_share,
                                           unsupported_energy_warning)
from mrirecon.pipeline import echo_noncartesian as echo
from mrirecon.pipeline.reference_mri import calibration_data, compress_coils, refuse_own_acs_model
from mrirecon.pipeline.checks_mri import (coil_warnings, kernel_note, kernel_warning,
                                          remove_dc_offsets, removable_dc_offsets)
from mrirecon.pipeline.checks_noncart import gradient_delay, residual_warning
from mrirecon.pipeline.inert_data import calibration_notes, preprocess_notes
from mrirecon.pipeline.model_range import refuse_other_trajectory
from mrirecon.pipeline.stream import Method, Modality, detect_format
from mrirecon.recon.mri import data_scale as recon_data_scale
from mrirecon.pipeline.slice_mri import (BlankSlices, MRISlice, blank_image, check_slice,
                                       column_counts, gridded_coil_images, is_blank, make_slice,
                                       operator)


def preprocess(s: MRISlice, cfg: PreprocessConfig, *, classical: bool = False) -> MRISlice:
    """Readout oversampling removal, noise prewhitening (with a noise scan), receiver DC offsets,
    coil compression, a radial gradient delay (``preprocess.gradient_delay``).

    ``cfg.remove_oversampling`` (``None``: when ``classical``) crops k-space to the header's
    recon rows in hybrid space (:func:`~mrirecon.functional.crop_readout`) before anything
    else, halving the work of calibration and reconstruction for fastMRI's 2x oversampled
    readouts; the cropped output is unchanged in layout (``postprocess`` crops to the recon
    size either way). Coil compression records the acquired coil count in
    ``header.extra["acquired_coils"]``, which the training-range check names.
    """
    from mrirecon import calib

    kspace, ref = s.kspace, s.calibration  # a separate reference gets every transform too
    remove = classical if cfg.remove_oversampling is None else cfg.remove_oversampling
    cartesian = s.trajectory is None  # non-Cartesian readouts are not cropped on a grid
    rows = s.header.oversampled_readout_rows(kspace.shape[-2]) if remove and cartesian else None
    if rows is not None:
        kspace = crop_readout(kspace, rows)
        ref = None if ref is None else crop_readout(ref, rows)
    if cfg.prewhiten and s.noise is not None:  # training on acquired data whitens alike
        kspace, ref = calib.prewhiten_scan(kspace, ref, noise=s.noise)
    # the receiver channels as acquired (after prewhitening, which rescales a loud one): checked
    # before compression, whose virtual coils hold most power in the first and no duplicates
    dc = removable_dc_offsets(kspace, s.trajectory)  # estimated once: named, then subtracted
    notes = {**s.notes, **coil_warnings(kspace, s.trajectory, dc)}
    kspace = remove_dc_offsets(kspace, s.trajectory, dc)
    header = s.header
    if cfg.coil_compression is not None and cfg.coil_compression < kspace.shape[0]:
        # the acquired count, for the training-range check (training never compresses)
        header = header.with_(extra={**header.extra, "acquired_coils": int(kspace.shape[0])})
        kspace, ref = compress_coils(kspace, ref, cfg.coil_compression, cfg.compression_method)
    s = replace(s, kspace=kspace, calibration=ref, notes=notes, header=header,
                acquired_rows=s.kspace.shape[-2] if rows is not None else s.acquired_rows)
    return gradient_delay(s, cfg.gradient_delay)  # radial spokes: estimated, named, corrected


def undersample(s: MRISlice, cfg: UndersampleConfig) -> MRISlice:
    """Retrospective undersampling with a fastMRI mask function (file-name seeded by default)."""
    if s.trajectory is not None:
        if cfg.enabled:
            raise ValueError("undersample: retrospective masks are Cartesian; non-Cartesian data "
                             "are undersampled by their trajectory (e.g. simulate --readouts)")
        return s
    if not cfg.enabled:
        return replace(s, kspace=s.kspace * s.mask)
    from mrirecon.sampling import apply_mask, create_mask_for_mask_type, file_seed

    mask_fn = create_mask_for_mask_type(cfg.mask, cfg.center_fractions, cfg.accelerations)
    seed = file_seed(s.file_name) if cfg.seed == "file" else cfg.fixed_seed
    padding = (s.header.padding_left, s.header.padding_right)
    try:
        masked, mask, num_low = apply_mask(s.kspace, mask_fn, seed=seed, padding=padding)
    except ValueError as err:  # the mask function's words, without the file or the option
        raise ValueError(f"{s.file_name}: slice {s.index}: undersample (mask {cfg.mask}, "
                         f"accelerations {list(cfg.accelerations)}, center_fractions "
                         f"{list(cfg.center_fractions)}): {err}") from None
    return replace(s, kspace=masked, mask=mask.reshape(-1), num_low_frequencies=num_low)


def calibrate(s: MRISlice, cfg: CalibrateConfig) -> MRISlice:
    """Coil sensitivities from the fully sampled centre (ESPIRiT or Walsh): of the separate
    reference scan when there is one (:func:`~mrirecon.pipeline.reference_mri.calibration_data`),
    else of the imaging k-space. One coil (fastMRI single-coil data) gets the unit map whatever
    ``cfg`` says: its image is the coil's own, as the ``reconstruction_esc`` target and the
    benchmark's single-coil challenge take it (ESPIRiT's crop zeroed its background and its map
    scaled the object by 0.955-1.05 at full sampling; ``none`` left no map at all)."""
    if s.kspace.shape[-3] == 1:
        return replace(s, maps=torch.ones((1, *s.image_shape), dtype=s.kspace.dtype,
                                          device=s.kspace.device))
    if cfg.method == "none":
        return s
    from mrirecon import calib

    if s.trajectory is not None:  # ESPIRiT / Walsh on the gridded centre, at most the grid
        options = ({"kernel_width": cfg.kernel_width, "thresh": cfg.threshold, "crop": cfg.crop}
                   if cfg.method == "espirit" else {})
        maps = calib.noncartesian_maps(s.kspace, s.trajectory, s.image_shape, method=cfg.method,
                                       calib_width=cfg.calib_width, weights=s.density, **options)
        return replace(s, maps=maps)
    kspace, columns = calibration_data(s)
    calib_width = min(cfg.calib_width, acs_width(columns))
    window = calib.centre_window(columns.cpu(), calib_width)
    maps, crop = calib.centre_maps(kspace, window.to(columns.device),
                                   method=cfg.method, calib_rows=cfg.calib_width,
                                   kernel_width=cfg.kernel_width, thresh=cfg.threshold,
                                   crop=cfg.crop, max_cropped_energy=cfg.max_cropped_energy,
                                   return_crop=True)
    if cfg.method == "espirit" and float(crop) < cfg.crop:
        note = (f"calibrate: ESPIRiT's crop {cfg.crop:g} would have zeroed the coil maps over "
                f"more than {100 * cfg.max_cropped_energy:g} % of the "
                f"{calib.centred_width(window)}-column "
                f"centre band's image energy (a band too narrow for its eigenvalues to reach "
                f"the crop inside the object); the crop was lowered to {float(crop)!r}, "
                "exactly (calibrate.crop set to it, with calibrate.max_cropped_energy=null, "
                "repeats this slice's cut, one value for every slice: each slice's crop is in "
                f"provenance.json files[].calibration.espirit_crop; null alone keeps {cfg.crop:g})")
        s = replace(s, notes={**s.notes, "espirit_crop": note})
    if cfg.method == "espirit":  # what kernel_note / kernel_warning report (the band used)
        band = calib.centred_width(window)
        block, kernel = calib.espirit_block(band, kspace.shape[-2], calib_rows=cfg.calib_width,
                                            kernel_width=cfg.kernel_width)
        s = replace(s, espirit=(band, block, kernel), espirit_crop=float(crop))
    return replace(s, maps=maps)


def data_scale(kspace: Tensor, s: MRISlice | None = None) -> float:
    """Intensity scale of a slice: the maximum of the zero-filled RSS image
    (:func:`mrirecon.recon.data_scale`), or of the gridded one for a non-Cartesian slice ``s``.

    Classical methods run on ``y / scale`` so that regularisation weights (``lam``) mean the
    same on every scanner and scaling convention; the result is scaled back.
    """
    if s is None or s.trajectory is None:
        return recon_data_scale(kspace)
    return recon_data_scale(kspace, s.trajectory, s.image_shape, s.density)


def reconstruct(s: MRISlice, cfg: ReconstructConfig, model: torch.nn.Module | None, *,
                partial_fourier: str = "phase_constrained") -> MRISlice:
    """Classical method by name (:func:`mrirecon.recon.run`) or a learned ``model(y, op)``;
    ``partial_fourier``: ``preprocess.partial_fourier`` (:func:`phase_constrained`)."""
    from mrirecon import recon

    y = s.kspace
    if model is not None and not needs_maps(cfg.method, model):  # E2E-VarNet: maps from y's centre
        refuse_own_acs_model(s, cfg.method)
    if model is not None:  # learned models normalise internally (e.g. VarNet's NormUnet)
        # in the model's precision: complex128 k-space (valid fastMRI data) meets float32 weights
        real = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        y = y.to(torch.complex128 if real == torch.float64 else torch.complex64)
        maps = s.maps
        if maps is None:
            maps = torch.ones((y.shape[0], *s.image_shape), dtype=y.dtype, device=y.device)
            maps = maps / (y.shape[0] ** 0.5)
        maps = maps.to(y.dtype)
        # no_grad, not inference_mode: inference tensors carry no version counter, so the
        # operator's cache of the conjugate maps would be rebuilt on every one of the model's
        # gram calls
        # a fastMRI checkpoint gets the centre width the mask function drew, as fastMRI's
        # validation feeds it (load_model sets acs_given); files with a stored mask, and models
        # trained here (which estimate it from the mask), get none
        band = ({"num_low_frequencies": s.num_low_frequencies}
                if getattr(model, "acs_given", False) and s.num_low_frequencies else {})
        with torch.no_grad():
            image = model(y.unsqueeze(0), operator(s, maps.unsqueeze(0)), **band)[0]
        return replace(s, image=image)
    needs_op = recon.registry.needs_operator(cfg.method)
    if s.trajectory is not None and not needs_op:
        raise ValueError(f"reconstruct.method {cfg.method!r} works on Cartesian k-space only; "
                         "for radial / spiral data use an operator-based method (cg_sense, "
                         "l1_wavelet, tv, tgv, ...) or a learned model")
    scale = data_scale(y, s)
    if needs_op:
        if s.maps is None:
            raise ValueError(f"reconstruct.method {cfg.method!r} needs coil maps: set calibrate.method "
                             "to 'espirit' or 'walsh'")
        params = dict(cfg.params)
        if echo.applies(s, cfg, partial_fourier, learned=False):  # radial partial echo
            params["phase"] = echo.symmetric_phase(s, y / scale)
        if phase_constrained(s, cfg, partial_fourier):  # the phase of the symmetric centre
            band = symmetric_mask(s)
            low = recon.run("cg_sense", y * band / scale, sense(s.maps, band),
                            **{k: v for k, v in params.items() if k != "phase"})
            params["phase"] = torch.sgn(low)
        image = recon.run(cfg.method, y / scale, operator(s, s.maps), **params)
    elif cfg.method == "grappa":  # ACS = the fully sampled centre band unless given
        params = grappa_params(s, cfg.params)
        if unreachable_share(s.mask, params["kernel_size"][1]) >= 1:  # the zero-filled image
            raise ValueError(f"{s.file_name}: slice {s.index}: {grappa_note(s, params)}: GRAPPA "
                             "fills nothing; use a wider centre band or cg_sense")
        if pocs_applies(s, cfg, partial_fourier):  # GRAPPA's k-space, then its missing side
            from mrirecon.recon.grappa import grappa

            params = recon.registry.check_params("grappa", params)
            filled = complete_partial_fourier(s, grappa(y / scale, mask=s.mask, **params))
            image = rss(ifft2c(filled), dim=-3)
        else:
            image = recon.run(cfg.method, y / scale, None, mask=s.mask, **params)
    elif pocs_applies(s, cfg, partial_fourier):  # zero_filled_rss of the completed k-space
        image = recon.run(cfg.method, complete_partial_fourier(s, y / scale), None, **cfg.params)
    else:
        image = recon.run(cfg.method, y / scale, None, **cfg.params)
    return replace(s, image=image * scale)


def recon_size(header: Header, cfg: PostprocessConfig, shape: tuple[int, int]) -> tuple[int, int]:
    if cfg.crop == "none":
        return shape
    size = header.recon_size if cfg.crop == "recon_size" else tuple(cfg.crop_size)
    if cfg.crop == "fixed" and (size[0] > shape[0] or size[1] > shape[1]):  # was cut to fit, silently
        raise ValueError(f"postprocess.crop_size {tuple(size)} is larger than the image {tuple(shape)}; "
                         "choose a size that fits or crop: recon_size")
    if cfg.crop == "recon_size" and size[0] > shape[0]:
        raise ValueError(f"ismrmrd_header reconSpace matrixSize x = {size[0]} exceeds the "
                         f"{shape[0]} k-space rows; the header does not match the data")
    if _narrow_fastmri(header, cfg, shape):  # as fastMRI (VarNetModule.test_step): (W, W); was
        # (recon x, W), refused against a W x W target. ISMRMRD keeps it: no readout FOV cut
        return (min(shape[1], shape[0]), shape[1])
    return (min(size[0], shape[0]), min(size[1], shape[1]))


def _narrow_fastmri(header: Header, cfg: PostprocessConfig, shape: tuple[int, int]) -> bool:
    """Whether ``crop: recon_size`` meets a fastMRI file (its reader's ``file_slices`` mark)
    whose k-space is narrower than its recon matrix (fastMRI brain's "FLAIR 203" files)."""
    return (cfg.crop == "recon_size" and header.recon_size[1] > shape[1]
            and "file_slices" in header.extra)


def scored_reference(reference: Tensor | None, header: Header, cfg: PostprocessConfig,
                     shape: tuple[int, int] | None) -> Tensor | None:
    """The reference to score the output of image grid ``shape`` against: a narrow fastMRI
    file's ``(recon x, W)`` one centre-cropped to its ``(W, W)`` output, as ``fastmri.evaluate``
    crops both (scored so while the output was ``(recon x, W)``); else as it is."""
    if reference is None or shape is None or not _narrow_fastmri(header, cfg, shape):
        return reference
    h, w = recon_size(header, cfg, shape)
    if reference.shape[-1] == w and reference.shape[-2] > h:
        return center_crop(reference, (h, w))
    return reference


def _crop_starts(header: Header, cfg: PostprocessConfig, shape: tuple[int, int]):
    """``((rows, cols) of the crop, (first row, first col) in the image grid shape)``. A crop
    inside the recon grid is taken from the recon grid (the encoded grid's fastMRI centre crop,
    first row ``(n - R) // 2``), so a grid still ``N`` rows and one ``preprocess`` cut to the
    ``R`` recon rows (``remove_oversampling``) give the same pixels (``crop: fixed`` took them
    one row apart for an even ``N`` and odd ``R``); any other crop is centred on the image grid."""
    size = recon_size(header, cfg, shape)
    starts = tuple((n - r) // 2 + (r - h) // 2 if h <= r <= n else (n - h) // 2
                   for n, r, h in zip(shape, header.recon_size, size))
    return size, starts


def crop_output(image: Tensor, header: Header, cfg: PostprocessConfig) -> Tensor:
    """``image`` ``(..., n, m)`` cropped as ``postprocess.crop`` says (:func:`_crop_starts`)."""
    (h, w), (top, left) = _crop_starts(header, cfg, tuple(image.shape[-2:]))
    return image[..., top:top + h, left:left + w]


def output_offset(header: Header, cfg: PostprocessConfig, shape: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of the postprocessed image's voxel ``[0, 0]`` on the header's recon
    grid (whose geometry the header holds; its first row is the image grid's ``(n - R) // 2``,
    :attr:`Header.fov_centre`) for an image grid ``shape`` before the crop
    (:func:`_crop_starts`). Zero for ``crop: recon_size`` unless the recon grid is wider than
    the image."""
    _, starts = _crop_starts(header, cfg, shape)
    return tuple(start - (n - r) // 2 for start, n, r in zip(starts, shape, header.recon_size))


def to_magnitude(image: Tensor) -> Tensor:
    """A reconstruction as the ``(H, W)`` magnitude image: coil images ``(coils, H, W)`` (e.g.
    GRAPPA's k-space reconstruction) -> RSS, a complex image -> ``|x|``, a real one as it is.
    The one place where the reconstruct stage's output becomes a magnitude."""
    if image.ndim == 3:
        image = rss(image, dim=0)
    return image.abs() if image.is_complex() else image


def postprocess(s: MRISlice, cfg: PostprocessConfig) -> Tensor:
    """Magnitude cropped to the recon size: ``(h, w)`` float32 on the reference's scale."""
    return crop_output(to_magnitude(s.image), s.header, cfg).float()


def zero_filled_preview(s: MRISlice, cfg: PostprocessConfig) -> Tensor:
    """RSS of the zero-filled undersampled data, cropped like the output (for the report)."""
    return crop_output(rss(gridded_coil_images(s), dim=0), s.header, cfg).float()


# ---- the stage protocol -----------------------------------------------------------------------

#: Classical methods that reconstruct through ``sense(maps, mask)`` and need coil maps.
SENSE_METHODS = ("zero_filled", "cg_sense", "l1_wavelet", "tv")


def needs_maps(method: str, model: nn.Module | None) -> bool:
    """Whether ``method`` (learned: ``model``) reconstructs with coil maps from ``calibrate``."""
    if model is None:  # every classical method that takes an operator reconstructs via sense()
        from mrirecon.recon.registry import needs_operator

        return method in SENSE_METHODS or needs_operator(method)
    return model_takes_maps(model)


def model_takes_maps(model: nn.Module) -> bool:
    """Whether learned ``model`` reconstructs with the coil maps of ``calibrate`` (E2E-VarNet,
    which has a ``sensitivity`` network, estimates its own from the k-space's centre)."""
    return getattr(model, "sensitivity", None) is None


class _MRISource:
    """The slices of one fastMRI, BART (``.cfl``) or ISMRMRD file as :class:`MRISlice`\\ s, read
    one at a time (ISMRMRD: :func:`~mrirecon.io.ismrmrd_stream.open_ismrmrd`, which holds 3-D slabs
    whole, and of non-Cartesian data the trajectory and weights every slice shares)."""

    def __init__(self, path: Path, fmt: str, load: LoadConfig | None = None) -> None:
        from mrirecon.io import FastMRIFile
        from mrirecon.io.bart_cfl import BartKSpaceFile
        from mrirecon.io.ismrmrd_stream import open_ismrmrd

        self.path, self.info = path, {}
        if fmt in ("fastmri", "bart"):
            if load is not None and load.counters:  # the whole volume was read, exit 0
                what = "a fastMRI file" if fmt == "fastmri" else "a BART array"
                chosen = ", ".join(f"load.counters.{k}={v}" for k, v in load.counters.items())
                raise ValueError(f"{path}: {chosen} selects acquisitions of ISMRMRD raw data, but "
                                 f"this is {what}, which has no such counters (every slice "
                                 f"would be reconstructed); drop load.counters for {fmt} inputs "
                                 "(run them apart from the ISMRMRD files)")
            self._file = FastMRIFile(path) if fmt == "fastmri" else BartKSpaceFile(path)
            self._vol = None
            self._n = len(self._file)
            self._mask = self._file.sampling_mask() if self._file.mask is not None else None
            self.info["reference_key"] = self._file.reference_key
        else:
            self._file, self._mask = None, None
            load = load or LoadConfig()
            self._vol = open_ismrmrd(path, counters=dict(load.counters) or None,
                                     include_calibration=load.include_calibration)
            self._n = len(self._vol)

    def __len__(self) -> int:
        return self._n

    def read(self, i: int) -> MRISlice:
        if self._file is not None:
            ks = self._file.read_slice(i)
        else:
            ks = self._vol.read(i)
        self.info.setdefault("header", ks.header)
        return make_slice(ks, i, self.path.name, self._mask)

    def held_bytes(self) -> int:
        """Bytes of input held for the whole volume (the optional member of
        :class:`~mrirecon.pipeline.stream.SliceSource`): an ISMRMRD file read whole (3-D slab)
        holds its k-space, a non-Cartesian one its trajectory and weights; fastMRI slices and
        streamed Cartesian ISMRMRD slices are read one at a time (0)."""
        return 0 if self._vol is None else self._vol.held_bytes()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def gets_full_fov_maps(s: MRISlice, method: Method) -> bool:
    """Whether ``method`` reconstructs slice ``s`` with its uncropped (crop 0) maps when the
    stages make them (``per_method_maps``, the benchmark): a learned model that takes them."""
    return (method.model is not None and getattr(s, "full_fov_maps", None) is not None
            and getattr(method.model, "full_fov_maps", True))


class MRIStages(Modality[MRISlice]):
    """The MRI stage protocol (:class:`~mrirecon.pipeline.stream.Modality`) over this module's
    stage functions, configured by a pipeline config.

    ``classical``: whether the method is classical (readout oversampling is then removed unless
    ``preprocess.remove_oversampling`` says otherwise). ``per_method_maps``: the benchmark's
    calibration for several methods at once: coil maps only when one of ``methods`` needs them,
    uncropped maps for learned models trained with them (``full_fov_maps``), and each method gets
    the maps it needs. Without it (``mrirecon run``) the maps are those the ``calibrate`` config
    asks for. One coil gets the unit map either way (:func:`calibrate`).
    """

    def __init__(self, config: PipelineConfig, *, device: str = "cpu", classical: bool = True,
                 per_method_maps: bool = False, methods: tuple[Method, ...] = ()) -> None:
        self.config, self.device, self.classical = config, device, classical
        self.per_method_maps = per_method_maps
        self.need_maps = any(needs_maps(m.config.method, m.model) for m in methods)
        self.need_full_fov = any(m.model is not None and needs_maps(m.config.method, m.model)
                                 and getattr(m.model, "full_fov_maps", True) for m in methods)

    def load(self, path: Path) -> _MRISource:
        fmt = detect_format(path, self.config.load.format)
        if fmt not in ("fastmri", "ismrmrd", "bart"):
            raise ValueError(f"{path}: an MRI pipeline needs fastMRI, ISMRMRD or BART (.cfl) "
                             f"k-space, found {fmt}")
        source = _MRISource(path, fmt, self.config.load)
        self.blank = BlankSlices(len(source))  # the volume's all-zero slices
        return source

    def preprocess(self, s: MRISlice) -> MRISlice:
        return preprocess(s, self.config.preprocess, classical=self.classical)

    def undersample(self, s: MRISlice) -> MRISlice:
        und = self.config.undersample
        if und.enabled and s.trajectory is None:
            have, acquirable = column_counts(s)
            if have < acquirable:  # a second mask on top: empty columns as measured zeros
                raise ValueError(f"{s.file_name}: slice {s.index}: undersample: the k-space is already "
                                 f"undersampled ({have} of {acquirable} columns hold data, "
                                 f"{acquirable / max(have, 1):.1f}x); a retrospective mask on top "
                                 "would count the missing columns as measured zeros: set "
                                 "undersample.enabled=false")
        s = undersample(s, und)
        if und.enabled and s.trajectory is None and not bool(s.mask.any()):  # the options' doing
            raise ValueError(f"{s.file_name}: slice {s.index}: undersample: acceleration(s) "
                             f"{list(und.accelerations)} with centre fraction(s) "
                             f"{list(und.center_fractions)} keep no column of the "
                             f"{s.mask.numel()}: lower the acceleration")
        check_slice(s, "undersample", self.config.evaluate.enabled)
        return getattr(self, "blank", BlankSlices()).mark(s, "undersample")

    def calibrate(self, s: MRISlice) -> MRISlice:
        if is_blank(s):  # no data to calibrate from: written as zeros (BlankSlices)
            return s
        if not self.per_method_maps:
            if self.classical and not needs_maps(self.config.reconstruct.method, None):
                return s  # zero_filled_rss, GRAPPA: no maps to make (ESPIRiT failed them by
            s = calibrate(s, self.config.calibrate)  # a band too narrow for its kernels)
        elif not self.need_maps:
            return s
        else:
            s = calibrate(s, self.config.calibrate)
            if self.need_full_fov:  # the trainer's ESPIRiT keeps the whole field of view
                full = calibrate(s, replace(self.config.calibrate, crop=0.0)).maps
                s = replace(s, full_fov_maps=full)
        check_slice(s, "calibrate", False)
        return s

    def table_value(self, s: MRISlice) -> float:
        """The slice's acceleration, columns / sampled columns (Cartesian only)."""
        if s.trajectory is not None:
            raise ValueError(f"{s.file_name}: slice {s.index}: reconstruct.params_by_acceleration: "
                             "non-Cartesian data have no acceleration (columns / sampled columns) "
                             "to choose an entry by; set reconstruct.params_by_acceleration={} "
                             "and the settings in reconstruct.params (or run mri_radial_cs)")
        sampled, acquirable = column_counts(s)
        return acquirable / max(sampled, 1)

    def data_messages(self, s: MRISlice) -> tuple[dict[str, str], dict[str, str]]:
        echo_warnings, notes = self._echo(s)  # a radial partial echo's, once per slice
        warned = dict(s.notes)  # with preprocess's coil checks
        rc = self.settings(s, self.config.reconstruct).config  # the slice's table entry
        if rc.method == "grappa" and s.trajectory is None:  # columns its kernel cannot reach
            try:
                note = grappa_note(s, grappa_params(s, rc.params))
            except ValueError:  # a band too narrow for any kernel: reconstruct refuses it
                note = None
            if note:
                warned["grappa_unfilled"] = note + "; cg_sense fills them"
        pf = self.config.preprocess.partial_fourier
        pc = phase_constrained(s, rc, pf)
        pocs = self.classical and pocs_applies(s, rc, pf)
        if "partial_fourier" in warned:  # say how this run fills the missing side
            warned["partial_fourier"] = partial_fourier_note(s.header, phase_constrained=pc, pocs=pocs)
        if "partial_echo" in warned and s.trajectory is None:  # and how this run fills it
            warned["partial_echo"] = partial_echo_note(s, rc.method, not self.classical, pc, pocs)
        elif "partial_echo" in warned:  # radial: a warning unless filled or measured (a note)
            del warned["partial_echo"]
            warned.update(echo_warnings)
        if (warning := kernel_warning(s, self.config.calibrate)) is not None:
            warned["espirit_kernel"] = warning  # degenerate: instead of the clamp's note
        elif (note := kernel_note(s, self.config.calibrate)) is not None:
            notes["espirit_kernel"] = note
        notes.update(calibration_notes(s, self.config.calibrate))
        notes.update(preprocess_notes(s, self.config, classical=self.classical))
        if (drawn := drawn_mask_note(s, self.config.undersample)) is not None:
            notes["undersample_drawn"] = drawn
        cc, coils = self.config.preprocess.coil_compression, s.kspace.shape[0]
        if cc is not None and coils < cc:  # preprocess compresses to at most cc coils
            notes["coil_compression"] = (f"preprocess.coil_compression={cc}: the data hold {coils} "
                                         f"coil(s), fewer than {cc}, so all {coils} were kept "
                                         "uncompressed")
        return warned, notes

    def _echo(self, s: MRISlice) -> tuple[dict[str, str], dict[str, str]]:
        rc, learned = self.config.reconstruct, not self.classical
        phase = echo.applies(s, rc, self.config.preprocess.partial_fourier, learned)
        return echo.echo_messages(s, rc.method, learned, phase)

    def to_device(self, s: MRISlice) -> MRISlice:
        def move(t):
            return None if t is None else t.to(self.device)

        return replace(s, kspace=move(s.kspace), mask=move(s.mask), maps=move(s.maps),
                       full_fov_maps=move(s.full_fov_maps), calibration=move(s.calibration))

    def reconstruct(self, s: MRISlice, method: Method) -> MRISlice:
        if is_blank(s):  # no method sees a blank slice (BlankSlices)
            return blank_image(s)
        refuse_other_trajectory(self.config, method.model, s)  # VarNet on radial data, ...
        if self.per_method_maps:
            if not needs_maps(method.config.method, method.model):
                s = replace(s, maps=None)
            elif gets_full_fov_maps(s, method):
                s = replace(s, maps=s.full_fov_maps)
        out = reconstruct(s, method.config, method.model,
                          partial_fourier=self.config.preprocess.partial_fourier)
        classical = method.model is None and needs_maps(method.config.method, None)
        if classical and (msg := unsupported_energy_warning(s, out.image, method.config.method)):
            self._say(method.name, s.index, "unsupported_energy", msg)
        if msg := residual_warning(s, out.image, self.config.preprocess.prewhiten):  # non-Cartesian
            self._say(method.name, s.index, "data_residual", msg)
        return out

    def postprocess(self, s: MRISlice) -> Tensor:
        self.image_grid = tuple(s.image.shape[-2:])
        return postprocess(replace(s, image=s.image.cpu()), self.config.postprocess)

    def output_geometry(self, header: Header) -> ImageGeometry:
        """The header's geometry moved to the postprocessed image's grid (a crop other than
        ``recon_size``, or an image larger than the recon grid, starts elsewhere)."""
        grid = getattr(self, "image_grid", None)
        if grid is None:
            return header.geometry
        return header.geometry.shifted(*output_offset(header, self.config.postprocess, grid))

    def reference(self, s: MRISlice) -> Tensor | None:
        return scored_reference(s.reference, s.header, self.config.postprocess,
                                getattr(self, "image_grid", None))

    def preview(self, s: MRISlice) -> Tensor | None:
        return zero_filled_preview(s, self.config.postprocess).cpu()
