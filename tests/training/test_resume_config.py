"""``mrirecon train --resume`` compares canonical configs: the recorded one loaded through
:class:`~mrirecon.training.config.TrainConfig` (keys added since take their defaults) and model
parameters under their canonical names (:mod:`mrirecon.core.names`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from mrirecon.core.config import ConfigError, load_config, to_dict
from mrirecon.training.config import TrainConfig
from mrirecon.training.run_checks import check_fresh_output, check_resume_config, config_changes


def _now(tmp_path, **changes) -> dict:
    """The config ``mrirecon train`` records for a small VarNet YAML (``to_dict`` of the loaded
    :class:`TrainConfig`), with ``changes`` merged into its top-level sections."""
    raw = {"name": "tiny", "output_dir": str(tmp_path / "out"),
           "data": {"train": "t", "val": "v", "modality": "mri"},
           "model": {"name": "varnet", "params": {"iterations": 2, "chans": 4, "pools": 2}},
           "optim": {"max_steps": 6}, "tensorboard": False}
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return to_dict(load_config(TrainConfig, path))


def _round(d: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(d, sort_keys=False))


def _earlier_run(tmp_path, config: dict):
    """An output folder holding a finished run's ``model.pt`` and recorded ``config``."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "model.pt").write_bytes(b"")
    return out


def test_keys_added_since_take_their_defaults(tmp_path):
    """A checkpoint of 5a8361d (before loss.perceptual / adversarial existed), the same YAML:
    refused with "loss.adversarial: None -> 0.0; loss.adversarial_mode: None -> 'nonsaturating';
    ...", so the run could not be continued."""
    now = _now(tmp_path)
    before = _round(now)
    for key in ("perceptual", "adversarial", "discriminator_lr", "adversarial_mode"):
        del before["loss"][key]
    assert config_changes(before, now) == []
    check_resume_config(before, now, "t.yaml", tmp_path)
    assert check_fresh_output(_earlier_run(tmp_path, before), now, "t.yaml") == []  # a restart
    before["loss"]["ssim"] = 0.5  # a real change still shows
    assert config_changes(before, now) == [("loss.ssim", 0.5, 1.0)]


def test_a_deprecated_parameter_renamed_as_told_resumes(tmp_path):
    """Trained with num_cascades (FutureWarning: "use 'iterations'"), renamed as told: refused
    with "model.params.iterations: None -> 2; model.params.num_cascades: 2 -> None"."""
    old = _now(tmp_path, model={"name": "varnet", "params": {"num_cascades": 2, "chans": 4,
                                                             "pools": 2}})
    assert old["model"]["params"]["num_cascades"] == 2  # recorded as the user wrote it
    now = _now(tmp_path)
    assert config_changes(_round(old), now) == []
    check_resume_config(_round(old), now, "t.yaml", tmp_path)
    three = _now(tmp_path, model={"name": "varnet", "params": {"iterations": 3, "chans": 4,
                                                               "pools": 2}})
    assert config_changes(_round(old), three) == [("model.params.iterations", 2, 3)]


def test_a_changed_default_names_the_setting_that_keeps_the_old_value(tmp_path):
    """An old MoDL run without data.maps (then ``learned``): refused with "data.maps: 'learned' ->
    'espirit'", not saying the default changed nor that data.maps: learned continues it."""
    modl = {"name": "modl", "params": {"iterations": 2}}
    now = _now(tmp_path, model=modl)
    assert now["data"]["maps"] == "espirit"  # this version's default for MoDL
    before = _round(now)
    before["data"]["maps"] = "learned"
    with pytest.raises(ConfigError) as err:
        check_resume_config(before, now, "t.yaml", tmp_path)
    msg = str(err.value)
    assert msg.startswith("t.yaml: data.maps: --resume continues the run"), msg
    assert ("data.maps: 'learned' -> 'espirit' (the default of this version; the run was made "
            "with 'learned': set data.maps: learned to continue it)") in msg, msg
    with pytest.raises(ConfigError, match=r"set data.maps: learned to continue it\)"):
        check_fresh_output(_earlier_run(tmp_path, before), now, "t.yaml")  # the same words
    # a value the YAML sets away from the default is a plain change
    walsh = _now(tmp_path, model=modl, data={"maps": "walsh"})
    with pytest.raises(ConfigError, match=r"data.maps: 'learned' -> 'walsh'\)"):
        check_resume_config(before, walsh, "t.yaml", tmp_path)


def test_a_record_the_schema_cannot_load_is_compared_as_recorded(tmp_path):
    now = _now(tmp_path)
    before = _round(now)
    before["loss"]["removed_since"] = 1.0  # a key this version does not know
    assert config_changes(before, now) == [("loss.removed_since", 1.0, None)]


def test_the_maps_cache_budget_may_change_on_resume(tmp_path):
    """``data.maps_cache_mb`` bounds memory and costs time, never changes a result (recomputed
    maps are the same bits): a resume with another budget continues; a real change is still
    named."""
    before = _round(_now(tmp_path, data={"maps_cache_mb": 16}))
    assert config_changes(before, _round(_now(tmp_path, data={"maps_cache_mb": 64}))) == []
    assert [k for k, *_ in config_changes(before, _round(_now(
        tmp_path, data={"maps_cache_mb": 64, "maps": "walsh"})))] == ["data.maps"]


def test_set_rng_state_restores_torch_numpy_and_python_streams():
    """A resumed run continues every global stream where the checkpoint left it (a user's data
    set or model may draw from NumPy's or Python's)."""
    import random

    import numpy as np
    import torch

    from mrirecon.training.checkpoint import rng_state, set_rng_state

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = rng_state()
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.rand(10), np.random.rand(10), random.random()
    set_rng_state(state)
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]


def test_rng_state_restores_numpy_mid_block():
    """A checkpoint taken after some NumPy draws (a user's data set or model drew them) resumes
    the stream at that position, not at the start of the next 624-word MT block."""
    from mrirecon.training.checkpoint import rng_state, set_rng_state

    np.random.seed(3)
    np.random.rand(5)  # the position is now inside the block, not 624 as right after seeding
    state = rng_state()
    expected = np.random.rand(4)
    np.random.rand(10)
    set_rng_state(state)
    assert np.array_equal(np.random.rand(4), expected)  # bit for bit: the same stream


class _RunsCode:
    """Unpickled, it would run code: touch the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({self.marker!r}).touch()",))


def test_a_checkpoint_holding_pickled_code_is_refused_unrun(tmp_path):
    from mrirecon.training.checkpoint import load_checkpoint

    marker, path = tmp_path / "ran", tmp_path / "last.pt"
    torch.save({"step": 1, "model": {}, "x": _RunsCode(str(marker))}, path)
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_checkpoint(path)
    assert not marker.exists()  # nothing in the file was executed


def test_fresh_run_into_outputs_without_a_recorded_config_is_refused(tmp_path):
    """Fails if ``if changes:``: an output_dir holding model.pt / model.yaml of a run that
    recorded no config was taken for a restart, and its outputs were replaced."""
    from mrirecon.core.config import ConfigError
    from mrirecon.training.run_checks import check_fresh_output

    (tmp_path / "model.pt").write_bytes(b"weights of an earlier run")
    with pytest.raises(ConfigError, match="no recorded config"):
        check_fresh_output(tmp_path, {"name": "t"}, "t.yaml")
    assert check_fresh_output(tmp_path / "empty", {"name": "t"}, "t.yaml") == []


def test_resume_with_a_training_file_of_another_size_is_refused():
    """Fails if resized files dropped: a training file rewritten with more slices, same name,
    was neither refused nor reported on --resume."""
    from mrirecon.core.config import ConfigError
    from mrirecon.training.run_checks import check_resume_files

    before = [{"name": "a.h5", "size": 100, "mtime_ns": 1}, {"name": "b.h5", "size": 50, "mtime_ns": 1}]
    now = [{"name": "a.h5", "size": 180, "mtime_ns": 2}, {"name": "b.h5", "size": 50, "mtime_ns": 1}]
    with pytest.raises(ConfigError, match=r"another size: .*a\.h5"):
        check_resume_files(before, now, "t.yaml", "out", "data/train")
    check_resume_files(before, before, "t.yaml", "out", "data/train")  # unchanged: accepted
