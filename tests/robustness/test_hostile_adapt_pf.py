"""Two hostile cases that gave wrong results or failures on valid inputs.

* A scan-specific adaptation whose learning rate makes it diverge: the weights left the range
  where MoDL's CG gets finite values and the next forward pass raised "cg: the right-hand side
  holds NaN or Inf values (from the data or the operator, e.g. coil maps ...)", failing the
  input and blaming its data (``adapt.lr`` 0.05-1 on 64 x 64 simulated brains). Now the
  adaptation stops at that step, the best state before it (the shipped model if none was
  better) reconstructs the volume, and the run says so, naming ``adapt.lr``.
* A fully sampled matrix with an even phase-encoding count of 12 or less: lines 0..W-1 around
  the centre W/2 have W/2 lines before the centre and W/2 - 1 after, which the 0.85 symmetry
  rule took for partial Fourier (W = 12: 5/6); cg_sense then ran its phase constraint and the
  k-space methods POCS on complete data (32 x 12: 42.55 -> 42.47 dB). Limits that cover the
  whole matrix are now never partial Fourier.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.solvers.cg import cg
from mrirecon.training.adapt import AdaptConfig, _take_step, adapt_model, diverged_message
from mrirecon.training.weights import available_weights

SHIPPED = "modl_fastmri_diverse"  # mri_learned_adapt's model
needs_shipped = pytest.mark.skipif(SHIPPED not in available_weights(),
                                   reason=f"shipped {SHIPPED} weights not available")


def _scan(n: int = 24, coils: int = 4, seed: int = 0):
    """One noisy slice of a smooth complex image through random coils, a 2x column mask with a
    fully sampled centre: ``[(y, op)]`` and the (noise-free) image."""
    from mrirecon.operators.mri import sense

    g = torch.Generator().manual_seed(seed)
    grid = (torch.arange(n, dtype=torch.float64) - n / 2) / (n / 2)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    img = (torch.exp(-4 * (xx ** 2 + yy ** 2)) * torch.exp(0.5j * math.pi * xx)).to(torch.complex64)
    maps = torch.randn(1, coils, n, n, dtype=torch.complex64, generator=g)
    maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::2] = True
    mask[n // 2 - 3: n // 2 + 3] = True
    op = sense(maps, mask)
    y = op(img[None])
    y = y + 0.01 * float(y.abs().max()) * torch.randn(y.shape, dtype=torch.complex64, generator=g) * mask
    return [(y, op)], img


class _Fragile(nn.Module):
    """``x = cg(I, w * image)``: one gain ``w`` (started at 1) on a fixed image ``scale`` times
    the truth (best ``w``: ``1 / scale``), through the CG solver MoDL uses. A step that takes
    ``w`` below ``floor`` makes the image NaN (``0 * log(w - floor)``, zero above it), which CG
    refuses ("the right-hand side holds NaN or Inf values") as MoDL's CG did with diverged
    weights; ``through_cg=False`` returns the NaN image instead (a NaN loss)."""

    def __init__(self, image: torch.Tensor, scale: float, floor: float,
                 through_cg: bool = True) -> None:
        super().__init__()
        self.register_buffer("image", scale * image)
        self.w = nn.Parameter(torch.ones(()))
        self.floor, self.through_cg = floor, through_cg

    def forward(self, y, op):
        rhs = (self.w + 0 * torch.log(self.w - self.floor)) * self.image[None]
        return cg(lambda v: v, rhs, iterations=1) if self.through_cg else rhs


def _config(**kw) -> AdaptConfig:
    return AdaptConfig(**{"val_every": 1, "patience": 50, "time_budget_s": None, **kw})


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("through_cg", [True, False])
def test_a_diverging_first_update_keeps_the_initial_model(through_cg):
    """lr 1: Adam's first update moves the gain by about lr, from 1 to about 0 (the image is 1.5x
    the truth, so the loss pulls it down), below 0.6: the next forward pass raises (through CG)
    or its loss is NaN, in step 1's validation (``val_every`` 1) or in step 2 (``val_every`` 5).
    Was: the ValueError escaped (the input failed, its data blamed), or the NaN validation
    losses ran on to ``patience``."""
    pairs, img = _scan()
    model = _Fragile(img, 1.5, 0.6, through_cg=through_cg)
    for val_every, at, where in ((1, 1, "validation"), (5, 2, "")):
        adapted, report = adapt_model(model, pairs, _config(steps=10, lr=1.0, val_every=val_every))
        assert report.stopped == "diverged" and report.steps == 1 and report.best_step == 0
        reason = report.diverged["reason"]
        assert report.diverged["step"] == at and reason.startswith(where), reason
        assert ("cg: the right-hand side holds NaN or Inf values" if through_cg else "loss NaN") \
            in reason
        assert _same(adapted, model) and float(adapted.w.detach()) == 1.0  # the initial model, bit for bit
        assert report.as_dict()["diverged"] == report.diverged
        assert all(math.isfinite(v) for v in report.val_losses + report.train_losses)
        msg = diverged_message(report, 1.0)
        assert msg.startswith(f"adapt: step {at} diverged (") and "at adapt.lr=1:" in msg
        assert "the best state (the shipped model) was kept; lower adapt.lr" in msg


def test_a_later_divergence_keeps_the_best_earlier_state():
    """The best gain is 2/3 (image 1.5x the truth): with lr 0.1 Adam's steps of about 0.1 take
    it 1 -> 0.9 -> 0.8 -> 0.7 (each better), then to about 0.6 (worse) and below 0.6 (NaN). The
    returned state is the best validated one before the divergence: the same state, bit for
    bit, as a run that stops at that step."""
    pairs, img = _scan()
    model = _Fragile(img, 1.5, 0.6)
    adapted, report = adapt_model(model, pairs, _config(steps=30, lr=0.1))
    assert report.stopped == "diverged" and report.best_step == 3, report.as_dict()
    assert report.steps == report.diverged["step"] == 5  # step 5's validation diverged
    again, check = adapt_model(model, pairs, _config(steps=report.best_step, lr=0.1))
    assert check.stopped == "steps" and check.best_step == report.best_step
    assert _same(adapted, again) and not _same(adapted, model)
    assert f"the best state (the state after step {report.best_step}) was kept" in \
        diverged_message(report, 0.1)


def test_ordinary_adaptation_is_unchanged_by_the_guard():
    """lr 0.01 takes the gain no lower than about 0.94 in 6 steps: every step counts, no
    divergence recorded."""
    pairs, img = _scan()
    adapted, report = adapt_model(_Fragile(img, 1.5, 0.6), pairs, _config(steps=6, lr=0.01))
    assert report.stopped == "steps" and report.steps == 6 and report.diverged is None
    assert "diverged" not in report.as_dict() and diverged_message(report, 0.01) is None
    assert 0.6 < float(adapted.w.detach()) < 1


def test_a_step_with_non_finite_gradients_or_weights_is_not_taken():
    """The step's checks in order: a NaN gradient (sqrt at 0) leaves the weights as they were;
    weights pushed past float32's range by the update are reported."""
    p = nn.Parameter(torch.zeros(()))
    opt = torch.optim.Adam([p], lr=0.1)
    assert _take_step(lambda: torch.sqrt(p), [p], opt) == "gradients NaN or Inf"
    assert float(p) == 0.0
    q = nn.Parameter(torch.tensor(3e38))
    opt = torch.optim.SGD([q], lr=1e38)  # one update adds 1e38: past float32's 3.4e38
    assert _take_step(lambda: -q, [q], opt) == "weights NaN or Inf after the update"
    r = nn.Parameter(torch.ones(()))
    assert _take_step(lambda: r * 2, [r], torch.optim.Adam([r], lr=0.1)) == 2.0


def test_an_unrelated_error_in_a_step_still_propagates():
    """Only errors about NaN / Inf values end the adaptation; a bug stays a bug."""
    p = nn.Parameter(torch.ones(()))

    def broken():
        raise ValueError("shapes (3,) and (4,) do not match")

    with pytest.raises(ValueError, match="do not match"):
        _take_step(broken, [p], torch.optim.Adam([p], lr=0.1))


@needs_shipped
def test_the_shipped_modl_diverging_keeps_the_shipped_weights():
    """The audit's case at 32 x 32: lr 1 made step 2's CG raise on NaN."""
    from tests.training.test_adapt import _phantom_scan
    from mrirecon.training.weights import load_pretrained

    model = load_pretrained(SHIPPED).eval()
    pairs, _ = _phantom_scan(n=32, slices=1)
    adapted, report = adapt_model(model, pairs, AdaptConfig(steps=10, lr=1.0, val_every=2,
                                                            patience=3, time_budget_s=None))
    assert report.stopped == "diverged" and report.best_step == 0, report.as_dict()
    assert "NaN or Inf" in report.diverged["reason"]
    assert _same(adapted, model) and adapted.normalize == model.normalize


@needs_shipped
def test_a_diverging_pipeline_adaptation_reconstructs_with_the_shipped_model(tmp_path):
    """mri_learned_adapt with adapt.lr=1: was exit 1, "cg: the right-hand side holds NaN or Inf
    values (from the data or the operator, e.g. coil maps ...)", provenance ``adapt: {}``. Now
    exit 0, the image of the unadapted model bit for bit, the warning naming adapt.lr."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path / "data", volumes=1, slices=1, coils=4, size=(48, 48),
                                   seed=5, resolution=2)
    common = ["undersample.enabled=true", "undersample.seed=fixed", "calibrate.calib_width=12",
              "calibrate.kernel_width=4", "export.formats=[hdf5]", "report.enabled=false"]
    images, entries = [], []
    for name, extra in (("lr1", ["adapt.lr=1.0", "adapt.steps=6", "adapt.val_every=2",
                                 "adapt.save_weights=false", "adapt.time_budget_s=null"]),
                        ("off", ["adapt.enabled=false"])):
        config, text = load_pipeline("mri_learned_adapt", common + extra)
        out = tmp_path / name
        assert run_pipeline(config, [str(path)], out, progress=False, config_text=text) == 0
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        (rec,) = (out / "reconstructions").rglob("*.h5")
        with h5py.File(rec) as f:
            images.append(f["reconstruction"][()])
        entries.append(entry)
    entry = entries[0]
    assert entry["status"] == "ok" and entry["adapt"]["stopped"] == "diverged", entry.get("error")
    reason = entry["adapt"]["diverged"]["reason"]  # NaN weights, or (met first) MoDL's lam < 0
    assert entry["adapt"]["best_step"] == 0 and ("NaN or Inf" in reason or "lam must be" in reason)
    (msg,) = [w for w in entry["warnings"] if "diverged" in w]
    assert "at adapt.lr=1:" in msg and "(the shipped model) was kept; lower adapt.lr" in msg
    np.testing.assert_array_equal(images[0], images[1])


# ---- F5: small fully sampled matrices are not partial Fourier ----------------------------------


def _header(columns: int, limits):
    from mrirecon.containers import Header

    return Header(encoded_matrix=(32, columns, 1), recon_matrix=(32, columns, 1),
                  encoded_fov_mm=(200.0, 200.0, 3.0), recon_fov_mm=(200.0, 200.0, 3.0),
                  extra={"encoding_limits_step_1": limits})


def test_full_limits_are_never_partial_fourier_and_genuine_ones_still_are():
    from mrirecon.pipeline.sampling_mri import partial_fourier_band, partial_fourier_note

    for w in range(2, 33):  # even W <= 12 were flagged (W = 12: 5 after vs 6 before < 0.85)
        full = _header(w, (0, w - 1, w // 2))
        assert partial_fourier_note(full) is None and partial_fourier_band(full, w) is None, w
    # 5/8: lines 3..7 of 8 (centre 4), and 6..15 of 16 (centre 8), the first 3 / 6 never acquired
    for w, first in ((8, 3), (16, 6)):
        note = partial_fourier_note(_header(w, (first, w - 1, w // 2)))
        assert note is not None and f"lines {first}..{w - 1} around the centre {w // 2}" in note


def _run_mri_cs(path: Path, out: Path, method: str, mode: str) -> tuple[np.ndarray, dict]:
    config = load_pipeline("mri_cs", [f"reconstruct.method={method}", "reconstruct.params={}",
                                      "reconstruct.params_by_acceleration={}",
                                      "export.formats=[hdf5]", "report.enabled=false",
                                      f"preprocess.partial_fourier={mode}"])[0]
    assert run_pipeline(config, [str(path)], out, progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    (rec,) = (out / "reconstructions").rglob("*.h5")
    with h5py.File(rec) as f:
        return f["reconstruction"][()], entry


@pytest.mark.parametrize("method", ["cg_sense", "zero_filled_rss"])
@pytest.mark.parametrize("w", [4, 8, 12])
def test_small_fully_sampled_matrices_get_no_partial_fourier_treatment(tmp_path, w, method):
    """``simulate mri --size 32 W``: cg_sense ran its phase constraint (W = 12: 42.47 instead of
    42.55 dB) and zero_filled_rss POCS on complete data, with a note "partial Fourier: ... 92 %
    of a symmetric acquisition". Now no note, and the image of partial_fourier=none bit for
    bit (the same code path)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path / "data", volumes=1, slices=1, coils=4, size=(32, w),
                                   seed=0)
    image, entry = _run_mri_cs(Path(path), tmp_path / "pc", method, "phase_constrained")
    plain, _ = _run_mri_cs(Path(path), tmp_path / "none", method, "none")
    assert entry["status"] == "ok"
    assert not [m for m in entry["warnings"] if "partial Fourier" in m], entry["warnings"]
    np.testing.assert_array_equal(image, plain)


def test_a_genuine_five_eighths_partial_fourier_file_is_still_detected(tmp_path):
    """32 columns, the first 12 never acquired (20 of 32 = 5/8): noted and phase-constrained."""
    from tests.helpers import partial_fourier_file

    path = partial_fourier_file(tmp_path, size=32, missing=12)
    image, entry = _run_mri_cs(path, tmp_path / "pc", "cg_sense", "phase_constrained")
    plain, _ = _run_mri_cs(path, tmp_path / "none", "cg_sense", "none")
    (note,) = [m for m in entry["warnings"] if "partial Fourier" in m]
    assert "phase-constrained CG-SENSE" in note and "lines 0..19 around the centre 4 (4 before, 15 after" in note
    assert not np.array_equal(image, plain)
