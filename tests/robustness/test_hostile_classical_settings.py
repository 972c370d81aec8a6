"""A pipeline's weights that cannot run, refused at load naming the pipeline file and
``reconstruct.weights``; GRAPPA's one-integer ``kernel_size``, which its function takes, through
the pipeline, and its Tikhonov weight. (The classical methods' settings refused at load are
``test_hostile_prior_settings.py``'s table.)"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from mrirecon.cli import main
from tests.robustness.test_hostile_prior_settings import GRAPPA


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
