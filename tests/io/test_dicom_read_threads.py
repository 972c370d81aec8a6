"""DICOM reads from several threads at once: the process's warning filters and display are left
alone (``warnings.catch_warnings`` is not thread-safe: two reads at once left every later
warning of the process in a dead list, or all of them ignored), and each read's record holds
its own series' messages and no other's."""

from __future__ import annotations

import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from mrirecon.containers import Image, ImageGeometry
from mrirecon.io import write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series, read_dicom_series_and_messages
from mrirecon.io.errors import (DataFormatError, DataWarning, collect_data_warnings,
                                quiet_warnings, warn_data)
from tests.helpers import rewrite_dicom

THREADS, ROUNDS = 4, 20


def _image(seed: int) -> Image:
    data = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(seed)) * 1000 - 800
    geometry = ImageGeometry(spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                             orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), slice_thickness=2.0)
    return Image(data, geometry, kind="hu", modality="CT", description="thread test")


def _study(root: Path, i: int) -> Path:
    """A CT series beside a subfolder ``other_i`` of another series: one DataWarning naming
    ``other_i`` (its check reads the subfolder's headers under the quiet lock)."""
    folder = root / f"study{i}"
    write_dicom_series(_image(i), folder)
    write_dicom_series(_image(100 + i), folder / f"other_{i}")
    return folder


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("dicom_threads")
    return [_study(root, i) for i in range(THREADS)]


def _own(folder: Path) -> tuple[tuple[str, str, str], ...]:
    i = folder.name.removeprefix("study")
    return (("warning", "subfolders", f"<subfolders>: 1 subfolder(s) not read (other_{i}): "
             "they hold DICOM files of other series, no slice of this one; pass them as inputs "
             "of their own to read them"),)


def test_concurrent_reads_leave_warnings_alone_and_keep_their_own_messages(studies, recwarn):
    """4 threads x 20 rounds, each thread alternating the run's reader (messages returned) and
    the plain reader (messages warned), at a switch interval of 10 us: ``warnings.filters``
    and the display functions are the same objects afterwards, each returned record holds its
    series' one message, each plain read's warning reaches the caller's recorder (and none of
    the returned ones does), and a user's warning afterwards is shown."""
    filters, filters_list = list(warnings.filters), warnings.filters
    show, show_impl = warnings.showwarning, warnings._showwarnmsg_impl
    interval = sys.getswitchinterval()
    barrier = threading.Barrier(THREADS)

    def work(k: int) -> list[tuple[Path, tuple]]:
        folder, got = studies[k], []
        barrier.wait()
        for r in range(ROUNDS):
            if (r + k) % 2:
                read_dicom_series(folder)
            else:
                got.append((folder, read_dicom_series_and_messages(folder)[2]))
        return got

    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            records = [rec for recs in pool.map(work, range(THREADS)) for rec in recs]
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters is filters_list and list(warnings.filters) == filters
    assert warnings.showwarning is show and warnings._showwarnmsg_impl is show_impl
    assert len(records) == THREADS * ROUNDS // 2
    assert all(messages == _own(folder) for folder, messages in records), \
        [m for f, m in records if m != _own(f)][:3]
    shown = sorted(str(w.message) for w in recwarn if isinstance(w.message, DataWarning))
    want = sorted(f"{folder}: {_own(folder)[0][2]}" for folder in studies
                  for _ in range(ROUNDS // 2))
    assert shown == want
    recwarn.clear()
    warnings.warn("the user's own warning after the reads", UserWarning)
    assert [str(w.message) for w in recwarn] == ["the user's own warning after the reads"]


def test_a_failed_read_warns_what_it_collected(dicom_series_failing, recwarn):
    """A read that fails after a DataWarning (the subfolders') raises its error and emits the
    warning, as a plain read would have (nothing is lost in a collector)."""
    with pytest.raises(DataFormatError, match="Modality"):
        read_dicom_series_and_messages(dicom_series_failing)
    shown = [w for w in recwarn if isinstance(w.message, DataWarning)]
    assert len(shown) == 1 and "1 subfolder(s) not read (other_9)" in str(shown[0].message)
    assert shown[0].filename == __file__  # where the read was called, as a plain read says


@pytest.fixture
def dicom_series_failing(tmp_path) -> Path:
    folder = _study(tmp_path, 9)
    rewrite_dicom(sorted(folder.glob("*.dcm"))[1], Modality="MR")
    return folder


def test_collectors_are_per_thread_and_nest():
    """A collector is seen by its own thread (context) only, the inner of two nested ones
    takes the warnings and the outer one is active again after it; without one the warning
    is ``warnings.warn``'d."""
    seen: dict[str, list] = {}

    def other():
        with collect_data_warnings() as mine:
            warn_data(DataWarning("b", "f", "other thread"))
        seen["other"] = mine

    with collect_data_warnings() as outer:
        warn_data(DataWarning("a", "f", "outer 1"))
        t = threading.Thread(target=other)
        t.start()
        t.join()
        with collect_data_warnings() as inner:
            warn_data(DataWarning("a", "f", "inner"))
        warn_data(DataWarning("a", "f", "outer 2"))
    assert [w.message.problem for w in outer] == ["outer 1", "outer 2"]
    assert [w.message.problem for w in inner] == ["inner"]
    assert [w.message.problem for w in seen["other"]] == ["other thread"]
    with pytest.warns(DataWarning, match="no collector"):
        warn_data(DataWarning("a", "f", "no collector"))


def test_quiet_blocks_in_threads_restore_the_filters():
    """mrirecon's remaining silenced blocks (pydicom's parser, deprecated names) run one at a
    time under one lock: from 8 threads at a 10-us switch interval the filters are restored."""
    filters, filters_list = list(warnings.filters), warnings.filters
    interval = sys.getswitchinterval()

    def work(_):
        for _ in range(200):
            with quiet_warnings():
                warnings.warn("silenced", UserWarning)

    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters is filters_list and list(warnings.filters) == filters


def test_an_invalid_frame_of_reference_uid_is_read_without_the_filters(tmp_path):
    """The FrameOfReferenceUID check reads the element's bytes (pydicom's "Invalid value for
    VR UI" warning, which the check silenced with a filter, is not raised); the series reads,
    and a later access of the element in the header says nothing either."""
    paths = write_dicom_series(_image(0), tmp_path / "s")
    bad = "1.2.826.0.1.3680043.8.498.x1"
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rewrite_dicom(p, FrameOfReferenceUID=bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, header, messages = read_dicom_series_and_messages(tmp_path / "s")
        assert str(header.FrameOfReferenceUID) == bad
    assert messages == ()
