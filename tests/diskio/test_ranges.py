from __future__ import annotations

import random

from diskio.ranges import RangeSet, covers, merge, subtract


def bits(ranges: list[tuple[int, int]]) -> set[int]:
    return {b for off, length in ranges for b in range(off, off + length)}


def test_merge_joins_touching_and_overlapping() -> None:
    assert merge([(10, 5), (0, 10), (20, 1), (14, 2)]) == [(0, 16), (20, 1)]


def test_operations_agree_with_sets_of_bytes() -> None:
    rnd = random.Random(7)
    for _ in range(500):
        a = [(rnd.randrange(150), rnd.randrange(30)) for _ in range(rnd.randrange(6))]
        b = [(rnd.randrange(150), rnd.randrange(30)) for _ in range(rnd.randrange(6))]
        assert bits(merge(a)) == bits(a)
        assert bits(subtract(a, b)) == bits(a) - bits(b)
        rs = RangeSet()
        for off, length in a:
            rs.add(off, length)
        assert rs.ranges() == merge(a)
        for off in range(0, 150, 7):
            assert covers(merge(a), off, 5) == (set(range(off, off + 5)) <= bits(a))


def test_rangeset_stays_compact_when_filled_out_of_order() -> None:
    rs = RangeSet()
    order = list(range(100))
    random.Random(1).shuffle(order)
    for i in order:
        rs.add(i * 10, 10)
    assert rs.ranges() == [(0, 1000)]
