import pytest

from otpfast.services.throttle import Rate, RateLimiter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throttle_burst_then_rate():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=2.0, burst=3), clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.blocked("a")
    clock.now += 0.5                      # one token back
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")             # keys are independent


def test_throttle_charge_counts_without_asking():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=1.0, burst=2), clock=clock)
    limiter.charge("x")
    limiter.charge("x")
    limiter.charge("x")                   # never below zero
    assert limiter.blocked("x")
    clock.now += 1.0
    assert not limiter.blocked("x") and limiter.allow("x")


def test_throttle_tokens_peeks_without_taking():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=2.0, burst=3), clock=clock)
    assert limiter.tokens("new") == 3 and len(limiter) == 0   # asking creates no bucket
    limiter.charge("x")
    limiter.charge("x")
    assert limiter.tokens("x") == 1 and limiter.tokens("x") == 1
    clock.now += 0.25
    assert limiter.tokens("x") == 1.5


def test_throttle_memory_bounded_oldest_out():
    clock = Clock()
    limiter = RateLimiter(Rate(rate=0.001, burst=1), clock=clock, max_keys=100)
    assert limiter.allow("victim") and not limiter.allow("victim")
    for i in range(1000):
        limiter.allow(f"k{i}")
    assert len(limiter) == 100
    assert not limiter.blocked("unknown")


def test_throttle_rejects_bad_rate():
    with pytest.raises(ValueError):
        Rate(rate=0, burst=1)
