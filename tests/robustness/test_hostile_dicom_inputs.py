"""DICOM series given as users give them: a series folder whose slices continue in a subfolder,
a series folder beside subfolders of other series, one slice file (with or without ``.dcm``) and
a glob or shell expansion of a series' slice files given as inputs."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from mrirecon.cli import main
from mrirecon.io.dicom_read import read_dicom_series, read_dicom_series_and_messages
from mrirecon.io.errors import DataFormatError, DataWarning
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.inputs import expand_inputs
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.stream import detect_format


def _series(dicom_series, folder: Path, seed: int = 0) -> list[Path]:
    return dicom_series(folder, "CT", seed)


def test_a_series_continued_in_a_subfolder_is_refused_naming_it(dicom_series, tmp_path):
    """Slices 2 and 3 of 3 moved into ``part2/``: the reader took the 1 slice at the top, exit
    0 and no word (6 slices in the audit: 3 reconstructed)."""
    src = tmp_path / "series"
    paths = _series(dicom_series, src)
    (src / "part2").mkdir()
    for p in paths[1:]:
        shutil.move(p, src / "part2" / p.name)
    with pytest.raises(DataFormatError) as err:
        read_dicom_series(src)
    text = str(err.value)
    assert text.startswith(f"{src}: SeriesInstanceUID: 2 more slice file(s) of this series")
    assert f"subfolder(s) part2 (first: part2/{paths[1].name}) beside its 1 here" in text
    # mrirecon run fails the input with the reader's message, no volume of 1 slice is written
    out = tmp_path / "out"
    config = load_pipeline("ct_fbp", ["report.enabled=false"])[0]
    assert run_pipeline(config, [str(src)], out, progress=False) == 1
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    assert entry["status"] == "failed" and "2 more slice file(s) of this series" in entry["error"]
    assert not list((out / "reconstructions").glob("*.h5"))


def test_subfolders_of_other_series_are_named_and_the_series_read_whole(dicom_series, tmp_path):
    """A series beside subfolders of another series and of other files: read as when the
    subfolders are not there, with one warning naming the subfolder of the other series (the
    one of notes holds no DICOM file: not named)."""
    alone = tmp_path / "alone"
    _series(dicom_series, alone)
    src = tmp_path / "study"
    shutil.copytree(alone, src)
    _series(dicom_series, src / "other_series" / "deeper", seed=1)
    (src / "notes").mkdir()
    (src / "notes" / "README.txt").write_text("protocol notes")
    (src / ".hidden").mkdir()
    _series(dicom_series, src / ".hidden", seed=2)
    (src / "empty").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_dicom_series(src)
    assert np.array_equal(image.data.numpy(), read_dicom_series(alone).data.numpy())
    shown = [str(w.message) for w in caught if isinstance(w.message, DataWarning)]
    assert shown == [f"{src}: <subfolders>: 1 subfolder(s) not read (other_series): they hold "
                     "DICOM files of other series, no slice of this one; pass them as inputs of "
                     "their own to read them"]
    # a run's record keeps it (read_dicom_series_and_messages)
    *_, messages = read_dicom_series_and_messages(src)
    assert [(level, kind) for level, kind, _ in messages] == [("warning", "subfolders")]


def test_subfolders_without_dicom_files_are_not_named(dicom_series, tmp_path):
    """A viewer's export beside the slices: PNG renderings, JPEG thumbnails, a report. They were
    named "N subfolder(s) not read ...: they hold no slice of this series (other series or
    files); pass them as inputs of their own" - inputs that cannot be read. A DICOM file of
    another series among them (without a suffix) still names its subfolder."""
    alone = tmp_path / "alone"
    _series(dicom_series, alone)
    src = tmp_path / "export"
    shutil.copytree(alone, src)
    for sub, name, data in (("png", "slice0.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
                            ("thumbnails", "t1.jpg", b"\xff\xd8\xff\xe0fakejpeg"),
                            ("thumbnails", "t2", b"\xff\xd8\xff\xe0fakejpeg"),
                            ("report", "readme.txt", b"hi\n"), ("report", "data.bin", bytes(300))):
        (src / sub).mkdir(exist_ok=True)
        (src / sub / name).write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_dicom_series(src)
    assert np.array_equal(image.data.numpy(), read_dicom_series(alone).data.numpy())
    *_, messages = read_dicom_series_and_messages(src)
    assert not messages
    other = _series(dicom_series, tmp_path / "other", seed=1)[0]
    shutil.copy(other, src / "thumbnails" / "IM0001")  # a slice of another series, no suffix
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_dicom_series(src)
    shown = [str(w.message) for w in caught if isinstance(w.message, DataWarning)]
    assert len(shown) == 1 and "1 subfolder(s) not read (thumbnails)" in shown[0], shown


def test_a_series_without_subfolders_reads_without_a_warning(dicom_series, tmp_path):
    _series(dicom_series, tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_dicom_series(tmp_path / "s").data.shape[0] == 3


@pytest.mark.parametrize("suffix", [True, False])
def test_one_slice_file_is_named_as_one_slice_of_its_folder(dicom_series, tmp_path, suffix):
    """``--input series/IM0001.dcm`` failed with "FileNotFoundError: read_dicom_series: ... is
    not a folder"; the same file without ``.dcm`` with "not a readable HDF5 file (file signature
    not found)"."""
    paths = _series(dicom_series, tmp_path / "series")
    one = paths[1] if suffix else paths[1].rename(paths[1].with_suffix(""))
    expect = f"{one}: file: is one DICOM slice; pass the folder of its series ({one.parent})"
    for call in (lambda: read_dicom_series(one), lambda: detect_format(one, "auto")):
        with pytest.raises(DataFormatError) as err:
            call()
        assert str(err.value) == expect
    with pytest.raises(ValueError) as err:
        expand_inputs([str(one)])
    assert str(err.value) == f"input {expect} (nothing was run)"


def test_a_file_that_is_no_slice_is_no_series_folder(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataFormatError, match="notes.txt: file: is a file, not a DICOM series"):
        read_dicom_series(text)
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        read_dicom_series(tmp_path / "missing")


def test_a_glob_of_slice_files_is_refused_once_naming_the_folder(dicom_series, tmp_path, capsys):
    """``--input 'SERIES/*.dcm'`` (or the shell's expansion of it): each slice failed alone
    with "... is not a folder", N failures, exit 1."""
    src = tmp_path / "series"
    paths = _series(dicom_series, src)
    expect = (f"3 input(s) are DICOM slice files, one file per slice of a series ({src}: 3 "
              f"({', '.join(p.name for p in paths)})): a DICOM series is read from its folder; "
              f"pass the folder instead, e.g. --input {src} (nothing was run)")
    for inputs in ([f"{src}/*.dcm"], [str(p) for p in paths]):
        with pytest.raises(ValueError) as err:
            expand_inputs(inputs)
        assert str(err.value) == expect
    with pytest.raises(SystemExit) as exc:
        main(["run", "ct_fbp", "-i", f"{src}/*.dcm", "-o", str(tmp_path / "o"), "--no-progress"])
    assert exc.value.code == 2 and expect in capsys.readouterr().err
    assert not (tmp_path / "o" / "reconstructions").exists()


def test_slice_files_beside_other_inputs_are_named_once(dicom_series, ct_dir, tmp_path, caplog):
    """Beside a real input, the slice files stay inputs (each then fails naming its folder) and
    one warning names them all."""
    paths = _series(dicom_series, tmp_path / "series")
    h5 = sorted(ct_dir.glob("observation_*.hdf5"))[0]
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        files = expand_inputs([str(h5), *map(str, paths)])
    assert files == [h5, *paths]
    said = [r.getMessage() for r in caplog.records if "DICOM slice files" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("; each of them fails as an input")


def test_a_glob_pattern_gives_its_matches_in_sorted_order(tmp_path, monkeypatch):
    """The inputs of a pattern run in sorted order (metrics.csv's rows, the report, a
    distributed run's split ``files[rank::world]`` all follow it): glob's own order is the
    directory's, which differs between file systems and machines."""
    import glob as glob_module

    from mrirecon.pipeline.inputs import expand_inputs

    names = ["c.h5", "a.h5", "b.h5"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    real = glob_module.glob
    # the file system's order, as an unsorted directory listing may give it
    monkeypatch.setattr(glob_module, "glob",
                        lambda p, *a, **k: sorted(real(p, *a, **k), reverse=True))
    got = expand_inputs([str(tmp_path / "*.h5")])
    assert [p.name for p in got] == sorted(names)
