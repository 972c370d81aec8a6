"""Device escapes found without a GPU: tensors mrirecon creates off the data's device.

On a CPU-only machine every tensor lives on the CPU, so code that creates a tensor without
``device=`` (a factory, ``torch.from_numpy``, ``.cpu()``) passes every test here and fails on
CUDA with "Expected all tensors to be on the same device". Inside :func:`device_escapes` the CPU
plays the data's device, and a tensor of at least one dimension that *mrirecon's* code (not the
test's, not torch's) creates without ``device=``, with ``from_numpy`` or ``.cpu()`` is a
*stray*: the CPU tensor it would be while the data are on CUDA. A stray is an ordinary CPU tensor
carrying a tag, so every computation gives its true value:

* an operation among strays gives strays; ``.to(y.device)``, ``.to(y)`` and ``.cuda()`` give
  device data; host reads (``.item()``, ``.tolist()``, ``.numpy()``) are fine;
* a stray's ``.device`` reads ``meta``, the token for "the host": a tensor created on it
  (``device=w.device``) or moved to it (``y.to(w.device)``) is a stray too;
* a stray that meets device data (any other tensor of >= 1 dimension) in one operation raises
  :class:`DeviceEscape`, as CUDA would. 0-d tensors are exempt (CUDA accepts CPU scalars), and so
  are ``copy_`` and indexing device data with host indices, which CUDA allows;
* ``.numpy()`` of device data in mrirecon's code raises :class:`DeviceEscape` (CUDA's TypeError).

Work that is on the host by design is declared in :data:`HOST_FUNCTIONS` (it runs unchecked; a
tensor result is a stray, a number is a number) and :data:`HOST_BRANCHES` (the CPU branch of a
function with a CUDA branch of its own). Build the data, operators and models *outside* the
context, as the caller would on the device; build inside what mrirecon builds itself.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

import mrirecon

PACKAGE = os.path.dirname(os.path.abspath(mrirecon.__file__)) + os.sep
TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
TAG = "_mrirecon_stray"
HOST = torch.device("meta")  # what a stray's .device reads


class _Log(list):
    def append(self, what: str) -> None:  # each place once
        if what not in self:
            super().append(what)


class DeviceEscape(RuntimeError):
    """A host tensor created by mrirecon met the data's device (CUDA would refuse it)."""


FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.linspace,
             torch.logspace, torch.eye, torch.tensor, torch.as_tensor, torch.asarray, torch.rand,
             torch.randn, torch.randint, torch.randperm, torch.empty_strided, torch.tril_indices,
             torch.triu_indices, torch.hann_window, torch.hamming_window, torch.kaiser_window,
             torch.bartlett_window, torch.blackman_window, torch.fft.fftfreq, torch.fft.rfftfreq}


def _host_functions():
    """``{function: True}`` for host computations whose tensor result is a host tensor."""
    from mrirecon.functional import density
    from mrirecon.operators import ct

    return {density.pipe_menon_density: True,  # finufft spreading on the host; a K-shaped result
            ct.projector_norm: False}  # power iteration on the host, returns a float (cached)


def _host_branches():
    """Code objects whose CPU branch exists only for host data (CUDA data take cufinufft; the
    cached trajectories' comparison ``torch.equal``)."""
    from mrirecon.functional import nufft

    return {nufft._plan.__code__, nufft._execute.__code__, nufft._same_values.__code__}


HOST_FUNCTIONS = _host_functions()
HOST_BRANCHES = _host_branches()


def is_stray(t) -> bool:
    return isinstance(t, torch.Tensor) and t.__dict__.get(TAG, False)


def _mark(t):
    if isinstance(t, torch.Tensor) and t.ndim > 0:
        setattr(t, TAG, True)
    return t


def _alias(t):
    """A new tensor object on ``t``'s storage (and autograd graph), so a tag set on it stays
    off ``t``."""
    with torch._C.DisableTorchFunction():
        return t.view_as(t)


def _mrirecon_frame():
    """The innermost frame outside torch and this file when it is mrirecon's, else ``None``."""
    f = sys._getframe(1)
    while f is not None and (f.f_code.co_filename.startswith(TORCH)
                             or f.f_code.co_filename == __file__):
        f = f.f_back
    if f is None or not f.f_code.co_filename.startswith(PACKAGE):
        return None
    g = f
    while g is not None:  # (a generator expression inside a host branch has its own code)
        if g.f_code in HOST_BRANCHES:
            return None
        g = g.f_back
    return f


def _is_host(d) -> bool:
    if isinstance(d, torch.device):
        return d.type == "meta"
    return isinstance(d, str) and d.split(":")[0] == "meta"


def _host_to_cpu(a):
    return "cpu" if _is_host(a) else a


def _where(f) -> str:
    return f"{os.path.relpath(f.f_code.co_filename, os.path.dirname(PACKAGE[:-1]))}:{f.f_lineno}"


class _Mode(TorchFunctionMode):
    def __init__(self, log: list):
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        flat, _ = tree_flatten((args, kwargs))
        strays = [a for a in flat if is_stray(a)]
        if name == "__get__" and strays and getattr(getattr(func, "__self__", None), "__name__", "") \
                == "device":
            return HOST
        to_host = any(_is_host(a) for a in flat)
        if to_host:  # created on / moved to a stray's device: the host
            args, kwargs = tree_map(_host_to_cpu, args), tree_map(_host_to_cpu, kwargs)
        if name in ("to", "cpu", "cuda"):
            return self._move(func, name, args, kwargs, to_host)
        data = [a for a in flat if isinstance(a, torch.Tensor) and a.ndim > 0 and not is_stray(a)]
        if name in ("numpy", "__array__") and data and _mrirecon_frame() is not None:
            raise DeviceEscape(f"{name}() of device data at {_where(_mrirecon_frame())} (CUDA "
                               "tensors have no numpy view: move them with .cpu() first)")
        allowed = name == "copy_" or (name in ("__getitem__", "__setitem__") and not is_stray(args[0]))
        if strays and data and not allowed:
            f = _mrirecon_frame()
            raise DeviceEscape(
                f"{name}: a host tensor {tuple(strays[0].shape)} {strays[0].dtype} (created by "
                f"mrirecon without device=, see the log: {sorted(set(self.log))[:4]}) meets device "
                f"data {tuple(data[0].shape)} {data[0].dtype}" + (f" at {_where(f)}" if f else ""))
        out = func(*args, **kwargs)
        if allowed:
            return out  # device data indexed by host indices, or a copy: where args[0] is
        if kwargs.get("device") is not None and not to_host:
            # as_tensor(w, device=y.device), w.new_zeros(n, device=...): on the device
            return _alias(out) if is_stray(out) else out
        if strays or to_host:
            return tree_map(_mark, out)
        if func in FACTORIES and kwargs.get("device") is None and isinstance(out, torch.Tensor) \
                and out.ndim > 0 and not (args and isinstance(args[0], torch.Tensor)):
            f = _mrirecon_frame()  # as_tensor(t) keeps t's device
            if f is not None:
                self.log.append(f"{name} at {_where(f)}")
                return _mark(out)
        return out

    def _move(self, func, name, args, kwargs, to_host):
        src = args[0]
        out = func(*args, **kwargs)
        if not isinstance(src, torch.Tensor) or not isinstance(out, torch.Tensor):
            return out
        rest = list(args[1:]) + list(kwargs.values())
        targets = [a for a in rest if isinstance(a, (str, torch.device, torch.Tensor))]
        if name == "cpu" and _mrirecon_frame() is not None:
            host = True  # an explicit host copy while the data are on the device
            self.log.append(f"cpu() at {_where(_mrirecon_frame())}")
        elif to_host or any(is_stray(a) for a in targets):
            host = True
        elif name == "cuda" or targets:
            host = False  # moved to the data's device
        else:
            host = is_stray(src)  # a dtype change stays where it was
        if host == is_stray(out):
            return out
        if out is src:  # .to() returned the tensor itself: tag a new object, not the caller's
            if isinstance(src, torch.nn.Parameter) and not host:  # Module.to on a stray parameter
                src.__dict__.pop(TAG, None)
                return src
            out = _alias(src)
        return _mark(out) if host else out


def _from_numpy(log, original):
    def from_numpy(array):  # torch.from_numpy is no torch function: modes never see it
        out = original(array)
        f = _mrirecon_frame()
        if f is not None and out.ndim > 0:
            log.append(f"from_numpy at {_where(f)}")
            return _mark(out)
        return out
    return from_numpy


def _host_function(fn, returns_tensor: bool, originals: dict, log: list):
    def wrapped(*args, **kwargs):
        with torch._C.DisableTorchFunction():
            saved, torch.from_numpy = torch.from_numpy, originals["from_numpy"]
            try:
                out = fn(*args, **kwargs)
            finally:
                torch.from_numpy = saved
        if returns_tensor:
            log.append(f"{fn.__name__} (on the host by design)")
            return _mark(out)
        return out
    return wrapped


def _clear_caches():
    """mrirecon's caches of tensors, so that what a test gets was made inside the context: every
    ``functools`` cache of a mrirecon function (the shared CT projector, the FBP's tables and
    weights, the FFT's checkerboards, the wavelet filters ...; one filled by an earlier test,
    outside the context, would hide an escape in the code that builds it) and the dict caches."""
    from mrirecon.functional import density, nufft

    for mod in list(sys.modules.values()):
        if not getattr(mod, "__name__", "").startswith("mrirecon"):
            continue
        for value in list(vars(mod).values()):
            if getattr(value, "__module__", "").startswith("mrirecon") and callable(
                    getattr(value, "cache_clear", None)):
                value.cache_clear()
    density._CACHE.clear()
    nufft._plans.clear()


@contextlib.contextmanager
def device_escapes():
    """Run the body with the host playing the data's device (see the module docstring).

    Yields the log of strays made (``"zeros at mrirecon/x.py:12"``): strays used safely (host
    reads, moved to the device) are no error."""
    log = _Log()
    originals = {"from_numpy": torch.from_numpy}
    patched = []  # (module, name, original) of every binding of a host function
    for fn, returns_tensor in HOST_FUNCTIONS.items():
        wrapped = _host_function(fn, returns_tensor, originals, log)
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("mrirecon"):
                for attr, value in list(vars(mod).items()):
                    if value is fn:
                        patched.append((mod, attr, value))
                        setattr(mod, attr, wrapped)
    _clear_caches()
    torch.from_numpy = _from_numpy(log, originals["from_numpy"])
    try:
        with _Mode(log):
            yield log
    finally:
        torch.from_numpy = originals["from_numpy"]
        for mod, attr, value in patched:
            setattr(mod, attr, value)
        _clear_caches()
