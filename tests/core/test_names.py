"""The parameter vocabulary: deprecated spellings map to the canonical names, with a warning."""

import inspect
import warnings

import pytest

from mrirecon.core.names import DEPRECATED, accepts_deprecated_names, canonical_params


@accepts_deprecated_names
def _solver(x, iterations: int = 3, lam: float = 0.1):
    return iterations, lam


def test_deprecated_names_are_renamed_with_a_warning():
    with pytest.warns(FutureWarning, match="'max_iterations' is deprecated, use 'iterations'"):
        assert _solver(0, max_iterations=7) == (7, 0.1)
    with pytest.warns(FutureWarning, match="'lamda' is deprecated"):
        assert _solver(0, lamda=0.5) == (3, 0.5)


def test_canonical_names_pass_silently_and_signature_is_canonical():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _solver(0, iterations=2, lam=1.0) == (2, 1.0)
    assert list(inspect.signature(_solver).parameters) == ["x", "iterations", "lam"]


def test_old_and_new_together_is_an_error():
    with pytest.raises(ValueError, match="both 'nu' .* and 'lam'"):
        canonical_params({"nu": 1.0, "lam": 2.0}, ["lam"], "f")


def test_old_name_kept_where_the_target_still_uses_it():
    # a function whose own parameter is called ``nu`` (e.g. a physical quantity) keeps it
    assert canonical_params({"nu": 1.0}, ["nu", "lam"], "f") == {"nu": 1.0}
    # an unknown key is left for the caller's own validation to reject
    assert canonical_params({"lamda": 1.0}, ["alpha"], "f") == {"lamda": 1.0}


def test_every_alias_points_to_a_canonical_name():
    assert set(DEPRECATED.values()) == {"iterations", "lam"}


@accepts_deprecated_names(old_cap=("cap", lambda on: None if on else 0))
def _own_alias(x, *, cap: int | None = None, iterations: int = 3):
    return cap, iterations


def test_an_own_old_keyword_whose_value_changed_form_is_converted():
    """A function's own renamed keyword whose value changed too (``MRITrainingSet``'s
    ``cache_maps=False`` -> ``maps_cache=MapsCache(0)``); the shared aliases still apply."""
    with pytest.warns(FutureWarning, match="_own_alias: 'old_cap' is deprecated, use 'cap'"):
        assert _own_alias(0, old_cap=False) == (0, 3)
    with pytest.warns(FutureWarning):
        assert _own_alias(0, old_cap=True, max_iterations=5) == (None, 5)
    with pytest.raises(ValueError, match="both 'old_cap' .* and 'cap'"):
        _own_alias(0, old_cap=True, cap=2)
    assert list(inspect.signature(_own_alias).parameters) == ["x", "cap", "iterations"]
    with pytest.raises(TypeError):  # another function does not take it
        _solver(0, old_cap=True)
