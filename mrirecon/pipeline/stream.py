"""The one streaming slice loop, shared by ``mrirecon run`` and ``mrirecon bench``.

A modality (MRI: :class:`~mrirecon.pipeline.stages_mri.MRIStages`, CT:
:class:`~mrirecon.pipeline.stages_ct.CTStages`) implements the stage protocol :class:`Modality`
with the same signatures for both; :func:`stream_volume` drives it over one input volume::

    load ─► preprocess ─► undersample ─► calibrate ─► [prepare_model] ─► reconstruct ─► postprocess
    (one slice at a time)                              (once per volume)  (per method)   (per method)

Evaluation and export act on the small, reconstructed volume afterwards: the pipeline runner
(:mod:`mrirecon.pipeline.volume`) writes files, the benchmark (:mod:`mrirecon.bench`) writes
table records. Only the postprocessed outputs (and, for the report, the references and
previews) of the current volume are kept; every other per-slice buffer is freed after its
slice, so memory stays flat in the number of slices.

``prepare_model(model, slices)`` is the volume-level hook: it receives the learned model of a
method and a re-iterable of the volume's undersampled, calibrated slices (each iteration
re-reads and re-prepares them, so nothing is held unless the hook keeps it) and returns the
model to reconstruct this volume with. The default is the identity and never iterates, so it
costs nothing; a per-volume adaptation (self-supervised fine-tuning on the volume's own data)
returns an adapted copy there, and the original model is used again for the next volume.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from mrirecon.pipeline.param_tables import SliceSettings, for_slice, model_settings, table_of
from mrirecon.pipeline.schema import ReconstructConfig

#: The stages in the order the code runs them (``mrirecon run --help`` lists them from here).
STAGES = ("load", "preprocess", "undersample", "calibrate", "reconstruct", "postprocess",
          "evaluate", "export")

S = TypeVar("S")

log = logging.getLogger("mrirecon.pipeline")

#: A one-slice input whose slice took at least this many seconds says so too (every input of
#: more than one slice says its pace after its first slice, :func:`pace_line`).
PACE_SECONDS = 60.0


@dataclass(frozen=True)
class Method:
    """One reconstruction of every slice: a display ``name``, the ``reconstruct`` stage config and
    the learned ``model`` (``None``: the classical method ``config.method``)."""

    name: str
    config: ReconstructConfig
    model: nn.Module | None = None


class SliceSource(Protocol[S]):
    """The slices of one opened input volume, read one at a time.

    Optional members (read with :func:`getattr`, absent on most sources): ``info`` (a dict
    :attr:`VolumeRun.info` copies) and ``held_bytes()``, the bytes of input the source holds for
    the whole volume (an ISMRMRD 3-D slab read whole; a non-Cartesian file's trajectory and
    weights), added to the
    volume's memory need (:func:`source_held_bytes`); 0 when absent."""

    def __len__(self) -> int: ...

    def read(self, index: int) -> S: ...

    def close(self) -> None: ...


class Modality(ABC, Generic[S]):
    """The stage protocol. A modality holds its stage configs and device; every stage takes and
    returns one slice ``S`` (a small dataclass), except :meth:`postprocess`, which returns the
    ``(h, w)`` float32 output image of the slice on the CPU."""

    device: str = "cpu"

    @abstractmethod
    def load(self, path: Path) -> SliceSource[S]:
        """Open one input (file or DICOM folder); errors name the file."""

    def preprocess(self, s: S) -> S:
        return s

    @abstractmethod
    def undersample(self, s: S) -> S:
        """Retrospective undersampling (or the data as acquired), seeded from the slice."""

    def calibrate(self, s: S) -> S:
        return s

    def to_device(self, s: S) -> S:
        """The slice with what :meth:`reconstruct` reads on :attr:`device`."""
        return s

    def prepare_model(self, model: nn.Module, slices: PreparedSlices[S]) -> nn.Module:
        """Volume-level hook before the reconstruct loop; the identity by default."""
        return model

    @abstractmethod
    def reconstruct(self, s: S, method: Method) -> S:
        """The image of one slice by ``method`` (its settings already those of the slice:
        :meth:`settings`)."""

    def table_value(self, s: S) -> float:
        """What picks the slice's entry of ``reconstruct.params_by_acceleration`` (MRI: the
        acceleration) / ``params_by_views`` (CT: the view count); asked only when the config
        has such a table (:mod:`mrirecon.pipeline.param_tables`)."""
        raise NotImplementedError(f"{type(self).__name__} has no per-slice settings table")

    def settings(self, s: S, cfg: ReconstructConfig) -> SliceSettings:
        """``cfg`` with the table entry nearest to the slice under its ``params``
        (:func:`~mrirecon.pipeline.param_tables.for_slice`); ``cfg`` itself without a table."""
        if table_of(cfg) is None:
            return SliceSettings(cfg)
        return for_slice(cfg, self.table_value(s))

    @abstractmethod
    def postprocess(self, s: S) -> Tensor:
        """``(h, w)`` float32 output image of a reconstructed slice, on the CPU."""

    #: What :meth:`_say` recorded since the last :meth:`output_messages` (``None``: nothing).
    _said: dict[str, dict[int, dict[str, str]]] | None = None

    def _say(self, method: str, index: int, kind: str, msg: str) -> None:
        """Record warning ``msg`` (``kind``, e.g. ``bulk_shift``) about slice ``index``'s
        reconstruction by the method named ``method``, for :meth:`output_messages`."""
        if self._said is None:
            self._said = {}
        self._said.setdefault(method, {}).setdefault(index, {})[kind] = msg

    def output_messages(self) -> dict[str, dict[int, dict[str, str]]]:
        """Warnings about the reconstructions made since the last call, ``{method name: {slice:
        {kind: message}}}``, as :meth:`reconstruct` recorded them with :meth:`_say` (MRI: energy
        in unmeasured columns, a non-Cartesian data residual; CT: a bulk attenuation off the
        FBP preview's); each call empties it. :func:`stream_volume` calls it once after the
        volume's slices (:attr:`VolumeRun.output_messages`), and ``mrirecon run`` and ``mrirecon
        bench`` add them to the volume's :meth:`data_messages` record of that method."""
        said, self._said = self._said or {}, None
        return said

    def data_messages(self, s: S) -> tuple[dict[str, str], dict[str, str]]:
        """``(warnings, notes)`` of one undersampled slice, each ``{kind: message}``, empty by
        default. Warnings: what is suspicious, but not fatal, about the data (truncated
        projections, duplicated coils, ...). Notes: what the stages did to the data that the
        record must say but that is no warning (CT: how ``undersample.photons`` lowered the dose).
        The pipeline runner collects both per volume into its log (warnings), ``provenance.json``
        and the report; one call, since the two can share work (MRI: a radial partial echo)."""
        return {}, {}

    def reference(self, s: S) -> Tensor | None:
        """The slice's reference image on the output's scale, or ``None``."""
        return None

    def preview(self, s: S) -> Tensor | None:
        """The report's input image (zero-filled / FBP) on the output's grid, or ``None``."""
        return None


class PreparedSlices(Generic[S]):
    """Re-iterable view of a volume's undersampled, calibrated slices on the device (what
    :meth:`Modality.prepare_model` receives). Each iteration reads the slices again."""

    def __init__(self, modality: Modality[S], source: SliceSource[S]) -> None:
        self.modality, self.source = modality, source

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[S]:
        for i in range(len(self.source)):
            yield _prepare(self.modality, self.source, i)[0]


@dataclass
class VolumeRun:
    """What :func:`stream_volume` returns for one volume.

    ``outputs[name]`` is the ``(slices, h, w)`` float32 output of method ``name``; ``seconds``
    its reconstruct + postprocess time; ``calib_seconds`` the calibration time shared by the
    methods; ``reference`` and ``preview`` are ``(slices, h, w)`` when every slice had one of the
    output's shape (else ``None``); ``reference_dropped`` says why a reference the input had is
    not used (empty when it is used or there was none); ``output_messages`` are the modality's
    :meth:`Modality.output_messages` after the last slice, ``{method name: {slice: {kind:
    message}}}``.
    """

    slices: int
    outputs: dict[str, Tensor]
    seconds: dict[str, float]
    calib_seconds: float = 0.0
    reference: Tensor | None = None
    preview: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    reference_dropped: str = ""
    output_messages: dict[str, dict[int, dict[str, str]]] = field(default_factory=dict)


def detect_format(path: Path, wanted: str) -> str:
    """The reader of an input: explicit ``load.format``, else by content (HDF5 groups), a DICOM
    folder, or BART's ``.cfl`` / ``.hdr`` suffix (``"bart"``). A DICOM slice file (``.dcm``, or a
    file that is not HDF5 but DICOM by its bytes) is refused as one slice of the series in its
    folder (it was "FileNotFoundError: ... is not a folder", or "not a readable HDF5 file"
    without the suffix). An explicit ``load.format`` that a BART suffix contradicts, either way,
    is refused naming ``load.format`` (it was "ksp.h5.hdr: missing", "not a readable HDF5
    file"), as is an HDF5 layout that contradicts it (:func:`_check_layout`)."""
    bart = path.suffix.lower() in (".cfl", ".hdr", ".ra")
    if wanted != "auto":
        if (wanted == "bart") != bart and not path.is_dir() and path.suffix:
            from mrirecon.io.errors import DataFormatError

            raise DataFormatError(path, "load.format", (
                f"is {wanted!r}, but this is a BART array (NAME.hdr + NAME.cfl)" if bart else
                f"is 'bart', but {path.name} is no BART array (NAME.hdr + NAME.cfl)")
                + "; load.format: auto picks each input's reader")
        if wanted in ("fastmri", "ismrmrd", "ct_hdf5") and path.is_file() and not bart:
            _check_layout(path, wanted)
        return wanted
    if path.is_dir():
        _refuse_nifti(path, folder=True)
        return "dicom"
    from mrirecon.io.errors import DataFormatError
    from mrirecon.io.probe import hdf5_layout

    _refuse_nifti(path, folder=False)
    if bart:  # BART's arrays: a header, raw data beside
        from mrirecon.io.bart_cfl import cfl_paths

        cfl_paths(path)  # refuses .ra, naming the conversion
        return "bart"
    if path.suffix.lower() == ".dcm":
        from mrirecon.io.dicom_files import not_a_series_folder

        raise not_a_series_folder(path)
    try:
        return hdf5_layout(path)
    except DataFormatError:  # pydicom is imported only for a file that is not HDF5
        from mrirecon.io.dicom_files import looks_like_dicom, not_a_series_folder

        if looks_like_dicom(path):
            raise not_a_series_folder(path) from None
        raise


def _check_layout(path: Path, wanted: str) -> None:
    """An HDF5 file whose layout contradicts an explicit ``load.format`` is refused naming the
    key and what the file holds: the reader of the other layout called a good fastMRI file
    broken ("dataset: group missing (found ['ismrmrd_header', 'kspace', …])"). A file whose
    layout cannot be told is left to the reader, which names what is wrong with it."""
    from mrirecon.io.errors import DataFormatError
    from mrirecon.io.probe import hdf5_layout

    try:
        layout = hdf5_layout(path)
    except DataFormatError:
        return
    if layout != wanted:
        raise DataFormatError(path, "load.format", (
            f"is {wanted!r}, but {path.name} holds {layout} data; load.format: auto picks "
            "each input's reader"))


def _refuse_nifti(path: Path, *, folder: bool) -> None:
    """Refuse a NIfTI file, or a folder holding NIfTI files and no DICOM file, as an input:
    NIfTI is one of mrirecon's output formats, not an input one. Such a folder was taken for a
    DICOM series ("needs fastMRI or ISMRMRD data, found dicom", "no DICOM image files among its
    1 files"), a file for broken HDF5."""
    from mrirecon.io.errors import DataFormatError

    def nifti(p: Path) -> bool:
        return p.name.lower().endswith((".nii", ".nii.gz"))

    if not folder and not nifti(path):
        return
    found = sorted(p for p in path.rglob("*") if nifti(p)) if folder else [path]
    if not found:
        return
    from mrirecon.io.dicom_files import looks_like_dicom

    if folder and any(p.is_file() and looks_like_dicom(p) for p in path.rglob("*")):
        return  # a DICOM series with a NIfTI copy beside it: the series is read
    what = (f"the folder holds no DICOM file but NIfTI file(s) ({found[0].name}"
            f"{', ...' if len(found) > 1 else ''})" if folder else "a NIfTI file")
    raise DataFormatError(path, "input", f"{what}; NIfTI is an output format of mrirecon, not an "
                          "input one: give fastMRI / ISMRMRD or LoDoPaB-layout HDF5 files, or a "
                          "folder of DICOM files")


def score_volume(reference, recon, *, crop: bool) -> dict[str, float]:
    """fastMRI ``MSE``, ``NMSE``, ``PSNR``, ``SSIM`` of one ``(slices, h, w)`` volume (the metrics
    of :func:`mrirecon.metrics.evaluate_volumes`; ``crop``: its fastMRI centre crop), computed in
    the tensors' own precision."""
    from mrirecon.metrics import evaluate_volumes

    report = evaluate_volumes({"volume": np.asarray(reference)}, {"volume": np.asarray(recon)},
                              crop=crop)
    return {k: float(v[0]) for k, v in report.values.items()}


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(modality: Modality[S], source: SliceSource[S], i: int) -> tuple[S, float]:
    """Slice ``i`` through load .. calibrate, on the device; also the calibration seconds."""
    s = modality.undersample(modality.preprocess(source.read(i)))
    _sync(modality.device)
    t0 = time.perf_counter()
    s = modality.calibrate(s)
    _sync(modality.device)
    return modality.to_device(s), time.perf_counter() - t0


#: Bytes a volume's slice loop, evaluation and export hold at their peak per byte of the images
#: kept per slice (outputs, references, previews; :func:`volume_memory_need`), measured as the
#: growth of peak RSS per slice from 16 to 64 slices: ``ct_fbp`` at 512 x 512 3.1x with HDF5
#: export alone, 5.1x with every export (the stacked volumes, ``hu_volumes``' five float32 copies,
#: the metrics' chunks left in the heap, the DICOM window's float64 copy); MRI zero-filled at
#: 384 x 384 3.0x without PNG (the scale check's images counted), 1.7x with. Was 4.0, without the
#: scale check's images, when ``hu_volumes`` and the DICOM writer copied whole volumes to float64:
#: CT grew 5.3-7x the images, MRI without PNG 7.4x the two then counted.
VOLUME_MEMORY_FACTOR = 6.0


def volume_memory_need(n: int, first: list[Tensor], previews: bool, held: int = 0) -> float:
    """Bytes the ``n`` slices of a volume need for its evaluation and export, estimated from
    ``first``, slice 0's held images (outputs, reference, preview): :data:`VOLUME_MEMORY_FACTOR`
    times their bytes per slice. Without ``previews`` the caller may make its own image per
    slice (the MRI output-scale check keeps a zero-filled image of the output's size when no
    PNG is written: ``pipeline.volume.ScaleCheck``), counted as one more output image. ``held``:
    the bytes of input the source holds through the slice loop (:func:`source_held_bytes`),
    added once."""
    per_slice = sum(t.numel() * t.element_size() for t in first)
    if not previews and first:
        per_slice += first[0].numel() * 4  # a float32 image of the output's size
    return VOLUME_MEMORY_FACTOR * n * per_slice + held


def source_held_bytes(source: SliceSource) -> int:
    """The bytes of input ``source`` holds for the whole volume: its optional ``held_bytes()``
    (:class:`SliceSource`), 0 without one."""
    held = getattr(source, "held_bytes", None)
    return int(held()) if callable(held) else 0


def _check_volume_memory(path: Path, n: int, first: list[Tensor], previews: bool = True,
                         held: int = 0) -> None:
    """Refuse a volume whose ``n`` slices' outputs, references and previews (``first``: slice
    0's), held for the volume's evaluation and exports, with the ``held`` bytes of input its
    source keeps (a k-space volume read whole), need more than half the memory
    (:func:`volume_memory_need`): a 1.7-MB file whose 5000 virtual slices mapped one 320 x 320
    slice grew to 24 GB until the kernel killed the run, with no word and no output."""
    from mrirecon.io.errors import memory_bytes

    need = volume_memory_need(n, first, previews, held)
    if need > memory_bytes() / 2:
        kept = (f" with the {held / 2**30:.2f} GiB of input the reader holds whole (a 3-D slab, "
                "or a non-Cartesian trajectory and its weights)" if held else "")
        raise ValueError(f"{path}: {n} slices of {tuple(first[0].shape)} outputs would "
                         f"hold {need / 2**30:.1f} GiB for the volume's exports{kept}, more than "
                         f"half of the {memory_bytes() / 2**30:.0f} GiB of memory here; split the "
                         "volume into files of fewer slices")


def _seconds(t: float) -> str:
    """``t`` seconds as ``"2.31 s"``, and past two minutes also in minutes, hours or days."""
    text = f"{t:.3g} s" if t < 1000 else f"{t:.0f} s"
    for unit, size, above in (("days", 86400.0, 2 * 86400.0), ("h", 3600.0, 7200.0),
                              ("min", 60.0, 120.0)):
        if t >= above:
            return f"{text} ({t / size:.2g} {unit})"
    return text


def pace_line(name: str, n: int, seconds: float) -> str:
    """The log line after an input's first slice: ``"a.h5: the first slice of 40 took 2.31 s;
    the input ~92.4 s"`` (:func:`stream_volume`). Not "slice 1": the warnings, figures and
    metrics number slices from 0 (the file's index), so "slice 1" named another slice there."""
    return (f"{name}: the first slice of {n} took {_seconds(seconds)}; the input "
            f"~{_seconds(n * seconds)}")


def stream_volume(modality: Modality[S], path: Path, methods: Sequence[Method], *,
                  progress: bool = True, bar=None,
                  on_slice: Callable[[int, S], None] | None = None,
                  previews: bool = True) -> VolumeRun:
    """Run every method of ``methods`` on every slice of ``path``, one slice at a time.

    ``bar``: an open tqdm bar to advance by ``len(methods)`` per slice (the benchmark's); else a
    per-volume bar over slices when ``progress``. ``on_slice(i, s)`` sees each undersampled,
    calibrated slice before reconstruction (e.g. to count sampled columns).

    After the first slice, one INFO line on ``mrirecon.pipeline`` says what it took and what
    the input will take at that pace (:func:`pace_line`), when the input holds more than one
    slice or the slice took :data:`PACE_SECONDS` or more: a log redirected to a file shows no
    progress bar, and a run of 1e7 iterations (a typo for 1e3, a legal count) logged nothing
    after "1 input(s)" for days.
    """
    from tqdm.auto import tqdm

    from mrirecon.core.memory import release_memory

    if not methods:
        raise ValueError("stream_volume: no methods to run")
    source = modality.load(path)
    try:
        n = len(source)
        if n == 0:
            raise ValueError(f"{path}: the input holds no slices")
        methods = [m if m.model is None else
                   replace(m, model=modality.prepare_model(m.model, PreparedSlices(modality, source)))
                   for m in methods]
        outs: dict[str, list[Tensor]] = {m.name: [] for m in methods}
        seconds = {m.name: 0.0 for m in methods}
        refs: list[Tensor] = []
        views: list[Tensor] = []
        calib = 0.0
        own = bar is None and progress
        slices = tqdm(range(n), desc=Path(path).name, unit="slice", leave=False, disable=not own)
        started = time.perf_counter()
        for i in slices:
            s, dt = _prepare(modality, source, i)
            calib += dt
            if on_slice is not None:
                on_slice(i, s)
            for m in methods:
                _sync(modality.device)
                t0 = time.perf_counter()
                own = modality.settings(s, m.config).config  # per-slice table entry
                with model_settings(m.model, own):  # a learned model's, set for this slice
                    out = modality.postprocess(modality.reconstruct(s, replace(m, config=own)))
                _sync(modality.device)
                seconds[m.name] += time.perf_counter() - t0
                outs[m.name].append(out.detach().cpu().clone())  # compact: no view pins a slice
            ref = modality.reference(s)
            if ref is not None:
                refs.append(ref.float().clone())
            if previews and (p := modality.preview(s)) is not None:
                views.append(p.float().clone())
            if i == 0:  # the volume's outputs are held for its exports: refused if they can't be
                took = time.perf_counter() - started
                _check_volume_memory(path, n, [*(o[0] for o in outs.values()), *refs, *views],
                                     previews, source_held_bytes(source))
                if n > 1 or took >= PACE_SECONDS:  # the pace, in a log without progress bars
                    # the path as given, as the warnings name it: two folders' observation_
                    # train_000.hdf5 read alike
                    log.info("%s", pace_line(str(path), n, took))
            if bar is not None:
                bar.set_postfix_str(f"{Path(path).name} slice {i + 1}/{n}", refresh=False)
                bar.update(len(methods))
            del s
            release_memory()  # per-slice buffers back to the OS: peak RSS stays flat
        said = modality.output_messages()  # the reconstructions' warnings, drained once
        info = dict(getattr(source, "info", {}))
    finally:
        source.close()
    stacked = {k: torch.stack(v) for k, v in outs.items()}
    shape = next(iter(stacked.values())).shape
    reference, dropped = None, ""
    if not refs and info.get("reference_missing"):  # e.g. one ground_truth_* of a part missing
        dropped = str(info["reference_missing"])
    elif refs and len(refs) != n:
        dropped = f"only {len(refs)} of {n} slices have a reference image"
    elif bad := [i for i, r in enumerate(refs) if r.shape != shape[1:]]:  # e.g. another size
        dropped = (f"the reference image of slice {bad[0]} is {tuple(refs[bad[0]].shape)}, the "
                   f"postprocessed output is {tuple(shape[1:])}")
    elif refs:
        reference = torch.stack(refs)
    preview = torch.stack(views) if len(views) == n else None
    # the per-slice copies, stacked now, go back to the OS: freed in the heap they stayed in
    # the RSS while the export's volumes were mapped anew (+3 MiB a 512 x 512 CT slice)
    del outs, refs, views
    release_memory()
    return VolumeRun(n, stacked, seconds, calib, reference, preview, info, dropped, said)
