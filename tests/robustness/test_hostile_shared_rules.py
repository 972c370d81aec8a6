"""One shared rule where callers had their own copies. A CT training ground truth
matching its FBP rotated 180 degrees or mirrored names the sinogram as a cause too (only
``mrirecon run`` did); ``calib.noncartesian_maps`` clamps ``calib_width`` to the grid itself
(only the pipeline did); the slice loop drains the reconstructions' warnings for every caller;
a reference nowhere positive passes ``without_blank_reference_slices`` whole."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

@pytest.mark.parametrize("change, cause", [
    (lambda sino: sino.flip(-1), "; or is the sinogram's detector axis reversed, or are its "
                                 "angles offset by 180 degrees (the start angle of the scan not "
                                 "recorded; the output is then rotated 180 degrees)? Training "
                                 "would teach"),
    (lambda sino: sino.flip(-2), "; or are the views in reverse angle order (the output is then "
                                 "mirrored)? Training would teach"),
])
def test_the_ct_training_refusal_of_a_rotated_or_mirrored_match_names_the_sinogram(change, cause):
    """A reversed detector axis rotates the FBP 180 degrees, views in reverse angle order mirror
    it: ``mrirecon run`` named those causes, the training set's refusal
    (``check_ct_reference_orientation``) blamed only the ground truth's layout (the clause was
    patched into run's message by text replacement, which training could not use)."""
    from mrirecon.data.simulate_ct import ct_simulation_geometry
    from mrirecon.operators import ct_operator
    from mrirecon.training.data_ct import check_ct_reference_orientation

    geometry = ct_simulation_geometry("parallel", 32, 48)
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 32, 32, generator=g), 5, 1, 2)
    image[:, 6:14, 8:18] += 1.0  # no symmetry
    with torch.no_grad():
        sinogram = ct_operator(geometry)(image.double()).float()
    files = SimpleNamespace(geometry=geometry, locate=lambda i: (0, i),
                            ground_truth_paths=[Path("ground_truth_train_000.hdf5")],
                            observation_files=[Path("observation_train_000.hdf5")])
    check_ct_reference_orientation(files, {0: (sinogram, image)})  # as stored: accepted
    with pytest.raises(ValueError) as err:
        check_ct_reference_orientation(files, {0: (change(sinogram), image)})
    msg = str(err.value)
    assert msg.startswith("CTTrainingSet: ground_truth_train_000.hdf5: data: image 0: the "
                          "reference matches the FBP of its sinogram in observation_train_000.hdf5"
                          " far better "), msg
    assert "(LoDoPaB ground truths are ODL (x, y), not (rows, cols))" + cause in msg


def test_orientation_note_adds_the_cause_of_the_matching_transform_only():
    from mrirecon.training.reference_checks import orientation_note

    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 32, 32, generator=g), 5, 1, 2)[0]
    image[:10, :12] += 1.0  # no symmetry
    causes = {"flipped up-down": "; or X"}
    flipped = orientation_note(image.flip(-2), image, "it", " (H)", causes=causes)
    assert flipped is not None and "another layout (H); or X? The metrics" in flipped
    turned = orientation_note(image.flip(-1), image, "it", " (H)", causes=causes)
    assert turned is not None and "another layout (H)? The metrics" in turned
    assert orientation_note(image, image, "it", causes=causes) is None


def _radial_phantom(n: int, coils: int, spokes: int):
    """``(y, trajectory)``: golden-angle radial samples (2n per spoke) of an n x n Shepp-Logan
    phantom seen by birdcage coils."""
    from mrirecon.data.anatomy import shepp_logan
    from mrirecon.data.simulate_mri import birdcage_maps
    from mrirecon.operators import nufft_sense
    from mrirecon.sampling import golden_angle_radial

    img = torch.from_numpy(shepp_logan((n, n))).to(torch.complex64)
    yy, xx = np.mgrid[:n, :n]
    maps = torch.from_numpy(birdcage_maps(coils, (xx - n / 2) / (n / 2), (yy - n / 2) / (n / 2)))
    traj = golden_angle_radial(spokes, 2 * n)
    return nufft_sense(maps.to(torch.complex64), traj)(img), traj


def test_noncartesian_maps_calibrate_a_grid_smaller_than_calib_width_on_the_whole_grid():
    """``calib.noncartesian_maps`` with its default calib_width 24 on 16 x 16 radial data failed,
    "calibration_region: calibration size (24, 24) does not fit k-space (16, 16)" (the pipeline
    clamped before calling it; the library function and radial training did not)."""
    from mrirecon.calib import noncartesian_maps

    n, coils = 16, 4
    y, traj = _radial_phantom(n, coils, spokes=16)
    for method, options in (("espirit", {"crop": 0.0}), ("walsh", {})):
        est = noncartesian_maps(y, traj, (n, n), method=method, **options)  # default width 24
        assert est.shape == (coils, n, n) and bool(torch.isfinite(est).all())
        # the whole grid: exactly the maps of calib_width 16
        assert torch.equal(est, noncartesian_maps(y, traj, (n, n), method=method,
                                                  calib_width=n, **options))


def test_stream_volume_drains_the_reconstructions_warnings_once_for_every_caller():
    """Each caller of the slice loop drained ``output_messages`` itself (``mrirecon run``, the CT
    benchmark); the MRI benchmark did not. The loop now drains them once, into the run."""
    from mrirecon.pipeline.schema import ReconstructConfig
    from mrirecon.pipeline.stream import Method, Modality, stream_volume

    class Source:
        def __len__(self):
            return 2

        def read(self, i):
            return i

        def close(self):
            pass

    class Stages(Modality):
        def __init__(self):
            self.said, self.drained = {}, 0

        def load(self, path):
            return Source()

        def undersample(self, s):
            return s

        def reconstruct(self, s, method):
            if s == 1:
                self.said.setdefault(method.name, {})[s] = {"odd": f"slice {s} is odd"}
            return s

        def postprocess(self, s):
            return torch.full((2, 2), float(s))

        def output_messages(self):
            self.drained += 1
            said, self.said = self.said, {}
            return said

    stages = Stages()
    run = stream_volume(stages, Path("v.h5"), [Method("m", ReconstructConfig(method="fbp"))],
                        progress=False)
    assert run.output_messages == {"m": {1: {"odd": "slice 1 is odd"}}}
    assert stages.drained == 1 and stages.output_messages() == {}


def test_a_reference_nowhere_positive_passes_the_blank_slice_rule_whole():
    """The MRI benchmark guarded this itself; ``mrirecon run`` checks first. A reference with no
    positive value has no data range: returned whole for the caller's refusal, not cut to no
    slices."""
    from mrirecon.pipeline.volume import without_blank_reference_slices

    ref, out = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    kept_ref, kept_out, msg = without_blank_reference_slices(ref, out)
    assert msg is None and kept_ref is ref and kept_out is out
    ref[1] = 1.0  # slices 0 and 2 blank: left out, said
    kept_ref, kept_out, msg = without_blank_reference_slices(ref, out)
    assert kept_ref.shape[0] == 1 and msg is not None and msg.startswith("slices 0, 2 are")


def test_noncartesian_espirit_clamps_its_kernel_to_the_block_as_the_cartesian_one_does():
    """``mri_radial_cs --set calibrate.calib_width=7`` ran until the 3-positions rule refused its
    default 6-wide kernel in API terms ("pass kernel_width=(5, 5)"), which the config key cannot
    take; the kernel is clamped to largest_kernel(7) = 5, as Cartesian calibration clamps it."""
    from mrirecon.calib import noncartesian_maps

    n = 32
    y, traj = _radial_phantom(n, coils=4, spokes=32)
    est = noncartesian_maps(y, traj, (n, n), calib_width=7, kernel_width=6, crop=0.0)
    assert torch.equal(est, noncartesian_maps(y, traj, (n, n), calib_width=7, kernel_width=5,
                                              crop=0.0))
    assert float((est.abs() ** 2).sum(0).mean()) > 0.5  # maps, not zeros
    with pytest.raises(ValueError, match="at least 3 grid units"):
        noncartesian_maps(y, traj, (n, n), calib_width=2)
