"""``undersample.photons`` below the dose of data that already hold Poisson noise (LoDoPaB: 4096
photons per bin) thins the counts binomially: the result is exactly Poisson at the dose asked
for. Adding fresh noise instead (the old path) left a variance 1 + X / N times Poisson's
(dose ~819 for 1024 asked on 4096-photon data)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.schema import UndersampleConfig
from mrirecon.pipeline.stages_ct import CTSlice, undersample

N, X = 4096.0, 1024.0
#: Expected thinned counts per bin, X exp(-p): from mostly-floored bins (0.3: the data hold
#: N exp(-p) = 1.2 photons, zero in 30 % of bins) to air.
LEVELS = (0.3, 3.0, 30.0, 300.0, 1024.0)
ROWS = 20000  # samples per level


def _slice(y: torch.Tensor, name: str = "observation_test_000.hdf5", index: int = 0,
           data_photons: float | None = N) -> CTSlice:
    views, detectors = y.shape
    g = CTGeometry("parallel", (8, 8), tuple(np.linspace(0, math.pi, views, endpoint=False)),
                   num_detectors=detectors, pixel_size=1.0, detector_spacing=1.0)
    return CTSlice(y, g, file_name=name, index=index, data_photons=data_photons)


def _lodopab_like(p: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """LoDoPaB's observations: Poisson counts at N, floored at 0.1, post-log, stored float32
    divided by MU_MAX (and read back multiplied)."""
    from mrirecon.io.lodopab import MU_MAX_PER_M

    counts = torch.poisson(N * torch.exp(-p), generator=torch.Generator().manual_seed(seed))
    stored = (-torch.log(counts.clamp_min(0.1) / N) / MU_MAX_PER_M).float()
    return (stored.double() * MU_MAX_PER_M).float()


def _counts(y: torch.Tensor, photons: float) -> torch.Tensor:
    """Whole photon counts behind post-log data at ``photons`` (the 0.1 floor reads 0)."""
    return torch.round(photons * torch.exp(-y.double()))


def test_thinned_counts_are_poisson_at_the_dose_asked_for():
    """Mean and variance of the thinned counts match X exp(-p) at every level, within five
    standard errors of the estimators (mean: sqrt(lam / K); sample variance of Poisson data:
    sqrt((lam + 2 lam^2) / K)); added noise gives a variance 1 + X / N = 1.25 times too large
    (about 56 standard errors at 300 photons)."""
    lam = torch.tensor(LEVELS, dtype=torch.float64)
    p = torch.log(X / lam).expand(ROWS, -1).contiguous()
    y = _lodopab_like(p)
    out = undersample(_slice(y), UndersampleConfig(enabled=True, photons=X)).sinogram
    assert out.dtype == y.dtype and out.shape == y.shape
    n = _counts(out, X)
    assert bool((n == torch.round(n)).all())
    mean, var = n.mean(0), n.var(0)
    k = ROWS
    for i, level in enumerate(LEVELS):
        se_mean = math.sqrt(level / k)
        se_var = math.sqrt((level + 2 * level**2) / k)
        assert abs(float(mean[i]) - level) < 5 * se_mean, (level, float(mean[i]))
        assert abs(float(var[i]) - level) < 5 * se_var, (level, float(var[i]))
    # zero photons come out at the floor, as LoDoPaB stores them
    floor = -math.log(0.1 / X)
    assert bool(torch.isclose(out[n == 0].double(), torch.tensor(floor, dtype=torch.float64),
                              rtol=1e-6).all())


def test_thinning_is_seeded_by_file_and_slice():
    y = _lodopab_like(torch.full((40, 30), 1.0, dtype=torch.float64))
    cfg = UndersampleConfig(enabled=True, photons=X)

    def thin(name="observation_test_000.hdf5", index=0):
        return undersample(_slice(y, name, index), cfg).sinogram

    assert torch.equal(thin(), thin())
    assert not torch.equal(thin(index=0), thin(index=1))
    assert not torch.equal(thin(), thin("observation_test_001.hdf5"))
    fixed = UndersampleConfig(enabled=True, photons=X, seed="fixed", fixed_seed=7)
    assert torch.equal(undersample(_slice(y, "a.hdf5"), fixed).sinogram,
                       undersample(_slice(y, "b.hdf5"), fixed).sinogram)


def test_a_dose_above_the_datas_is_refused_and_the_same_dose_keeps_the_data():
    y = _lodopab_like(torch.full((40, 30), 1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"observation_test_000\.hdf5: undersample\.photons=8192 "
                                         r"is above the dose .* \(4096 photons per bin\)"):
        undersample(_slice(y), UndersampleConfig(enabled=True, photons=2 * N))
    same = undersample(_slice(y), UndersampleConfig(enabled=True, photons=N)).sinogram
    assert torch.equal(same, y)


def test_noise_free_data_still_get_poisson_noise_and_fake_counts_are_refused():
    from mrirecon.sampling import low_dose_noise

    p = torch.linspace(0.1, 3.0, 40 * 30, dtype=torch.float64).reshape(40, 30).float()
    cfg = UndersampleConfig(enabled=True, photons=X)
    got = undersample(_slice(p, data_photons=None), cfg).sinogram  # today's path, unchanged
    from mrirecon.pipeline.stages_ct import slice_seed

    g = torch.Generator().manual_seed(slice_seed("observation_test_000.hdf5", 0, cfg))
    assert torch.equal(got, low_dose_noise(p, X, g))
    # noise-free data said to hold noise at 4096: N exp(-p) are no whole counts
    with pytest.raises(ValueError, match=r"observation_test_000\.hdf5: undersample\.photons: "
                                         r"the data do not hold whole photon counts at 4096"):
        undersample(_slice(p), cfg)


@pytest.fixture(scope="module")
def noisy_and_clean(tmp_path_factory):
    """A LoDoPaB-layout file at 4096 photons and its noise-free twin (same seed)."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    root = tmp_path_factory.mktemp("thin")
    for name, photons in (("noisy", N), ("clean", None)):
        simulate_ct_dataset(root / name, geometry="parallel", views=60, photons=photons, size=48,
                            seed=4, samples=2, part="test", sources="phantom")
    return root / "noisy", root / "clean"


def test_pipeline_thins_a_lodopab_file_to_the_dose_asked_for(noisy_and_clean):
    """Through the CT stages: the counts of the undersampled file are Poisson at 1024 photons
    around the noise-free twin's line integrals (standardised residuals of variance 1 within
    five standard errors, sqrt(2 / M)); added noise gave 1.25. The dose is recorded as a note,
    not warned about."""
    from mrirecon.io.lodopab import LoDoPaBFiles
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.stages_ct import CTStages

    noisy, clean = noisy_and_clean
    config = load_pipeline("ct_fbp", ["undersample.enabled=true", f"undersample.photons={X}"])[0]
    stages = CTStages(config)
    source = stages.load(noisy / "observation_test_000.hdf5")
    truth = LoDoPaBFiles(clean, "test")
    z = []
    for k in range(len(source)):
        s = stages.undersample(stages.preprocess(source.read(k)))
        assert "dose" not in stages.data_messages(s)[0]
        note = stages.data_messages(s)[1]["dose"]
        assert "binomial thinning" in note and "4096" in note and "exactly 1024" in note
        lam = X * torch.exp(-truth.sinogram(k).data[0].double())
        keep = lam > 20  # normal enough for the variance's standard error
        n = _counts(s.sinogram, X)
        z.append(((n - lam) / lam.sqrt())[keep])
    z = torch.cat(z)
    m = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(m)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / m), (float(z.var()), m)


def test_run_records_the_thinning_and_refuses_a_higher_dose(noisy_and_clean, tmp_path):
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    noisy, _ = noisy_and_clean
    obs = str(noisy / "observation_test_000.hdf5")
    config, text = load_pipeline("ct_fbp", ["undersample.enabled=true",
                                            f"undersample.photons={X}"])
    assert run_pipeline(config, [obs], tmp_path / "a", progress=False, config_text=text) == 0
    (f,) = json.loads((tmp_path / "a" / "provenance.json").read_text())["files"]
    assert f["status"] == "ok" and not [w for w in f["warnings"] if "photons" in w]
    (note,) = f["notes"]
    assert note.startswith("observation_test_000.hdf5: all 2 slices: undersample.photons=1024: "
                           "binomial thinning of the data's Poisson counts at 4096 photons")
    config, text = load_pipeline("ct_fbp", ["undersample.enabled=true", "undersample.photons=5000"])
    assert run_pipeline(config, [obs], tmp_path / "b", progress=False, config_text=text) != 0
    (f,) = json.loads((tmp_path / "b" / "provenance.json").read_text())["files"]
    assert f["status"] == "failed"
    assert "observation_test_000.hdf5: undersample.photons=5000 is above the dose" in f["error"]


def test_every_file_name_gets_its_own_noise_stream():
    """The seed was a weighted character sum: the 280 LoDoPaB train names had 136 seeds, and
    observation_train_020 / _101 drew the same dose noise. Now the name is hashed."""
    from mrirecon.pipeline.stages_ct import slice_seed

    names = [f"observation_train_{i:03d}.hdf5" for i in range(280)]
    assert len({slice_seed(n, 0) for n in names}) == len(names)
    p = torch.linspace(0.1, 3.0, 40 * 30, dtype=torch.float64).reshape(40, 30).float()
    cfg = UndersampleConfig(enabled=True, photons=X)
    a, b = (undersample(_slice(p, name=n, data_photons=None), cfg).sinogram
            for n in ("observation_train_020.hdf5", "observation_train_101.hdf5"))
    assert not torch.equal(a, b)
