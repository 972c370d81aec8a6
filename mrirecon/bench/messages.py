"""The per-slice data warnings and notes of ``mrirecon run``, for the benchmark's records.

The stages say per slice what is suspicious about the data (warnings: a dead or 100x loud
coil, ESPIRiT's crop lowered, GRAPPA's unfilled columns, truncated CT projections) and what
they did to it (notes: partial Fourier, the dose), as ``{kind: message}``
(:meth:`~mrirecon.pipeline.stream.Modality.data_messages`). ``mrirecon run`` collects them per
volume, kind by kind, into one line per kind naming the file and the slices
(``pipeline.volume.process_volume``, :class:`~mrirecon.pipeline.slice_messages.SliceMessages`); the
benchmark collects them alike, so that a table built on data the pipeline would warn about says
so (the benchmark dropped every one of them). So does a learned model's card: data outside its
``training_range`` are warned per volume and method (:class:`RangeMessages`), by the check
``mrirecon run`` makes (:class:`mrirecon.pipeline.model_range_slice.VolumeRanges`; the
benchmark scored a 96 x 96, 12-coil volume through models trained on 320 x 320 and 16 coils
without a word, where ``run`` warned). Notes about a setting the benchmark chose itself, not
the user (:data:`BENCH_OWN_NOTES`), are left out.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from mrirecon.pipeline.stream import Method

#: The pipeline's logger, as ``mrirecon run`` logs these lines (they are the stages' words).
log = logging.getLogger("mrirecon.pipeline")


#: Note kinds of :meth:`~mrirecon.pipeline.stages_mri.MRIStages.data_messages` about a setting
#: that the MRI benchmark's config holds by its own choice, never the user's: it passes
#: ``preprocess.remove_oversampling=false`` for the data as acquired unless asked to crop, and
#: ``run`` notes an explicit ``false`` ("the default gives the same image") on every volume
#: without readout oversampling and for every learned method.
BENCH_OWN_NOTES = ("remove_oversampling",)


def mri_method_messages(stages, s, method: Method) -> tuple[dict[str, str], dict[str, str]]:
    """What ``mrirecon run`` with ``method`` would say of MRI slice ``s`` (the benchmark's
    stages run every method at once): its partial Fourier / echo and GRAPPA messages, and the
    ESPIRiT messages only for a method that reconstructs with those maps (as
    ``MRIStages.reconstruct`` hands them out). Notes about the benchmark's own settings
    (:data:`BENCH_OWN_NOTES`) are left out."""
    from mrirecon.pipeline.stages_mri import MRIStages, gets_full_fov_maps, needs_maps

    own = MRIStages(replace(stages.config, reconstruct=method.config), device=stages.device,
                    classical=method.model is None)
    full_fov = gets_full_fov_maps(s, method)
    if not needs_maps(method.config.method, method.model):
        s = replace(s, maps=None, notes={k: v for k, v in s.notes.items() if k != "espirit_crop"})
    elif full_fov:  # uncropped maps: ESPIRiT's crop was not applied to them
        s = replace(s, notes={k: v for k, v in s.notes.items() if k != "espirit_crop"})
    warned, told = own.data_messages(s)
    return warned, {k: v for k, v in told.items() if k not in BENCH_OWN_NOTES}


class RangeMessages:
    """Per learned method, what ``mrirecon run`` says of one volume's slices outside the
    model's card (:class:`~mrirecon.pipeline.model_range_slice.VolumeRanges`: each slice whose
    checked quantities differ from the slices before is checked), in ``run``'s words and naming
    the slices (:meth:`lines`). The benchmark checked the first slice only: a later slice with
    other views or coils was scored without a word."""

    def __init__(self, config, methods: list[Method]) -> None:
        from mrirecon.pipeline.model_range_slice import VolumeRanges
        from mrirecon.pipeline.slice_messages import SliceMessages

        self.methods = [m for m in methods if m.model is not None]
        self.checks = {m.name: VolumeRanges(config, m.model) for m in self.methods}
        self.said = {m.name: SliceMessages() for m in self.methods}

    def add(self, i: int, s) -> None:
        """Check slice ``i`` (``s``) against every learned method's card."""
        from mrirecon.pipeline.stages_mri import gets_full_fov_maps

        for m in self.methods:
            found = self.checks[m.name].add(s, full_fov_maps=gets_full_fov_maps(s, m))
            self.said[m.name].add(i, found, {})

    def lines(self, name: str, method: str, total: int) -> list[str]:
        """``method``'s warnings for volume ``name`` of ``total`` slices, as ``run`` records
        them (``"F.h5: all 2 slices: coils 12 is outside the ... (see its card ...)"``)."""
        said = self.said.get(method)
        return [] if said is None else said.lines(name, total)[0]


def log_lines(where: str, found: dict[str, tuple[list[str], list[str]]]) -> None:
    """Log each method's ``(warnings, notes)`` (``found``) once: warnings as warnings, notes
    as info, naming the methods when not every one of them has the line."""
    names = list(found)
    for index, level in ((0, log.warning), (1, log.info)):
        lines: dict[str, list[str]] = {}
        for m, pair in found.items():
            for line in pair[index]:
                lines.setdefault(line, []).append(m)
        for line, methods in lines.items():
            level("%s: %s%s", where, line, "" if len(methods) == len(names) else
                  f" ({', '.join(methods)})")


__all__ = ["BENCH_OWN_NOTES", "RangeMessages", "log_lines", "mri_method_messages"]
