"""scorer.alignment: which partitions wait for the slowest one with messages left."""

from __future__ import annotations

from scorer.alignment import plan

DAY = 86_400.0


def test_a_partition_days_ahead_waits_for_the_slowest_one_behind() -> None:
    heads = {0: 10 * DAY, 1: 7 * DAY, 2: 7 * DAY + 30}
    assert plan(heads, behind={0, 1, 2}, paused=set(), skew_s=60) == ({0}, set())


def test_it_resumes_once_the_slowest_has_caught_up() -> None:
    heads = {0: 10 * DAY, 1: 10 * DAY - 30, 2: 10 * DAY - 10}
    assert plan(heads, behind={0, 1, 2}, paused={0}, skew_s=60) == (set(), {0})


def test_a_partition_read_to_its_end_holds_nobody_back() -> None:
    # Partition 1 is a day behind but has nothing left: live traffic, a quiet partition.
    heads = {0: 10 * DAY, 1: 9 * DAY}
    assert plan(heads, behind={0}, paused=set(), skew_s=60) == (set(), set())
    assert plan(heads, behind=set(), paused={0}, skew_s=60) == (set(), {0})


def test_a_partition_with_messages_but_no_head_yet_holds_back_the_others() -> None:
    heads = {0: 10 * DAY}
    assert plan(heads, behind={0, 1}, paused=set(), skew_s=60) == ({0}, set())
