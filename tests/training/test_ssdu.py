"""Self-supervised training: SSDU k-space splits, CT view splits, the loss, configs, data without
references, and SSDU against supervised training on the same data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mrirecon.operators.mri import sense
from mrirecon.sampling.split import centre_block, split_views, ssdu_split
from mrirecon.training.config import SSDUConfig
from mrirecon.training.ssdu import SelfSupervisedLoss, kspace_loss, mri_ssdu_loss, split_seed


def _column_mask(w: int, step: int = 3, centre: int = 6) -> torch.Tensor:
    m = torch.zeros(w, dtype=torch.bool)
    m[::step] = True
    m[w // 2 - centre // 2: w // 2 - centre // 2 + centre] = True
    return m


@pytest.mark.parametrize("selection", ["uniform", "gaussian"])
def test_ssdu_split_partitions_the_acquired_points(selection):
    h, w = 40, 36
    mask = _column_mask(w)
    omega = mask[None].expand(h, w)
    g = torch.Generator().manual_seed(1)
    dc, loss = ssdu_split(mask, (h, w), g, ratio=0.4, selection=selection, acs_block=(4, 6))
    assert not (dc & loss).any() and torch.equal(dc | loss, omega)
    assert int(loss.sum()) == round(0.4 * int(omega.sum()))
    assert (dc & centre_block((h, w), (4, 6)) == omega & centre_block((h, w), (4, 6))).all()
    # reproducible from the seed, different for another seed
    again = ssdu_split(mask, (h, w), torch.Generator().manual_seed(1), ratio=0.4, selection=selection,
                       acs_block=(4, 6))
    other = ssdu_split(mask, (h, w), torch.Generator().manual_seed(2), ratio=0.4, selection=selection,
                       acs_block=(4, 6))
    assert torch.equal(again[1], loss) and not torch.equal(other[1], loss)


def test_gaussian_selection_prefers_the_centre():
    h, w = 64, 64
    mask = torch.ones(w, dtype=torch.bool)
    rows, cols = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (rows.double() ** 2 + cols.double() ** 2).sqrt()
    dist = {}
    for sel in ("uniform", "gaussian"):
        _, loss = ssdu_split(mask, (h, w), torch.Generator().manual_seed(0), ratio=0.2, selection=sel)
        dist[sel] = float(radius[loss].mean())
    # uniform over the square: mean radius ~0.38 * 64; Gaussian with std 16 per axis: ~20
    assert dist["gaussian"] < 0.85 * dist["uniform"]


def test_ssdu_split_refuses_bad_input():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="ratio"):
        ssdu_split(_column_mask(16), (8, 16), g, ratio=1.0)
    with pytest.raises(ValueError, match="does not fit"):
        ssdu_split(torch.ones(5, 7), (8, 16), g)
    with pytest.raises(ValueError, match=r"acs_block \(4, 4\) leaves none of the 4 acquired points"):
        ssdu_split(centre_block((8, 16), (2, 2)), (8, 16), g, acs_block=(4, 4))


@pytest.mark.parametrize("interleaved", [True, False])
def test_split_views_is_a_partition(interleaved):
    parts = split_views(31, 3, generator=torch.Generator().manual_seed(0), interleaved=interleaved)
    joined = torch.sort(torch.cat(parts)).values
    assert torch.equal(joined, torch.arange(31)) and {p.numel() for p in parts} <= {10, 11}
    if interleaved:  # every subset spans the whole arc with the same angular step
        assert all(bool((torch.diff(p) == 3).all()) for p in parts)


def test_kspace_loss_is_zero_at_the_data_and_scale_free():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 8, 8, dtype=torch.complex128, generator=g)
    v = torch.randn(3, 8, 8, dtype=torch.complex128, generator=g)
    assert float(kspace_loss(v, v)) == 0.0
    a = kspace_loss(u, v)
    b = kspace_loss(1e4 * u, 1e4 * v)
    assert math.isclose(float(a), float(b), rel_tol=1e3 * torch.finfo(torch.float64).eps)


def test_mri_ssdu_loss_vanishes_for_the_true_image():
    """The split operator is the acquisition restricted to the DC set: an oracle model that
    returns the true image explains the held-out k-space exactly (noise-free data)."""
    g = torch.Generator().manual_seed(3)
    c, h, w = 4, 24, 20
    maps = torch.randn(1, c, h, w, dtype=torch.complex128, generator=g)
    x = torch.randn(1, h, w, dtype=torch.complex128, generator=g)
    op = sense(maps, _column_mask(w, 2, 4))
    y = op(x)
    seen = []

    def oracle(data, dc_op):
        seen.append((data, dc_op))
        return x

    loss = mri_ssdu_loss(oracle, y, op, torch.Generator().manual_seed(0), SSDUConfig(splits=3))
    eps = torch.finfo(torch.float64).eps
    assert float(loss) < 1e3 * eps
    assert len(seen) == 3
    for data, dc_op in seen:  # the model saw only DC points, through an operator with that mask
        assert torch.equal(data, dc_op(x)) or float((data - dc_op(x)).abs().max()) < 1e3 * eps
        assert int(dc_op.mask.sum()) < int(op.mask.expand(h, w).sum())


def test_ct_view_loss_vanishes_for_the_true_image():
    from mrirecon.operators.ct import ct_operator, projector_norm
    from mrirecon.operators.ct_geometry import CTGeometry
    from mrirecon.training.data_ct import CTSample

    geometry = CTGeometry.parallel(image_shape=(24, 24), num_views=30, num_detectors=35)
    x = torch.zeros(1, 24, 24, dtype=torch.float64)
    x[:, 6:18, 8:16] = 1.0
    norm = projector_norm(geometry)
    sample = CTSample(y=ct_operator(geometry)(x) / norm, geometry=geometry, target=None,
                      max_value=torch.tensor([float("nan")]), fname="t", norm=norm)
    views = []

    def oracle(data, op):
        views.append(data.shape[-2])
        return x

    loss = SelfSupervisedLoss(SSDUConfig(view_parts=3))(oracle, sample, 5)
    assert float(loss) < 1e-10 and views == [10, 10, 10]


def test_split_seed_depends_on_sample_and_epoch():
    seeds = {split_seed(0, e, i) for e in range(5) for i in range(50)}
    assert len(seeds) == 250


# ---- configs --------------------------------------------------------------------------------


def _train_yaml(tmp_path: Path, train: Path, val: Path, loss: str, steps: int = 2) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(
        f"name: t\noutput_dir: {tmp_path / 'run'}\n"
        f"data: {{train: {train}, val: {val}, maps: espirit}}\n"
        "model: {name: modl, params: {iterations: 2, layers: 3, features: 8, cg_iterations: 3}}\n"
        f"optim: {{max_steps: {steps}, lr: 0.001}}\n{loss}\n"
        "device: cpu\nlog_every: 1\nval_every: 2\ncheckpoint_every: 100\ntensorboard: false\n")
    return p


def test_unknown_ssdu_key_names_the_file_and_key(tmp_path):
    from mrirecon.core.config import ConfigError
    from mrirecon.training.run import train_from_config

    p = _train_yaml(tmp_path, tmp_path, tmp_path, "loss: {ssdu: {ratoi: 0.4}}")
    with pytest.raises(ConfigError, match=r"train\.yaml: loss\.ssdu\.ratoi: unknown key \(did you mean 'ratio'\?\)"):
        train_from_config(p, progress=False)
    p = _train_yaml(tmp_path, tmp_path, tmp_path, "loss: {ssdu: {ratio: 1.5}}")
    with pytest.raises(ConfigError, match=r"loss\.ssdu\.ratio: must be in \(0, 1\)"):
        train_from_config(p, progress=False)
    p = _train_yaml(tmp_path, tmp_path, tmp_path, "loss: {ssdu: {}}")
    p.write_text(p.read_text().replace("maps: espirit", "maps: learned"))
    with pytest.raises(ConfigError, match=r"data\.maps: loss\.ssdu scores the model's image"):
        train_from_config(p, progress=False)
    p = _train_yaml(tmp_path, tmp_path, tmp_path, "loss: {perceptual: 1.0, ssdu: {}}")
    with pytest.raises(ConfigError, match=r"loss\.perceptual: needs reference images"):
        train_from_config(p, progress=False)


# ---- data without references -------------------------------------------------------------------


def _undersampled_only(src_files, out: Path) -> list[Path]:
    """Copies of fastMRI files as a test / challenge file: undersampled k-space, mask, no
    reconstruction_rss."""
    from mrirecon.io import read_fastmri, write_fastmri

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in src_files:
        k = read_fastmri(p)
        paths.append(write_fastmri(out / p.name, k.data, k.header, mask=k.mask))
    return paths


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("ssdu")
    kw = {"coils": 4, "size": (64, 64), "acceleration": 4, "center_fraction": 0.16, "mask_type": "random",
              "resolution": 2}
    train = simulate_mri_dataset(root / "train_ref", volumes=3, slices=4, seed=3, **kw)
    heldout = simulate_mri_dataset(root / "heldout", volumes=2, slices=3, seed=4, **kw)
    _undersampled_only(train, root / "train")
    _undersampled_only(heldout, root / "heldout_us")  # validation without references either
    return root


def test_training_from_undersampled_files_without_reference(small_sets, tmp_path):
    from mrirecon.io import FastMRIFile
    from mrirecon.training.run import train_from_config
    from mrirecon.training.weights import load_pretrained

    f = next((small_sets / "train").glob("*.h5"))
    with FastMRIFile(f) as h5:
        assert h5.reference_key is None and h5.mask is not None
    cfg = _train_yaml(tmp_path, small_sets / "train", small_sets / "heldout_us",
                      "loss: {ssdu: {ratio: 0.4, selection: uniform, splits: 2}}", steps=3)
    result = train_from_config(cfg, progress=False)
    assert result.steps == 3 and (result.output_dir / "model.pt").is_file()
    rows = [r for r in result.history if "val_ssdu_loss" in r]
    assert rows and all(math.isfinite(r["val_ssdu_loss"]) for r in rows)
    assert "val_PSNR" not in rows[-1]  # no reference anywhere
    load_pretrained(result.output_dir / "model.pt")


def _write_undersampled_ismrmrd(path: Path, kspace, lines) -> None:
    """One slice ``(coils, X, Y)`` with only ``lines`` of ky acquired, written with ``ismrmrd``."""
    import ismrmrd
    import numpy as np

    X = ismrmrd.xsd
    c, nx, ny = kspace.shape
    limits = X.encodingLimitsType(
        kspace_encoding_step_1=X.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
        slice=X.limitType(minimum=0, maximum=0, center=0))
    space = X.encodingSpaceType(matrixSize=X.matrixSizeType(x=nx, y=ny, z=1),
                                fieldOfView_mm=X.fieldOfViewMm(x=200.0, y=200.0, z=5.0))
    header = X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=c),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=limits,
                                 trajectory=X.trajectoryType.CARTESIAN)])
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(X.ToXML(header))
        for line in lines:
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(kspace[:, :, line], dtype=np.complex64), center_sample=nx // 2,
                read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0))
            acq.idx.kspace_encode_step_1 = int(line)
            ds.append_acquisition(acq)


def test_ismrmrd_undersampled_file_is_a_training_sample(tmp_path):
    pytest.importorskip("ismrmrd")
    from mrirecon.data.simulate_mri import birdcage_maps
    from mrirecon.functional import fft2c
    from mrirecon.models.registry import build_model
    from mrirecon.training.data_acquired import AcquiredMRISet

    n = 32
    grid = (torch.arange(n, dtype=torch.float64) - n / 2) / (n / 2)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    maps = torch.from_numpy(birdcage_maps(4, xx.numpy(), yy.numpy()))
    image = ((xx ** 2 + yy ** 2) < 0.5).to(torch.complex128)
    kspace = fft2c(maps * image).numpy()
    mask = _column_mask(n, 3, 8)
    _write_undersampled_ismrmrd(tmp_path / "scan.h5", kspace, torch.nonzero(mask).reshape(-1).tolist())
    data = AcquiredMRISet(tmp_path, maps="espirit")
    s = data.get(0)
    assert len(data) == 1 and s.target is None and torch.equal(s.mask, mask)
    assert s.y.shape == (1, 4, n, n) and float(s.y[..., ~mask].abs().max()) == 0.0
    # the card records the maps trained with, which `mrirecon run` compares with calibrate.method
    assert data.training_range()["maps"] == ["espirit"]
    model = build_model("modl", iterations=1, layers=2, features=4, cg_iterations=2)
    loss = SelfSupervisedLoss(SSDUConfig())(model, s, 0)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0


class _Cached:
    """A dataset whose samples are read (and their ESPIRiT maps computed) once."""

    def __init__(self, data) -> None:
        self.data, self.train = data, data.train
        self.samples = [data.get(i) for i in range(len(data))]

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, index: int, mask_seed=None):
        return self.samples[index]


def test_ssdu_without_references_is_within_1_db_of_supervised_at_4x(small_sets, tmp_path):
    """Issue 15: SSDU on undersampled-only data vs supervised training on the same k-space
    with references (same model, initialisation, optimiser, steps; only the loss differs),
    scored on held-out volumes (other seed: other anatomy, contrast, coils) at 4x."""
    from mrirecon.models.registry import build_model
    from mrirecon.training.config import (
        DataConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        TrainConfig,
    )
    from mrirecon.training.data_acquired import AcquiredMRISet
    from mrirecon.training.losses import ReconstructionLoss
    from mrirecon.training.trainer import Trainer
    from mrirecon.training.validation import evaluate_reconstructor, model_reconstructor

    # a small MoDL, so that both runs get near their optimum within the suite's time budget
    params = {"iterations": 2, "layers": 3, "features": 8, "cg_iterations": 4, "batchnorm": False}
    steps = 150
    held = _Cached(AcquiredMRISet(small_sets / "heldout", train=False))
    assert all(s.target is not None for s in held.samples)

    def train(folder: str, ssdu: bool):
        cfg = TrainConfig(name=folder, output_dir=str(tmp_path / folder),
                          data=DataConfig(train=str(small_sets / folder), val=""),
                          model=ModelConfig("modl", params), optim=OptimConfig(lr=3e-3, max_steps=steps),
                          device="cpu", log_every=10**6, val_every=0, checkpoint_every=10**6,
                          tensorboard=False)
        data = _Cached(AcquiredMRISet(small_sets / folder))
        if ssdu:  # the loss never sees a reference: the files have none
            assert all(s.target is None for s in data.samples)
        torch.manual_seed(0)
        model = build_model("modl", **params)
        trainer = Trainer(cfg, model, data,
                          loss_fn=None if ssdu else ReconstructionLoss(LossConfig(ssim=1.0, l1=1.0)),
                          sample_loss=SelfSupervisedLoss(SSDUConfig()) if ssdu else None,
                          progress=False)
        trainer.fit()
        return evaluate_reconstructor(model_reconstructor(model.eval()), held).mean()["PSNR"]

    torch.manual_seed(0)
    untrained = evaluate_reconstructor(model_reconstructor(build_model("modl", **params).eval()),
                                       held).mean()["PSNR"]
    ssdu, supervised = train("train", True), train("train_ref", False)
    assert supervised > untrained  # the comparison is between two models that learned
    assert ssdu > untrained, (untrained, ssdu, supervised)
    assert ssdu > supervised - 1.0, (untrained, ssdu, supervised)


def test_ct_view_splitting_training_from_observations_only(tmp_path):
    """``modality: ct`` with ``loss.ssdu``: LoDoPaB-layout observations without ground truth."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.training.run import train_from_config

    for part, folder in (("train", "train"), ("validation", "val")):
        simulate_ct_dataset(tmp_path / folder, geometry="parallel", views=60, photons=4096.0,
                            size=32, seed=3 if part == "train" else 4, samples=2, part=part,
                            sources="phantom")  # other images: validation must not be training
        for p in (tmp_path / folder).glob("ground_truth_*"):
            p.unlink()  # observations only
    cfg = tmp_path / "ct.yaml"
    cfg.write_text(
        f"name: ct\noutput_dir: {tmp_path / 'run'}\n"
        f"data: {{train: {tmp_path / 'train'}, val: {tmp_path / 'val'}, modality: ct, ct_views: 30}}\n"
        "model: {name: primal_dual, params: {iterations: 2, n_primal: 2, n_dual: 2, features: 4}}\n"
        "optim: {max_steps: 2, lr: 0.001}\nloss: {ssdu: {view_parts: 2}}\n"
        "device: cpu\nlog_every: 1\nval_every: 2\ncheckpoint_every: 100\ntensorboard: false\n")
    result = train_from_config(cfg, progress=False)
    rows = [r for r in result.history if "val_ssdu_loss" in r]
    assert result.steps == 2 and rows and math.isfinite(rows[-1]["val_ssdu_loss"])
    assert all(math.isfinite(r["loss"]) for r in result.history)


def test_mri_ssdu_loss_splits_the_operators_own_mask():
    """Its ``mask`` parameter (never passed: the acquired points are the operator's mask) is
    gone."""
    import inspect

    assert "mask" not in inspect.signature(mri_ssdu_loss).parameters


@pytest.mark.parametrize("dtype", [torch.complex128, torch.float64])
def test_kspace_loss_is_ssdu_normalised_l2_plus_l1(dtype):
    """The value itself (Yaman et al. 2020, eq. 7): ``||u - v||_2 / ||v||_2 + ||u - v||_1 /
    ||v||_1``, against NumPy; complex and real."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 4, 8, 8, dtype=dtype, generator=g)
    u = v + 0.3 * torch.randn(2, 4, 8, 8, dtype=dtype, generator=g)
    a, b = u.numpy().ravel(), v.numpy().ravel()
    ref = (np.sqrt(np.sum(np.abs(a - b) ** 2)) / np.sqrt(np.sum(np.abs(b) ** 2))
           + np.sum(np.abs(a - b)) / np.sum(np.abs(b)))
    assert math.isclose(float(kspace_loss(u, v)), ref, rel_tol=1e3 * torch.finfo(torch.float64).eps)


def test_ssdu_gaussian_weights_use_each_axis_own_width(monkeypatch):
    """Fails if split.py:138 columns scaled by h / 4: the draw weights on a non-square grid
    are exp(-dy^2 / 2 (H/4)^2 - dx^2 / 2 (W/4)^2), captured at torch.multinomial."""
    seen = {}
    real = torch.multinomial

    def spy(weights, *a, **k):
        seen["w"] = weights.clone()
        return real(weights, *a, **k)

    monkeypatch.setattr(torch, "multinomial", spy)
    h, w = 16, 64
    mask = torch.ones(w)
    dc, loss = ssdu_split(mask, (h, w), torch.Generator().manual_seed(0), ratio=0.3,
                          selection="gaussian", acs_block=(4, 4))
    cand = ~centre_block((h, w), (4, 4))
    rows, cols = torch.nonzero(cand, as_tuple=True)
    ref = torch.exp(-0.5 * ((rows - h // 2) / (h / 4)).double() ** 2
                    - 0.5 * ((cols - w // 2) / (w / 4)).double() ** 2)
    torch.testing.assert_close(seen["w"], ref, rtol=1e-12, atol=0)


def test_ssdu_ratio_above_the_points_outside_the_block_holds_out_all_of_them():
    """Fails if split.py:84 ``min(count, outside)`` -> ``min(count, acquired)``: when the ACS
    block holds most acquired points, the loss set is every point outside it (the mutant asks
    torch.multinomial for more samples than candidates: RuntimeError)."""
    h, w = 8, 8
    dc, loss = ssdu_split(torch.ones(w), (h, w), torch.Generator().manual_seed(0), ratio=0.9,
                          selection="uniform", acs_block=(6, 6))
    block = centre_block((h, w), (6, 6))
    assert torch.equal(loss, ~block) and torch.equal(dc, block)


def test_split_views_interleaved_offset_follows_the_generator():
    """Fails if split.py:161 the drawn offset ignored: the interleaving offset is drawn from
    the generator, so over 20 seeds view 0 lands in more than one part."""
    parts_of_view0 = set()
    for seed in range(20):
        subsets = split_views(9, 3, generator=torch.Generator().manual_seed(seed))
        parts_of_view0.add(next(j for j, s in enumerate(subsets) if 0 in s.tolist()))
        assert sorted(torch.cat(subsets).tolist()) == list(range(9))
    assert len(parts_of_view0) > 1
    # without a generator the offset is 0: view v in part v % parts
    assert [s.tolist() for s in split_views(6, 3)] == [[0, 3], [1, 4], [2, 5]]


def test_acquired_range_is_clamped_to_the_width_and_judges_only_acquired_columns():
    """Fails if padding not clamped: a negative left edge sliced the *last* columns, so a file
    with unsampled middle columns read as fully sampled."""
    from mrirecon.training.data_acquired import acquired_range, fully_sampled

    assert acquired_range((-3, 70), 64) == (0, 64)
    assert acquired_range((4, 60), 64) == (4, 60)
    mask = torch.ones(64, dtype=torch.bool)
    mask[20:30] = False
    assert not fully_sampled(mask, (-3, 70))
    assert fully_sampled(mask, (30, 64)) and not fully_sampled(mask, (19, 64))


def test_readout_rows_is_none_when_every_row_holds_data():
    """Fails if an all-true row support is returned instead of None: a (H, W) mask for a slice
    without a partial echo, where mrirecon run's operator has a (W,) mask."""
    import types

    from mrirecon.training.data_acquired import readout_rows

    k = torch.ones(2, 16, 8, dtype=torch.complex64)
    assert readout_rows(types.SimpleNamespace(extra={"readout_range": [0, 16, 16]}), k) is None
    assert readout_rows(None, k) is None
    part = readout_rows(types.SimpleNamespace(extra={"readout_range": [4, 16, 16]}), k)
    assert part is not None and part.tolist() == [False] * 4 + [True] * 12
    # a readout_range of another row count is refused, not applied
    with pytest.raises(ValueError, match="describes 20 readout rows, the k-space has 16"):
        readout_rows(types.SimpleNamespace(extra={"readout_range": [0, 16, 20]}), k)


def test_acquired_set_sample_rate_keeps_file_order(tmp_path, monkeypatch):
    """Fails if the kept slices in the random permutation's order instead of file order: a
    volume's slices no longer consecutive, max_slices keeping random slices. The files' probe
    and scan are stubbed (4 slices each): the selection is what is tested."""
    import mrirecon.io.probe as probe
    from mrirecon.training.data_acquired import AcquiredMRISet

    for name in ("a.h5", "b.h5", "c.h5"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(probe, "hdf5_layout", lambda p: "fastmri")
    monkeypatch.setattr(AcquiredMRISet, "_scan", staticmethod(lambda p, layout: (4, None)))
    full = AcquiredMRISet(tmp_path, maps="learned")
    assert len(full) == 12
    for seed in range(4):
        part = AcquiredMRISet(tmp_path, maps="learned", sample_rate=0.5, seed=seed)
        assert len(part) == 6
        order = [full.items.index(it) for it in part.items]
        assert order == sorted(order)


def test_acquired_acceleration_counts_only_the_acquirable_columns(monkeypatch):
    """Fails if acceleration = full width / sampled columns: a padded knee-like file of 64
    columns, 56 acquirable, 14 sampled, was recorded at 4.57x instead of 4x in the card's
    training_range. The fastMRI reader is stubbed: the rule is what is tested."""
    import types

    import mrirecon.io as mio
    from mrirecon.training import data_acquired

    mask = torch.zeros(64, dtype=torch.bool)
    mask[4:60:4] = True  # 14 of the 56 acquirable columns [4, 60), 17 with the centre below
    mask[30:34] = True
    sampled = int(mask[4:60].sum())

    class FakeFile:
        def __init__(self, path):
            self.f = types.SimpleNamespace(shape=(3, 2, 32, 64), padding=(4, 60), header=None,
                                           sampling_mask=lambda: mask)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __len__(self):
            return 3

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(mio, "FastMRIFile", FakeFile)
    monkeypatch.setattr(data_acquired, "_readout_oversampling", lambda header, rows: 1.0)
    count, (matrix, coils, own, ratio, acquired) = data_acquired.AcquiredMRISet._scan(
        "x.h5", "fastmri")
    assert count == 3 and matrix == (32, 64) and coils == 2
    assert own[0] == pytest.approx((56 / sampled,))
    assert int(acquired.sum()) == 56


def test_acquired_espirit_maps_need_three_centre_columns():
    """Fails if ``width < 1``: ESPIRiT / Walsh maps calibrated on 1-2 centre columns instead
    of the documented refusal."""
    from pathlib import Path

    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data_acquired import AcquiredMRISet
    from mrirecon.training.maps_cache import MapsCache

    ds = AcquiredMRISet.__new__(AcquiredMRISet)
    ds.maps, ds.mask_config, ds.maps_cache = "espirit", MaskConfig(), MapsCache(1 << 20)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[15:17] = True  # a 2-column centre band
    mask[::4] = True
    k = torch.randn(2, 32, 32, dtype=torch.complex64) * mask
    with pytest.raises(ValueError, match=r"2 fully sampled centre column\(s\).*at least 3"):
        ds._maps(k, mask, Path("f.h5"), 0)


def test_acquired_learned_maps_are_unit_norm_uniform_maps():
    """Fails if learned-maps placeholder 1 per coil instead of 1 / sqrt(C): sum_c |S_c|^2 = C,
    the operator's adjoint / gram scaled by C against mrirecon run's uniform maps."""
    from pathlib import Path

    from mrirecon.training.data_acquired import AcquiredMRISet

    ds = AcquiredMRISet.__new__(AcquiredMRISet)
    ds.maps = "learned"
    k = torch.randn(4, 8, 8, dtype=torch.complex64)
    maps = ds._maps(k, torch.ones(8, dtype=torch.bool), Path("f.h5"), 0)
    assert maps.shape == k.shape and maps.dtype == k.dtype
    eps = torch.finfo(torch.float32).eps
    assert torch.allclose(maps.abs().pow(2).sum(0), torch.ones(8, 8), atol=10 * eps)
    assert torch.allclose(maps, maps[0, 0, 0].expand_as(maps))
