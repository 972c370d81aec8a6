"""What each allowed CT image is (audit a17, finding 1).

pydicom-data's ``eCT_Supplemental.dcm`` is a derived rCBF perfusion map (ImageType DERIVED /
PRIMARY / PERFUSION / RCBF, RescaleType ``US``), skull-stripped, with CSF and vessels at -1024:
``read_ct_slices`` returned both its frames as "Hounsfield units" like the three CT images
around it. Every :class:`CTSlice` now carries its units and kind; asking a perfusion map for
Hounsfield units is refused, and the simulations that draw it as a texture say so."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mrirecon.io.ct_sources import CT_SOURCES, ct_source_path, load_ct_sources

ECT = "eCT_Supplemental.dcm"


def test_every_loaded_ct_image_says_its_units_and_kind():
    slices = load_ct_sources()
    assert [(s.name, s.frame) for s in slices] == [
        (CT_SOURCES[0], 0), (ECT, 0), (ECT, 1), (CT_SOURCES[2], 0), (CT_SOURCES[3], 0)]
    for s in slices:
        assert s.units in ("HU", "US") and s.kind in ("anatomy", "perfusion", "derived")
        assert s.image_type, s.name  # every source has an ImageType / FrameType
        if s.name == ECT:
            assert (s.units, s.kind, s.is_hu_anatomy) == ("US", "perfusion", False)
            assert {"DERIVED", "PERFUSION"} <= set(s.image_type)
            with pytest.raises(ValueError, match="perfusion.*US.*not Hounsfield"):
                s.hu
        else:
            assert (s.units, s.kind, s.is_hu_anatomy) == ("HU", "anatomy", True)
            assert s.hu is s.values
            assert s.image_type[0] == "ORIGINAL"


def test_the_perfusion_frames_keep_their_rescaled_values():
    """The training recipes draw these frames as attenuation textures: the values they read
    (``values``) are the rescale of the stored pixels, as before (the shipped weights were
    trained on them)."""
    ds = pydicom.dcmread(ct_source_path(ECT))
    raw = ds.pixel_array.astype(np.float64)
    frames = [s for s in load_ct_sources((ECT,))]
    assert len(frames) == len(raw) == 2
    for s, r in zip(frames, raw):
        np.testing.assert_array_equal(s.values, np.clip(r - 1024.0, -1024, 3071).astype(np.float32))
        assert s.values.dtype == np.float32


def test_simulated_ct_labels_samples_drawn_from_a_perfusion_map():
    """``simulate_ct_samples`` (``mrirecon simulate ct``, ``demo``) keeps drawing the five frames
    (recipes and held-out validation use it), and names a perfusion-map ground truth as such."""
    from mrirecon.data.simulate_ct import simulate_ct_samples

    sim = simulate_ct_samples(3, "parallel", views=8, photons=None, size=32, seed=2, sources="dicom")
    assert sim.origins[0] == "bad_sequence.dcm#0"  # HU anatomy: the name and frame, as before
    for origin, frame in zip(sim.origins[1:], (0, 1)):
        assert origin.startswith(f"{ECT}#{frame} ") and "perfusion" in origin
        assert "US" in origin and "not HU anatomy" in origin
    assert sim.units == ["HU", "US", "US"]


def test_a_derived_image_that_is_no_perfusion_map_is_derived_not_anatomy():
    """Fails if ct_sources.py:80 ``"derived" if ... else "anatomy"`` -> ``"anatomy"``. The
    four allowed files hold no such frame, so only a CTSlice built in code reaches it: a
    DERIVED image (a reformat, a subtraction) is not HU anatomy."""
    from mrirecon.io.ct_sources import CTSlice

    values = np.zeros((2, 2), np.float32)
    derived = CTSlice(values, (1.0, 1.0), "x", image_type=("DERIVED", "SECONDARY", "MPR"))
    assert derived.kind == "derived" and not derived.is_hu_anatomy
    assert CTSlice(values, (1.0, 1.0), "x", image_type=("ORIGINAL", "PRIMARY")).is_hu_anatomy
