"""Package attributes imported on first use (PEP 562), for packages whose modules are heavy.

``mrirecon.io`` (pydicom, nibabel, h5py) and ``mrirecon.training`` (the training stack) name
their public objects here instead of importing every module up front: the pipeline imports
both packages for one or two names each, and eager imports cost every ``mrirecon run`` process
about a second (``benchmarks/bench_pipeline.py --sections cold``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` whose attribute ``name`` is
    ``package.<exports[name]>.name``, imported when first asked for and then kept."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
