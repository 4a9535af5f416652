"""The channel timeline stays continuous and monotonic across reconnects and broken clocks."""

from __future__ import annotations

from detector.analysis.timeline import ChannelTimeline


def test_first_connection_starts_at_zero_whatever_the_source_clock():
    ch = ChannelTimeline()
    conn = ch.connection(25.0)
    placed = [conn.place(1000.0 + i / 25, 5000.0 + i / 25) for i in range(3)]
    assert [round(p.t, 6) for p in placed] == [0.0, 0.04, 0.08]
    assert [p.advanced for p in placed] == [True, True, True] and all(p.jump is None for p in placed)


def test_a_reconnect_continues_after_the_wall_clock_gap():
    ch = ChannelTimeline()
    a = ch.connection(25.0)
    for i in range(25):
        a.place(i / 25, 100.0 + i / 25)
    b = ch.connection(25.0)
    p = b.place(7.0, 100.96 + 3.0)            # 3 s later, the source's clock elsewhere
    assert abs(p.t - (0.96 + 3.0)) < 1e-9


def test_a_reset_backwards_and_a_leap_forward_are_reported_and_time_keeps_going():
    ch = ChannelTimeline()
    conn = ch.connection(25.0)
    conn.place(50.0, 0.0)
    conn.place(52.0, 2.0)
    back = conn.place(2.0, 2.04)               # encoder restart: PTS back to 2 s
    assert back.jump == "timestamp_reset" and back.jumped_from == 2.0 and back.jumped_to == -48.0
    assert back.t > 2.0 and not back.advanced
    nxt = conn.place(2.04, 2.08)
    assert nxt.t > back.t and nxt.advanced
    leap = conn.place(2.04 + 60, 1.12)        # 60 s forward in 0.04 s of wall time
    assert leap.jump == "timestamp_jump" and leap.t > nxt.t and leap.t < nxt.t + 1.0


def test_small_backward_steps_are_tolerated_as_reordering():
    ch = ChannelTimeline()
    conn = ch.connection(25.0)
    conn.place(10.0, 0.0)
    conn.place(10.4, 0.4)
    p = conn.place(10.2, 0.44)
    assert p.jump is None and not p.advanced


def test_a_clock_that_steps_in_the_first_second_of_a_connection_is_settling_not_a_reset():
    """libav's RTSP re-bases its timestamps when the first RTCP report arrives (about -1.1 s)."""
    ch = ChannelTimeline()
    conn = ch.connection(25.0)
    for i in range(10):
        conn.place(i / 25, 100.0 + i / 25)
    p = conn.place(10 / 25 - 1.1, 100.4)
    # re-anchored as a reset (the PTS before no longer match), but no fault: the clock settled
    assert p.jump == "timestamp_reset" and p.settling and p.t > 0.36
    q = conn.place(11 / 25 - 1.1, 100.44)
    assert q.jump is None and abs(q.t - p.t - 0.04) < 1e-9
    for i in range(12, 80):
        conn.place(i / 25 - 1.1, 100.0 + i / 25)
    later = conn.place(-5.0, 103.2)                      # seconds in, the same kind of step is a reset
    assert later.jump == "timestamp_reset" and not later.settling
