"""slimedge._core pooling and redistribution against the NumPy reference (tests only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_aggregate import pool_reference, renormalize_reference

from slimedge import _core

MODES = ["max", "mean", "weighted"]


@st.composite
def pooling_case(draw):
    B = draw(st.integers(1, 6))
    V = draw(st.integers(1, 13))
    D = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(["int8", "float32"]))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    per_frame_mask = draw(st.booleans())
    mask_shape = (B, V) if per_frame_mask else (V,)
    live_p = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    mask = rng.random(mask_shape) < live_p
    if dtype == "int8":
        feats = rng.integers(-128, 128, (B, V, D), dtype=np.int8)
        scale = rng.uniform(0.001, 2.0, V).astype(np.float32)
        zp = rng.integers(-128, 128, V).astype(np.int32)
    else:
        feats = rng.normal(0, 3, (B, V, D)).astype(np.float32)
        scale = zp = None
    weights = None
    if mode == "weighted" or draw(st.booleans()):
        wshape = (B, V) if draw(st.booleans()) else (V,)
        weights = rng.uniform(0, 2, wshape).astype(np.float32)
        weights[rng.random(wshape) < 0.2] = 0.0
    return feats, mask, weights, mode, scale, zp


@settings(max_examples=300, deadline=None)
@given(pooling_case())
def test_pool_matches_reference(case):
    feats, mask, weights, mode, scale, zp = case
    out, empty = _core.pool(feats, mask, weights, mode=mode, scale=scale, zero_point=zp)
    ref, ref_empty = pool_reference(feats, mask, weights, mode, scale, zp)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_array_equal(empty, ref_empty)
    assert np.isfinite(out).all()
    if mode == "max":
        np.testing.assert_array_equal(out, ref)  # dequantize + max is exact
    else:
        np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max(initial=1.0))
    assert (out[empty] == 0).all()


def test_single_frame_form_matches_batch():
    rng = np.random.default_rng(1)
    feats = rng.integers(-128, 128, (12, 16), dtype=np.int8)
    mask = np.array([1, 0] * 6, dtype=bool)
    scale = np.full(12, 0.1, np.float32)
    zp = np.zeros(12, np.int32)
    out, empty = _core.pool(feats, mask, mode="mean", scale=scale, zero_point=zp)
    batch, bempty = _core.pool(feats[None], mask, mode="mean", scale=scale, zero_point=zp)
    assert out.shape == (16,) and empty is False
    np.testing.assert_array_equal(out, batch[0])
    _, dead = _core.pool(feats, np.zeros(12, bool), mode="max", scale=scale, zero_point=zp)
    assert dead is True


def test_all_dead_frames_are_flagged_never_nan():
    feats = np.full((3, 4, 5), np.nan, np.float32)
    feats[1, 2] = 7.0
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    for mode in MODES:
        out, empty = _core.pool(feats, mask, np.ones(4, np.float32), mode=mode)
        assert empty.tolist() == [True, False, True]
        assert (out[[0, 2]] == 0).all()
        assert (out[1] == 7.0).all()


def test_non_contiguous_and_integer_masks_are_accepted():
    rng = np.random.default_rng(2)
    big = rng.normal(size=(4, 6, 10)).astype(np.float32)
    view = big[:, ::2, :]  # not C-contiguous
    mask = np.array([1, 0, 2], dtype=np.int64)
    out, _ = _core.pool(view, mask, mode="max")
    ref, _ = pool_reference(np.ascontiguousarray(view), mask != 0)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(features=np.zeros((2, 3, 4), np.float64), mask=np.ones(3, bool)), "features: expected dtype int8 or float32, got float64 with shape (2, 3, 4)"),
        (dict(features=np.zeros((3,), np.float32), mask=np.ones(3, bool)), "features: expected shape (V, D) for one frame or (B, V, D) for a batch, got (3,)"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(4, bool)), "mask: expected shape (V,) = (3,) for features (2, 3, 4), got (4,)"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones((3, 3), bool)), "mask: expected shape (B, V) = (2, 3)"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(3, np.float32)), "mask: expected a bool or integer live mask, got dtype float32"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(3, bool), mode="weighted"), "weights: mode 'weighted' needs per-view weights"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(3, bool), weights=np.ones(2)), "weights: expected shape (V,) = (3,), got (2,)"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(3, bool), weights=-np.ones(3)), "weights: entry 0 is -1"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(3, bool), mode="median"), "mode: unknown pooling mode 'median'"),
        (dict(features=np.zeros((2, 3, 4), np.int8), mask=np.ones(3, bool)), "int8 features need per-view scale and zero_point"),
        (dict(features=np.zeros((2, 3, 4), np.int8), mask=np.ones(3, bool), scale=np.ones(2), zero_point=np.zeros(3, int)), "scale: expected shape (V,) = (3,), got (2,)"),
        (dict(features=np.zeros((2, 3, 4), np.int8), mask=np.ones(3, bool), scale=np.zeros(3), zero_point=np.zeros(3, int)), "scale: entry 0 must be > 0"),
        (dict(features=np.zeros((2, 3, 4), np.int8), mask=np.ones(3, bool), scale=np.ones(3), zero_point=np.zeros(3)), "zero_point: expected integers, got dtype float64"),
        (dict(features=np.zeros((2, 3, 4), np.float32), mask=np.ones(3, bool), scale=np.ones(3), zero_point=np.zeros(3, int)), "only int8 features take quantization parameters"),
    ],
)
def test_pool_rejects_bad_input_naming_the_argument(kwargs, message):
    features = kwargs.pop("features")
    mask = kwargs.pop("mask")
    with pytest.raises(ValueError) as err:
        _core.pool(features, mask, **kwargs)
    assert message in str(err.value)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 10, width=32), min_size=1, max_size=16),
    st.integers(0, 2**16 - 1),
)
def test_renormalize_matches_reference(base, live_bits):
    base = np.asarray(base, np.float32)
    live = np.array([(live_bits >> v) & 1 for v in range(base.size)], bool)
    got = _core.redistribute(base, live)
    np.testing.assert_allclose(got, renormalize_reference(base, live), rtol=1e-6, atol=1e-6)
    assert (got[~live] == 0).all()
    if live.any() and base.sum() > 0:
        assert got.sum() == pytest.approx(float(base.sum()), rel=1e-5)


def test_table_policy_uses_rows_and_falls_back_to_renormalize():
    base = np.array([1, 1, 2, 4], np.float32)
    table = _core.ContingencyTable(4, {0b0010: [0.5, 0, 0.25, 0.25]})
    assert len(table) == 1 and 0b0010 in table and table.keys() == [0b0010]
    live = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0]], bool)
    got = _core.redistribute(base, live, policy="table", table=table)
    np.testing.assert_allclose(got[0], [0.5, 0, 0.25, 0.25])
    np.testing.assert_allclose(got[1], renormalize_reference(base, live[1]))
    assert (got[2] == 0).all()
    # Redistributed weights feed weighted pooling per frame.
    feats = np.random.default_rng(0).normal(size=(3, 4, 8)).astype(np.float32)
    out, empty = _core.pool(feats, live, got, mode="weighted")
    ref, ref_empty = pool_reference(feats, live, got, "weighted")
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert empty.tolist() == [False, False, True]


def test_dead_mask_bits():
    assert _core.dead_mask([1, 0, 1, 0]) == 0b1010
    assert _core.dead_mask(np.ones(64, bool)) == 0
    with pytest.raises(ValueError, match="V <= 64"):
        _core.dead_mask(np.ones(65, bool))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _core.ContingencyTable(65), "views must be 1..64"),
        (lambda: _core.ContingencyTable(3, {1: [1, 1, 1]}), "gives weight 1.000000 to dead view 0"),
        (lambda: _core.ContingencyTable(3, {0: [1, -1, 1]}), "weights: entry 1 is -1"),
        (lambda: _core.ContingencyTable(3, {0: [1, 1]}), "weights: expected shape (V,) = (3,), got (2,)"),
        (lambda: _core.ContingencyTable(3, {8: [1, 1, 1]}), "names a view >= 3"),
        (lambda: _core.redistribute([1, 1], [1, 0], policy="table"), "policy 'table' needs a ContingencyTable"),
        (lambda: _core.redistribute([1, 1], [1, 0], policy="uniform"), "policy: unknown redistribution policy"),
        (lambda: _core.redistribute([1, 1], [1, 0, 1]), "live: expected shape (V,) = (2,)"),
        (lambda: _core.redistribute([1, 1], [1, 0], "table", _core.ContingencyTable(3)), "table: built for 3 views"),
    ],
)
def test_redistribute_rejects_bad_input(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)


def test_concurrent_calls_from_threads_agree():
    """The loops run without the GIL: calls from several threads must not interfere."""
    import threading

    rng = np.random.default_rng(3)
    feats = rng.integers(-128, 128, (500, 12, 64), dtype=np.int8)
    mask = rng.random((500, 12)) < 0.6
    scale = np.full(12, 0.05, np.float32)
    zp = np.zeros(12, np.int32)
    expected, _ = _core.pool(feats, mask, mode="max", scale=scale, zero_point=zp)
    results = []

    def work():
        results.append(_core.pool(feats, mask, mode="max", scale=scale, zero_point=zp)[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize(
    ("zero_point", "view", "shown"),
    [
        (np.array([0, -2**31, 0], np.int32), 1, "-2147483648"),
        (np.array([128, 0, 0], np.int32), 0, "128"),
        (np.array([0, 0, -129], np.int64), 2, "-129"),
        (np.array([0, 2**40, 0], np.int64), 1, "1099511627776"),  # not truncated to 0
        (np.array([0, 0, 2**63], np.uint64), 2, "9223372036854775808"),
    ],
)
def test_pool_rejects_zero_points_outside_int8_naming_the_view(zero_point, view, shown):
    feats = np.zeros((2, 3, 4), np.int8)
    with pytest.raises(ValueError) as err:
        _core.pool(feats, np.ones(3, bool), mode="max", scale=np.ones(3, np.float32),
                   zero_point=zero_point)
    assert f"zero_point: view {view} has {shown}; an int8 zero point must be in -128..127" in str(err.value)


def test_pool_accepts_int8_zero_points_of_any_integer_width():
    feats = np.full((1, 2, 3), 5, np.int8)
    for dtype in (np.int8, np.int16, np.int64, np.uint8):
        out, _ = _core.pool(feats, np.ones(2, bool), mode="mean", scale=np.ones(2, np.float32),
                            zero_point=np.array([127, 0], dtype))
        np.testing.assert_array_equal(out, [[(5 - 127 + 5) / 2] * 3])


def test_weighted_pooling_sums_weights_in_double_like_renormalize():
    # In float32, 2**25 + 1 + 1 + 1 stays 2**25; in double the total is 2**25 + 3.
    feats = np.array([[[0.0], [1.0], [1.0], [1.0]]], np.float32)
    weights = np.array([2**25, 1, 1, 1], np.float32)
    out, _ = _core.pool(feats, np.ones(4, bool), weights, mode="weighted")
    assert out[0, 0] == np.float32(3.0) * np.float32(1.0 / (2**25 + 3))
    assert out[0, 0] != np.float32(3.0) / np.float32(2**25)


def test_view_63_can_be_marked_dead():
    row = np.ones(64, np.float32)
    row[63] = 0
    table = _core.ContingencyTable(64, {2**63: row})
    assert 2**63 in table and np.uint64(2**63) in table
    assert table.keys() == [2**63]
    np.testing.assert_array_equal(table.get(2**63), row)
    live = np.ones(64, bool)
    live[63] = False
    assert _core.dead_mask(live) == 2**63
    got = _core.redistribute(np.full(64, 2.0, np.float32), live, policy="table", table=table)
    np.testing.assert_array_equal(got, row)


def test_dead_masks_outside_64_bits_are_absent_or_refused():
    table = _core.ContingencyTable(3, {0: [1, 1, 1]})
    assert -1 not in table and 2**64 not in table and table.get(-1) is None
    with pytest.raises(ValueError, match=r"dead mask must be in 0 \.\. 2\*\*64 - 1, got -1"):
        table.set(-1, [1, 1, 1])
    with pytest.raises(ValueError, match="dead mask must be an integer, got str"):
        table.set("1", [0, 1, 1])


def test_table_mutated_from_another_thread_while_redistributing():
    """set() may reallocate a table's rows: redistribute holds the GIL while it reads them."""
    import threading

    views = 16
    table = _core.ContingencyTable(views, {0: np.ones(views, np.float32)})
    live = np.ones((20_000, views), bool)
    stop = threading.Event()
    errors = []

    def grow():
        # Single-view failure sets first, then pairs: many insertions, many reallocations.
        try:
            for a in range(views):
                for b in range(a, views):
                    if stop.is_set():
                        return
                    mask = (1 << a) | (1 << b)
                    row = np.ones(views, np.float32)
                    row[[a, b]] = 0
                    table.set(mask, row)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        for _ in range(30):
            got = _core.redistribute(np.ones(views, np.float32), live, policy="table", table=table)
            np.testing.assert_array_equal(got, 1.0)
    finally:
        stop.set()
        writer.join()
    assert not errors
