"""GD/IGD/IGD+/GD+, spread and spacing against brute force and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moomtl.pareto import gd, gd_plus, igd, igd_plus, spacing, spread
from moomtl.pareto import indicators as ind


def d_euclid(a, z) -> float:
    return math.sqrt(sum((ai - zi) ** 2 for ai, zi in zip(a, z, strict=True)))


def d_plus(a, z) -> float:
    return math.sqrt(sum(max(ai - zi, 0.0) ** 2 for ai, zi in zip(a, z, strict=True)))


def brute(points, ref, dist, over_points: bool) -> float:
    if over_points:  # IGD-style: average over the reference front
        return sum(min(dist(a, z) for a in points) for z in ref) / len(ref)
    return sum(min(dist(a, z) for z in ref) for a in points) / len(points)


@st.composite
def sets(draw):
    m = draw(st.integers(1, 4))
    vals = st.floats(-5, 5, allow_nan=False, width=32)
    row = st.lists(vals, min_size=m, max_size=m)
    a = draw(st.lists(row, min_size=1, max_size=15))
    z = draw(st.lists(row, min_size=1, max_size=15))
    return np.array(a, dtype=float), np.array(z, dtype=float)


@settings(max_examples=100, deadline=None)
@given(sets())
def test_distance_indicators_match_brute_force(case):
    a, z = case
    assert igd(a, z) == pytest.approx(brute(a, z, d_euclid, True), rel=1e-9, abs=1e-12)
    assert igd_plus(a, z) == pytest.approx(brute(a, z, d_plus, True), rel=1e-9, abs=1e-12)
    assert gd(a, z) == pytest.approx(brute(a, z, d_euclid, False), rel=1e-9, abs=1e-12)
    assert gd_plus(a, z) == pytest.approx(brute(a, z, d_plus, False), rel=1e-9, abs=1e-12)
    # IGD+ never exceeds IGD (d+ <= d), and a set containing the whole reference front scores 0.
    assert igd_plus(a, z) <= igd(a, z) + 1e-12
    assert igd(np.concatenate([a, z]), z) == pytest.approx(0.0, abs=1e-12)
    assert igd_plus(np.concatenate([a, z]), z) == pytest.approx(0.0, abs=1e-12)


def test_chunking_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    a, z = rng.random((70, 3)), rng.random((50, 3))
    full = (igd(a, z), igd_plus(a, z), gd(a, z), gd_plus(a, z), spacing(a))
    monkeypatch.setattr(ind, "_CHUNK_ELEMENTS", 7)  # forces many tiny chunks
    assert (igd(a, z), igd_plus(a, z), gd(a, z), gd_plus(a, z), spacing(a)) == pytest.approx(full, rel=1e-12)


def test_igd_plus_hand_computed_and_pareto_compliance():
    ref = [[0.0, 1.0], [1.0, 0.0]]
    # A point better than a reference point in some objective is not penalized for it under IGD+.
    assert igd_plus([[0.5, 0.5]], ref) == pytest.approx(0.5)  # d+ = 0.5 to each reference point
    assert igd([[0.5, 0.5]], ref) == pytest.approx(math.sqrt(0.5))
    # Ishibuchi's example of IGD's non-compliance: B dominates A, but IGD prefers A; IGD+ does not.
    z = [[0.0, 10.0], [1.0, 6.0], [2.0, 2.0], [6.0, 1.0], [10.0, 0.0]]
    a_set = [[2.0, 4.0], [3.0, 3.0], [4.0, 2.0]]
    b_set = [[2.0, 2.0]]  # dominates every point of a_set
    assert igd(a_set, z) < igd(b_set, z)
    assert igd_plus(b_set, z) < igd_plus(a_set, z)


def test_spread_and_spacing():
    even = [[0, 3], [1, 2], [2, 1], [3, 0]]
    assert spread(even) == pytest.approx(0.0)
    assert spacing(even) == pytest.approx(0.0)
    # Hand-computed Δ: gaps √2 and 2√2, mean 1.5√2, so Δ = (0.5√2 + 0.5√2) / (2 · 1.5√2) = 1/3.
    pts = [[0.0, 3.0], [1.0, 2.0], [3.0, 0.0]]
    expected = (0.5 * math.sqrt(2) * 2) / (2 * 1.5 * math.sqrt(2))
    assert spread(pts) == pytest.approx(expected)
    # With a reference front whose extremes are at distance 1 from our end points.
    assert spread(pts, reference_front=[[0.0, 4.0], [4.0, 0.0]]) == pytest.approx(
        (2 + math.sqrt(2)) / (2 + 3 * math.sqrt(2))
    )
    # Dominated points and duplicates are ignored.
    assert spread(pts + [[3.0, 3.0], [1.0, 2.0]]) == pytest.approx(expected)
    # Spacing: L1 nearest-neighbour distances 2, 2, 4 -> mean 8/3, S = sqrt(((2/3)²·2 + (4/3)²) / 2).
    assert spacing(pts) == pytest.approx(math.sqrt(((2 / 3) ** 2 * 2 + (4 / 3) ** 2) / 2))
    assert spacing([[0, 0, 1], [0, 1, 0], [1, 0, 0]]) == pytest.approx(0.0)
    assert math.isnan(spread([[1.0, 1.0], [2.0, 2.0]]))  # one non-dominated point
    assert math.isnan(spacing([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="2 objectives"):
        spread([[0, 0, 1], [0, 1, 0]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1, width=32), st.floats(0, 1, width=32)), min_size=2, max_size=20))
def test_spread_brute_force(pts):
    p = np.array(pts, dtype=float)
    nd = [q for q in {tuple(x) for x in p.tolist()} if not any(
        r[0] <= q[0] and r[1] <= q[1] and r != q for r in map(tuple, p.tolist()))]
    nd.sort()
    if len(nd) < 2:
        assert math.isnan(spread(p))
        return
    d = [d_euclid(nd[i], nd[i + 1]) for i in range(len(nd) - 1)]
    mean = sum(d) / len(d)
    assert spread(p) == pytest.approx(sum(abs(x - mean) for x in d) / (len(d) * mean), rel=1e-9, abs=1e-12)


def test_validation_and_input_types():
    a = torch.tensor([[0.0, 1.0]], requires_grad=True)
    assert igd(a, np.array([[0.0, 1.0]])) == 0.0
    with pytest.raises(ValueError, match="objectives"):
        igd([[0.0, 1.0]], [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="at least one point"):
        igd(np.zeros((0, 2)), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="reference_front must contain"):
        igd_plus([[0.0, 1.0]], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="finite"):
        gd([[np.inf, 1.0]], [[0.0, 1.0]])
