import pytest
import torch


@pytest.fixture(params=[torch.complex128, torch.complex64], ids=["c128", "c64"])
def cdtype(request):
    """Complex precision under test (double and single)."""
    return request.param


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def rdtype(request):
    """Real precision under test (double and single)."""
    return request.param
