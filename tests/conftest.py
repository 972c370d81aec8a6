import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker process takes an equal share
    of the cores, as torchrun's ranks do in ``mrirecon.threads``: N workers with one thread per
    core each would oversubscribe the machine N-fold. A thread count the user set wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers > 1 and not {"OMP_NUM_THREADS", "MRIRECON_THREADS"} & set(os.environ):
        from mrirecon.threads import available_cpus

        torch.set_num_threads(max(1, available_cpus() // workers))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``'s worker count: the cores this process may use (``mrirecon.threads``: the
    affinity mask capped by a cgroup quota, which xdist's own count, psutil's physical cores,
    ignores), at most one per 2 GiB of available memory (each worker holds torch and its tests'
    arrays). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` wins, as in xdist."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    from mrirecon.threads import available_cpus

    workers = available_cpus()
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        workers = min(workers, max(1, kib // 2**21))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return workers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test's captured output as text that UTF-8 can carry: pytest-xdist sends every report from
    its worker as UTF-8, and a file name that is not UTF-8 (``os.fsdecode(b"M\\xfcller.h5")``, a
    lone surrogate) in a captured log line killed the worker ("surrogates not allowed") and the
    run. Surrogates are shown as ``\\udcfc``, as Python's stderr shows them."""
    report = (yield).get_result()
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]


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
