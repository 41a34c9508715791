"""The limiter is tested on a simulated clock: the test asserts pacing, never wall time."""

from __future__ import annotations

import threading

from diskio.limiter import RateLimiter, Stopped


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)


def test_callers_are_paced_to_the_rate() -> None:
    fake = FakeClock()
    limiter = RateLimiter(50 * 1024 * 1024, burst=0.0, clock=fake.clock, sleep=fake.sleep)
    chunk = 8 * 1024 * 1024
    waits = [limiter.acquire(chunk) for _ in range(10)]
    # With the clock standing still, the n-th chunk may start only after n chunks' worth of time.
    per_chunk = chunk / (50 * 1024 * 1024)
    assert waits[0] == 0.0
    for n, wait in enumerate(waits):
        assert abs(wait - n * per_chunk) < 1e-9


def test_concurrent_lanes_share_one_rate() -> None:
    fake = FakeClock()
    limiter = RateLimiter(1000, burst=0.0, clock=fake.clock, sleep=fake.sleep)
    threads = [threading.Thread(target=lambda: [limiter.acquire(100) for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4000 bytes at 1000 B/s: the last slot starts 3.9 s after the first, whichever lane got it.
    assert abs(max(fake.slept) - 3.9) < 1e-9
    assert len(fake.slept) == 39


def test_idle_time_does_not_accumulate_beyond_the_burst() -> None:
    fake = FakeClock()
    limiter = RateLimiter(1000, burst=0.5, clock=fake.clock, sleep=fake.sleep)
    fake.now += 60  # a long idle period
    waits = [limiter.acquire(100) for _ in range(10)]
    # Only 0.5 s of credit: 5 chunks go at once, the rest are paced.
    assert waits[:6] == [0.0] * 6
    assert abs(waits[-1] - 0.4) < 1e-9


def test_time_lost_to_a_stall_is_made_up_so_the_average_holds() -> None:
    # The default burst: a stall of a few hundred ms (the host, the disk) must not lower the average.
    fake = FakeClock()
    start = fake.now
    limiter = RateLimiter(1000, clock=fake.clock, sleep=fake.sleep)
    assert limiter.acquire(100) == 0.0
    fake.now += 0.4  # the first 100 bytes took 0.4 s instead of their 0.1
    waits = [limiter.acquire(100) for _ in range(9)]
    # The three slots the stall swallowed go at once; the rest keep to the timeline, so the
    # tenth 100 bytes start 0.9 s after the first, as without the stall.
    assert waits[:3] == [0.0] * 3
    assert abs(fake.now + waits[-1] - (start + 0.9)) < 1e-9


def test_a_stopped_wait_ends_at_once_with_stopped() -> None:
    # Issue 11, reproducer 9: a lane of a tiny limit slept out its booked time inside the worker.
    limiter = RateLimiter(1, burst=0.0)
    stop = threading.Event()
    outcome: list[BaseException | float] = []

    def lane() -> None:
        try:
            outcome.append(limiter.acquire(10**6, stop))  # booked: 10^6 s from now
            outcome.append(limiter.acquire(10**6, stop))
        except Stopped as exc:
            outcome.append(exc)

    t = threading.Thread(target=lane)
    t.start()
    stop.set()
    t.join(timeout=60)
    assert not t.is_alive(), "the lane still sleeps out its booked time"
    assert isinstance(outcome[-1], Stopped), outcome


def test_a_stopped_transfer_gets_no_more_bandwidth() -> None:
    limiter = RateLimiter(1000)
    stop = threading.Event()
    stop.set()
    try:
        limiter.acquire(100, stop)
    except Stopped:
        return
    raise AssertionError("acquire went on after stop")
