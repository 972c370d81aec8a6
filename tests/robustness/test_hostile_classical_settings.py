"""Settings of the classical reconstructions and a pipeline's weights that cannot run: refused at
load naming the pipeline file and ``reconstruct.params.<key>`` / ``reconstruct.weights`` (each
loaded, then read and calibrated every input and failed it with a library's own words), and
GRAPPA's one-integer ``kernel_size``, which its function takes, through the pipeline."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from mrirecon.cli import main
from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline

GRAPPA = ["reconstruct.method=grappa", "calibrate.method=none", "reconstruct.params={}",
          "reconstruct.params_by_acceleration={}"]

# (method, key, refused value, part of the message, a value that loads)
REFUSED = [
    ("l1_wavelet", "wavelet", "db99", "Unknown wavelet name 'db99'", "db2"),
    ("l1_wavelet", "wavelet", "bior2.2", "wavelet 'bior2.2' is not orthogonal", "sym4"),
    ("l1_wavelet", "wavelet", "mexh", "mexh is a continuous wavelet", "haar"),
    ("grappa", "kernel_size", "[5, 0]", "must be one integer >= 1 or a pair (kx, ky)", "5"),
    ("grappa", "kernel_size", "abc", "must be one integer >= 1 or a pair (kx, ky)", "[5, 3]"),
    ("grappa", "calib", "0", "must be an integer >= 1", "12"),
    ("epll", "gmm", "nothere.pt", "weights file nothere.pt does not exist", "patch_gmm"),
]


def _overrides(method: str, setting: str) -> list[str]:
    base = {"grappa": GRAPPA, "l1_wavelet": []}.get(  # mri_cs's own method and tables
        method, [f"reconstruct.method={method}", "reconstruct.params={}"])
    return [*base, f"reconstruct.params.{setting}"]


@pytest.mark.parametrize("method, key, value, said, fine", REFUSED,
                         ids=[f"{m}:{k}={v}" for m, k, v, *_ in REFUSED])
def test_a_setting_the_method_refuses_fails_the_config_naming_the_key(method, key, value, said,
                                                                      fine):
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_cs", _overrides(method, f"{key}={value}"))
    assert f"reconstruct.params.{key}: " in str(err.value) and said in str(err.value)
    load_pipeline("mri_cs", _overrides(method, f"{key}={fine}"))  # the key itself is fine


def test_grappa_takes_one_integer_kernel_size_as_its_function_does(mri_file, tmp_path):
    """``kernel_size: 5`` loaded, then every input failed with "'int' object is not
    subscriptable" (the pipeline's coverage note read ``kernel_size[1]``)."""
    images = []
    for name, value in (("one", "5"), ("pair", "[5, 5]")):
        args = ["run", "mri_cs", "-i", str(mri_file), "-o", str(tmp_path / name), "--no-progress"]
        for item in [*GRAPPA, f"reconstruct.params.kernel_size={value}"]:
            args += ["--set", item]
        assert main(args) == 0
        (out,) = (tmp_path / name / "reconstructions").glob("*.h5")
        with h5py.File(out) as f:
            images.append(np.asarray(f["reconstruction"]))
    np.testing.assert_array_equal(images[0], images[1])


@pytest.mark.parametrize("weights, said", [
    ("/nonexistent/w.pt", "weights file /nonexistent/w.pt does not exist"),
    ("varnet_brain_sim", "are for model 'varnet', not 'modl'"),
    ("junk.pt", "is a text file, not PyTorch weights"),
])
def test_a_weights_problem_names_the_pipeline_file_and_the_key(mri_file, tmp_path, capsys,
                                                               monkeypatch, weights, said):
    """Only a missing relative path had named them; an absolute one, another model's weights
    and a text file said "load_model: ..." alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.pt").write_text("not torch\n")
    pipe = tmp_path / "mine.yaml"
    pipe.write_text(f"name: t\nmodality: mri\nload: {{format: auto}}\n"
                    f"reconstruct: {{method: modl, weights: {weights}}}\n"
                    "export: {formats: [hdf5]}\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(pipe), "-i", str(mri_file), "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "mine.yaml: reconstruct.weights: " in err and said in err
    assert "load_model:" not in err and err.count("reconstruct.weights: ") == 1
    assert not (tmp_path / "o" / "reconstructions").exists()


@pytest.mark.parametrize("lam", [-1.0, math.inf, math.nan])
def test_grappa_refuses_a_tikhonov_weight_that_is_not_a_finite_number_at_least_0(lam):
    """``lam`` -1 made the calibration solve singular; the library call took it."""
    import torch

    from mrirecon.recon.grappa import grappa, grappa_settings_problem

    assert grappa_settings_problem({"lam": lam})[0] == "lam"
    k = torch.randn(4, 32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    k[..., 1::2] = 0
    with pytest.raises(ValueError, match=r"grappa: lam must be a finite number >= 0"):
        grappa(k, 8, lam=lam)
    assert grappa_settings_problem({"lam": 0}) is None  # no regularisation is allowed
