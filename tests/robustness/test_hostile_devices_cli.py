"""Devices, precisions and output paths as users give them: CUDA asked for on a CPU machine
(``--set device=cuda``, a pipeline's ``device: cuda``, ``map_location``), ``amp: true`` on the
CPU, half-precision weights, an empty or blocked ``--out`` / ``--output``, and ``--readouts``
beyond what a simulation can hold. Each is refused or said once, naming what to change."""

from __future__ import annotations

import logging

import pytest
import torch

from mrirecon.cli import _one_line, main
from tests.helpers import TINY_VARNET, TRAIN_MASK, simulated_mri_split

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> dict:
    return simulated_mri_split(tmp_path_factory.mktemp("train_data"), val_slices=1)


def _data(folders: dict) -> list[str]:
    return ["--set", f"data.train={folders['train']}", "--set", f"data.val={folders['val']}"]


def _cli_error(argv, capsys) -> str:
    """The last line on stderr of ``mrirecon ARGV``, which must exit 2 without a traceback
    (argparse errors print the usage above it)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


# ---- output paths ----------------------------------------------------------------------------


def test_os_errors_name_their_path():
    """``str(err)`` of an OSError always holds its file name, so the old test of it dropped the
    path: "error: File exists" for ``--out FILE``, ``--set output_dir=FILE``."""
    assert _one_line(FileExistsError(17, "File exists", "sim_file")) == "sim_file: File exists"
    assert _one_line(NotADirectoryError(20, "Not a directory", "f/sub")) == "f/sub: Not a directory"
    assert _one_line(OSError(18, "Invalid cross-device link", "a", None, "b")) == \
        "a -> b: Invalid cross-device link"
    # io.atomic's errors carry the path in their text already: not said twice
    assert _one_line(OSError(2, "OUT/x.h5: No such file or directory")) == \
        "OUT/x.h5: No such file or directory"
    assert _one_line(PermissionError(13, "OUT/a: Permission denied", "OUT/a")) == \
        "OUT/a: Permission denied"


@pytest.mark.parametrize("kind", ["mri", "ct"])
def test_simulate_out_blocked_by_a_file_names_the_option(kind, tmp_path, capsys):
    afile = tmp_path / "sim_file"
    afile.write_text("hi")
    small = ["--volumes", "1", "--slices", "1", "--coils", "2", "--size", "16", "16"] \
        if kind == "mri" else ["--size", "16", "--samples", "1"]
    err = _cli_error(["simulate", kind, *small, "--out", str(afile)], capsys)
    assert f"--out {afile} is a file, not a folder" in err
    err = _cli_error(["simulate", kind, *small, "--out", str(afile / "sub")], capsys)
    assert f"--out {afile / 'sub'}: cannot create the folder ({afile} is a file" in err
    assert afile.read_text() == "hi"


def test_train_output_dir_blocked_by_a_file_names_the_path(train_data, tmp_path, capsys):
    afile = tmp_path / "sim_file"
    afile.write_text("hi")
    err = _cli_error(["train", "train_modl_brain_sim", "--set", f"output_dir={afile}",
                      *_data(train_data)], capsys)
    assert f"output_dir: {afile} is a file, not a folder" in err, err
    assert afile.read_text() == "hi"


def test_train_with_an_empty_output_dir_is_refused(train_data, tmp_path, capsys, monkeypatch):
    """`--set output_dir=$OUT` with OUT unset trained into the working directory."""
    monkeypatch.chdir(tmp_path)
    err = _cli_error(["train", "train_modl_brain_sim", "--set", "output_dir=''",
                      *_data(train_data)], capsys)
    assert "output_dir: an empty path" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["run", "mri_cs", "-i", "x.h5", "--output", ""],
    ["run", "mri_cs", "-i", "x.h5", "-o", ""],
    ["bench", "--data", ".", "--output", ""],
    ["demo", "--output", ""],
    ["simulate", "mri", "--out", ""],
    ["simulate", "ct", "--out", ""],
])
def test_an_empty_output_path_is_refused(argv, tmp_path, capsys, monkeypatch):
    """``-o "$OUT"`` with ``OUT`` unset wrote into the current directory without a word."""
    monkeypatch.chdir(tmp_path)
    err = _cli_error(argv, capsys)
    assert "--out" in err and "an empty path" in err, err
    assert list(tmp_path.iterdir()) == []


# ---- simulate: --readouts ---------------------------------------------------------------------


def test_radial_readouts_beyond_memory_are_refused_naming_readouts(tmp_path, capsys):
    err = _cli_error(["simulate", "mri", "--volumes", "1", "--slices", "1", "--coils", "4",
                      "--size", "32", "32", "--trajectory", "radial", "--readouts", "100000000",
                      "--out", str(tmp_path / "r")], capsys)
    assert "--readouts 100000000" in err and "GiB of memory" in err, err
    assert "MemoryError" not in err and not (tmp_path / "r").exists()


def test_the_library_simulation_checks_the_readout_budget_too(tmp_path):
    """`simulate_noncartesian_dataset` called from Python made the 95 GiB trajectory before any
    check (a MemoryError): it runs the command line's budget check first, writing nothing."""
    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

    with pytest.raises(ValueError, match=r"GiB of memory"):
        simulate_noncartesian_dataset(tmp_path / "r", "radial", volumes=1, slices=1, coils=4,
                                      size=(32, 32), readouts=100_000_000)
    assert not (tmp_path / "r").exists()


def test_spiral_with_too_many_arms_is_refused(tmp_path, capsys):
    from mrirecon.sampling.nonuniform import max_spiral_interleaves, spiral_trajectory

    err = _cli_error(["simulate", "mri", "--volumes", "1", "--slices", "1", "--coils", "4",
                      "--size", "32", "32", "--trajectory", "spiral", "--readouts", "100000",
                      "--out", str(tmp_path / "s")], capsys)
    assert "--readouts 100000" in err and "at most 31999" in err, err
    assert max_spiral_interleaves(32) == 31999
    assert spiral_trajectory(32, 0.24, 31999, undersampling_edge=2.0).shape[0] == 31999
    with pytest.raises(ValueError, match=r"num_interleaves 32000 is too many arms for "
                                         r"matrix_size 32.*at most 31999"):
        spiral_trajectory(32, 0.24, 32000)
    with pytest.raises(ValueError, match=r"dwell_time 1 s gives 0 sample"):
        spiral_trajectory(32, 0.24, 4, dwell_time=1.0)  # was an empty (4, 0, 2) trajectory


def test_spiral_samples_match_the_trajectory():
    from mrirecon.sampling.nonuniform import spiral_samples, spiral_trajectory

    for shots in (1, 8, 100):
        assert spiral_samples(48, 0.24, shots, undersampling_edge=2.0) == \
            spiral_trajectory(48, 0.24, shots, undersampling_edge=2.0).shape[1]


def test_the_budget_names_the_readouts_and_the_detectors(tmp_path):
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.data.simulate_mri import check_mri_budget

    with pytest.raises(ValueError, match=r"--trajectory spiral --readouts 30000 \(\d+ samples "
                                         r"each\) x 3 volume\(s\) needs about"):
        check_mri_budget("simulate_mri", tmp_path, 3, 200, 64, (320, 320), trajectory="spiral",
                         readouts=30000)
    check_mri_budget("simulate_mri", tmp_path, 1, 1, 2, (32, 32), trajectory="radial")  # fits
    with pytest.raises(ValueError, match=r"simulate_ct: --samples 100000 --size 2000 --views "
                                         r"4000 --detectors 3000 needs about"):
        simulate_ct_dataset(tmp_path / "ct", samples=100000, size=2000, views=4000,
                            detectors=3000)
    with pytest.raises(ValueError, match=r"--detectors 2829 \(the default\) needs about"):
        simulate_ct_dataset(tmp_path / "ct", samples=100000, size=2000, views=4000)
    assert not (tmp_path / "ct").exists()


# ---- devices ---------------------------------------------------------------------------------


def test_device_messages_name_the_source():
    from mrirecon.core.device import resolve_device

    with pytest.raises(ValueError, match=r"^--device must be one of cpu, cuda, auto, got 'tpu'"):
        resolve_device("tpu", source="--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^map_location cuda: no CUDA GPU .* use "
                                             r"map_location cpu \(or auto\)$"):
            resolve_device("cuda", source="map_location")


@NO_GPU
def test_cuda_on_a_cpu_machine_never_advises_an_option_train_lacks(train_data, tmp_path, capsys):
    err = _cli_error(["train", "train_modl_brain_sim", "--set", "device=cuda",
                      "--set", f"output_dir={tmp_path / 'o'}", *_data(train_data)], capsys)
    assert "device cuda: no CUDA GPU is available" in err and "--device" not in err, err


@NO_GPU
def test_a_pipeline_yaml_asking_for_cuda_from_python(mri_file, tmp_path):
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    cfg, _ = load_pipeline("mri_cs", ["device=cuda"])
    with pytest.raises(ValueError, match=r"device cuda: no CUDA GPU") as err:
        run_pipeline(cfg, [str(mri_file)], tmp_path / "o", progress=False)
    assert "--device" not in str(err.value)


@NO_GPU
@pytest.mark.parametrize("loc, said", [
    ("cuda", "map_location 'cuda': no CUDA GPU is available to torch here; use map_location='cpu'"),
    ("cuda:1", "map_location 'cuda:1': no CUDA GPU"),
    ("gpu", "map_location 'gpu' is not a device (torch's name of an NVIDIA GPU is 'cuda')"),
    ("CPU", "map_location 'CPU' is not a device (device names are lower case: 'cpu')"),
    ("meta", "map_location 'meta' loads no values"),
    ("cuda:x", "map_location 'cuda:x' is not a device"),
])
def test_map_location_is_checked_before_the_file(loc, said):
    """Each said the shipped weights file "cannot be read safely", blaming the file."""
    from mrirecon.training.weights import load_pretrained

    with pytest.raises(ValueError) as err:
        load_pretrained("modl_brain_sim", map_location=loc)
    assert said in str(err.value) and "cannot be read safely" not in str(err.value)
    assert next(load_pretrained("modl_brain_sim", map_location="cpu").parameters()).device.type \
        == "cpu"


# ---- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_advise_model_float(dtype):
    """The advice was "convert the data (y.to(torch.float16))": complex k-space cast to a real
    dtype loses its imaginary part, and the call then failed as 'real data for MRI weights'."""
    from mrirecon.operators import sense
    from mrirecon.training.weights import load_pretrained

    model = load_pretrained("modl_brain_sim").eval().to(dtype)
    maps = torch.ones(1, 1, 16, 16, dtype=torch.complex64)
    mask = torch.ones(16, 16, dtype=torch.bool)
    y = torch.randn(1, 1, 16, 16, dtype=torch.complex64)
    for data in (y, y.real.to(dtype)):  # the data as the old advice made them
        with pytest.raises(TypeError) as err, torch.inference_mode():
            model(data[None], sense(maps, mask))
        text = str(err.value)
        assert f"the weights are {dtype}; half-precision weights are not supported" in text, text
        assert "model.float()" in text and "y.to(" not in text
    with torch.inference_mode():
        assert model.float()(y[None], sense(maps, mask)).dtype == torch.complex64


def test_amp_on_the_cpu_is_said_once(train_data, tmp_path, caplog):
    import yaml

    from mrirecon.training.run import train_from_config

    data = train_data
    cfg = {"name": "amp", "output_dir": str(tmp_path / "out"), "seed": 3, "device": "cpu",
           "amp": True, "tensorboard": False,
           "data": {"train": str(data["train"]), "val": str(data["val"]), "mask": TRAIN_MASK},
           "model": {"name": "varnet", "params": dict(TINY_VARNET)},
           "optim": {"lr": 1e-3, "max_steps": 3, "batch_size": 1}, "val_every": 0}
    path = tmp_path / "amp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        train_from_config(path, progress=False)
    said = [r.getMessage() for r in caplog.records if "amp: true" in r.getMessage()]
    assert said == ["amp: true has no effect on cpu (bfloat16 autocast is CUDA's); training in "
                    "float32"], said
