"""The frequency-watt curve (programs/freqwatt.py) against its definition, for any curve the gate admits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from programs.freqwatt import Curve, curve_w
from runtime.commands import CURVE_HZ, CURVE_POINTS, MAX_SETPOINT_W


@st.composite
def curves(draw: st.DrawFn) -> Curve:
    n = draw(st.integers(*CURVE_POINTS))
    hz = sorted(draw(st.sets(st.floats(*CURVE_HZ, allow_nan=False), min_size=n, max_size=n)))
    w = draw(st.lists(st.floats(-MAX_SETPOINT_W, MAX_SETPOINT_W, allow_nan=False), min_size=n, max_size=n))
    return tuple(zip(hz, w, strict=True))


@given(curves(), st.floats(40.0, 70.0, allow_nan=False))
def test_between_its_neighbours_and_held_beyond_the_ends(curve: Curve, hz: float) -> None:
    got = curve_w(curve, hz)
    if hz <= curve[0][0]:
        assert got == curve[0][1]
    elif hz >= curve[-1][0]:
        assert got == curve[-1][1]
    else:
        i = next(i for i in range(1, len(curve)) if hz < curve[i][0])
        lo, hi = sorted((curve[i - 1][1], curve[i][1]))
        assert lo - 1e-6 <= got <= hi + 1e-6  # linear between the two points around hz


@given(curves())
def test_exact_at_every_point(curve: Curve) -> None:
    for hz, w in curve:
        assert curve_w(curve, hz) == w
