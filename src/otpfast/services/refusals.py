"""Refusal audit entries, queued in memory and written with the next transaction.

A refusal (failed authentication, refused request, throttled verification) is not worth a
durable commit of its own: ``RefusalLog.add`` queues its audit entry, and whoever opens the
next write transaction takes the queue (``take``) and appends it to its own entries (the
next verification batch, or a periodic flush driven by the network glue).

Floods are aggregated: of the refusals from one source within ``AGGREGATE_WINDOW`` seconds
of its first, the first ``AGGREGATE_AFTER`` are written one by one and the rest become ONE
entry when the window ends: outcome ``refused:aggregated:<n>:<t>s`` ("n more refusals from
this source in t seconds"; event, account and client are ``*`` where they differed).
Memory is bounded: at most ``MAX_QUEUED`` entries wait (beyond, refusals are only counted:
in their window, and a window closing then adds to one overflow aggregate of source ``*``)
and at most ``MAX_SOURCES`` windows are open (the oldest closes early when a new source
needs room).
"""
import collections
import math
import threading

# 10 single entries per source and minute: an operator sees who was refused and why, and a
# flooding source costs one more row a minute however fast it sends.
AGGREGATE_AFTER = 10
AGGREGATE_WINDOW = 60.0
MAX_QUEUED = 10_000
MAX_SOURCES = 4096
AGGREGATED = "refused:aggregated"


class _Window:
    __slots__ = ("start", "count", "extra", "event", "account", "client", "first", "last")

    def __init__(self, start: float):
        self.start = start
        self.count = 0          # refusals in this window
        self.extra = 0          # of which not written one by one
        self.event = self.account = self.client = None
        self.first = self.last = start      # times of the first and last extra one


def _same(old, new):
    return new if old is None or old == new else "*"


class RefusalLog:
    def __init__(self):
        self._queue: list[tuple] = []
        self._windows: collections.OrderedDict = collections.OrderedDict()  # oldest first
        self._overflow: _Window | None = None   # aggregates that found the queue full
        self._lock = threading.Lock()

    def add(self, now: float, event: str, account: str, client: str, source: str,
            outcome: str) -> None:
        with self._lock:
            self._close_ended(now)
            window = self._windows.get(source)
            if window is None:
                if len(self._windows) >= MAX_SOURCES:
                    self._close(*self._windows.popitem(last=False))
                window = self._windows[source] = _Window(now)
            window.count += 1
            if window.count <= AGGREGATE_AFTER and len(self._queue) < MAX_QUEUED:
                self._queue.append((now, event, account, client, source, outcome))
                return
            if not window.extra:
                window.first = now
            window.extra += 1
            window.last = now
            window.event = _same(window.event, event)
            window.account = _same(window.account, account)
            window.client = _same(window.client, client)

    def pending(self) -> bool:
        """Anything to write now or when a window ends."""
        return bool(self._queue or self._windows or self._overflow)

    def take(self, now: float, *, everything: bool = False) -> list[tuple]:
        """The entries to write now: the queue and the aggregates of ended windows (of
        every window with ``everything``, e.g. at shutdown)."""
        with self._lock:
            self._close_ended(math.inf if everything else now)
            if self._overflow is not None:
                self._queue.append(_aggregate("*", self._overflow))
                self._overflow = None
            entries, self._queue = self._queue, []
        return entries

    def put_back(self, entries: list[tuple]) -> None:
        """``take``'s entries were not written (the transaction failed): first in line again."""
        if entries:
            with self._lock:
                self._queue[:0] = entries

    def _close_ended(self, now: float) -> None:
        windows = self._windows
        while windows:
            source, window = next(iter(windows.items()))
            if now < window.start + AGGREGATE_WINDOW:
                return
            del windows[source]
            self._close(source, window)

    def _close(self, source, window: _Window) -> None:
        if not window.extra:
            return
        if len(self._queue) < MAX_QUEUED:
            self._queue.append(_aggregate(source, window))
            return
        overflow = self._overflow
        if overflow is None:
            overflow = self._overflow = _Window(window.first)
        overflow.first, overflow.last = min(overflow.first, window.first), max(overflow.last,
                                                                               window.last)
        overflow.extra += window.extra
        overflow.event = _same(overflow.event, window.event)
        overflow.account = _same(overflow.account, window.account)
        overflow.client = _same(overflow.client, window.client)


def _aggregate(source, window: _Window) -> tuple:
    span = max(1, math.ceil(window.last - window.first))
    return (window.last, window.event, window.account, window.client, source,
            f"{AGGREGATED}:{window.extra}:{span}s")
