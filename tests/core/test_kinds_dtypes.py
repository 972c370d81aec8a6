"""The real / complex dtype pairs of ``core.kinds``, and why nothing calls ``dtype.to_real()``.

torch 2.1-2.3 returned the dtype from ``dtype.to_real()`` / ``to_complex()`` without taking a
reference: each call lowered ``torch.float64``'s reference count by one, and the column-mask
SENSE gram (which asked for it on every call) crashed the interpreter with a segmentation fault
after a few thousand calls (``tests/operators/test_gram_bound.py`` was the first to die) under
the floor of then, ``torch>=2.1``. The package and its tests use ``core.kinds.real_dtype``."""

from __future__ import annotations

import ast
import sys

import pytest
import torch

from mrirecon.core.kinds import COMPLEX_OF, REAL_OF, real_dtype
from tests.helpers import ROOT

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64,
          torch.complex32, torch.complex64, torch.complex128]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_real_dtype_is_the_dtype_of_the_real_part(dtype):
    # complex32 has no CPU kernels for .real; its precision is float16 by definition
    want = torch.float16 if dtype == torch.complex32 else torch.empty(0, dtype=dtype).real.dtype
    assert real_dtype(dtype) is want


def test_the_pairs_are_inverse_and_agree_with_torch():
    for real, cplx in COMPLEX_OF.items():
        assert REAL_OF[cplx] is real
        assert torch.complex(torch.zeros(1, dtype=real), torch.zeros(1, dtype=real)).dtype is cplx


def test_real_dtype_takes_no_reference_it_does_not_own():
    """The count after 1000 more calls is the count before them (torch 2.1-2.3's ``to_real``
    lowered it by 1000)."""
    def calls():
        for _ in range(1000):
            real = real_dtype(torch.promote_types(torch.complex128, torch.complex64))
        return real

    calls()
    before = sys.getrefcount(torch.float64)
    calls()
    after = sys.getrefcount(torch.float64)  # outside the assert: its rewriting holds one more
    assert after == before


def _to_real_calls(path):
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("to_real", "to_complex")]


def test_nothing_calls_dtype_to_real_or_to_complex():
    files = [p for folder in ("mrirecon", "tests", "benchmarks", "notebooks")
             for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 100
    found = [hit for p in files for hit in _to_real_calls(p)]
    assert found == [], ("dtype.to_real() / to_complex() crash the interpreter on torch 2.1-2.3 "
                         f"(a reference count bug); use mrirecon.core.kinds.real_dtype: {found}")
