"""Rate limits: token buckets keyed by a source address, a client name or an account.

One ``RateLimiter`` holds one bucket per key: ``burst`` tokens, refilled at ``rate`` tokens
per second. ``allow(key)`` takes one token and says whether there was one; ``charge(key)``
takes one without asking (a failure to count against the key; ``refund(key)`` gives it back
when that failure was rolled back), ``blocked(key)`` asks
without taking, ``tokens(key)`` says how many are left (for callers with events still
undecided: a RADIUS source may have no more verifications in flight than failures left). Memory is bounded: at most ``max_keys`` buckets; when full, the bucket that
was touched least recently goes (a full bucket forgets nothing that matters, and an
attacker rotating keys can only evict buckets, never gain tokens on a key it does not
hold). No I/O, no timers: the clock is injected (seconds, monotonic).
"""
import collections
import dataclasses
import time

DEFAULT_MAX_KEYS = 65_536


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """``burst`` events at once, then ``rate`` per second."""
    rate: float
    burst: float

    def __post_init__(self):
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError("a rate needs rate > 0 and burst >= 1")


class RateLimiter:
    def __init__(self, limit: Rate, *, clock=time.monotonic, max_keys: int = DEFAULT_MAX_KEYS):
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        # key -> [tokens, time of last refill]; ordered by last use (oldest first)
        self._buckets: collections.OrderedDict = collections.OrderedDict()

    def _bucket(self, key, now: float) -> list:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.limit.burst, now]
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(self.limit.burst, bucket[0] + elapsed * self.limit.rate)
                bucket[1] = now
        return bucket

    def allow(self, key) -> bool:
        """Take one token if there is one; True if there was."""
        bucket = self._bucket(key, self._clock())
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def charge(self, key) -> None:
        """Take one token (down to zero): an event that counts against ``key``."""
        bucket = self._bucket(key, self._clock())
        bucket[0] = max(0.0, bucket[0] - 1)

    def refund(self, key) -> None:
        """Give back one token charged for an event that did not count after all (a batch
        rolled back, to be decided again); never above ``burst``."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.limit.burst, bucket[0] + 1)

    def blocked(self, key) -> bool:
        """True while ``key`` has no token left (asking takes nothing)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return False
        return self._bucket(key, self._clock())[0] < 1

    def tokens(self, key) -> float:
        """The tokens ``key`` has now (``burst`` for a key never charged); takes nothing."""
        if key not in self._buckets:
            return self.limit.burst
        return self._bucket(key, self._clock())[0]

    def count_blocked(self) -> int:
        """How many keys have no token left now (a scan of every bucket; takes nothing)."""
        now = self._clock()
        rate, count = self.limit.rate, 0
        for tokens, last in self._buckets.values():
            if tokens + max(0.0, now - last) * rate < 1:
                count += 1
        return count

    def __len__(self) -> int:
        return len(self._buckets)
