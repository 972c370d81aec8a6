"""Per-acceleration / per-view-count settings of classical pipelines
(``reconstruct.params_by_acceleration`` / ``params_by_views``, :mod:`mrirecon.pipeline.param_tables`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.param_tables import for_slice, nearest
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import simulated_ct_dir

SMALL = ["calibrate.calib_width=12", "calibrate.kernel_width=4", "export.formats=[hdf5]",
         "report.enabled=false", "undersample.enabled=true", "reconstruct.params.iterations=8"]


@pytest.fixture(scope="module")
def mri_file(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mri")
    simulate_mri_dataset(out, volumes=1, slices=1, coils=4, size=(64, 64), seed=5, resolution=2)
    return next(out.glob("*.h5"))


def _run(path: Path, out: Path, name: str, *extra: str) -> tuple[np.ndarray, dict]:
    config, text = load_pipeline(name, list(extra))
    assert run_pipeline(config, [str(path)], out, progress=False, config_text=text) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    with h5py.File(out / "reconstructions" / f"{path.stem}.h5") as h5:
        return h5["reconstruction"][()], entry


def test_the_nearest_entry_on_a_log_scale():
    assert nearest([4.0, 8.0], 5.6) == 4.0 and nearest([4.0, 8.0], 5.7) == 8.0  # meet at sqrt(32)
    assert nearest([8.0, 4.0], 1.0) == 4.0 and nearest([4.0, 8.0], 12.0) == 8.0
    assert nearest([30.0, 60.0], 31) == 30.0 and nearest([30.0, 60.0], 63) == 60.0
    assert nearest([30.0, 60.0], 42) == 30.0 and nearest([30.0, 60.0], 43) == 60.0  # sqrt(1800) = 42.4
    assert nearest([4.0, 8.0], math.sqrt(32.0)) == 4.0  # a tie goes to the smaller key


def test_params_hold_for_every_slice_and_harder_data_warn():
    config, _ = load_pipeline("mri_tv")
    at8 = for_slice(config.reconstruct, 7.8)
    assert at8.key == 8.0 and at8.config.params == {"iterations": 100, "rho": 0.001, "lam": 1e-3}
    assert at8.warning is None and "params_by_acceleration: the settings of 8 (lam=0.001)" in at8.note
    full = for_slice(config.reconstruct, 1.0)  # fully sampled: easier than 4x, no warning
    assert full.config.params["lam"] == 3e-4 and full.warning is None
    harder = for_slice(config.reconstruct, 12.0)
    assert harder.config.params["lam"] == 1e-3 and "acceleration 12 is beyond" in harder.warning
    # the 5 % margin (a mask's effective rate is within ~5 % of its nominal one): harder than
    # 8 x 1.05 = 8.4x warns, 8.3x does not
    assert for_slice(config.reconstruct, 8.3).warning is None
    assert "acceleration 8.5 is beyond" in for_slice(config.reconstruct, 8.5).warning
    mine, _ = load_pipeline("mri_tv", ["reconstruct.params.lam=2e-3"])
    assert for_slice(mine.reconstruct, 8.0).config.params["lam"] == 2e-3
    assert for_slice(mine.reconstruct, 4.0).config.params["lam"] == 2e-3
    ct, _ = load_pipeline("ct_tv")
    assert for_slice(ct.reconstruct, 63).config.params == {"iterations": 300, "lam": 14.0, "rho": 0.02}
    assert for_slice(ct.reconstruct, 1000).warning is None  # every view: easier
    assert "views 20 is beyond" in for_slice(ct.reconstruct, 20).warning
    # fewer than 30 / 1.05 = 28.57 views warn: 28 does, 29 does not
    assert for_slice(ct.reconstruct, 29).warning is None
    assert "views 28 is beyond reconstruct.params_by_views's 30 .. 60" in for_slice(ct.reconstruct, 28).warning


def test_mri_slices_run_the_entry_of_their_acceleration(mri_file, tmp_path):
    """The 8x slice runs exactly what one fixed setting of the 8x entry gives (the same image),
    not the 4x entry's, and the record says which entry ran."""
    at8 = ["undersample.accelerations=[8]", "undersample.center_fractions=[0.04]"]
    table, entry = _run(mri_file, tmp_path / "table", "mri_tv", *SMALL, *at8)
    fixed, _ = _run(mri_file, tmp_path / "fixed", "mri_tv", *SMALL, *at8,
                    "reconstruct.params_by_acceleration={}", "reconstruct.params.lam=1e-3")
    other, _ = _run(mri_file, tmp_path / "other", "mri_tv", *SMALL, *at8,
                    "reconstruct.params_by_acceleration={}", "reconstruct.params.lam=3e-4")
    np.testing.assert_array_equal(table, fixed)
    assert np.abs(table - other).max() > 1e-3 * np.abs(fixed).max()
    assert any("params_by_acceleration: the settings of 8 (lam=0.001)" in n for n in entry["notes"])
    _, entry4 = _run(mri_file, tmp_path / "at4", "mri_tv", *SMALL)
    assert any("the settings of 4 (lam=0.0003)" in n for n in entry4["notes"])
    _, entry12 = _run(mri_file, tmp_path / "at12", "mri_tv", *SMALL, "undersample.accelerations=[12]",
                      "undersample.center_fractions=[0.04]")
    assert any("beyond reconstruct.params_by_acceleration's 4 .. 8" in w for w in entry12["warnings"])


def test_ct_slices_run_the_entry_of_their_view_count(tmp_path):
    ct_dir = simulated_ct_dir(tmp_path / "data", views=120, size=48, seed=4)
    path = ct_dir / "observation_test_000.hdf5"
    fast = ["reconstruct.params.iterations=10", "export.formats=[hdf5]", "report.enabled=false"]
    table, entry = _run(path, tmp_path / "table", "ct_tv", *fast, "undersample.views=60")
    fixed, _ = _run(path, tmp_path / "fixed", "ct_tv", *fast, "undersample.views=60",
                    "reconstruct.params_by_views={}", "reconstruct.params.lam=14",
                    "reconstruct.params.rho=0.02")
    np.testing.assert_array_equal(table, fixed)
    assert any("params_by_views: the settings of 60 (lam=14.0, rho=0.02)" in n for n in entry["notes"])
    _, entry30 = _run(path, tmp_path / "at30", "ct_tv", *fast)
    assert any("the settings of 30 (lam=7.0, rho=0.01)" in n for n in entry30["notes"])


@pytest.mark.parametrize(("name", "override", "key", "text"), [
    ("mri_tv", "reconstruct.params_by_acceleration.x.lam=1", "reconstruct.params_by_acceleration.x",
     "must be an acceleration"),
    ("mri_tv", "reconstruct.params_by_acceleration.8.lamm=1", "reconstruct.params_by_acceleration.8.lamm",
     "did you mean 'lam'"),
    ("mri_tv", "reconstruct.params_by_acceleration.8=3", "reconstruct.params_by_acceleration.8",
     "expected a mapping"),
    ("mri_tv", "reconstruct.params_by_acceleration.8.lam=-1", "reconstruct.params_by_acceleration.8.lam",
     "must be finite and >= 0, got -1"),
    ("mri_tv", "reconstruct.params_by_views={30: {lam: 1}}", "reconstruct.params_by_views",
     "an MRI pipeline have no views"),
    ("ct_tv", "reconstruct.params_by_views.30.preconditioned=true",
     "reconstruct.params_by_views.30.preconditioned", "setting of method='pdhg'"),
    ("ct_tv", "reconstruct.params_by_views.30.5.lam=3", "reconstruct.params_by_views.30.5", "no parameter '5'"),
    ("ct_tv", "reconstruct.params_by_views={0: {lam: 3}}", "reconstruct.params_by_views.0", "view count"),
    ("mri_pnp_brain_sim", "reconstruct.params_by_acceleration.8.iterations=abc",
     "reconstruct.params_by_acceleration.8.iterations", "must be an integer >= 1, got 'abc'"),
    ("mri_pnp_brain_sim", "reconstruct.params_by_acceleration.8.rho=-1",
     "reconstruct.params_by_acceleration.8.rho", "must be finite and >= 0"),
    ("mri_learned", "reconstruct.params_by_acceleration={4: {lam: 0.1}}",
     "reconstruct.params_by_acceleration.4.lam", "lets a run change iterations (overridable), not 'lam'"),
    ("ct_tv", "reconstruct.params_by_views.30={}", "reconstruct.params_by_views.30.lam", "tv_ct needs lam"),
])
def test_bad_tables_are_refused_naming_the_entry(name, override, key, text):
    with pytest.raises(ConfigError) as err:
        load_pipeline(name, [override])
    assert err.value.key == key and text in err.value.message
    assert err.value.source.startswith("--set over") and err.value.source.endswith(f"{name}.yaml")


def test_radial_data_with_a_table_are_refused(tmp_path):
    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

    simulate_noncartesian_dataset(tmp_path / "data", "radial", volumes=1, slices=1, coils=4,
                                  size=(32, 32), readouts=24, seed=1)
    config, text = load_pipeline("mri_tv", ["export.formats=[hdf5]", "report.enabled=false",
                                            "reconstruct.params.iterations=3"])
    out = tmp_path / "out"
    run_pipeline(config, [str(tmp_path / "data")], out, progress=False, config_text=text)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    assert entry["status"] != "ok"
    assert "non-Cartesian data have no acceleration" in entry["error"]
    assert "reconstruct.params_by_acceleration" in entry["error"]


def test_a_new_method_leaves_the_files_tables_behind(caplog):
    """``mri_cs``'s L1-wavelet iterations are no CG-SENSE setting: a ``--set`` of the method
    drops the tables, with a log line, unless it sets a table too."""
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        config, _ = load_pipeline("mri_cs", ["reconstruct.method=cg_sense"])
    assert config.reconstruct.params_by_acceleration == {} and config.reconstruct.params == {"lam": 1e-4}
    assert any("tuned for l1_wavelet, not used with reconstruct.method=cg_sense" in r.message
               for r in caplog.records)
    kept, _ = load_pipeline("mri_cs", ["reconstruct.method=cg_sense",
                                       "reconstruct.params_by_acceleration.8.iterations=50"])
    assert kept.reconstruct.params_by_acceleration == {4.0: {"iterations": 300}, 8.0: {"iterations": 50}}


def test_a_new_method_names_the_files_params_it_keeps():
    """``--set reconstruct.method=tv`` over ``mri_cs`` ran TV at L1-wavelet's tuned ``lam`` 1e-4
    (``mri_tv``'s own: 3e-4 / 1e-3) without a word; the kept params are now named in the log and
    the config's warnings (``provenance.json``), and not when the user sets them."""
    from mrirecon.pipeline.definitions import load_pipeline_warned

    config, _, warned = load_pipeline_warned("mri_cs", ["reconstruct.method=tv"])
    assert config.reconstruct.params == {"lam": 1e-4}
    (note,) = [w for w in warned if "kept for" in w]
    assert ("reconstruct.params.lam=0.0001 was written for l1_wavelet (the file's "
            "reconstruct.method) and is kept for reconstruct.method=tv") in note
    for own in (["reconstruct.params.lam=3e-4"], ["reconstruct.params={lam: 3e-4}"]):
        _, _, warned = load_pipeline_warned("mri_cs", ["reconstruct.method=tv", *own])
        assert not [w for w in warned if "kept for" in w], warned
    _, _, warned = load_pipeline_warned("mri_cs", ["reconstruct.params.lam=3e-4"])  # same method
    assert not [w for w in warned if "kept for" in w or "tuned for" in w], warned


def test_a_dotted_override_replaces_or_extends_the_numbered_entry():
    """YAML's ``30:`` is the integer 30, a dotted ``--set`` names it "30": the override must reach
    that entry (one of its settings, or a mapping merged into it), not add a twin that merges
    into it."""
    config, _ = load_pipeline("ct_tv", ["reconstruct.params_by_views.60.lam=20"])
    assert config.reconstruct.params_by_views == {30: {"lam": 7.0, "rho": 0.01}, 60: {"lam": 20, "rho": 0.02}}
    config, _ = load_pipeline("ct_tv", ["reconstruct.params_by_views.60={lam: 20}"])
    assert config.reconstruct.params_by_views[60] == {"lam": 20, "rho": 0.02}  # merged


def test_a_learned_table_needs_weights_with_a_card():
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_pnp_brain_sim", ["reconstruct.weights=null",
                                            "reconstruct.params_by_acceleration={4: {iterations: 3}}"])
    assert err.value.key == "reconstruct.params_by_acceleration" and "weights is empty" in err.value.message


def test_a_learned_model_runs_the_entry_of_each_slice_and_keeps_its_own(mri_file, tmp_path):
    """A learned model's table (its card's overridable inference settings) sets the slice's
    values on the model for that slice only: the 8x slice gives exactly the image of the same
    setting fixed in ``reconstruct.params``, not the other entry's, and the model's own values
    come back after each slice (checked on the model object across two runs in one process)."""
    from mrirecon.pipeline.param_tables import model_settings

    quick = ["export.formats=[hdf5]", "report.enabled=false", "undersample.enabled=true",
             "calibrate.calib_width=12", "calibrate.kernel_width=4",
             "undersample.accelerations=[8]", "undersample.center_fractions=[0.04]"]
    table = "reconstruct.params_by_acceleration={4: {iterations: 2}, 8: {iterations: 4, rho: 0.01}}"
    by_table, entry = _run(mri_file, tmp_path / "table", "mri_pnp_brain_sim", *quick, table)
    fixed, _ = _run(mri_file, tmp_path / "fixed", "mri_pnp_brain_sim", *quick,
                    "reconstruct.params.iterations=4", "reconstruct.params.rho=0.01")
    other, _ = _run(mri_file, tmp_path / "other", "mri_pnp_brain_sim", *quick,
                    "reconstruct.params.iterations=2")
    np.testing.assert_array_equal(by_table, fixed)
    assert np.abs(by_table - other).max() > 1e-3 * np.abs(fixed).max()
    assert any("the settings of 8 (iterations=4, rho=0.01)" in n for n in entry["notes"])

    class Model:
        iterations, rho = 40, 0.005

    config, _ = load_pipeline("mri_pnp_brain_sim", [table])
    model = Model()
    with model_settings(model, for_slice(config.reconstruct, 8.0).config):
        assert (model.iterations, model.rho) == (4, 0.01) and isinstance(model.iterations, int)
    assert (model.iterations, model.rho) == (40, 0.005)
    with pytest.raises(RuntimeError), model_settings(model, for_slice(config.reconstruct, 4.0).config):
        assert model.iterations == 2
        raise RuntimeError  # a failed slice restores them too
    assert (model.iterations, model.rho) == (40, 0.005)


def test_a_learned_table_of_a_build_time_setting_is_refused():
    """An overridable setting the built model does not hold as an attribute under that name
    cannot change per slice: refused naming the entry."""
    from mrirecon.pipeline.param_tables import check_model_table
    from mrirecon.pipeline.schema import ReconstructConfig

    class Model:
        iterations = 10

    check_model_table(Model(), ReconstructConfig("modl", params_by_acceleration={8.0: {"iterations": 15}}))
    with pytest.raises(ValueError, match=r"params_by_acceleration\.8\.cg_iterations: Model uses"):
        check_model_table(Model(), ReconstructConfig("modl", params_by_acceleration={8.0: {"cg_iterations": 5}}))


def test_every_shipped_overridable_setting_can_follow_the_data():
    """What a shipped card lists as ``overridable`` is what a pipeline's table may set, so each
    must be a plain attribute of the built model (else such a table is refused at load)."""
    from mrirecon.pipeline.param_tables import check_model_table
    from mrirecon.pipeline.schema import ReconstructConfig
    from mrirecon.training.weights import available_weights, load_pretrained, model_card

    checked = []
    for name in available_weights():
        settings = model_card(name).get("overridable") or []
        if settings:
            model = load_pretrained(name)
            entry = {k: getattr(model, k, None) for k in settings}
            check_model_table(model, ReconstructConfig(name, params_by_acceleration={8.0: entry}))
            checked.append(name)
    assert {"pnp_dncnn_brain_sim", "modl_fastmri_diverse", "staged_ct_lodopab"} <= set(checked)


def test_padding_columns_a_mask_marks_are_not_counted_as_sampled():
    """A fastMRI mask drawn over the padded width marks padding columns (zero k-space outside
    ``[padding_left, padding_right)``); reconcile_mask leaves them as the mask has them. The
    slice's acceleration (which picks ``params_by_acceleration``'s entry, and the "fully
    sampled" warning) counts only acquirable columns: sampled <= acquirable always."""
    from mrirecon.containers import Header, KSpace
    from mrirecon.pipeline.slice_mri import column_counts, make_slice

    coils, h, w, left, right = 2, 16, 24, 4, 20
    mask = torch.zeros(w, dtype=torch.bool)
    mask[::2] = True  # every other column over the whole width, padding included
    mask[w // 2 - 2:w // 2 + 2] = True
    header = Header(encoded_matrix=(h, w, 1), recon_matrix=(h, w, 1), padding_left=left,
                    padding_right=right)
    acquirable = header.acquired_columns(w)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(1, coils, h, w, dtype=torch.complex64, generator=g)
    data = data * (mask & acquirable)[None, None, None, :]  # zero in the padding, as stored
    s = make_slice(KSpace(data, header, mask=mask), 0, "f.h5", None)
    sampled, total = column_counts(s)
    assert total == right - left
    assert sampled == int((s.mask.reshape(-1).bool() & acquirable).sum())
    assert sampled <= total
