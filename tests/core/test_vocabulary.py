"""One vocabulary across reconstructions, solvers, pipeline configs and the CLI (issue 13):
``iterations`` and ``lam``. The old spellings still work for one release with a FutureWarning,
old and new together are an error, and registries / signatures / ``--help`` show only the new
names."""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
import torch

from mrirecon import recon, solvers
from mrirecon.cli import main
from mrirecon.core.names import DEPRECATED
from mrirecon.operators import FiniteDifference, sense
from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline

OLD = re.compile(r"\b(" + "|".join(DEPRECATED) + r")\b")


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 32, 24, dtype=torch.complex128, generator=g)
    maps = maps / maps.abs().pow(2).sum(0).sqrt()
    mask = torch.zeros(24, dtype=torch.bool)
    mask[::2] = True
    mask[10:15] = True
    op = sense(maps, mask)
    x = torch.randn(32, 24, dtype=torch.complex128, generator=g)
    return op, op(x)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("method, old, new", [
    ("cg_sense", {"max_iterations": 3}, {"iterations": 3}),
    ("l1_wavelet", {"lam": 0.01, "max_iterations": 3}, {"lam": 0.01, "iterations": 3}),
    ("tv", {"lam": 0.01, "max_iterations": 3}, {"lam": 0.01, "iterations": 3}),
    ("tgv", {"lamda": 0.01, "max_iterations": 3}, {"lam": 0.01, "iterations": 3}),
    ("grappa", {"calib": 5, "kernel_size": (3, 3), "lamda": 0.02},
     {"calib": 5, "kernel_size": (3, 3), "lam": 0.02}),
    ("dlmri", {"nu": 0.05, "outer_iterations": 1, "patch_size": 3, "atoms_per_axis": 3},
     {"lam": 0.05, "iterations": 1, "patch_size": 3, "atoms_per_axis": 3}),
])
def test_old_names_in_recon_run_warn_and_give_the_same_result(problem, method, old, new):
    op, y = problem
    with pytest.warns(FutureWarning, match=rf"{method}: '\w+' is deprecated, use '(iterations|lam)'"):
        a = recon.run(method, y, op, **old)
    b = _quiet(recon.run, method, y, op, **new)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_old_and_new_name_together_is_an_error(problem):
    op, y = problem
    with pytest.raises(ValueError, match="both 'max_iterations' .* and 'iterations'"):
        recon.run("cg_sense", y, op, max_iterations=2, iterations=3)
    with pytest.raises(ValueError, match="both 'lamda' .* and 'lam'"):
        recon.grappa(y, 5, (3, 3), lamda=0.1, lam=0.1)
    with pytest.raises(ValueError, match="both 'max_iterations' .* and 'iterations'"):
        solvers.cg(lambda v: v, y, max_iterations=2, iterations=3)


def test_solvers_and_power_iteration_accept_the_old_name(problem):
    op, y = problem
    rhs = op.H(y)
    with pytest.warns(FutureWarning, match="cg: 'max_iterations' is deprecated"):
        a = solvers.cg(op.gram, rhs, max_iterations=4)
    torch.testing.assert_close(a, _quiet(solvers.cg, op.gram, rhs, iterations=4), rtol=0, atol=0)
    with pytest.warns(FutureWarning, match="operator_norm: 'max_iterations' is deprecated"):
        n_old = op.operator_norm(rhs, max_iterations=7)
    assert float(n_old) == float(_quiet(op.operator_norm, rhs, iterations=7))
    with pytest.warns(FutureWarning, match="max_eigenvalue: 'max_iterations' is deprecated"):
        solvers.max_eigenvalue(op.gram, rhs, max_iterations=3)


def test_epll_stages_is_the_outer_iteration_count():
    from mrirecon.recon.epll import default_sigmas, epll

    with pytest.warns(FutureWarning, match="'stages' is deprecated, use 'iterations'"):
        assert default_sigmas(stages=4) == default_sigmas(iterations=4)
    assert list(inspect.signature(epll).parameters).count("stages") == 0


def test_registry_and_signatures_list_only_the_new_names():
    for name in recon.available():
        params = recon.parameters(name)
        assert not set(params) & set(DEPRECATED), (name, params)
        assert not OLD.search(recon.describe(name)), recon.describe(name)
    for name in ("cg", "cg_solve", "fista", "admm", "pdhg", "max_eigenvalue"):
        params = set(inspect.signature(getattr(solvers, name)).parameters)
        assert "iterations" in params and not params & set(DEPRECATED), (name, params)
    assert "iterations" in inspect.signature(FiniteDifference(2).operator_norm).parameters


@pytest.mark.parametrize("command", [["run", "--help"], ["bench", "--help"], ["--help"]])
def test_cli_help_shows_only_the_new_names(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    # "stages" is also the pipeline's word for its steps (load, undersample, ...): only its use as
    # a parameter name (``stages=``, ``--stages``, ``.stages``) would be the old vocabulary
    words = {m.group(0) for m in OLD.finditer(out)} - {"stages"}
    assert out and not words, words
    assert not re.search(r"(--|\.)stages\b|\bstages=", out)


def test_shipped_pipelines_use_only_the_new_names():
    # (the train_*.yaml configs hold model constructor parameters: the models' vocabulary)
    for path in sorted(p for p in PIPELINES.glob("*.yaml") if not p.stem.startswith("train_")):
        text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        assert not OLD.search(text), (path.name, OLD.search(text))


def _write_ct_pipeline(tmp_path, params: str):
    path = tmp_path / "old_names.yaml"
    path.write_text("name: old-names\nmodality: ct\nload: {format: auto}\n"
                    f"reconstruct:\n  method: tv_ct\n  params: {params}\n"
                    "evaluate: {enabled: true}\nexport: {formats: [hdf5]}\n")
    return path


def test_yaml_with_old_names_runs_with_a_warning_naming_the_file(tmp_path):
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.pipeline.runner import run_pipeline

    data = tmp_path / "ct"
    simulate_ct_dataset(data, geometry="parallel", views=30, photons=4096.0, size=32, seed=3,
                        samples=1, part="test", sources="phantom")
    path = _write_ct_pipeline(tmp_path, "{lamda: 0.5, max_iterations: 3}")
    with pytest.warns(FutureWarning) as record:
        config, text = load_pipeline(str(path))
    messages = [str(w.message) for w in record]
    assert any(str(path) in m and "reconstruct.params: 'lamda' is deprecated, use 'lam'" in m
               for m in messages), messages
    assert any("'max_iterations' is deprecated, use 'iterations'" in m for m in messages)
    assert config.reconstruct.params == {"lam": 0.5, "iterations": 3}
    code = run_pipeline(config, [str(data / "observation_test_000.hdf5")], tmp_path / "out", progress=False,
                        config_text=text)
    assert code == 0


def test_yaml_with_old_and_new_name_is_a_config_error(tmp_path):
    path = _write_ct_pipeline(tmp_path, "{lamda: 0.5, lam: 0.1}")
    with pytest.raises(ConfigError, match=r"old_names.yaml: reconstruct.params.lamda: both 'lamda' "
                                          r"\(deprecated\) and 'lam' are given"):
        load_pipeline(str(path))


def test_bench_params_with_old_names_override_the_new_defaults(tmp_path):
    # the benchmarks merge user parameters into defaults that use the new names: an old name
    # must replace the default, not collide with it
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.bench import run_ct_bench

    with pytest.warns(FutureWarning, match="cg_sense: 'max_iterations' is deprecated"):
        assert recon.canonical_parameters("cg_sense", {"max_iterations": 3}) == {"iterations": 3}
    simulate_ct_dataset(tmp_path / "ct", geometry="parallel", views=30, photons=4096.0, size=32,
                        seed=3, samples=1, part="test", sources="phantom")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        table = run_ct_bench(tmp_path / "ct", (3,), "tv_ct", progress=False,
                             params={"tv_ct": {"max_iterations": 2, "lamda": 5.0}})
    messages = {str(w.message).split(" is deprecated")[0] for w in record
                if issubclass(w.category, FutureWarning)}
    assert messages == {"tv_ct: 'max_iterations'", "tv_ct: 'lamda'"}
    assert "| tv_ct" in table.to_markdown()


def test_old_name_override_replaces_the_new_name_of_the_file(tmp_path):
    with pytest.warns(FutureWarning, match=r"--set: reconstruct.params: 'max_iterations' is "
                                           r"deprecated, use 'iterations'"):
        config, _ = load_pipeline("mri_cs", ["reconstruct.params.max_iterations=3"])
    assert config.reconstruct.params["iterations"] == 3
    assert "max_iterations" not in config.reconstruct.params
    # an old file with an old-name override (both renamed, each warning names its source)
    path = _write_ct_pipeline(tmp_path, "{lamda: 0.5, max_iterations: 30}")
    with pytest.warns(FutureWarning) as record:
        config, _ = load_pipeline(str(path), ["reconstruct.params.max_iterations=3",
                                              "reconstruct.params.lam=0.25"])
    assert config.reconstruct.params == {"lam": 0.25, "iterations": 3}
    sources = {str(w.message).split(": reconstruct.params")[0] for w in record}
    assert sources == {str(path), "--set"}
