"""AsyncVerifier: group commit on the event loop.

Every verification submitted during one pass of the event loop joins one batch, which
``Distribution.verify_many`` decides in ONE transaction at the end of that pass: one durable
commit for many accepts. Requests that arrive while a batch commits wait in the socket
buffers and make up the next batch, so batches grow with the load by themselves.

The store is used from the loop's thread only. A batch's transaction blocks the loop for its
duration (about a millisecond); measured on 2 cores with the load generator on the same
machine, that costs less than handing every batch to a writer thread: the thread's GIL
hand-overs took more CPU than the transactions themselves.

Durability off the loop (``sync``, the store's ``sync``): a batch then commits without
waiting for the disk (``verify_many(durable=False)``) and its replies wait until ``sync()``,
run in a helper thread, has made it durable. One sync covers every batch committed before it
started, so the fsync overlaps the next batches instead of stalling the loop (and, with
several workers, is not done while holding the write lock). Nothing is answered before its
decision is on disk. While a sync runs, the next batch is not committed but keeps growing
(up to ``max_batch``): its replies would wait for the sync after this one anyway, and one
larger transaction costs less per verification than several small ones.

Several server processes may share one store (``otpfast serve --workers N``). The loop never
waits for another process's write lock: a batch asks for it without waiting
(``verify_many(wait=False)``) and, while it is taken, stays pending and keeps growing, and
the loop serves its connections meanwhile. It is tried again as soon as a sibling worker
says it committed (``handoff``: otpfast.net.workers.Handoff), else ``BUSY_RETRY`` seconds
later (a writer that is not a worker, e.g. an admin command). That is SQLite's case: on
PostgreSQL each process appends to an audit chain of its own and locks only the accounts
it changes (otpfast.store.postgres), so a batch is never busy there.

A batch the store failed without committing anything (StoreUnavailable.committed is False:
a lost session, a timeout) is tried once more on a fresh session; one whose outcome is
unknown is not, and its requests get "try again" from their front end.
"""
import asyncio
import collections
import concurrent.futures
import logging
import time

from ..errors import StoreBusy, StoreUnavailable
from ..services.distribution import VerifyItem
from .metrics import Metrics

BUSY_RETRY = 0.005       # seconds between attempts at a write lock another process holds
# Queued refusal audit entries (Distribution.note_refusal) ride on the next verification
# batch; without one they are written at most this long after they were queued (and flood
# aggregates when their window ends): rare enough to cost nothing, soon enough to read.
REFUSAL_FLUSH = 1.0

log = logging.getLogger("otpfast.net.verifier")


class AsyncVerifier:
    """``await verify(account, otp, source=..., client=None) -> bool``; ``await call(fn, ...)``.
    ``metrics``: the process's Prometheus series (net.metrics), shared by every front end
    that verifies through this writer (a fresh set if not given)."""

    def __init__(self, distribution, *, max_batch=2048, loop=None, handoff=None, sync=None, metrics=None):
        self.distribution = distribution
        self.metrics = metrics if metrics is not None else Metrics(self)
        self.max_batch = max_batch
        self._loop = loop
        self._handoff = handoff
        self._sync = sync               # makes committed batches durable (store.sync), or None
        self._sync_thread = None
        self._syncing = None            # outcomes the running sync will release
        self._unsynced = []             # outcomes committed after it started
        self._closed = False
        self._tick_batch = []          # (item, future or callback) submitted during this loop pass
        self._tick_scheduled = False
        self._retry = None             # the timer of a batch waiting for the write lock
        self._refusal_timer = None     # the timer of the next refusal flush
        self.batches = 0
        self.verified = 0
        self.busy = 0                  # attempts that found the write lock taken
        self.batch_log = collections.deque(maxlen=1 << 16)   # (size, wall s, CPU s) per batch

    def _submit(self, entry):
        if self._closed:
            raise RuntimeError("AsyncVerifier is closed")
        if self._loop is None:
            self._attach(asyncio.get_running_loop())
        self._tick_batch.append(entry)
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self._loop.call_soon(self._run_tick)

    def _attach(self, loop):
        self._loop = loop
        if self._handoff is not None:
            loop.add_reader(self._handoff.fileno(), self._on_handoff)

    def _on_handoff(self):
        """A sibling worker committed: its write lock is free now."""
        self._handoff.drain()
        if self._retry is not None:
            self._run_tick()

    def verify_future(self, account, otp, *, source, client=None):
        """Submit one verification; return an asyncio future resolving to True/False."""
        if self._loop is None:
            self._attach(asyncio.get_running_loop())
        future = self._loop.create_future()
        self._submit((VerifyItem(account, otp, source, client), future))
        return future

    def verify_callback(self, account, otp, callback, *, source, client=None, request_id=None):
        """Submit one verification without a future: ``callback(ok, exc)`` runs when its batch
        is decided (``ok`` True/False, or ``exc`` if the batch failed). If it returns an
        object, that object's ``replies_ready()`` is called once after every callback of the
        batch ran (a connection writes all its replies in one go)."""
        self._submit((VerifyItem(account, otp, source, client, request_id), callback))

    async def verify(self, account, otp, *, source, client=None):
        return await self.verify_future(account, otp, source=source, client=client)

    def call_future(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` (a short store call) after the verifications submitted
        before it; return an asyncio future with its result or exception."""
        if self._closed:
            raise RuntimeError("AsyncVerifier is closed")
        if self._loop is None:
            self._attach(asyncio.get_running_loop())
        self._run_tick(wait=True)  # keep submission order
        future = self._loop.create_future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed to the awaiting coroutine
            future.set_exception(exc)
        self._schedule_refusal_flush()
        return future

    async def call(self, fn, *args, **kwargs):
        return await self.call_future(fn, *args, **kwargs)

    def close(self):
        """Decide what is still pending, then refuse new work."""
        if not self._closed:
            self._run_tick(wait=True)
            if self._refusal_timer is not None:
                self._refusal_timer.cancel()
                self._refusal_timer = None
            try:
                self.distribution.flush_refusals(everything=True)
            except Exception as exc:  # the server stops anyway; say what was not written
                log.error("writing queued refusal entries failed: %s", _cause(exc))
            if self._handoff is not None and self._loop is not None:
                self._loop.remove_reader(self._handoff.fileno())
            if self._syncing is not None or self._unsynced:
                waiting = (self._syncing or []) + self._unsynced
                self._syncing, self._unsynced = None, []
                try:
                    self._sync()
                except Exception as exc:  # reported to every waiter
                    self._release(waiting, exc)
                else:
                    self._release(waiting, None)
            if self._sync_thread is not None:
                self._sync_thread.shutdown(wait=True)
        self._closed = True

    async def aclose(self):
        self.close()

    def _run_tick(self, wait=False):
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if not self._tick_batch:        # decided already (call_future flushes in order)
            self._tick_scheduled = False
            return
        if not wait and self._syncing is not None and len(self._tick_batch) < self.max_batch:
            # a sync is running: these replies would wait for the next one anyway, so the
            # batch grows until it ends (_synced runs it): fewer, larger transactions
            self._tick_scheduled = True
            return
        self._tick_scheduled = False
        batch, self._tick_batch = self._tick_batch, []
        for start in range(0, len(batch), self.max_batch):
            if not self._flush(batch[start:start + self.max_batch], wait):
                # another process writes: keep the rest first in line, try again shortly
                self._tick_batch = batch[start:] + self._tick_batch
                self._tick_scheduled = True
                self._retry = self._loop.call_later(BUSY_RETRY, self._run_tick)
                return

    def _flush(self, batch, wait):
        """Decide ``batch`` and resolve its targets; False (nothing decided) if ``wait`` is
        False and another writer holds the store."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            results = self._verify_many([item for item, _target in batch], wait)
            if len(results) != len(batch):
                raise RuntimeError("verify_many returned a wrong number of results")
            outcome = [(target, bool(ok), None) for (_item, target), ok in zip(batch, results)]
        except StoreBusy:
            self.busy += 1
            return False
        except Exception as exc:  # the batch failed as a whole: nothing was accepted
            log.error("verification batch of %d failed: %s", len(batch), _cause(exc))
            self.metrics.store_errors["verify"].inc()
            outcome = [(target, None, exc) for _item, target in batch]
        if self._handoff is not None:
            self._handoff.notify()
        self._schedule_refusal_flush()
        self.batch_log.append((len(batch), time.perf_counter() - started, time.thread_time() - cpu_started))
        self.metrics.batch_size.observe(len(batch))
        self.batches += 1
        self.verified += len(batch)
        if self._sync is None or outcome[0][2] is not None:   # durable already, or nothing decided
            _resolve_all(outcome)
        else:
            self._unsynced.extend(outcome)
            if self._syncing is None:
                self._start_sync()
        return True

    def _verify_many(self, items, wait):
        """verify_many, tried once more on a fresh session if the store failed and nothing
        was committed (StoreUnavailable.committed is False); an unknown outcome is never
        retried (the front ends answer "try again")."""
        try:
            return self.distribution.verify_many(items, wait=wait, durable=self._sync is None)
        except StoreUnavailable as exc:
            if exc.committed is not False:
                raise
            log.warning("verification batch of %d not committed, retrying once: %s",
                        len(items), exc)
        return self.distribution.verify_many(items, wait=wait, durable=self._sync is None)

    # -- refusal entries not taken by a batch ------------------------------------------------
    def _schedule_refusal_flush(self):
        if (self._refusal_timer is None and self._loop is not None and not self._closed
                and self.distribution.refusals_pending()):
            self._refusal_timer = self._loop.call_later(REFUSAL_FLUSH, self._flush_refusals)

    def _flush_refusals(self):
        self._refusal_timer = None
        try:
            written = self.distribution.flush_refusals(wait=False, durable=self._sync is None)
        except StoreBusy:       # another writer: the next timer tries again
            written = 0
        except Exception as exc:  # kept queued; the next timer tries again
            log.error("writing queued refusal entries failed: %s", _cause(exc))
            self.metrics.store_errors["audit_flush"].inc()
            written = 0
        if written and self._sync is not None and self._syncing is None:
            self._start_sync()      # the audit head file follows once they are on disk
        self._schedule_refusal_flush()

    # -- durability off the loop ----------------------------------------------------------
    def _start_sync(self):
        self._syncing, self._unsynced = self._unsynced, []
        if self._sync_thread is None:
            self._sync_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="otpfast-sync")
        running = self._syncing
        future = self._loop.run_in_executor(self._sync_thread, self._sync)
        future.add_done_callback(lambda done: self._synced(done, running))

    def _synced(self, done, running):
        if running is not self._syncing:      # close() released them already
            return
        self._syncing = None
        failure = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if failure is not None:
            self.metrics.store_errors["sync"].inc()
        self._release(running, failure)
        if self._tick_batch:
            self._run_tick()
        if self._unsynced and self._syncing is None:
            self._start_sync()

    @staticmethod
    def _release(outcome, failure):
        """Resolve ``outcome`` once its sync ended: as decided, or every target failed if the
        sync failed (nothing may be answered that the disk might not hold)."""
        if failure is not None:
            log.error("making verifications durable failed: %s", _cause(failure))
            outcome = [(target, None, failure) for target, _ok, _exc in outcome]
        _resolve_all(outcome)

    def stats(self):
        """Verifications, batches, and the distribution of batch sizes and of the time each
        ``verify_many`` (services + commit) took: wall and CPU, in ms."""
        log_ = list(self.batch_log)
        summary = {"verified": self.verified, "batches": self.batches, "busy": self.busy}
        if not log_:
            return summary
        summary["mean_batch"] = sum(size for size, _w, _c in log_) / len(log_)
        for key, column in (("batch_ms", 1), ("batch_cpu_ms", 2)):
            values = sorted(entry[column] * 1000 for entry in log_)
            summary[key] = {"mean": sum(values) / len(values), "p50": percentile(values, 50),
                            "p99": percentile(values, 99), "max": values[-1]}
        return summary

    def stats_line(self):
        s = self.stats()
        if "mean_batch" not in s:
            return f"verifier: {s['verified']} verifications"
        wall, cpu = s["batch_ms"], s["batch_cpu_ms"]
        return (f"verifier: {s['verified']} verifications in {s['batches']} batches "
                f"(mean {s['mean_batch']:.1f}, {s['busy']} waits for the write lock); batch time p50 {wall['p50']:.2f} ms p99 {wall['p99']:.2f} ms "
                f"max {wall['max']:.2f} ms; CPU per batch mean {cpu['mean']:.2f} ms p50 {cpu['p50']:.2f} ms p99 {cpu['p99']:.2f} ms")


def _cause(exc):
    """An exception for the log: its class and what it says (the store's messages name
    the server and the reason)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def percentile(values, q):
    """The q-th percentile (0 < q <= 100) of sorted ``values`` by nearest rank: the smallest
    value with at least q % of the values at or below it (so p50 <= p99 <= max)."""
    if not values:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    rank = -(-len(values) * q // 100)      # ceil(n * q / 100), exact for integer q
    return values[rank - 1]


def _resolve_all(outcome):
    owners = {}
    for target, result, exc in outcome:
        if isinstance(target, asyncio.Future):
            if target.cancelled():
                continue
            if exc is not None:
                target.set_exception(exc)
            else:
                target.set_result(result)
            continue
        try:
            owner = target(result, exc)
        except Exception:  # one broken callback must not starve the rest of the batch
            log.exception("verification callback failed")
            continue
        if owner is not None:
            owners[id(owner)] = owner
    for owner in owners.values():
        try:
            owner.replies_ready()
        except Exception:
            log.exception("writing replies failed")
