"""DICOM values as written (:mod:`mrirecon.io.dicom_strings`, :mod:`mrirecon.io.dicom_quantise`):
decimal strings of float32 values, person names, the VR length limits, backslashes, and integer
CT values at the int16 limit."""

from __future__ import annotations

import numpy as np
import pytest


def test_ct_integers_up_to_the_int16_limit_are_stored_as_they_are():
    """Fails if dicom_quantise.py:78 ``span <= top`` -> ``span < top``. Integer HU data whose
    magnitude reaches exactly 32767 fit int16 with slope 1: stored == data, slope "1",
    intercept "0" (an integer of 16 bits is exact, no quantisation step)."""
    from mrirecon.io.dicom_quantise import choose_rescale

    for top in (32767, -32767):
        data = np.array([[0, 1, -1000, top]], dtype=np.int32)
        stored, slope, intercept = choose_rescale(data, "CT")
        assert (slope, intercept) == ("1", "0")
        assert stored.dtype == np.int16
        np.testing.assert_array_equal(stored.astype(np.int32), data)


@pytest.mark.parametrize("text", ["4", "4.3", "4.33", "1.2345", "0.012345", "123.456"])
def test_ds_writes_a_float32_decimal_of_up_to_six_digits_as_that_decimal(text):
    """Fails if dicom_strings.py:25 ``_SHORT_DIGITS = 6`` -> 3. A decimal of at most 6
    significant digits seen through float32 (ISMRMRD headers are float32) is written as that
    decimal, whatever its digit count (the documented contract of ``_ds``)."""
    from mrirecon.io.dicom_strings import _ds

    value = float(np.float32(float(text)))
    assert float(_ds(value)) == float(text)  # the decimal itself, not float32's digits
    assert float(_ds(-value)) == -float(text)


@pytest.mark.filterwarnings("ignore:The number of PN components:UserWarning")  # the input has 4
def test_sanitise_strings_keeps_the_three_person_name_groups_and_cuts_each_to_64():
    """Fails if dicom_strings.py:81 ``text.split("=")[:3]`` -> ``[:2]``. A PN value has up to
    three component groups (alphabetic, ideographic, phonetic; PS3.5 6.2.1), each of at most 64
    characters: all three are kept, each cut on its own, and a fourth (invalid) is dropped."""
    from pydicom.dataset import Dataset

    from mrirecon.io.dicom_strings import sanitise_strings

    three = "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce=\u3084\u307e\u3060^\u305f\u308d\u3046"
    ds = Dataset()
    ds.ReferringPhysicianName = three
    sanitise_strings(ds)
    assert str(ds.ReferringPhysicianName) == three
    ds = Dataset()
    ds.ReferringPhysicianName = "=".join(["A" * 70, "B" * 70, "C" * 70, "D"])
    sanitise_strings(ds)
    assert str(ds.ReferringPhysicianName).split("=") == ["A" * 64, "B" * 64, "C" * 64]


@pytest.mark.parametrize("keyword,vr_max", [("StationName", 16), ("StudyID", 16),
                                            ("SeriesDescription", 64), ("Modality", 16)])
@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # the input is too long
def test_sanitise_strings_cuts_each_value_to_its_vr_maximum(keyword, vr_max):
    """Fails if dicom_strings.py:62 ``"SH": 16`` -> 64. Every string is cut to its VR's
    maximum length (PS3.5 table 6.2-1): SH 16, LO 64, CS 16; pydicom's own validation is the
    reference where it checks lengths."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataset import Dataset

    from mrirecon.io.dicom_strings import sanitise_strings

    ds = Dataset()
    setattr(ds, keyword, "X" * (vr_max + 30))
    sanitise_strings(ds)
    got = str(getattr(ds, keyword))
    assert len(got) == vr_max, (dictionary_VR(keyword), got)


def test_sanitise_strings_keeps_a_backslash_in_free_text_and_replaces_it_in_a_vm1_name():
    """Fails if dicom_strings.py:69 the ``_TEXT_VRS`` exclusion of ``_single_valued``
    removed and if dicom_strings.py:113 ``cleaned.replace("\\\\", "/")`` dropped. In LT / ST
    / UT a backslash is text (PS3.5 6.2: these VRs have no value delimiter), so a comment or a
    Windows path keeps it, and its line breaks; in an element of VM 1 whose VR splits at
    ``\\`` (a PersonName object keeps its backslash as one value) it becomes ``/``, else the
    written file holds two values where one is allowed."""
    from pydicom.dataset import Dataset
    from pydicom.valuerep import PersonName

    from mrirecon.io.dicom_strings import sanitise_strings

    ds = Dataset()
    ds.ImageComments = "C:\\scans\\T1 and T2\r\nsecond line"  # LT, VM 1
    ds.AdditionalPatientHistory = "a\\b"  # LT
    ds.ReferringPhysicianName = PersonName("Doe^John\\Roe^Jane")  # PN, VM 1
    sanitise_strings(ds)
    assert ds.ImageComments == "C:\\scans\\T1 and T2\r\nsecond line"
    assert ds.AdditionalPatientHistory == "a\\b"
    assert str(ds.ReferringPhysicianName) == "Doe^John/Roe^Jane"
