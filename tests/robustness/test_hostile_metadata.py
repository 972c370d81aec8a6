"""Metadata that contradicts the data: header encoding limits, CT unit attributes and references
stored in another scale or orientation. Each case was exit 0 with a wrong image, wrong HU or
meaningless metrics before; now it is an error naming the file and field, or a warning."""

from __future__ import annotations

import re
import shutil

import h5py
import pytest

from tests.helpers import clone_h5
from mrirecon.pipeline.definitions import load_pipeline
from tests.robustness.test_hostile_inputs import mri_config, run_one


def _limits(xml: bytes, minimum: int, maximum: int) -> bytes:
    """``xml`` with ``encodingLimits/kspace_encoding_step_1`` minimum / maximum replaced."""
    text = xml.decode()
    block = re.search(r"<kspace_encoding_step_1>.*?</kspace_encoding_step_1>", text, re.S)
    assert block is not None
    new = re.sub(r"<minimum>\d+</minimum>", f"<minimum>{minimum}</minimum>", block.group(0))
    new = re.sub(r"<maximum>\d+</maximum>", f"<maximum>{maximum}</maximum>", new)
    return (text[:block.start()] + new + text[block.end():]).encode()


@pytest.mark.parametrize("case", ["minimum_above_maximum", "centre_not_acquired"])
def test_encoding_limits_that_exclude_the_centre_line_are_refused(mri_file, tmp_path, case):
    """Limits 40..20 around 32 (or 0..8 around 12) marked columns acquired that hold no data and
    dropped the centre: with Walsh maps 6.2 dB and exit 0 (ESPIRiT blamed its own band)."""
    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()]
        w = h5["kspace"].shape[-1]
    minimum, maximum = (w - 4, 4) if case == "minimum_above_maximum" else (0, w // 2 - 4)
    bad = clone_h5(mri_file, tmp_path / f"{case}.h5", ismrmrd_header=_limits(xml, minimum, maximum))
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "failed", entry
    assert f"{case}.h5" in entry["error"]
    assert "encodingLimits/kspace_encoding_step_1" in entry["error"]
    assert f"minimum={minimum}, maximum={maximum}" in entry["error"]


@pytest.mark.parametrize("key, value", [
    ("mu_water_per_mm", -1.0),  # every voxel at about -1000 HU, exit 0
    ("mu_water_per_mm", 20.0),  # the value per metre: the same
    ("mu_water_per_mm", 0.0),  # NaN HU, reported as "method 'fbp' diverged?"
    ("mu_water_per_mm", "abc"),  # a bare "could not convert string to float", no field
    ("mu_air_per_mm", 0.015),  # air at 3/4 of water: HU scaled 4x
    ("mu_max_per_m", 0.0),  # mu_max_per_m was never read (LoDoPaB's 81.35858 whatever it said)
    ("mu_max_per_m", 0.08135858),  # the value per mm
    ("mu_max_per_m", "abc"),
])
def test_ct_unit_attributes_that_give_wrong_hu_are_refused(ct_dir, tmp_path, key, value):
    root = tmp_path / "part"
    shutil.copytree(ct_dir, root)
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        h5.attrs[key] = value
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(config, obs, tmp_path / "out")
    assert entry["status"] == "failed", entry
    assert f"observation_test_000.hdf5: attrs/{key}:" in entry["error"]


def test_ct_values_stored_with_another_mu_max_are_read_with_it(ct_dir, tmp_path):
    """Observations and ground truths divided by another MU_MAX (its mu_max_per_m attribute)
    were read with LoDoPaB's 81.35858 / m whatever the file said: stored with 2 MU_MAX, the line
    integrals, the attenuation and the exported HU were off by 2x with exit 0."""
    import numpy as np

    from mrirecon.io.lodopab import LoDoPaBFiles

    root = tmp_path / "part"
    shutil.copytree(ct_dir, root)
    for path in root.glob("*.hdf5"):
        with h5py.File(path, "r+") as h5:  # a power of two: the stored values stay exact
            h5["data"][...] = h5["data"][()] / 2
            h5.attrs["mu_max_per_m"] = 2 * h5.attrs["mu_max_per_m"]
    base, scaled = LoDoPaBFiles(ct_dir, "test"), LoDoPaBFiles(root, "test")
    for i in range(len(base)):
        assert np.array_equal(scaled.sinogram(i).data, base.sinogram(i).data)
        assert np.array_equal(scaled.attenuation(i).data, base.attenuation(i).data)


def test_ct_unit_attributes_of_other_energies_are_read(ct_dir, tmp_path):
    """Water at 0.03 / mm (another tube voltage) and air at 0 stay valid."""
    root = tmp_path / "part"
    shutil.copytree(ct_dir, root)
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        h5.attrs["mu_water_per_mm"], h5.attrs["mu_air_per_mm"] = 0.03, 0.0
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    assert run_one(config, obs, tmp_path / "out")["status"] == "ok"


@pytest.mark.parametrize("case, message", [
    # a transposed reconstruction_rss: 9.3 instead of 41.0 dB, exit 0, no word
    ("transposed", "the reference matches the reconstruction far better transposed"),
    ("flipped", "the reference matches the reconstruction far better flipped up-down"),
    # uint16 (a DICOM-derived magnitude at 0..4095): 6.2 dB, exit 0, no word
    ("uint16", "reconstruction_rss: the reference's scale is"),
])
def test_an_mri_reference_in_another_layout_or_scale_is_reported(mri_file, tmp_path, case, message):
    with h5py.File(mri_file) as h5:
        ref = h5["reconstruction_rss"][()]
    if case == "transposed":  # a square reference, so the size check cannot tell
        side = min(ref.shape[1:])
        top, left = (ref.shape[1] - side) // 2, (ref.shape[2] - side) // 2  # the fixed crop's
        ref = ref[:, top:top + side, left:left + side]
    stored = {"transposed": lambda r: r.transpose(0, 2, 1).copy(), "flipped": lambda r: r[:, ::-1],
              "uint16": lambda r: (r / r.max() * 4095).astype("uint16")}[case](ref)
    bad = clone_h5(mri_file, tmp_path / f"{case}.h5", reconstruction_rss=stored)
    extra = ["postprocess.crop=fixed", f"postprocess.crop_size=[{side},{side}]"] \
        if case == "transposed" else []
    entry = run_one(mri_config(*extra), bad, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    (msg,) = [w for w in entry["warnings"] if "reference" in w and "fully sampled" not in w]
    assert msg.startswith(f"{case}.h5: ") and message in msg
    good = run_one(mri_config(*extra), clone_h5(mri_file, tmp_path / "good.h5",
                   reconstruction_rss=ref), tmp_path / "out_good")
    assert not [w for w in good["warnings"] if "reference" in w and "fully sampled" not in w]


def test_a_ct_ground_truth_in_hu_is_reported(ct_dir, tmp_path):
    """A ground truth holding HU instead of mu / MU_MAX: 2.5 dB, exit 0, no word."""
    root = tmp_path / "part"
    shutil.copytree(ct_dir, root)
    with h5py.File(root / "ground_truth_test_000.hdf5", "r+") as h5:
        h5["data"][...] = h5["hu"][()]
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(config, root / "observation_test_000.hdf5", tmp_path / "out")
    assert entry["status"] == "ok"
    (msg,) = entry["warnings"]
    assert msg.startswith("observation_test_000.hdf5: ground_truth_test: the reference's scale is")
    good = run_one(config, ct_dir / "observation_test_000.hdf5", tmp_path / "out_good")
    assert good["status"] == "ok" and not good["warnings"]


@pytest.mark.parametrize("case", ["zero", "negative", "ct_zero"])
def test_a_reference_with_no_data_range_gives_no_metrics_and_keeps_the_output(
        mri_file, ct_dir, tmp_path, case):
    """An all-zero (placeholder) or nowhere-positive reference failed the input after its
    reconstruction, in psnr ("the data range gt.max() must be finite and > 0"), naming no dataset;
    now the outputs are written and a warning says why there are no metrics."""
    if case == "ct_zero":
        root = tmp_path / "part"
        shutil.copytree(ct_dir, root)
        with h5py.File(root / "ground_truth_test_000.hdf5", "r+") as h5:
            h5["data"][...] = 0
        path, field = root / "observation_test_000.hdf5", "ground_truth_test"
        config = load_pipeline("ct_fbp", ["export.formats=[hdf5,png]", "report.enabled=false"])[0]
    else:
        with h5py.File(mri_file) as h5:
            ref = h5["reconstruction_rss"][()]
        path = clone_h5(mri_file, tmp_path / f"{case}.h5",
                        reconstruction_rss=0 * ref if case == "zero" else -ref - 1)
        field, config = "reconstruction_rss", mri_config("export.formats=[hdf5,png]")
    entry = run_one(config, path, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    assert not entry.get("metrics")
    (msg,) = [w for w in entry["warnings"] if "no metrics" in w]
    assert msg.startswith(f"{path.name}: {field}: no metrics: the reference is ")
    assert list((tmp_path / "out" / "reconstructions").rglob("*.h5"))
    assert list((tmp_path / "out" / "figures").rglob("*.png"))


def _zero_fov(xml: bytes, axes: str) -> bytes:
    """``xml`` whose ``reconSpace/fieldOfView_mm`` is 0 on ``axes``, without the
    ``mrirecon.geometry`` user parameter (as in fastMRI's headers: the geometry comes from the
    FOV)."""
    text = re.sub(r"<userParameterString>\s*<name>mrirecon.geometry</name>.*?"
                  r"</userParameterString>", "", xml.decode(), flags=re.S)
    recon = re.search(r"<reconSpace>.*?</reconSpace>", text, re.S)
    assert recon is not None and "mrirecon.geometry" not in text
    block = recon.group(0)
    for axis in axes:
        block = re.sub(rf"(<fieldOfView_mm>.*?<{axis}>)[^<]*(</{axis}>)", r"\g<1>0\g<2>", block,
                       flags=re.S)
    return (text[:recon.start()] + block + text[recon.end():]).encode()


@pytest.mark.parametrize("formats", ["[hdf5,nifti]", "[hdf5,dicom]", "[hdf5]"])
def test_a_header_field_of_view_of_zero_is_reported_when_nifti_or_dicom_is_written(
        mri_file, tmp_path, formats):
    """reconSpace/fieldOfView_mm x = 0: the NIfTI / DICOM voxel size along the rows silently
    became 1 mm (10.5 mm in this file's header); now the run says so, naming the file and the
    element. Without a NIfTI / DICOM output the spacing is written nowhere and nothing is said."""
    from mrirecon.io import read_nifti

    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()]
    bad = clone_h5(mri_file, tmp_path / "nofov.h5", ismrmrd_header=_zero_fov(xml, "x"))
    entry = run_one(mri_config(f"export.formats={formats}"), bad, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    notes = [w for w in entry["warnings"] if "fieldOfView_mm" in w]
    if formats == "[hdf5]":
        assert notes == []
        return
    (msg,) = notes
    fmt = formats[6:-1]
    assert msg.startswith("nofov.h5: ismrmrd_header/encoding/reconSpace/fieldOfView_mm/x: is 0")
    assert "voxel size 1 mm was assumed along x (rows)" in msg and f"the {fmt} output" in msg
    if fmt == "nifti":  # what the warning speaks of: 1 mm rows, the FOV's y / 24 columns
        (nii,) = (tmp_path / "out" / "nifti").rglob("*.nii*")
        spacing = read_nifti(nii).geometry.spacing
        assert spacing[1] == pytest.approx(1.0) and spacing[2] == pytest.approx(252.3168 / 24)
    # y and z at 0 are named both; a valid FOV (the geometry from it) says nothing
    both = clone_h5(mri_file, tmp_path / "noyz.h5", ismrmrd_header=_zero_fov(xml, "yz"))
    entry = run_one(mri_config(f"export.formats={formats}"), both, tmp_path / "out_yz")
    (msg,) = [w for w in entry["warnings"] if "fieldOfView_mm" in w]
    assert ("fieldOfView_mm/y, ismrmrd_header/encoding/reconSpace/fieldOfView_mm/z: are 0" in msg
            and "along y (columns) and z (slices)" in msg)
    good = clone_h5(mri_file, tmp_path / "fov.h5", ismrmrd_header=_zero_fov(xml, ""))
    entry = run_one(mri_config(f"export.formats={formats}"), good, tmp_path / "out_good")
    assert entry["status"] == "ok" and not [w for w in entry["warnings"] if "fieldOfView" in w]


@pytest.mark.parametrize("method", ["cg_sense", "zero_filled_rss"])
def test_encoding_limits_beyond_the_matrix_are_clamped_before_partial_fourier_detection(
        mri_file, tmp_path, method):
    """Limits 0..200 around line 12 on 24 columns: the reader clamps the acquired columns to
    0..23 (a symmetric acquisition), but the partial Fourier check used the raw limits and said
    "12 before, 188 after; 56% of a symmetric acquisition", filling a 'missing side' by phase
    constraint (cg_sense) or POCS (zero_filled_rss) where nothing was missing (cg_sense at 4x:
    pixels off by up to 21 % of the peak, SSIM 0.544 instead of 0.567). Now it uses the clamped
    limits: no note, and the image of the correct header (0..23) bit for bit."""
    import numpy as np

    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()]
        w = h5["kspace"].shape[-1]
    assert b"<maximum>23</maximum>" in xml and w == 24
    bad = clone_h5(mri_file, tmp_path / "wide.h5", ismrmrd_header=_limits(xml, 0, 200))
    good = clone_h5(mri_file, tmp_path / "good.h5", ismrmrd_header=_limits(xml, 0, w - 1))
    config = mri_config(f"reconstruct.method={method}", "reconstruct.params={}",
                        "calibrate.method=walsh", "undersample.enabled=true",
                        "undersample.seed=fixed")  # one mask for both file names
    with pytest.warns(UserWarning, match="exceeds the 24 encoded columns; clamped"):
        entry = run_one(config, bad, tmp_path / "out_bad")
    assert entry["status"] == "ok", entry.get("error")
    assert not [w for w in entry["warnings"] if "partial Fourier" in w], entry["warnings"]
    assert run_one(config, good, tmp_path / "out_good")["status"] == "ok"
    images = []
    for out in ("out_bad", "out_good"):
        (path,) = (tmp_path / out / "reconstructions").rglob("*.h5")
        with h5py.File(path) as h5:
            images.append(h5["reconstruction"][()])
    np.testing.assert_array_equal(images[0], images[1])
    # a real partial Fourier header (lines 0..19 around 12: 12 before, 7 after) is still reported
    pf = clone_h5(mri_file, tmp_path / "pf.h5", ismrmrd_header=_limits(xml, 0, 19))
    entry = run_one(config, pf, tmp_path / "out_pf")
    (note,) = [w for w in entry["warnings"] if "partial Fourier" in w]
    assert "lines 0..19 around the centre 12 (12 before, 7 after" in note


@pytest.mark.parametrize("field", ["position", "read_dir"])
def test_a_nan_acquisition_position_or_direction_is_refused(ismrmrd_file, tmp_path, field):
    """NaN in an ISMRMRD acquisition's position (or a direction cosine) compared false with every
    "is it set?" tolerance: the NIfTI was written with a NaN affine and exit 0 (the DICOM export
    failed with "value nan is not finite", naming neither file nor field; a NaN read_dir gave
    nibabel's "Could not decompose affine")."""
    import numpy as np

    from mrirecon.io.errors import DataFormatError
    from mrirecon.io import read_ismrmrd

    bad = tmp_path / "nan.h5"
    shutil.copy(ismrmrd_file, bad)
    with h5py.File(bad, "r+") as h5:
        table = h5["dataset/data"]
        record = table[0]  # the first imaging acquisition: its position and directions place slice 0
        record["head"][field][0] = np.nan
        table[0] = record
    entry = run_one(mri_config("export.formats=[nifti]"), bad, tmp_path / "out")
    assert entry["status"] == "failed"
    assert f"nan.h5: data[0].head.{field}: [nan, " in entry["error"]
    assert "is not finite (1 of " in entry["error"]
    assert not (tmp_path / "out" / "nifti").exists() or not any((tmp_path / "out" / "nifti").iterdir())
    with pytest.raises(DataFormatError, match=rf"data\[0\]\.head\.{field}"):
        read_ismrmrd(bad)
    assert np.isfinite(read_ismrmrd(ismrmrd_file).header.geometry.affine_lps()).all()


def test_a_non_finite_geometry_is_refused_where_it_is_made(mri_file, tmp_path):
    """The same for the geometry a header stores as JSON (``NaN`` is valid JSON to Python) and
    for :class:`ImageGeometry` built in code: NaN passed its positivity and orthonormality tests."""
    import math

    from mrirecon.containers import ImageGeometry
    from mrirecon.io import FastMRIFile
    from mrirecon.io.errors import DataFormatError

    for kwargs in ({"origin": (math.nan, 0, 0)}, {"spacing": (1, math.inf, 1)},
                   {"orientation": (math.nan, 0, 0, 0, 1, 0)}, {"slice_thickness": math.nan},
                   {"slice_thickness": -2.0}):
        with pytest.raises(ValueError, match=f"ImageGeometry.{next(iter(kwargs))} must be finite"):
            ImageGeometry(**kwargs)
    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()].decode()
    start = xml.index('"origin": [') + len('"origin": [')
    bad = clone_h5(mri_file, tmp_path / "json.h5",
                   ismrmrd_header=(xml[:start] + "NaN, " + xml[xml.index(",", start) + 2:]).encode())
    with FastMRIFile(bad) as f, pytest.raises(DataFormatError, match=r"json.h5: ismrmrd_header/"
                                              r"userParameters/mrirecon.geometry: invalid "
                                              r"\(ImageGeometry.origin must be finite"):
        f.header  # noqa: B018


@pytest.mark.parametrize("case", ["resized", "uint16", "flipped", "as_stored"])
def test_bench_targets_of_another_grid_scale_or_layout(mri_file, tmp_path, caplog, case):
    """``mrirecon bench`` scored what ``mrirecon run`` warns of or leaves unscored, with exit 0
    and no word: a target resized to another grid (the output's centre crop against it: 12.0 dB
    on a 48 x 48 brain resized to 40 x 40), stored as uint16 0..4095, or flipped left-right."""
    import numpy as np

    from mrirecon.bench.mri import run_bench

    with h5py.File(mri_file) as h5:
        ref = h5["reconstruction_rss"][()]
    target = {"resized": ref[:, 2:-2, 2:-2], "uint16": np.round(ref / ref.max() * 4095),
              "flipped": ref[:, :, ::-1], "as_stored": ref}[case]
    data = tmp_path / "data"
    clone_h5(mri_file, data / "scan.h5",
             reconstruction_rss=np.ascontiguousarray(target).astype(np.float32))
    records = []

    def bench():
        return run_bench(data, accelerations=[4], methods="zero_filled,cg_sense", progress=False,
                         verbose=False, center_fractions={4.0: 0.16},
                         on_record=lambda rec, _: records.append(rec))

    if case == "resized":
        with pytest.raises(ValueError, match=r"scan.h5: reconstruction_rss: the reference image of "
                                             r"slice 0 is \(28, 20\), the postprocessed output is "
                                             r"\(32, 24\); the target must be the image on the "
                                             r"output's grid"):
            bench()
        return
    bench()
    assert [r["method"] for r in records] == ["zero_filled", "cg_sense"]
    notes = {tuple(r["reference_notes"]) for r in records}
    assert len(notes) == 1  # one volume: the same notes in every method's record
    (notes,) = notes
    expected = {"uint16": r"scan.h5: reconstruction_rss: the reference's scale is [0-9.e+]+x the "
                          r"reconstruction's .* \(every method's output\)$",
                "flipped": r"scan.h5: reconstruction_rss: the reference matches cg_sense's output "
                           r"far better flipped left-right \(correlation 0.8\d\) than as read"}
    if case == "as_stored":
        assert notes == () and "bench:" not in caplog.text
    else:
        assert len(notes) == 1 and re.match(expected[case], notes[0]), notes
        assert notes[0].split(": ", 1)[1] in caplog.text  # logged as it is recorded
