"""Repeated wrong dashboard passwords are slowed down: free guesses, then doubling waits, reset by a right one."""
from app.ui.throttle import LoginThrottle


def test_backoff_doubles_and_resets():
    now = [100.0]
    t = LoginThrottle(free=3, base_s=1.0, max_s=8.0, clock=lambda: now[0])
    for _ in range(3):
        assert t.wait_s() == 0
        t.failed()
    assert t.wait_s() == 1.0                      # the 4th guess waits 1 s after the 3rd wrong one
    now[0] += 1.0
    assert t.wait_s() == 0
    t.failed()
    assert t.wait_s() == 2.0
    for _ in range(5):
        now[0] += 100
        t.failed()
    assert t.wait_s() == 8.0                      # capped
    t.succeeded()
    assert t.wait_s() == 0
