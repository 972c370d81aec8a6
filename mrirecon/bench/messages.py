"""The per-slice data warnings and notes of ``mrirecon run``, for the benchmark's records.

The stages say per slice what is suspicious about the data (warnings: a dead or 100x loud
coil, ESPIRiT's crop lowered, GRAPPA's unfilled columns, truncated CT projections) and what
they did to it (notes: partial Fourier, the dose), as ``{kind: message}``
(:meth:`~mrirecon.pipeline.stream.Modality.data_messages`). ``mrirecon run`` collects them per
volume, kind by kind, into one line per kind naming the file and the slices
(``pipeline.volume.process_volume``, :class:`~mrirecon.pipeline.volume.SliceMessages`); the
benchmark collects them alike, so that a table built on data the pipeline would warn about says
so (the benchmark dropped every one of them).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from mrirecon.pipeline.stream import Method

#: The pipeline's logger, as ``mrirecon run`` logs these lines (they are the stages' words).
log = logging.getLogger("mrirecon.pipeline")


def mri_method_messages(stages, s, method: Method) -> tuple[dict[str, str], dict[str, str]]:
    """What ``mrirecon run`` with ``method`` would say of MRI slice ``s`` (the benchmark's
    stages run every method at once): its partial Fourier / echo and GRAPPA messages, and the
    ESPIRiT messages only for a method that reconstructs with those maps (as
    ``MRIStages.reconstruct`` hands them out)."""
    from mrirecon.pipeline.stages_mri import MRIStages, needs_maps

    own = MRIStages(replace(stages.config, reconstruct=method.config), device=stages.device,
                    classical=method.model is None)
    full_fov = (method.model is not None and s.full_fov_maps is not None
                and getattr(method.model, "full_fov_maps", True))
    if not needs_maps(method.config.method, method.model):
        s = replace(s, maps=None, notes={k: v for k, v in s.notes.items() if k != "espirit_crop"})
    elif full_fov:  # uncropped maps: ESPIRiT's crop was not applied to them
        s = replace(s, notes={k: v for k, v in s.notes.items() if k != "espirit_crop"})
    return own.data_messages(s)


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


__all__ = ["log_lines", "mri_method_messages"]
