"""The DICOM files that ship with pydicom and pydicom-data are found without pydicom's lookup.

pydicom 2.4's ``get_testdata_file`` finds pydicom-data through ``pkg_resources`` entry points:
with setuptools >= 81 (or a Python 3.12 venv, which has no setuptools) ``mrirecon simulate ct
--sources dicom`` and ``mrirecon demo`` failed with "pip install pkg_resources"."""

from __future__ import annotations

import os
import sys

import pytest

from mrirecon.io.ct_sources import CT_SOURCES, ct_source_path, packaged_dicom_file
from mrirecon.io.heldout_sources import HELDOUT_CT, HELDOUT_MR, _dicom_path

NAMES = [n for n in (*CT_SOURCES, *HELDOUT_MR, *HELDOUT_CT) if n.endswith(".dcm")]


def _entry_point_sources() -> dict:
    """pydicom's external data sources (pydicom-data first) found through importlib.metadata,
    as pydicom 3 finds them: pydicom 2.4's own search imports ``pkg_resources``."""
    from importlib.metadata import entry_points

    sources = {ep.name: ep.load()() for ep in entry_points(group="pydicom.data.external_sources")}
    first = {"pydicom-data": sources["pydicom-data"]} if "pydicom-data" in sources else {}
    return {**first, **sources}


def _expected(data_manager) -> dict:
    expected = {}
    for name in NAMES:
        path = data_manager.get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"{name} is not installed (pydicom-data)")
        expected[name] = os.path.realpath(path)
    return expected


def test_the_files_pydicom_finds_are_found_without_pkg_resources(monkeypatch):
    data_manager = pytest.importorskip("pydicom.data.data_manager")
    # the expected paths are pydicom's own lookup (its data folder, then pydicom-data with its
    # hash check), given sources found without pkg_resources, so the test runs at pydicom 2.4
    with monkeypatch.context() as m:
        m.setattr(data_manager, "_EXTERNAL_DATA_SOURCES", _entry_point_sources())
        expected = _expected(data_manager)

    def pydicom_24(*args, **kwargs):  # what pydicom 2.4 does without setuptools' pkg_resources
        raise ModuleNotFoundError("No module named 'pkg_resources'", name="pkg_resources")

    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    monkeypatch.setattr(data_manager, "get_external_sources", pydicom_24, raising=False)
    monkeypatch.setattr(data_manager, "external_data_sources", pydicom_24)
    monkeypatch.setattr(data_manager, "_EXTERNAL_DATA_SOURCES", None, raising=False)
    monkeypatch.setattr(data_manager, "get_testdata_file", pydicom_24)
    monkeypatch.setattr("pydicom.data.get_testdata_file", pydicom_24)
    for name in NAMES:
        found = ct_source_path(name) if name in CT_SOURCES else _dicom_path(name)
        assert found == expected[name], name
        assert packaged_dicom_file(name) == expected[name]
    assert packaged_dicom_file("no_such_file_f17.dcm") is None
    with pytest.raises(FileNotFoundError, match="held-out image no_such_file_f17.dcm is not "
                                                "installed; pip install pydicom-data"):
        _dicom_path("no_such_file_f17.dcm")
