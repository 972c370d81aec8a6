"""The one streaming slice loop (`mrirecon.pipeline.stream`): the stage protocol, the order of the
stages, the volume-level `prepare_model` hook, and that `run` and `bench` both drive it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from mrirecon.pipeline import stream
from mrirecon.pipeline.schema import ReconstructConfig
from mrirecon.pipeline.stream import STAGES, Method, Modality, stream_volume


@dataclass
class Toy:
    """A slice of a fake modality: data ``(4, 4)``; the reconstruction is ``scale * data``."""

    index: int
    data: torch.Tensor
    image: torch.Tensor | None = None
    scale: float = 1.0


class ToySource:
    def __init__(self, n: int, log: list) -> None:
        self.n, self.log, self.closed = n, log, False
        self.info = {"kind": "toy"}

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> Toy:
        self.log.append(("load", i))
        g = torch.Generator().manual_seed(i)
        return Toy(i, torch.rand(4, 4, generator=g))

    def close(self) -> None:
        self.closed = True


class ToyModality(Modality[Toy]):
    """A third modality implementing the protocol: every stage logs its call."""

    def __init__(self, n: int = 3) -> None:
        self.n, self.log, self.sources = n, [], []

    def load(self, path: Path) -> ToySource:
        self.sources.append(ToySource(self.n, self.log))
        return self.sources[-1]

    def preprocess(self, s: Toy) -> Toy:
        self.log.append(("preprocess", s.index))
        return s

    def undersample(self, s: Toy) -> Toy:
        self.log.append(("undersample", s.index))
        return replace(s, data=s.data * (s.data > 0.3))

    def calibrate(self, s: Toy) -> Toy:
        self.log.append(("calibrate", s.index))
        return s

    def reconstruct(self, s: Toy, method: Method) -> Toy:
        self.log.append(("reconstruct", s.index))
        factor = method.config.params.get("factor", 1.0)
        if method.model is not None:
            factor = float(method.model.weight)
        return replace(s, image=factor * s.data)

    def postprocess(self, s: Toy) -> torch.Tensor:
        self.log.append(("postprocess", s.index))
        return s.image.abs().float()

    def reference(self, s: Toy) -> torch.Tensor:
        return s.data

    def preview(self, s: Toy) -> torch.Tensor:
        return s.data.abs()


def _methods() -> list[Method]:
    return [Method("double", ReconstructConfig("toy", {"factor": 2.0})),
            Method("same", ReconstructConfig("toy", {"factor": 1.0}))]


def test_a_fake_modality_runs_through_the_runner_stage_by_stage():
    toy = ToyModality(n=3)
    run = stream_volume(toy, Path("toy.h5"), _methods(), progress=False)
    assert toy.sources[0].closed and run.slices == 3 and run.info == {"kind": "toy"}
    # one slice at a time, the stages in STAGES order, each method's reconstruct + postprocess
    per_slice = ["load", "preprocess", "undersample", "calibrate", "reconstruct", "postprocess",
                 "reconstruct", "postprocess"]
    assert toy.log == [(stage, i) for i in range(3) for stage in per_slice]
    assert [st for st, _ in toy.log[:6]] == list(STAGES[:6])
    # outputs stacked per method, in slice order; the reference and previews alike
    data = torch.stack([ToySource(3, []).read(i).data for i in range(3)])
    under = data * (data > 0.3)
    torch.testing.assert_close(run.outputs["double"], 2 * under, rtol=0, atol=0)
    torch.testing.assert_close(run.outputs["same"], under, rtol=0, atol=0)
    torch.testing.assert_close(run.reference, under, rtol=0, atol=0)
    torch.testing.assert_close(run.preview, under, rtol=0, atol=0)
    assert set(run.seconds) == {"double", "same"} and all(t >= 0 for t in run.seconds.values())


def test_the_source_is_closed_when_a_stage_fails():
    toy = ToyModality(n=2)

    def broken(s, method):
        if s.index == 1:
            raise ValueError("toy.h5: slice 1 diverged")
        return Toy(0, s.data, s.data)

    toy.reconstruct = broken
    with pytest.raises(ValueError, match="slice 1 diverged"):
        stream_volume(toy, Path("toy.h5"), _methods()[:1], progress=False)
    assert toy.sources[0].closed


class Scale(torch.nn.Module):
    def __init__(self, w: float) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor(w))


def test_prepare_model_sees_every_undersampled_slice_and_adapts_per_volume():
    class Adapting(ToyModality):
        seen: list

        def prepare_model(self, model, slices):
            self.seen = [s.index for s in slices]  # the hook may iterate (here: once)
            assert all(bool((s.data == 0).any()) for s in slices)  # undersampled, iterated again
            adapted = Scale(float(model.weight) + len(slices))
            return adapted

    toy = Adapting(n=3)
    model = Scale(1.0)
    run = stream_volume(toy, Path("toy.h5"), [Method("learned", ReconstructConfig("toy"), model)],
                        progress=False)
    assert toy.seen == [0, 1, 2]
    data = torch.stack([ToySource(3, []).read(i).data for i in range(3)])
    torch.testing.assert_close(run.outputs["learned"], 4.0 * data * (data > 0.3), rtol=0, atol=0)
    assert float(model.weight) == 1.0  # the caller's model is unchanged for the next volume

    plain = ToyModality(n=3)  # the default hook is the identity and reads nothing extra
    stream_volume(plain, Path("toy.h5"), [Method("learned", ReconstructConfig("toy"), model)],
                  progress=False)
    assert [st for st, _ in plain.log].count("load") == 3


def test_run_and_both_benchmarks_drive_the_same_loop(tmp_path, monkeypatch):
    from mrirecon.bench import run_bench, run_ct_bench
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    mri = tmp_path / "mri"
    simulate_mri_dataset(mri, volumes=1, slices=1, coils=2, size=(32, 32), seed=1)
    ct = tmp_path / "ct"
    simulate_ct_dataset(ct, geometry="parallel", views=30, photons=None, size=32, seed=2,
                        samples=1, part="test", sources="phantom")
    callers = []
    real = stream.stream_volume

    def spy(modality, path, methods, **kwargs):
        callers.append((type(modality).__name__, [m.name for m in methods]))
        return real(modality, path, methods, **kwargs)

    monkeypatch.setattr(stream, "stream_volume", spy)
    config, _ = load_pipeline("mri_retrospective", ["export.formats=[hdf5]", "report.enabled=false",
                                                    "calibrate.method=walsh",
                                                    "reconstruct.method=zero_filled_rss",
                                                    "reconstruct.params={}"])
    assert run_pipeline(config, [str(mri)], tmp_path / "run_mri", progress=False) == 0
    config, _ = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])
    assert run_pipeline(config, [str(ct)], tmp_path / "run_ct", progress=False) == 0
    run_bench(mri, "multicoil", [4], "zero_filled_rss", progress=False, verbose=False)
    run_ct_bench(ct, [2], "fbp", progress=False)
    assert callers == [("MRIStages", ["zero_filled_rss"]), ("CTStages", ["fbp"]),
                       ("MRIStages", ["zero_filled_rss"]), ("CTStages", ["fbp"])]


def test_run_help_lists_the_stages_in_the_order_the_code_runs_them(capsys):
    from mrirecon.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    positions = [text.index(f" {stage}") for stage in STAGES]
    assert positions == sorted(positions)
    # the per-volume adapt stage of mri_learned_adapt / ct_learned_adapt is named too, in its place
    assert "optional adapt stage" in text and "after calibrate and before reconstruct" in text
    from mrirecon.pipeline.schema import PipelineConfig

    sections = [f for f in PipelineConfig.__dataclass_fields__ if f in STAGES]
    assert sections == [s for s in STAGES if s in sections]  # the schema reads in that order


@pytest.mark.parametrize("key,value", [("reconstruct.batch_slices", 4),
                                       ("postprocess.output", "rss")])
def test_removed_keys_warn_naming_the_file_and_key(tmp_path, key, value):
    import yaml

    from mrirecon.pipeline.definitions import load_pipeline, shipped_pipelines

    section, name = key.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"name": "old", "modality": "mri",
                                    "reconstruct": {"method": "zero_filled_rss"},
                                    section: {name: value} if section != "reconstruct" else
                                    {"method": "zero_filled_rss", name: value}}))
    with pytest.warns(FutureWarning, match=rf"{path}: {key}: removed .*next release"):
        config, _ = load_pipeline(str(path))
    assert not hasattr(getattr(config, section), name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the shipped pipelines do not use them
        for shipped in shipped_pipelines():
            load_pipeline(shipped)


def test_reconstruction_warnings_are_said_and_drained_by_the_protocol():
    """``Modality._say`` records a warning about one slice's reconstruction; the protocol's
    ``output_messages`` drains them once (MRI and CT each kept a copy of both). Two modalities
    do not share what they said."""
    from mrirecon.pipeline.stages_ct import CTStages
    from mrirecon.pipeline.stages_mri import MRIStages

    class Warns(ToyModality):
        def reconstruct(self, s: Toy, method: Method) -> Toy:
            if s.index % 2:
                self._say(method.name, s.index, "odd", f"slice {s.index} is odd")
                self._say(method.name, s.index, "late", f"{method.name} came late")
            return super().reconstruct(s, method)

    toy, quiet = Warns(n=4), Warns(n=4)
    assert toy.output_messages() == {}
    run = stream_volume(toy, Path("toy.h5"), _methods(), progress=False)
    def said(m: str) -> dict:
        return {i: {"odd": f"slice {i} is odd", "late": f"{m} came late"} for i in (1, 3)}

    assert run.output_messages == {"double": said("double"), "same": said("same")}
    assert toy.output_messages() == {} and quiet.output_messages() == {}
    assert MRIStages.output_messages is Modality.output_messages
    assert CTStages.output_messages is Modality.output_messages


@pytest.mark.parametrize("case", ["missing", "shape", "preview"])
def test_references_or_previews_of_only_some_slices_are_dropped_with_a_reason(case):
    """A reference image missing for one slice, or of another shape on a later slice, is dropped
    with a reason (``reference_dropped``), never stacked against the wrong slices or raised from
    torch.stack; previews of only some slices give no preview."""
    from mrirecon.pipeline.stream import stream_volume

    class Partial(ToyModality):
        def reference(self, s):
            if case == "missing" and s.index == 2:
                return None
            if case == "shape" and s.index == 2:
                return s.data[:3]
            return s.data

        def preview(self, s):
            return None if case == "preview" and s.index == 1 else s.data.abs()

    run = stream_volume(Partial(n=4), Path("toy.h5"), _methods(), progress=False)
    if case == "preview":
        assert run.preview is None and run.reference is not None
        return
    assert run.reference is None
    assert run.preview is not None and run.preview.shape[0] == 4
    assert {"missing": "only 3 of 4 slices have a reference image",
            "shape": "the reference image of slice 2 is (3, 4)"}[case] in run.reference_dropped
