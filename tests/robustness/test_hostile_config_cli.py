"""Clear errors: config values validated at load (with the key named), user errors exit 2 with
one line, internal errors show a traceback only under --debug; library functions check alike."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from mrirecon.cli import main
from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline


@pytest.mark.parametrize("override, message", [
    ("reconstruct.params.lamb=0.01",
     r"mri_cs.yaml: reconstruct.params.lamb: l1_wavelet has no parameter 'lamb' \(did you mean 'lam'\?\)"),
    ("reconstruct.params.iterations=0", r"reconstruct.params.iterations: must be an integer >= 1, got 0"),
    ("reconstruct.params.iterations=-3", r"reconstruct.params.iterations: must be an integer >= 1"),
    ("reconstruct.params.lam=.nan", r"reconstruct.params.lam: must be finite, got nan"),
    ("reconstruct.params.lam=.inf", r"reconstruct.params.lam: must be finite, got inf"),
    ("reconstruct.params.lam=-0.1", r"reconstruct.params.lam: must be finite and >= 0, got -0.1"),
    # YAML reads `nan` (not `.nan`) as a string: refused at load, not a TypeError mid-run
    ("reconstruct.params.lam=nan", r"reconstruct.params.lam: must be a number, got 'nan'"),
    ("reconstruct.params.wavelet=3", r"reconstruct.params.wavelet: must be a string"),
    ("report.max_slices_in_figures=-1", r"report.max_slices_in_figures: must be >= 0, got -1"),
    ("undersample.accelerations=[0]", r"undersample.accelerations\[0\]: must be >= 1, got 0"),
    ("undersample.center_fractions=[1.5]", r"undersample.center_fractions\[0\]: must be in \(0, 1\]"),
    # the centre band alone exceeds 1 / acceleration (failed per file, after the config loaded)
    ("undersample.center_fractions=[1.0]", r"undersample.center_fractions\[0\]: 1.0 keeps at least "
                                           r"1 / 4 of the columns .* no mask reaches acceleration 4"),
    ("undersample.center_fractions=[0.08,0.04]", r"undersample.center_fractions: 2 value\(s\) for 1 "
                                                 r"accelerations"),
    ("undersample.views=-2", r"undersample.views: must be >= 1, got -2"),
    # numpy's RandomState takes seeds below 2**32: every input failed after loading, with
    # "ValueError: Seed must be between 0 and 2**32 - 1" naming no key
    ("undersample.fixed_seed=4294967296", r"undersample.fixed_seed: must be <= 4294967295 "
                                          r"\(2\*\*32 - 1"),
    ("load.counters.repetitio=1", r"load.counters.repetitio: not a selectable counter"),
    # Poisson counts wrap near 9.2e18 (1e20 photons gave -21 dB with exit 0)
    ("undersample.photons=1.0e+20", r"undersample.photons: photons must be in \(0, 1e\+15\]"),
    ("reconstruct.method=primal_dual", r"'primal_dual' is a CT model; this pipeline's modality is"),
    ("load.counters.repetition=-1", r"load.counters.repetition: must be an integer >= 0, got -1"),
    ("calibrate.calib_width=0", r"calibrate.calib_width: must be >= 1, got 0"),
    ("reconstruct.method=cg_sens", r"reconstruct.method: unknown method 'cg_sens' \(did you mean 'cg_sense'\?\)"),
    ("reconstruct.method=sirt", r"reconstruct.method: 'sirt' is a CT reconstruction"),
    ("load.format=ct_hdf5", r"load.format: 'ct_hdf5' data cannot go through a 'mri' pipeline"),
    ("export.series_description=" + "x" * 70, r"export.series_description: DICOM allows at most 64"),
    # the DICOM value delimiter: written as 2 values of a VM-1 element (dciodvfy: "Bad attribute
    # Value Multiplicity"), and SpecificCharacterSet was dropped when the text had non-ASCII
    ("export.series_description=T1\\T2", r"export.series_description: 'T1\\T2' holds '\\', the "
                                        r"DICOM value delimiter"),
])
def test_config_values_are_checked_at_load_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline("mri_cs", [override])


def test_load_counters_are_refused_where_no_input_has_counters(mri_file, tmp_path):
    """``load.counters`` select ISMRMRD acquisitions: a fastMRI file (or a CT pipeline) has none,
    and ``load.counters.slice=1`` reconstructed every slice with exit 0."""
    import json

    from mrirecon.pipeline.runner import run_pipeline

    with pytest.raises(ConfigError, match=r"ct_fbp.yaml: load.counters.slice: selects acquisitions "
                                          r"of ISMRMRD raw data; a CT pipeline"):
        load_pipeline("ct_fbp", ["load.counters.slice=1"])
    config = load_pipeline("mri_cs", ["load.counters.slice=1", "reconstruct.method=zero_filled_rss",
                                      "reconstruct.params={}", "calibrate.method=none",
                                      "export.formats=[hdf5]", "report.enabled=false"])[0]
    assert run_pipeline(config, [str(mri_file)], tmp_path / "out", progress=False) == 1
    (entry,) = json.loads((tmp_path / "out" / "provenance.json").read_text())["files"]
    assert entry["status"] == "failed" and mri_file.name in entry["error"]
    assert "load.counters.slice=1 selects acquisitions of ISMRMRD raw data" in entry["error"]
    assert not (tmp_path / "out" / "reconstructions").exists() or \
        not any((tmp_path / "out" / "reconstructions").iterdir())


@pytest.mark.parametrize("pipeline, override, message", [
    # CT kept every view (24.35 dB, as with undersampling off) while provenance said 6x
    ("ct_fbp", "undersample.accelerations=[6]", r"ct_fbp.yaml: undersample.accelerations: an MRI "
                                               r"setting, which a CT pipeline does not read"),
    ("ct_fbp", "undersample.enabled=true", r"ct_fbp.yaml: undersample.enabled: true, but neither "
                                           r"undersample.views nor undersample.photons is set"),
    ("ct_learned", "undersample.mask=random", r"undersample.mask: an MRI setting"),
    ("ct_learned", "postprocess.crop=none", r"postprocess.crop: an MRI setting"),
    ("ct_fbp", "calibrate.method=walsh", r"calibrate.method: an MRI setting"),
    ("ct_fbp", "preprocess.coil_compression=4", r"preprocess.coil_compression: an MRI setting"),
    # MRI drew its 4x mask
    ("mri_cs", "undersample.views=30", r"mri_cs.yaml: undersample.views: a CT setting, which an "
                                       r"MRI pipeline does not read"),
    ("mri_retrospective", "undersample.photons=1000", r"undersample.photons: a CT setting"),
])
def test_settings_of_the_other_modality_are_refused(pipeline, override, message):
    """Keys only the other modality's stages read changed nothing, without a word."""
    with pytest.raises(ConfigError, match=message):
        load_pipeline(pipeline, [override])
    # what each modality does read still loads
    assert load_pipeline("ct_fbp", ["undersample.enabled=true", "undersample.views=30"])[0]
    assert load_pipeline("ct_fbp", ["undersample.enabled=true", "undersample.photons=1000"])[0]
    assert load_pipeline("ct_fbp", ["undersample.enabled=true", "undersample.photons=1000",
                                    "undersample.seed=fixed", "undersample.fixed_seed=3"])[0]
    assert load_pipeline("mri_cs", ["undersample.enabled=true", "undersample.accelerations=[8]",
                                    "undersample.center_fractions=[0.04]"])[0]


def test_an_error_in_an_overridden_key_names_the_override():
    """The message named only the pipeline file, where the key was never written."""
    with pytest.raises(ConfigError, match=r"^--set over .*mri_cs.yaml: postprocess.crop_size: expected a list"):
        load_pipeline("mri_cs", ["postprocess.crop_size=320"])
    with pytest.raises(ConfigError, match=r"^--set over .*mri_cs.yaml: reconstruct.params.lamb: "):
        load_pipeline("mri_cs", ["reconstruct.params.lamb=0.01"])
    err = ConfigError("f.yaml", "a.b", "bad")  # a key the overrides did not touch keeps its file
    assert err.blamed_on(["c=1", "ab=2"]) is err and str(err.blamed_on(["a=1"])) == "--set over f.yaml: a.b: bad"


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-3` as the string '1e-3': `--set lam=1e-3` was refused as "must
    be a number". Configs are read with YAML 1.2's float syntax; `nan` without the dot stays a string."""
    from mrirecon.core.config import load_yaml, read_yaml

    config, _ = load_pipeline("mri_cs", ["reconstruct.params.lam=1e-3"])
    assert config.reconstruct.params["lam"] == 0.001 and isinstance(config.reconstruct.params["lam"], float)
    path = tmp_path / "p.yaml"
    path.write_text("a: 2E-4\nb: .5\nc: -3e2\nd: 1\ne: nan\nf: 1e\n")
    assert read_yaml(path) == {"a": 2e-4, "b": 0.5, "c": -300.0, "d": 1, "e": "nan", "f": "1e"}
    assert isinstance(read_yaml(path)["d"], int)
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_yaml("!!python/object:os.system x")  # still a safe loader


def test_learned_model_parameters_are_checked_against_its_constructor():
    with pytest.raises(ConfigError, match=r"reconstruct.params.num_cascade: varnet has no parameter "
                                          r"'num_cascade' \(did you mean 'num_cascades'\?\)"):
        load_pipeline("mri_varnet", ["reconstruct.weights=null", "reconstruct.params.num_cascade=4"])
    # with weights whose card fixes the model, only its overridable settings are offered
    with pytest.raises(ConfigError, match=r"reconstruct.params.num_cascade: varnet has no parameter "
                                          r"'num_cascade'; valid: none \(the settings the model "
                                          r"card of varnet_fastmri_diverse"):
        load_pipeline("mri_varnet", ["reconstruct.params.num_cascade=4"])
    with pytest.raises(ConfigError, match=r"reconstruct.params.cg_iterations: must be an integer >= 1"):
        load_pipeline("mri_modl", ["reconstruct.weights=null", "reconstruct.params.cg_iterations=0"])


def test_misspelled_parameter_fails_before_any_input_is_read(mri_file, tmp_path, capsys, monkeypatch):
    import mrirecon.pipeline.runner as runner

    def never(*a, **k):
        raise AssertionError("inputs were read before the config was validated")

    monkeypatch.setattr(runner, "expand_inputs", never)
    with pytest.raises(SystemExit) as exc:
        main(["run", "mri_cs", "-i", str(mri_file), "-o", str(tmp_path / "o"),
              "--set", "reconstruct.params.lamb=0.01"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "reconstruct.params.lamb" in err and "did you mean 'lam'" in err
    # a config built in code is validated by run_pipeline itself, before the inputs
    from dataclasses import replace

    config, _ = load_pipeline("mri_cs")
    bad = replace(config, reconstruct=replace(config.reconstruct, params={"lam": -1.0}))
    with pytest.raises(ConfigError, match="reconstruct.params.lam: must be finite and >= 0"):
        runner.run_pipeline(bad, [str(mri_file)], tmp_path / "o2", progress=False)


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_user_errors_exit_2_with_one_line(mri_file, tmp_path, capsys):
    inp = ["-i", str(mri_file)]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "--output" in _cli_error(["run", "mri_cs", *inp, "-o", str(afile)], capsys)
    assert "is a file" in _cli_error(["run", "mri_cs", *inp, "-o", str(afile)], capsys)
    err = _cli_error(["run", "mri_cs", *inp, "-o", str(afile / "sub")], capsys)
    assert "cannot create the folder" in err and "afile/sub" in err
    err = _cli_error(["run", "mri_cs", *inp, "-o", str(tmp_path / "o"), "--set", "reconstruct.params.lam=[1,"],
                     capsys)
    assert "reconstruct.params.lam" in err and "not valid YAML" in err
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: x\nmodality: !!python/object/apply:os.system ['touch pwned']\n")
    err = _cli_error(["run", str(evil), *inp, "-o", str(tmp_path / "o")], capsys)
    assert "evil.yaml" in err and "python/object/apply" in err and not (tmp_path / "pwned").exists()
    if not torch.cuda.is_available():
        err = _cli_error(["run", "mri_cs", *inp, "-o", str(tmp_path / "o"), "--device", "cuda"], capsys)
        # the device message names the setting, not an option: ``train`` has no --device
        assert "device cuda: no CUDA GPU is available" in err and "use device cpu" in err
    err = _cli_error(["run", "mri_cs", "-i", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "o")], capsys)
    assert "missing.h5" in err
    err = _cli_error(["run", "no_such_pipeline", *inp, "-o", str(tmp_path / "o")], capsys)
    assert "no_such_pipeline" in err


def test_library_warnings_are_log_lines_under_the_command_line(tmp_path, capsys, caplog):
    """A warnings.warn (a deprecated key, a dead coil in the noise scan) was the one raw entry
    in a run's log: Python's "FILE:LINE: FutureWarning: ..." with the source line quoted under
    it; it is now a WARNING line of the module that warned, as every other line."""
    import warnings

    before = warnings.showwarning
    with caplog.at_level("WARNING"):
        _cli_error(["run", "mri_cs", "-i", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "o"),
                    "--set", "reconstruct.params.max_iterations=5"], capsys)
    lines = [(r.name, r.getMessage()) for r in caplog.records if "deprecated" in r.getMessage()]
    assert lines == [("mrirecon.pipeline.definitions", "FutureWarning: --set: reconstruct.params: "
                      "'max_iterations' is deprecated, use 'iterations' (the old name goes away "
                      "in the next release)")]
    assert warnings.showwarning is before  # restored for the caller of main()


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_is_a_user_error(mri_file, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        err = _cli_error(["run", "mri_cs", "-i", str(mri_file), "-o", str(ro)], capsys)
    finally:
        ro.chmod(0o700)
    assert "not writable" in err


def test_internal_errors_show_a_traceback_only_under_debug(tmp_path, capsys, monkeypatch):
    import mrirecon.data.simulate_mri as simulate_mri

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected state")

    monkeypatch.setattr(simulate_mri, "simulate_mri_dataset", boom)
    argv = ["simulate", "mri", "--out", str(tmp_path / "unused")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 1 and len(err.splitlines()) == 1
    assert "internal error: RuntimeError: unexpected state" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="unexpected state"):
        main(["--debug", *argv])
    with pytest.raises(RuntimeError, match="unexpected state"):
        main([*argv, "--debug"])


def test_a_user_error_under_debug_shows_its_traceback_and_still_exits_2(tmp_path, capsys):
    """``--debug`` re-raised user errors too, so a misspelled key or a missing input exited 1,
    the status of a failed input or an internal error, where the docs promise 2."""
    from mrirecon.cli import main

    for argv in (["run", "mri_cs", "-i", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")],
                 ["run", "mri_cs", "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                  "--set", "reconstruct.params.lamb=0.01"]):
        with pytest.raises(SystemExit) as exc:
            main(["--debug", *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert "Traceback (most recent call last)" in err and "mrirecon run: error: " in err


def test_model_card_with_a_python_tag_is_refused(tmp_path):
    from mrirecon.training.weights import model_card

    pt = tmp_path / "m.pt"
    shutil.copy(__import__("mrirecon.training.weights", fromlist=["WEIGHTS_DIR"]).WEIGHTS_DIR
                / "modl_brain_sim.pt", pt)
    pt.with_suffix(".yaml").write_text("model: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ValueError, match=r"m.yaml: not a valid model card"):
        model_card(pt)
    assert not (tmp_path / "pwned").exists()


def test_a_card_whose_aliases_expand_past_any_card_is_refused_by_every_card_reader(tmp_path):
    """Cards come with weights from elsewhere and were read without the pipeline files' alias
    limit: 1 KB of nested aliases loaded, then an adapted model's inherited card was written
    expanded (MemoryError at 3.5 GB after 6 minutes of `mrirecon run mri_learned_adapt`)."""
    from mrirecon.training.init_card import load_init_card
    from mrirecon.training.run_card import earlier_card
    from mrirecon.training.weights import model_card

    pt = tmp_path / "m.pt"
    shutil.copy(__import__("mrirecon.training.weights", fromlist=["WEIGHTS_DIR"]).WEIGHTS_DIR
                / "modl_brain_sim.pt", pt)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    card = pt.with_suffix(".yaml")
    card.write_text("\n".join([*lines, "kind: reconstruction", "known_failures: *a7", ""]))
    assert card.stat().st_size < 2000  # 9**8 = 43 million values
    with pytest.raises(ValueError, match=r"m.yaml: not a valid model card \(its anchors and "
                                         r"aliases expand to [\d,]+ values"):
        model_card(pt)
    with pytest.raises(ValueError, match=r"m.yaml \(the card of --init\) is unreadable: its "
                                         r"anchors and aliases expand"):
        load_init_card(pt, "modl")
    assert earlier_card(pt) is None  # unreadable: not a card to compare a rebuild with


# ---- the library raises the same way ------------------------------------------------------

def test_library_functions_refuse_bad_parameters():
    from mrirecon import recon
    from mrirecon.metrics import ssim
    from mrirecon.operators import sense
    from mrirecon.sampling import create_mask_for_mask_type
    from mrirecon.solvers import cg, fista

    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    op = sense(torch.ones(2, 8, 8, dtype=torch.complex64) / 2 ** 0.5, torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="cg_sense: iterations must be an integer >= 1, got 0"):
        recon.run("cg_sense", y, op, iterations=0)
    with pytest.raises(ValueError, match="l1_wavelet: lam must be finite"):
        recon.run("l1_wavelet", y, op, lam=math.nan)
    with pytest.raises(ValueError, match="l1_wavelet: lam must be finite and >= 0"):
        recon.run("l1_wavelet", y, op, lam=-1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        recon.run("zero_filled", y * math.nan, op)
    with pytest.raises(ValueError, match="cg: iterations must be an integer >= 1"):
        cg(lambda x: x, y, iterations=0)
    with pytest.raises(ValueError, match="cg: iterations"):
        cg(lambda x: x, y, iterations=-2)
    with pytest.raises(ValueError, match="fista: iterations"):
        fista(lambda x: x, lambda x, s: x, y, step=1.0, iterations=0)
    for kind in ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"):
        with pytest.raises(ValueError, match="acceleration must be finite"):
            create_mask_for_mask_type(kind, [0.08], [math.inf])
    vol = torch.rand(1, 16, 16, generator=g)
    with pytest.raises(ValueError, match="ssim: the data range maxval must be finite and > 0"):
        ssim(vol, vol, maxval=0.0)
    with pytest.raises(ValueError, match="ssim: the data range gt.max"):
        ssim(torch.zeros(1, 16, 16), vol)
    with pytest.raises(ValueError, match="ssim: empty input"):
        ssim(torch.zeros(0, 16, 16), torch.zeros(0, 16, 16))
    with pytest.raises(ValueError, match="ssim: gt holds 1 NaN or Inf"):
        ssim(torch.where(vol > vol.max() - 1e-6, math.inf, vol), vol)


def test_dicom_strings_are_sanitised(tmp_path):
    import warnings

    import pydicom

    from mrirecon.containers import Image, ImageGeometry
    from mrirecon.io import write_dicom_series

    image = Image(torch.rand(2, 8, 8), ImageGeometry(spacing=(1.0, 1.0, 1.0)), kind="magnitude",
                  modality="MR", description="x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the long name before we cut it
        paths = write_dicom_series(image, tmp_path, series_description="a\x00b\x1b[31mc",
                                   patient={"PatientName": "Doe\x00^J" + "x" * 100,
                                            "PatientID": "12\n34" * 20})
    ds = pydicom.dcmread(paths[0])
    assert ds.SeriesDescription == "ab[31mc"
    assert str(ds.PatientName).startswith("Doe^J") and len(str(ds.PatientName)) == 64
    assert "\n" not in ds.PatientID and len(ds.PatientID) <= 64
    for elem in ds:
        if isinstance(elem.value, str):
            assert not any(c < " " for c in elem.value), elem



def test_a_backslash_in_a_single_valued_dicom_string_is_not_a_value_delimiter(tmp_path):
    """`T1\\T2` was written as two values of SeriesDescription (VM 1); with an `ü` the
    character-set check, which skipped multi-valued elements, left SpecificCharacterSet out
    (UTF-8 bytes under the default repertoire)."""
    import subprocess

    import pydicom
    from pydicom.dataset import Dataset

    from mrirecon.containers import Image, ImageGeometry
    from mrirecon.io import write_dicom_series

    image = Image(torch.rand(2, 8, 8), ImageGeometry(spacing=(1.0, 1.0, 1.0)), kind="magnitude",
                  modality="MR")
    source = Dataset()  # VM-1 elements of a source file holding the delimiter
    source.Modality, source.SequenceName, source.ReceiveCoilName = "MR", "tse2d1\\8", "Knie ü\\8ch"
    paths = write_dicom_series(image, tmp_path, series_description="T1\\T2 Kopf ü",
                               source_dataset=source, patient={"PatientName": "Doe\\J"})
    ds = pydicom.dcmread(paths[0])
    assert (ds.SeriesDescription, ds.SequenceName, ds.ReceiveCoilName, str(ds.PatientName)) == (
        "T1/T2 Kopf ü", "tse2d1/8", "Knie ü/8ch", "Doe/J")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    if shutil.which("dciodvfy"):
        run = subprocess.run(["dciodvfy", str(paths[0])], capture_output=True, text=True, timeout=60)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], run.stdout + run.stderr
    from mrirecon.io.dicom import _has_non_ascii

    multi = Dataset()  # a multi-valued element (VM 1-n) keeps its values; its text counts
    multi.AdmittingDiagnosesDescription = ["a", "ü"]
    assert _has_non_ascii(multi) and not _has_non_ascii(Dataset())
    item = Dataset()
    item.CodeMeaning = "ü"
    multi.ConceptNameCodeSequence = [item]
    multi.AdmittingDiagnosesDescription = "a"
    assert _has_non_ascii(multi)

@pytest.mark.parametrize("override, message", [
    ("val_max_slices=-1", r"val_max_slices: must be >= 1, got -1"),
    ("optim.max_steps=0", r"optim.max_steps: must be >= 1, got 0"),
    ("optim.lr=.nan", r"optim.lr: must be in \(0, 1\]"),
    ("loss.l1=-1", r"loss.l1: must be >= 0"),
    # gamma 0 stopped training after the first decay and gamma > 1 grew the rate, both exit 0;
    # 1e-300 decays the rate below what moves a float32 weight
    ("optim.lr_gamma=0", r"optim.lr_gamma: must be in \(0, 1\], got 0"),
    ("optim.lr_gamma=2", r"optim.lr_gamma: must be in \(0, 1\], got 2"),
    ("optim.lr_gamma=1e-300", r"optim.lr_gamma: 1e-300 decays optim.lr .* below float32's smallest"),
    # 1e300 overflowed Adam's float32 update with a bare RuntimeError; 10 trained to NaN
    ("optim.lr=10", r"optim.lr: must be in \(0, 1\] \(Adam moves each weight"),
    ("optim.lr=1e300", r"optim.lr: must be in \(0, 1\]"),
    ("model.params.num_cascade=2", r"model.params.num_cascade: varnet has no parameter 'num_cascade' "
                                   r"\(did you mean 'num_cascades'\?\)"),
    # run's, bench's and simulate's mask-rate rules: a "4x" training set drawn at 2x, and 1x
    ("data.mask.center_fractions=[0.5, 0.08]", r"data.mask.center_fractions\[0\]: 0.5 keeps at "
                                                r"least 1 / 4 of the columns in the centre band"),
    ("data.mask.accelerations=[1, 8]", r"data.mask.accelerations\[0\]: must be a finite number "
                                       r"above 1, got 1"),
])
def test_training_config_values_are_checked_before_any_data_is_read(override, message, monkeypatch):
    import mrirecon.training.run as run
    from mrirecon.pipeline.definitions import PIPELINES

    monkeypatch.setattr(run, "build_datasets", lambda cfg: pytest.fail("data read before validation"))
    with pytest.raises(ConfigError, match=message):
        run.train_from_config(PIPELINES / "train_varnet_brain_sim.yaml", overrides=[override])


@pytest.mark.parametrize("argv, message", [
    # each wrote files with no information, exit 0: an all-zero mask and k-space, a constant
    # sinogram (every count clamped to the floor), counts wrapped past int64
    (["simulate", "mri", "--volumes", "1", "--slices", "1", "--coils", "2", "--size", "32", "32",
      "--acceleration", "100"], "acceleration (--acceleration) 100 is above the 32 k-space "
                                "columns (--size)"),
    (["simulate", "ct", "--samples", "1", "--size", "16", "--views", "8", "--photons", "100",
      "--min-count", "1e6"], "the count floor (1000000.0) must be > 0 and below the incident"),
    (["simulate", "ct", "--samples", "1", "--size", "16", "--views", "8", "--photons", "1e20"],
     r"photons must be in (0, 1e+15]"),
])
def test_simulations_that_would_hold_no_information_are_refused(argv, message, tmp_path, capsys):
    err = _cli_error([*argv[:2], "--out", str(tmp_path / "sim"), *argv[2:]], capsys)
    assert message in err
    written = [*tmp_path.rglob("*.h5"), *tmp_path.rglob("*.hdf5")]
    assert written == []  # nothing written


@pytest.mark.parametrize("challenge, methods, accelerations, message", [
    ("multicoil", "zero_filled", ["4", "4.0"], "run_bench: accelerations listed twice: 4 in ['4', '4']"),
    ("ct", "fbp", ["2", "1", "2"], "run_ct_bench: accelerations listed twice: 2 in ['2', '1', '2']"),
])
def test_bench_accelerations_listed_twice_are_refused(challenge, methods, accelerations, message,
                                                      mri_file, ct_dir, tmp_path, capsys):
    # before: exit 0; every volume was scored twice into each of two identical table rows
    # ("zero_filled | 4x | 2 volumes" for one volume, std 0) and bench_volumes.csv held 4 rows
    data = ct_dir if challenge == "ct" else mri_file.parent
    out = tmp_path / "bench"
    err = _cli_error(["bench", "--data", str(data), "--output", str(out), "--challenge", challenge,
                      "--methods", methods, "--no-progress", "--accelerations", *accelerations],
                     capsys)
    assert err == f"mrirecon bench: error: {message}"
    assert not out.exists()  # refused before anything was scored


@pytest.mark.parametrize("key", ["callback", "x0"])
def test_bench_refuses_parameters_the_stage_supplies_as_run_does(key, mri_file, tmp_path, capsys):
    """`bench --set l1_wavelet.lamb=1` listed callback and x0 as valid; following that,
    `--set l1_wavelet.callback=1` ended in "internal error: TypeError: 'int' object is not
    callable" (exit 1) where `run` refuses the key at load."""
    out = tmp_path / "bench"
    err = _cli_error(["bench", "--data", str(mri_file.parent), "--output", str(out),
                      "--methods", "l1_wavelet", "--no-progress", "--accelerations", "4",
                      "--set", f"l1_wavelet.{key}=1"], capsys)
    assert err.startswith("mrirecon bench: error: ") and key in err and "internal" not in err
    valid = err.split("valid: ")[-1]
    assert "lam" in valid and "callback" not in valid and "x0" not in valid
    assert not out.exists()


@pytest.mark.parametrize("challenge, method, setting, message", [
    ("multicoil", "epll", "sigmas=0.05", "epll.sigmas: "),
    ("ct", "fbp", "filter=hamming", "fbp.filter: fbp has no filter 'hamming'"),
    ("multicoil", "l1_wavelet", "lam=[0.1,0.2]", "l1_wavelet.lam: must be one number"),
    ("multicoil", "tgv", "step_ratio=2", "tgv.step_ratio: tgv: step_ratio is a setting of method='pdhg'"),
])
def test_bench_refuses_setting_values_run_refuses_at_load(challenge, method, setting, message,
                                                          mri_file, ct_dir, tmp_path, capsys):
    """`bench --set epll.sigmas=0.05` (or fbp's filter=hamming, a list for l1_wavelet's lam, tgv's
    PDHG step_ratio beside its default ADMM) passed the name check and failed every volume, where `run`
    refuses the value at load: both now run validate.check_classical_settings."""
    out = tmp_path / "bench"
    data = ct_dir if challenge == "ct" else mri_file.parent
    err = _cli_error(["bench", "--data", str(data), "--output", str(out), "--challenge", challenge,
                      "--methods", method, "--no-progress", "--accelerations", "4",
                      "--set", f"{method}.{setting}"], capsys)
    assert err.startswith("mrirecon bench: error: run_") and message in err, err
    assert not out.exists()


def test_a_bench_volume_that_fails_is_named_with_its_acceleration(mri_file, tmp_path, capsys):
    # before: "mrirecon bench: error: ESPIRiT needs a fully sampled centre band of at least 3
    # columns, got 1 (...)", naming neither the file nor the acceleration (8x keeps
    # round(24 * 0.04) = 1 centre column of this file's 24)
    out = tmp_path / "bench"
    err = _cli_error(["bench", "--data", str(mri_file.parent), "--output", str(out), "--methods",
                      "zero_filled", "--no-progress", "--accelerations", "8"], capsys)
    assert err.startswith(f"mrirecon bench: error: bench multicoil: {mri_file.name} at 8x "
                          "(zero_filled): ESPIRiT needs a fully sampled centre band of at least 3 "
                          "columns, got 1"), err


@pytest.mark.parametrize("config, overrides, message", [
    # both trained with exit 0; the weights then refused every input of the modality they were
    # meant for ("these CT weights got complex data (MRI k-space?)")
    ("train_varnet_brain_sim.yaml", ["model.name=primal_dual", "model.params={}"],
     r"model.name: 'primal_dual' is a CT model .* but data.modality is 'mri'; train an MRI model "
     r"\(.*modl.*\)"),
    ("train_primal_dual_ct_sim.yaml", ["model.name=modl", "model.params={}"],
     r"model.name: 'modl' is an MRI model .* but data.modality is 'ct'; train a CT model "
     r"\(.*primal_dual.*\)"),
])
def test_training_a_model_of_the_other_modality_is_refused(config, overrides, message, monkeypatch):
    import mrirecon.training.run as run
    from mrirecon.pipeline.definitions import PIPELINES

    monkeypatch.setattr(run, "build_datasets", lambda cfg: pytest.fail("data read before validation"))
    with pytest.raises(ConfigError, match=message):
        run.train_from_config(PIPELINES / config, overrides=overrides)
    # models of no one modality (plug-and-play) still train on either; backbones on neither
    with pytest.raises(pytest.fail.Exception, match="data read before validation"):
        run.train_from_config(PIPELINES / config, overrides=["model.name=pnp_hqs",
                                                             "model.params={denoiser: dncnn}"])


@pytest.mark.parametrize("name, settings, field, message", [
    ("ct_tv", ["reconstruct.params.preconditioned=false"], "reconstruct.params.preconditioned",
     "tv_ct: preconditioned is a setting of method='pdhg', not of method='admm'"),
    ("ct_tv", ["reconstruct.params.method=pdhg"], "reconstruct.params_by_views.30.rho",
     "tv_ct: rho is a setting of method='admm', not of method='pdhg'"),
    ("mri_tv", ["reconstruct.params.method=pdhg"], "reconstruct.params.rho",
     "tv: rho is a setting of method='admm', not of method='pdhg'"),
    ("ct_tv", ["reconstruct.params.method=fista"], "reconstruct.params.method",
     "tv_ct: method must be 'admm' or 'pdhg', got 'fista'"),
    ("ct_tv", ["reconstruct.method=tgv", "reconstruct.params={lam: 5.0, preconditioned: false}"],
     "reconstruct.params.preconditioned",
     "tgv: preconditioned is a setting of method='pdhg', not of method='admm'"),
    ("mri_tv", ["reconstruct.method=tgv", "reconstruct.params={lam: 0.001, method: pdhg, rho: 0.03}"],
     "reconstruct.params.rho", "tgv: rho is a setting of method='admm', not of method='pdhg'"),
])
def test_a_setting_of_the_other_solver_is_refused_at_load(name, settings, field, message):
    """tv / tv_ct / tgv settings that only the other solver reads: refused when the pipeline loads,
    naming the file and the field (they would fail every input, one by one; MRI tv ignored
    them without a word before 2026-12-05). The shipped settings load."""
    with pytest.raises(ConfigError, match=rf"{name}.yaml: {field}: {message}"):
        load_pipeline(name, settings)
    load_pipeline(name)
    load_pipeline(name, ["reconstruct.params.method=pdhg", "reconstruct.params.rho=null"])
    load_pipeline(name, ["reconstruct.params.rho=0.02"])


def test_denoiser_params_only_for_a_model_with_a_denoiser():
    """``reconstruct.params.denoiser_params`` for MoDL loaded, then ``build_model`` raised a
    TypeError at the first input: one rule (``model_keywords``) for the loader and the builder."""
    with pytest.raises(ConfigError, match=r"has no parameter 'denoiser_params'"):
        load_pipeline("mri_modl_brain_sim", ["reconstruct.params.denoiser_params={features: 8}"])
    # every model takes it (its card's weights fix it: refused, as the model loader refuses it)
    load_pipeline("mri_pnp_brain_sim", ["reconstruct.weights=null", "reconstruct.params.init_seed=3"])
    with pytest.raises(ConfigError, match=r"lets a run change iterations, rho \(overridable\), "
                                          r"not 'init_seed'"):
        load_pipeline("mri_pnp_brain_sim", ["reconstruct.params.init_seed=3"])
