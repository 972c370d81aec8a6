import os

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


def _keep_threads_and_environment():
    """Restore torch's thread count and ``os.environ`` as they were: a test (or a module fixture
    pinning one thread for bit-exact figures) that calls ``torch.set_num_threads`` or
    ``mrirecon.threads.configure_threads`` (in-process ``cli.main``) left every later test of the
    session on its count and its ``OMP_NUM_THREADS``, so a file's results depended on the order
    it ran in."""
    threads, environ = torch.get_num_threads(), dict(os.environ)
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)


# module-scoped first (before a module's own fixtures, torn down after them), then per test
keep_module_threads_and_environment = pytest.fixture(scope="module", autouse=True)(
    _keep_threads_and_environment)
keep_threads_and_environment = pytest.fixture(autouse=True)(_keep_threads_and_environment)


@pytest.fixture
def restored_registry():
    """The reconstruction registry (``recon.register``) as it was before the test: the names a
    test registers are removed afterwards."""
    from mrirecon.recon import registry

    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
