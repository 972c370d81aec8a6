"""The one rule and the one note of a partial (asymmetric) echo: one side of every readout never
sampled. The ISMRMRD readers (``io/ismrmrd_raw.py``, ``io/ismrmrd_noncartesian.py``), a
fastMRI-layout file's zero rows (:func:`mrirecon.pipeline.sampling_mri.zero_rows_echo` for a run,
:func:`mrirecon.training.data_acquired.readout_rows` for SSDU training, both through
:func:`one_sided_band`) and the run's warning (:func:`mrirecon.pipeline.sampling_mri.partial_echo_note`) take them from here, so
the same echo read from either layout is the same partial echo, said in the same words.
"""

from __future__ import annotations

#: A partial echo misses at least this many samples of the readout ...
PARTIAL_ECHO_SAMPLES = 2
#: ... and at least this share of a symmetric readout's samples.
PARTIAL_ECHO_SHARE = 0.05


def is_partial_echo(missing: int, n: int) -> bool:
    """Whether ``missing`` never-sampled samples on one side of an ``n``-sample (symmetric)
    readout make a partial echo: ``missing >= max(PARTIAL_ECHO_SAMPLES, PARTIAL_ECHO_SHARE * n)``
    (fewer are the odd sample a writer leaves out)."""
    return missing >= max(PARTIAL_ECHO_SAMPLES, PARTIAL_ECHO_SHARE * n)


def partial_echo_extra(start: int, stop: int, n: int) -> dict:
    """The header entries of a Cartesian partial echo whose readout samples ``start .. stop - 1``
    of ``n`` hold data: ``readout_range`` ``[start, stop, n]``
    (:func:`mrirecon.pipeline.sampling_mri.readout_support`) and its ``partial_echo_note``."""
    return {"readout_range": [start, stop, n], "partial_echo_note": (
        f"partial echo: readout samples {start}..{stop - 1} of {n} hold data "
        f"({n - (stop - start)} never sampled)")}


def one_sided_band(held) -> tuple[int, int] | None:
    """``(start, stop)``: the readout rows ``start .. stop - 1`` that hold data, when ``held``
    (one bool per row: any non-zero sample in any coil and column) leaves rows without data on
    one side of the readout only, as many as a partial echo (:func:`is_partial_echo`); ``None``
    when no row, every row, or rows on both sides lack data (a k-space zero-padded on both sides
    is no partial echo)."""
    flags = [bool(h) for h in held.tolist()]
    rows = [i for i, h in enumerate(flags) if h]
    if not rows:
        return None
    n, start, stop = len(flags), rows[0], rows[-1] + 1
    if min(start, n - stop) > 0 or not is_partial_echo(max(start, n - stop), n):
        return None
    return start, stop
