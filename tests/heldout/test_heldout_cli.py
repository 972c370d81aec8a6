"""``benchmarks/heldout.py``: what each part runs, records and refuses; the tuning's edge rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import mrirecon

ROOT = Path(mrirecon.__file__).parent.parent


@pytest.fixture
def heldout_cli(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("heldout", None)
    import heldout

    return heldout


@pytest.mark.parametrize("argv, names", [
    # TV's MRI name on the CT part: was exit 0 with an empty table {"30": {}, "60": {}}
    (["eval", "--parts", "ct", "--methods", "tv"], ["--methods tv", "tv_ct", "staged_ct_lodopab"]),
    (["eval", "--parts", "mri386"], ["--parts mri386", "mri368"]),  # a misspelt part: was exit 0
    (["eval", "--parts", "mri,ct", "--methods", "tv,sirt,bogus"], ["--methods bogus", "mri:", "ct:"]),
    # a CT method on the classical MRI grids: was a raw KeyError
    (["tune", "--parts", "mri", "--methods", "tv_ct"], ["--methods tv_ct", "grappa", "l1_wavelet"]),
    (["tune", "--parts", "pnp_mri", "--methods", "grappa"], ["pnp_mri: none"]),
    (["tune", "--parts", "mri,pnp_ct,tune"], ["--parts tune", "pnp_brain_mri"]),
])
def test_unknown_parts_and_methods_are_refused_naming_the_valid_ones(heldout_cli, tmp_path, capsys, monkeypatch,
                                                                     argv, names):
    work = tmp_path / "w"
    monkeypatch.setattr(sys, "argv", ["heldout.py", *argv[:1], "--work", str(work), *argv[1:]])
    with pytest.raises(SystemExit) as e:
        heldout_cli.main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(n in err for n in names), err
    assert not work.exists()  # refused before anything is written


def test_methods_go_to_the_parts_that_take_them(heldout_cli):
    sel = heldout_cli.selection
    assert sel("eval", ["mri", "ct"], ["tv", "tv_ct"]) == {"mri": ["tv"], "ct": ["tv_ct"]}
    assert sel("eval", ["mri", "ct"], ["sirt"]) == {"mri": [], "ct": ["sirt"]}  # mri left out
    assert sel("eval", ["mri368"], None) == {"mri368": None}
    # a part without --methods runs whole beside one that takes them
    assert sel("tune", ["mri", "ct"], ["grappa"]) == {"mri": ["grappa"], "ct": None}
    assert sel("tune", ["models_mri"], ["modl_fastmri_diverse"]) == {"models_mri": ["modl_fastmri_diverse"]}


def test_ct_eval_runs_the_protocol_parameters_and_each_row_records_them(heldout_cli, tmp_path, capsys):
    """A ``tuned.json`` in the work folder with only a 30-view winner made the 60-view rows run
    that winner (SIRT 3 iterations for CT_PARAMS[60]'s 100), and no row said which parameters it
    ran. Eval now runs ``CT_PARAMS`` at every view count (as the pipelines do; tuned winners are
    copied into protocol.py), says that the folder's winners differ, and records ``params``."""
    import torch

    from mrirecon.heldout.protocol import CT_PARAMS

    torch.set_num_threads(1)
    work = tmp_path / "w"
    work.mkdir()
    (work / "tuned.json").write_text(json.dumps({"ct": {"30": {"fbp": {"best": {"filter": "ram-lak"}}}}}))
    heldout_cli.evaluate(work, ["ct"], ["fbp"])
    out = capsys.readouterr().out
    assert "fbp at 30: {'filter': 'ram-lak'}" in out and "eval runs the protocol's parameters" in out
    rows = json.loads((work / "heldout_ct.json").read_text(encoding="utf-8"))
    assert sorted(rows) == ["30", "60"]
    for views, table in rows.items():
        assert list(table) == ["fbp"]
        assert table["fbp"]["params"] == CT_PARAMS[int(views)]["fbp"] == {"filter": "hann"}, views


def _small_validation(out_dir, volumes=1, seed=77):
    """A one-slice 64 x 64 stand-in for the validation split (the test is about the plumbing)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    return simulate_mri_dataset(out_dir, volumes=1, slices=1, coils=4, size=(64, 64), seed=seed,
                                snr_db=30.0, readout_oversampling=2)


def test_tune_pnp_mri_writes_the_validation_split_on_a_fresh_folder(heldout_cli, tmp_path, monkeypatch):
    """``tune --parts pnp_mri`` read ``DIR/val_mri`` without writing it: on a fresh folder it
    failed with "evaluate_volumes: no volumes given". Every MRI part now writes it when absent."""
    import torch

    import mrirecon.heldout.validation as V

    torch.set_num_threads(1)
    monkeypatch.setattr(V, "write_validation_mri", _small_validation)
    point = {"iterations": 2, "sigma_max": 0.1, "sigma_min": 0.05, "lam": 1e-6}
    monkeypatch.setattr(heldout_cli, "PNP_SETTINGS", {4.0: [point]})
    work = tmp_path / "fresh"
    work.mkdir()
    heldout_cli.tune(work, ["pnp_mri"], None)
    assert len(list((work / "val_mri").glob("*.h5"))) == 1
    res = json.loads((work / "tuned.json").read_text(encoding="utf-8"))["pnp_mri"]["4.0"]
    assert res["best"] == point and res["grid"][0]["PSNR"] > 10


def test_tuning_on_an_empty_folder_names_it(tmp_path):
    from mrirecon.heldout.tune import tune_model_mri

    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no fastMRI .h5 files"):
        tune_model_mri(tmp_path, object(), [{}], accelerations=(4,))


def test_grappas_narrowest_kernel_is_the_end_of_its_range_not_of_its_grid():
    """3 columns is the narrowest GRAPPA window with acquired neighbours (tune.MRI_GRID's
    comment): a winner there is not flagged; 9 rows, the grid's widest, is."""
    from mrirecon.heldout.tune import GRID_BOUNDS, MRI_GRID, _result, edge_parameters

    scores = [{"params": p, "PSNR": 30.0 + (tuple(p["kernel_size"]) == (9, 3) and p["lam"] == 1e-2), "SSIM": 0.5}
              for p in MRI_GRID["grappa"]]
    assert edge_parameters(scores) == ["kernel_size[0]", "kernel_size[1]"]
    assert edge_parameters(scores, GRID_BOUNDS["grappa"]) == ["kernel_size[0]"]
    with pytest.warns(UserWarning, match=r"kernel_size\[0\] at the edge"):
        assert _result("grappa", scores, "MRI 4x")["at_edge"] == ["kernel_size[0]"]


def test_shipped_edge_flags_follow_the_edge_rule():
    """Each ``at_edge`` in ``tuned.json`` is what the rule gives on its grid, and the README says
    which winners those are."""
    from mrirecon.heldout.tune import GRID_BOUNDS, edge_parameters

    tuned = json.loads((ROOT / "benchmarks" / "heldout_results" / "tuned.json")
                       .read_text(encoding="utf-8"))
    flagged = []
    for part in ("mri", "ct"):
        for setting, methods in tuned[part].items():
            for method, res in methods.items():
                assert res["at_edge"] == edge_parameters(res["grid"], GRID_BOUNDS.get(method)), (part, setting, method)
                flagged += [(part, setting, method)] if res["at_edge"] else []
    assert flagged == [("mri", "4.0", "grappa"), ("ct", "60", "tv_ct")]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert ("flags a winner on the edge of its grid (now GRAPPA's 9 kernel rows at 4× and `ct_tv`'s "
            "`rho` at 60 views, both noted in `protocol.py`;") in readme
