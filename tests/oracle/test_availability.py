"""The availability rule on synthetic heartbeat logs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from r1os.oracle import HeartbeatLog, availability, covered_seconds, to_byte

HB = 10.0


def beats(start: float, end: float, hb: float = HB) -> list[float]:
    out, t = [], start
    while t <= end:
        out.append(t)
        t += hb
    return out


def test_online_all_epoch_is_255_including_the_boundaries() -> None:
    # heartbeats from before the epoch to after it: runs cross the boundaries and are clipped
    times = beats(-7.0, 1010.0)
    assert covered_seconds(times, HB, 0.0, 1000.0) == 1000.0
    assert availability(times, HB, 0.0, 1000.0) == 255


def test_half_the_epoch_offline_is_about_128() -> None:
    times = beats(-5.0, 250.0) + beats(750.0, 1005.0)
    assert 125 <= availability(times, HB, 0.0, 1000.0) <= 130


def test_a_gap_over_hb_plus_5s_breaks_the_run_and_one_within_does_not() -> None:
    ok = [0.0, 10.0, 25.0, 35.0]  # a 15 s gap is within hb + 5
    assert covered_seconds(ok, HB, 0.0, 100.0) == 35.0
    broken = [0.0, 10.0, 25.1, 35.1]  # 15.1 s > hb + 5: two runs of 10 s
    assert round(covered_seconds(broken, HB, 0.0, 100.0), 6) == 20.0


def test_heartbeats_closer_than_half_hb_are_skipped_not_breaking() -> None:
    # a reply heartbeat 1 s after a regular one must not reset the run (Ratio1's rule would)
    times = sorted(beats(0.0, 100.0) + [31.0, 61.0])
    assert covered_seconds(times, HB, 0.0, 100.0) == 100.0


def test_single_heartbeat_or_none_covers_nothing() -> None:
    assert covered_seconds([], HB, 0, 100) == 0.0
    assert covered_seconds([50.0], HB, 0, 100) == 0.0
    assert availability([50.0], HB, 0, 100) == 0


def test_to_byte_rounds_and_clamps() -> None:
    assert [to_byte(x) for x in (0.0, 0.5, 0.9, 1.0, 1.2, -0.1)] == [0, 128, 230, 255, 255, 0]


def test_log_table_windows_and_prunes() -> None:
    hb = HeartbeatLog()
    hb.extend("0x" + "a" * 40, beats(-10, 110))
    hb.extend("0x" + "b" * 40, beats(50, 110))
    hb.record("0x" + "b" * 40, 55.0)  # out of order: kept sorted
    table = hb.table(HB, 0.0, 100.0)
    assert table["0x" + "a" * 40] == 255
    assert 125 <= table["0x" + "b" * 40] <= 130
    hb.prune(200.0)
    assert hb.table(HB, 0.0, 100.0) == {}


@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=200))
def test_coverage_is_bounded_by_the_epoch(raw: list[float]) -> None:
    times = sorted(raw)
    c = covered_seconds(times, HB, 100.0, 600.0)
    assert 0.0 <= c <= 500.0
    assert 0 <= availability(times, HB, 100.0, 600.0) <= 255


@given(
    st.lists(st.floats(min_value=0.3, max_value=30, allow_nan=False), min_size=1, max_size=100),
    st.floats(min_value=-50, max_value=50),
)
def test_fast_path_matches_the_walk(gaps: list[float], t0: float) -> None:
    from r1os.oracle._availability import _covered_walk

    times = [t0]
    for g in gaps:
        times.append(times[-1] + g)
    for start, end in ((0.0, 100.0), (-20.0, 300.0), (t0, t0 + 10)):
        fast = covered_seconds(times, HB, start, end)
        slow = _covered_walk(times, HB / 2, HB + 5.0, start, end)
        assert abs(fast - slow) < 1e-6
