"""Model-card range checks at their bounds: matrix columns, mixed readout oversampling, the 5 %
acceleration slack, CT views (``pipeline.model_range.range_warnings``)."""

from __future__ import annotations

from mrirecon.pipeline.model_range import range_warnings


def _card(**rng):
    return {"model": {"name": "m"}, "training_range": rng}


def test_matrix_columns_outside_the_card_are_warned_even_when_rows_fit():
    card = _card(matrix={"min": [640, 320], "max": [640, 368]})
    assert range_warnings(card, matrix=(640, 368)) == []
    (msg,) = range_warnings(card, matrix=(640, 400))  # rows as trained, 32 columns too many
    assert "matrix 640 x 400 is outside the m training range 640 x 320 .. 640 x 368" in msg
    (msg,) = range_warnings(card, matrix=(640, 256))
    assert "640 x 256" in msg


def test_recon_grid_of_mixed_oversampling_spans_the_widest_interval():
    """Trained on 640 acquired rows with readout oversampling 1.6 .. 2: recon grids of
    640 / 2 = 320 to 640 / 1.6 = 400 rows; any row count between is a grid it was trained on."""
    card = _card(matrix={"min": [640, 368], "max": [640, 368]}, readout_oversampling=[1.6, 2.0])
    for rows in (320, 360, 400):
        assert range_warnings(card, matrix=(rows, 368)) == [], rows
    for rows in (300, 420):
        (msg,) = range_warnings(card, matrix=(rows, 368))
        assert f"matrix {rows} x 368 is outside" in msg


def test_effective_acceleration_just_under_the_nominal_range_is_inside():
    """fastMRI's 4x mask on 368 columns samples 93 (368 / 93 = 3.957): inside a card's 4 .. 8
    (the documented 5 % slack), while 3.5x or 9x is outside."""
    card = _card(accelerations=[4, 8])
    assert range_warnings(card, acceleration=368 / 93) == []
    assert range_warnings(card, acceleration=8.3) == []
    (msg,) = range_warnings(card, acceleration=3.5)
    assert "acceleration 3.5 is outside the m training range 4 .. 8" in msg
    assert len(range_warnings(card, acceleration=9.0)) == 1


def test_ct_view_count_outside_the_card_is_warned():
    card = _card(views=[30, 60])
    assert range_warnings(card, views=30) == [] and range_warnings(card, views=60) == []
    (msg,) = range_warnings(card, views=20)
    assert "views 20 is outside the m training range 30 .. 60" in msg
