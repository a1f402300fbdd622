"""The storage circuit breaker as a pure state machine (a fake clock, no sleeping)."""

from smtp_offload.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Log:
    def __init__(self):
        self.events = []

    def warning(self, event, **kw):
        self.events.append((event, kw["state"]))


def test_opens_after_consecutive_failures_and_probes_after_cooldown():
    clock, log = Clock(), Log()
    b = CircuitBreaker(3, 30, log, clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    b.success()  # a success resets the count
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.state == OPEN and not b.allow()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow()  # only one probe at a time
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.now += 30
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow()
    assert log.events == [("circuit_breaker", s) for s in (OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED)]


def test_state_change_callbacks():
    seen = []
    b = CircuitBreaker(1, 5, None, Clock())
    b.on_change.append(seen.append)
    b.failure()
    b.failure()  # already open: no second notification
    assert seen == [OPEN]
