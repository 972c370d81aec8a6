"""``mrirecon bench``: benchmark tables of reconstruction methods, as pipelines with a table writer.

:mod:`~mrirecon.bench.mri` (fastMRI challenges) and :mod:`~mrirecon.bench.ct` (sparse-view
LoDoPaB-layout CT) run every volume through the pipeline's streaming runner
(:func:`mrirecon.pipeline.stream.stream_volume`) with their modality's stages, score it with the
pipeline's metrics code and store one record per (method, acceleration, volume) in
``results.jsonl`` (:mod:`~mrirecon.bench.table`, resumable); :mod:`~mrirecon.bench.core` is the
loop both share, :mod:`~mrirecon.bench.methods` the method names, defaults and model loading,
:mod:`~mrirecon.bench.cli` the command line's argument conversion.
"""

from mrirecon.bench.cli import bench_from_cli, parse_sets, parse_weights
from mrirecon.bench.ct import run_ct_bench
from mrirecon.bench.methods import available_methods, load_model
from mrirecon.bench.mri import run_bench
from mrirecon.bench.table import BenchRow, BenchTable

__all__ = ["BenchRow", "BenchTable", "available_methods", "bench_from_cli", "load_model",
           "parse_sets", "parse_weights", "run_bench", "run_ct_bench"]
