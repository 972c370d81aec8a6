"""The training-range dimensions of audit s18 (a_range): the CT dose of ``ct_pnp``'s schedule,
the k-space SNR (``snr_db``) and the centre band (``acs_columns``) of Cartesian MRI. Each was
outside what a shipped model was trained or tuned on, cost 5-9 dB against TV, and drew no word."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from mrirecon.pipeline.checks_noncart import NOISE_BAND, NOISE_DIFFERENCE_ORDER
from mrirecon.pipeline.model_range import SNR_DB_MARGIN, range_warnings
from mrirecon.pipeline.slice_snr import kspace_snr_db

#: Relative std of a noise power from the median of n exponential values (1 / ln 2), times 1.62
#: for the overlapping 4th differences' correlation (``checks_noncart.outer_noise``).
MEDIAN_SD = 1.62 / math.log(2)
from mrirecon.training.weights import check_training_range, model_card


def _in_range(card, **given) -> list[str]:
    return range_warnings(card, **given)


# ---- finding 1: ct_pnp's dose ----------------------------------------------------------------


def test_ct_pnp_card_warns_away_from_the_dose_its_schedule_was_tuned_at():
    """ct_schedule was tuned at 4096 photons; ct_pnp lost 6.4 / 6.2 dB to ct_tv at 1024 / 1e5
    photons (2.2 at 4096, 3.0 / 3.8 at 2048 / 8192) without a warning: the card had no dose."""
    card = model_card("pnp_dncnn_diverse")
    assert card["training_range"]["photons"] == [2048, 8192]
    assert _in_range(card, photons=4096.0) == []
    for photons in (1024.0, 1e5):
        (msg,) = _in_range(card, photons=photons, dose_setting="the data's own")
        assert msg.startswith(f"dose {photons:g} photons per bin (the data's own) is outside the "
                              "pnp_dpir training range 2048 .. 8192"), msg
        # a plug-and-play schedule is retuned, not retrained
        assert "reconstruct.params" in msg and "data.ct_photons" not in msg


# ---- finding 2: the k-space SNR ----------------------------------------------------------------


def _slice(kspace, mask=None, noise=None, acquired_rows=None):
    w = kspace.shape[-1]
    mask = torch.ones(w, dtype=torch.bool) if mask is None else mask
    header = SimpleNamespace(acquired_columns=lambda n: torch.ones(n, dtype=torch.bool), extra={})
    return SimpleNamespace(kspace=kspace * mask, mask=mask, header=header, noise=noise,
                           acquired_rows=acquired_rows, trajectory=None)


def _smooth_object_kspace(gen, coils=4, n=128):
    """k-space ``(coils, n, n)`` of a smooth object (a Gaussian blob per coil): no energy in the
    outer corners, so the estimate is the noise's alone."""
    y, x = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    ky = torch.exp(-(x.double() ** 2 + y.double() ** 2) / (2 * 6.0 ** 2))
    phase = torch.exp(1j * torch.rand(coils, 1, 1, generator=gen, dtype=torch.float64) * 6.28)
    return (ky[None] * phase).to(torch.complex128)


@pytest.mark.parametrize("snr_db", [10.0, 20.0, 30.0])
def test_snr_estimate_against_the_snr_the_noise_was_drawn_for(snr_db):
    """Noise of a known power over a smooth object, fully sampled and 4x with a centre band:
    the estimate is the SNR the noise was drawn for, to the noise power's sampling error (the
    median of the 4th differences' squared magnitudes in the outer readout rows' corners:
    ``4.34 MEDIAN_SD / sqrt(differences)`` dB, 5 sigma); a noise scan gives it directly."""
    gen = torch.Generator().manual_seed(int(snr_db))
    clean = _smooth_object_kspace(gen)
    coils, n = clean.shape[0], clean.shape[-1]
    signal = float(clean.abs().square().mean())
    var = signal / 10 ** (snr_db / 10)  # complex variance per sample, as simulate_mri draws it
    noise = math.sqrt(var / 2) * torch.complex(torch.randn(clean.shape, generator=gen, dtype=torch.float64),
                                               torch.randn(clean.shape, generator=gen, dtype=torch.float64))
    config = SimpleNamespace(preprocess=SimpleNamespace(prewhiten=False))
    full = kspace_snr_db(config, _slice(clean + noise))
    b = math.ceil(n * NOISE_BAND)
    corners = coils * 4 * (n // 4) * (b - NOISE_DIFFERENCE_ORDER)  # 4th differences in runs of b
    assert full[1] == "the outer readout rows"
    assert abs(full[0] - snr_db) < 5 * 4.34 * MEDIAN_SD / math.sqrt(corners), full
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::4] = True
    mask[n // 2 - 10:n // 2 + 10] = True  # a centre band: sampled densely, counted once
    under = kspace_snr_db(config, _slice(clean + noise, mask))
    assert abs(under[0] - snr_db) < 5 * 4.34 * MEDIAN_SD / math.sqrt(corners / 4) + 0.3, under
    scan = math.sqrt(var / 2) * torch.complex(torch.randn(coils, 4096, generator=gen, dtype=torch.float64),
                                              torch.randn(coils, 4096, generator=gen, dtype=torch.float64))
    given = kspace_snr_db(config, _slice(clean + noise, noise=scan))
    assert given[1] == "the noise scan" and abs(given[0] - snr_db) < 5 * 4.34 / math.sqrt(coils * 4096)
    # noise-free: far above any card's range (not warned), or no estimate where the corners
    # hold exact zeros
    assert kspace_snr_db(config, _slice(clean))[0] > 200
    assert kspace_snr_db(config, _slice(torch.zeros_like(clean).index_fill_(-1, torch.tensor([n // 2]), 1))) is None


def test_snr_range_is_checked_on_its_lower_end_with_the_estimates_margin():
    card = {"model": {"name": "pnp_dpir"}, "training_range": {"snr_db": [28, 34]}}
    check_training_range(card["training_range"], "card")
    assert _in_range(card, snr_db=28 - SNR_DB_MARGIN + 0.1) == []
    assert _in_range(card, snr_db=60.0) == []  # less noise than in training: not warned
    (msg,) = _in_range(card, snr_db=14.1, snr_source="the outer readout rows")
    assert msg.startswith("k-space SNR about 14.1 dB (estimated from the outer readout rows) is "
                          "below the pnp_dpir training range 28 .. 34 dB"), msg
    assert "reconstruct.params.lam" in msg


# ---- finding 3: the centre band ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["pnp_dncnn_brain_sim", "varnet_brain_sim", "modl_brain_sim"])
def test_brain_sim_cards_warn_on_a_narrow_centre_band(name):
    """Trained / tuned on 10-21 contiguous centre columns (128 columns, centre fractions 0.16 /
    0.08); fastMRI's 0.04 gives 5 and cost mri_pnp_brain_sim ~5 dB against TV, unwarned."""
    card = model_card(name)
    assert _in_range(card, acs_columns=10) == [] and _in_range(card, acs_columns=21) == []
    (msg,) = _in_range(card, acs_columns=5)
    assert msg.startswith("centre band (contiguous sampled columns through the k-space centre"), msg
    assert "is outside the" in msg and "training range 10 .. 21" in msg


def test_recipes_write_the_centre_bands_of_the_masks_they_draw():
    """The ranges the shipped cards state are those their recipes' masks give: brain_sim
    (equispaced_fraction, 4x / 0.16 and 8x / 0.08 on 128 columns), the deployment recipe
    (4x / 0.08 and 8x / 0.04 on 320, and 368 for MoDL), which `make weights` writes."""
    from mrirecon.sampling import create_mask_for_mask_type
    from mrirecon.sampling.acs import acs_width
    from mrirecon.training.mask_bands import acs_column_range
    from mrirecon.training.modl_deploy import _card_range

    brain = acs_column_range("equispaced_fraction", [(0.16, 4), (0.08, 8)], [128])
    assert brain == model_card("modl_brain_sim")["training_range"]["acs_columns"] == [10, 21]
    assert _card_range((320,))["acs_columns"] == \
        model_card("varnet_fastmri_diverse")["training_range"]["acs_columns"]
    assert _card_range((320, 368))["acs_columns"] == \
        model_card("modl_fastmri_diverse")["training_range"]["acs_columns"]
    # every offset counts: some put a sampled column beside the band
    fn = create_mask_for_mask_type("equispaced_fraction", (0.16,), (4,))
    widths = {acs_width(fn(128, seed=0, offset=o)) for o in range(4)}
    assert min(widths) == 20 and max(widths) == 21


# ---- end to end: mrirecon run on simulated files, both sides of each dimension -----------------


@pytest.fixture(scope="module")
def brains(tmp_path_factory):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = {}
    for snr in (15.0, 30.0):
        folder = tmp_path_factory.mktemp(f"snr{snr:g}")
        (out[snr],) = simulate_mri_dataset(folder, volumes=1, slices=1, coils=8, size=(128, 128),
                                           seed=101, snr_db=snr)
    return out


def _range_warnings(pipeline, path, tmp_path, acc, cf):
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    torch.set_num_threads(1)
    config, _ = load_pipeline(pipeline, [
        "evaluate.enabled=false", "report.enabled=false", "export.formats=[hdf5]",
        "undersample.enabled=true", f"undersample.accelerations=[{acc}]",
        f"undersample.center_fractions=[{cf}]"])
    out = tmp_path / f"{pipeline}_{acc}_{cf}"
    assert run_pipeline(config, [str(path)], out, progress=False) == 0
    prov = json.loads((out / "provenance.json").read_text())
    return [w for f in prov["files"] for w in f.get("warnings", []) if "training range" in w]


def test_run_warns_mri_pnp_on_low_snr_kspace_only(brains, tmp_path):
    """mri_pnp: 15.30 dB against mri_tv's 22.79 at 15 dB (in range otherwise); level at 30 dB."""
    (msg,) = _range_warnings("mri_pnp", brains[15.0], tmp_path, 4, 0.16)
    assert "k-space SNR about" in msg and \
        "below the pnp_dncnn_diverse training range 28 .. 34 dB" in msg  # the weights, not pnp_dpir
    assert msg.endswith("(see its card mrirecon/weights/pnp_dncnn_diverse.yaml, 'known failures')")
    assert _range_warnings("mri_pnp", brains[30.0], tmp_path, 4, 0.16) == []


def test_run_warns_mri_pnp_brain_sim_on_a_narrow_centre_band_only(brains, tmp_path):
    """8x with centre fraction 0.04 (5 of 128 columns) warns; 8x with 0.08 (10) does not."""
    (msg,) = _range_warnings("mri_pnp_brain_sim", brains[30.0], tmp_path, 8, 0.04)
    assert msg.split(": ", 2)[-1].startswith("centre band (contiguous sampled columns") and " 5 " in msg
    assert ": slice 0: " in msg and "the pnp_dncnn_brain_sim training range" in msg
    assert _range_warnings("mri_pnp_brain_sim", brains[30.0], tmp_path, 8, 0.08) == []


def test_acs_columns_are_the_band_the_maps_calibrate_from(brains):
    """A 16-column separate reference scan with an equispaced imaging mask (no centre band of
    its own): the maps calibrate from the reference (``reference_mri.calibration_width``), so
    a model fed the pipeline's maps is in its 10 .. 21 range. Was: "centre band ... 0 is outside
    the pnp_admm training range 10 .. 21". A model that calibrates inside (E2E-VarNet, its
    ``sensitivity`` net) still reads the imaging mask's band."""
    from dataclasses import replace
    from pathlib import Path

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.model_range import warn_slice_outside_range
    from mrirecon.pipeline.stages_mri import MRIStages

    config, _ = load_pipeline("mri_pnp_brain_sim", [])
    s = MRIStages(config).load(Path(brains[30.0])).read(0)
    w = s.kspace.shape[-1]
    mask = torch.zeros(w, dtype=torch.bool)
    mask[1::4] = True
    ref = torch.zeros_like(s.kspace)
    ref[..., w // 2 - 8:w // 2 + 8] = s.kspace[..., w // 2 - 8:w // 2 + 8]
    s = replace(s, kspace=s.kspace * mask, mask=mask, calibration=ref)
    card = {"model": {"name": "pnp_admm"}, "training_range": {"acs_columns": [10, 21]}}
    assert warn_slice_outside_range(config, SimpleNamespace(model_card=card), s) == []
    own = SimpleNamespace(model_card={**card, "model": {"name": "varnet"}}, sensitivity=object())
    (msg,) = warn_slice_outside_range(config, own, s)
    assert "centre band" in msg and " 0 is outside" in msg
