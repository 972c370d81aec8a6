"""Reconstructions a user registers (``recon.register``): names that would shadow a learned
model, the output contract checked after the call, and the code identity stored for resume."""

from __future__ import annotations

import warnings

import pytest
import torch

from mrirecon import recon
from mrirecon.core.checks import NonFiniteError
from mrirecon.models import available_models
from mrirecon.operators import sense
from mrirecon.recon import registry
from mrirecon.training.weights import available_weights
from tests.helpers import shepp_sense_problem


def _cg(y, op, *, iterations: int = 5):
    """MRI: CG-SENSE"""
    return recon.cg_sense(y, op, iterations=iterations)


# -- finding 4: learned-model names ------------------------------------------------------------


@pytest.mark.parametrize("name", ["modl", "varnet", "pnp_admm", "MoDL", "modl_brain_sim"])
def test_a_learned_model_or_shipped_weights_name_needs_overwrite(name, restored_registry):
    """``register("modl", fn)`` was accepted and shadowed MoDL: a pipeline naming ``modl`` ran
    the user's function (exit 0), and the shipped ``mri_modl_brain_sim`` was refused with "'modl'
    is a classical method and takes no weights"."""
    assert "modl" in available_models() and "modl_brain_sim" in available_weights()
    with pytest.raises(ValueError, match=rf"register: {name!r} is the name of a learned "
                                         r"(model|model's shipped weights).*overwrite=True"):
        recon.register(name, _cg)
    assert name not in recon.available()
    with pytest.warns(UserWarning, match=rf"register: {name!r} now names your function"):
        recon.register(name, _cg, overwrite=True)
    assert recon.available().count(name) == 1


def test_re_registering_a_users_own_name_stays_quiet(restored_registry):
    recon.register("my_cs_quiet", _cg)
    with pytest.raises(ValueError, match="already registered"):
        recon.register("my_cs_quiet", _cg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recon.register("my_cs_quiet", _cg, overwrite=True)  # a notebook cell run again
    with pytest.warns(UserWarning, match=r"register: 'cg_sense' now names your function"):
        recon.register("cg_sense", _cg, overwrite=True)  # a shipped method replaced


# -- finding 6: the output contract -----------------------------------------------------------


def _problem(n: int = 64):
    maps = torch.ones(4, n, n, dtype=torch.complex64) / 2
    op = sense(maps, torch.ones(n))
    y = op(torch.randn(n, n, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)))
    return op, y


def test_a_registered_method_returning_another_shape_is_named(restored_registry):
    """A method returning rows 12:52 of 64 failed later with "RuntimeError: The size of tensor
    a (64) must match the size of tensor b (40)" in a warning helper of the pipeline."""
    def my_crop(y, op):
        """MRI: zero-filled, cropped"""
        return op.H(y)[..., 12:52, :]

    recon.register("my_crop", my_crop)
    op, y = _problem()
    with pytest.raises(ValueError, match=r"my_crop returned an image of shape \(40, 64\); the "
                                         r"operator's image is \(64, 64\)"):
        recon.run("my_crop", y, op)
    # leading slice axes are the method's; the trailing image axes are checked
    recon.register("my_zf", lambda y, op: op.H(y))
    assert recon.run("my_zf", torch.stack([y, 2 * y]), op).shape == (2, 64, 64)


@pytest.mark.parametrize("returned, error, message", [
    (lambda x: x.numpy(), TypeError, r"my_bad returned a ndarray, not an image tensor"),
    (lambda x: (x, 3), TypeError, r"my_bad returned a tuple, not an image tensor"),
    (lambda x: x * float("nan"), NonFiniteError,
     r"my_bad returned 4096 NaN or Inf values \(of 4096\) from finite data"),
])
def test_a_registered_method_returning_no_image_is_named(returned, error, message,
                                                          restored_registry):
    recon.register("my_bad", lambda y, op: returned(op.H(y)))
    op, y = _problem()
    with pytest.raises(error, match=message):
        recon.run("my_bad", y, op)


def test_the_output_check_leaves_the_shipped_methods_alone():
    """The shipped methods keep the contract the check asks for (their results unchanged)."""
    _, op, y = shepp_sense_problem(n=32)
    direct = recon.cg_sense(y, op, iterations=5)
    assert torch.equal(recon.run("cg_sense", y, op, iterations=5), direct)
    assert recon.run("zero_filled_rss", y).shape == (32, 32)  # no operator: shape not judged


# -- finding 2: the code identity stored at registration --------------------------------------


def test_register_stores_the_source_checksum_of_a_users_function(restored_registry):
    def my_cs(y, op, *, iterations: int = 5):
        """MRI: version 1"""
        return recon.cg_sense(y, op, iterations=iterations)

    recon.register("my_cs_id", my_cs)
    first = registry.registered_code()["my_cs_id"]
    assert len(first) == 64
    recon.register("my_cs_id", my_cs, overwrite=True)  # the same function: the same identity
    assert registry.registered_code()["my_cs_id"] == first

    def my_cs(y, op, *, iterations: int = 5):  # noqa: F811  (the cell edited and run again)
        """MRI: version 2"""
        return op.H(y)

    recon.register("my_cs_id", my_cs, overwrite=True)
    assert registry.registered_code()["my_cs_id"] != first
    # mrirecon's own methods are in the package's checksum, not listed
    assert not set(registry.registered_code()) & {"cg_sense", "tgv", "epll"}


def test_code_without_source_is_identified_by_its_byte_code(restored_registry):
    """A function made by ``exec`` has no source file: its code object identifies it."""
    def made(body: str, lam: float):
        scope = {"recon": recon}
        exec(f"def f(y, op, lam={lam}):\n    return {body}\n", scope)
        return scope["f"]

    ids = []
    for fn in (made("op.H(y)", 0.1), made("op.H(y)", 0.1), made("2 * op.H(y)", 0.1),
               made("op.H(y)", 0.2)):
        recon.register("my_exec", fn, overwrite=True)
        ids.append(registry.registered_code()["my_exec"])
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3


def test_no_shipped_classical_method_is_named_like_a_learned_model():
    """mrirecon's own registrations are not checked (no import of the weights at start-up): its
    names must not clash."""
    learned = set(available_models()) | set(available_weights())
    assert not set(recon.available()) & learned


def test_closures_partials_and_wrappers_are_part_of_the_identity(restored_registry):
    """What a user changes between runs without touching a ``def``: a closure's value, a
    ``functools.partial``'s arguments, the body of a ``functools.wraps`` wrapper around one of
    mrirecon's methods (which copies its ``__module__``)."""
    import functools

    def make(lam):
        def my_tv(y, op):
            return recon.tv(y, op, lam=lam)
        return my_tv

    def wrapped(scale):
        @functools.wraps(recon.cg_sense)
        def wrapper(y, op, **kw):
            return scale * recon.cg_sense(y, op, **kw)
        return wrapper

    def code(fn):
        recon.register("my_id", fn, overwrite=True)
        return registry.registered_code()["my_id"]

    assert code(make(0.1)) == code(make(0.1)) != code(make(0.2))
    tv_partial = functools.partial(recon.tv, lam=0.1)
    assert code(tv_partial) == code(functools.partial(recon.tv, lam=0.1)) != code(
        functools.partial(recon.tv, lam=0.2))
    assert code(wrapped(2.0)) != code(wrapped(3.0))
    loop: list = []
    loop.append(loop)  # a self-referencing closure value ends

    def looped(y, op):
        return loop and op.H(y)

    assert len(code(looped)) == 64
    recon.register("my_own", recon.cg_sense)  # mrirecon's own: in the package's checksum
    assert "my_own" not in registry.registered_code()


def test_settable_parameters_leave_out_what_the_stage_supplies():
    """``x0``, ``callback`` and the STAGE_SUPPLIED parameters are never settable from a config or
    ``--set`` (the bench listed ``callback`` and then failed with an internal error)."""
    from mrirecon import recon
    from mrirecon.recon.registry import STAGE_SUPPLIED, settable_parameters

    for name in recon.available():
        settable = settable_parameters(name)
        assert not {"x0", "callback", *STAGE_SUPPLIED.get(name, ())} & set(settable), name
        assert set(settable) <= set(recon.parameters(name)), name
    assert "callback" in recon.parameters("cg_sense")  # the method does take one
