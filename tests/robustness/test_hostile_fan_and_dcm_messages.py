"""Two messages that gave no way forward: a fan-beam source inside the field of view ("the
source lies inside the field of view", no numbers) and a ``.dcm`` file that holds no DICOM given
as an input ("is one DICOM slice; pass the folder of its series", where the folder then failed
with "a.dcm: no SOPClassUID (truncated?)")."""

from __future__ import annotations

import pytest

from mrirecon.cli import main
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.errors import DataFormatError
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.inputs import expand_inputs
from mrirecon.pipeline.stream import detect_format


def _fan(**kw) -> CTGeometry:
    args = dict(beam="fan", image_shape=(64, 64), angles=[0.0, 1.0], num_detectors=24,
                source_isocenter=10, source_detector=20)
    return CTGeometry(**{**args, **kw})


def test_a_source_inside_the_field_of_view_gives_the_radius_and_the_fix():
    with pytest.raises(ValueError) as err:
        _fan()
    assert str(err.value) == (
        "CTGeometry: the source lies inside the field of view: source_isocenter 10 mm is not "
        "beyond its radius 32 mm (half of image_shape's smaller side, 64 pixels, x pixel_size "
        "1 mm); give a source_isocenter (and source_detector) above 32 mm, or a smaller "
        "pixel_size or image_shape")
    # each change it names is accepted: the radius it gives is the limit
    assert _fan(source_isocenter=32.5, source_detector=65).field_of_view_radius == 32
    assert _fan(pixel_size=0.25).field_of_view_radius == 8
    assert _fan(image_shape=(16, 16)).field_of_view_radius == 8
    with pytest.raises(ValueError, match="source_isocenter 32 mm is not beyond its radius 32"):
        _fan(source_isocenter=32, source_detector=65)


def _not_dicom(tmp_path):
    (tmp_path / "J").mkdir()
    path = tmp_path / "J" / "a.dcm"
    path.write_text("x")
    return path


def test_a_dcm_file_that_holds_no_dicom_is_not_called_a_slice(tmp_path):
    path = _not_dicom(tmp_path)
    expect = (f"{path}: file: is not a readable DICOM file: it is named .dcm but holds no DICOM "
              "(no DICM marker at byte 128, no data set at its start); pass the folder of a "
              "DICOM series, or an input of another format")
    for call in (lambda: read_dicom_series(path), lambda: detect_format(path, "auto")):
        with pytest.raises(DataFormatError) as err:
            call()
        assert str(err.value) == expect
    with pytest.raises(ValueError) as err:
        expand_inputs([str(path)])
    assert str(err.value) == f"input {expect} (nothing was run)"


def test_a_dcm_file_that_holds_no_dicom_keeps_exit_2(tmp_path, capsys):
    path = _not_dicom(tmp_path)
    with pytest.raises(SystemExit) as code:
        main(["run", "ct_fbp", "--input", str(path), "--output", str(tmp_path / "o")])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "is not a readable DICOM file" in err and "one DICOM slice" not in err, err


def test_a_damaged_dicom_slice_is_named_damaged_with_its_folder(dicom_series, tmp_path):
    """A Part 10 slice cut short: DICOM by its bytes, but the series reader cannot read it
    either, so it is not sent to its folder as "one DICOM slice"."""
    one = dicom_series(tmp_path / "series", "CT")[0]
    one.write_bytes(one.read_bytes()[:200])
    with pytest.raises(DataFormatError) as err:
        read_dicom_series(one)
    text = str(err.value)
    assert text.startswith(f"{one}: file: is a DICOM file that cannot be read ("), text
    assert text.endswith(f"replace it with an intact copy (a failed export or copy?) and pass "
                         f"the folder of its series ({one.parent})"), text
