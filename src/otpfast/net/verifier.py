"""AsyncVerifier: one writer thread that batches concurrent verifications (group commit).

Every verification submitted while the thread is busy committing the previous batch joins
the next batch, which ``Distribution.verify_many`` decides in ONE transaction: one durable
commit for many accepts. The same thread runs the other (synchronous, SQLite) service calls
in submission order, so the store is only ever used from this thread.
"""
import asyncio
import collections
import logging
import queue
import threading
import time

from ..services.distribution import VerifyItem

log = logging.getLogger("otpfast.net.verifier")

_STOP = object()


class _Call:
    __slots__ = ("fn", "args", "kwargs", "future")

    def __init__(self, fn, args, kwargs, future):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future


class AsyncVerifier:
    """``await verify(account, otp, source=..., client=None) -> bool``; ``await call(fn, ...)``."""

    def __init__(self, distribution, *, max_batch=2048, loop=None):
        self.distribution = distribution
        self.max_batch = max_batch
        self._loop = loop
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="otpfast-verifier", daemon=True)
        self._started = False
        self._closed = False
        self._tick_batch = []          # (item, future or callback) submitted during this loop iteration
        self._tick_scheduled = False
        self.batches = 0
        self.verified = 0
        self.batch_log = collections.deque(maxlen=1 << 16)   # (size, wall s, thread CPU s) per batch

    def _ensure_started(self):
        if self._closed:
            raise RuntimeError("AsyncVerifier is closed")
        if not self._started:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._started = True
            self._thread.start()

    def verify_future(self, account, otp, *, source, client=None):
        """Submit one verification; return an asyncio future resolving to True/False."""
        self._ensure_started()
        future = self._loop.create_future()
        self._tick_batch.append((VerifyItem(account, otp, source, client), future))
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self._loop.call_soon(self._submit_tick)
        return future

    def verify_callback(self, account, otp, callback, *, source, client=None):
        """Submit one verification without a future: ``callback(ok, exc)`` runs in the loop
        thread when its batch is decided (``ok`` True/False, or ``exc`` if the batch failed).
        If it returns an object, that object's ``replies_ready()`` is called once after every
        callback of the batch ran (a connection writes all its replies in one go)."""
        self._ensure_started()
        self._tick_batch.append((VerifyItem(account, otp, source, client), callback))
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self._loop.call_soon(self._submit_tick)

    def _submit_tick(self):
        """One hand-over to the writer thread per loop iteration, however many requests came."""
        self._tick_scheduled = False
        if self._tick_batch:
            self._queue.put(self._tick_batch)
            self._tick_batch = []

    async def verify(self, account, otp, *, source, client=None):
        return await self.verify_future(account, otp, source=source, client=client)

    def call_future(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` on the writer thread; return an asyncio future."""
        self._ensure_started()
        future = self._loop.create_future()
        self._submit_tick()  # keep submission order
        self._queue.put(_Call(fn, args, kwargs, future))
        return future

    async def call(self, fn, *args, **kwargs):
        return await self.call_future(fn, *args, **kwargs)

    def close(self):
        """Finish the queued work and stop the thread (blocking)."""
        if self._started and not self._closed:
            self._submit_tick()
            self._queue.put(_STOP)
            self._thread.join()
        self._closed = True

    async def aclose(self):
        if self._started and not self._closed:
            self._submit_tick()
            self._queue.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._closed = True

    # -- writer thread ----------------------------------------------------------------------
    def _run(self):
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            work = [get()]
            while True:
                try:
                    work.append(get_nowait())
                except queue.Empty:
                    break
            if self._work(work):
                return

    def _work(self, work):
        """Run one hand-over's worth of work; True once the stop marker was seen."""
        stop = False
        batch = []
        for item in work:
            if item is _STOP:
                stop = True
            elif isinstance(item, _Call):
                self._flush(batch)
                batch = []
                self._run_call(item)
            else:
                batch.extend(item)
                if len(batch) >= self.max_batch:
                    self._flush(batch)
                    batch = []
        self._flush(batch)
        return stop

    def _flush(self, batch):
        if not batch:
            return
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            results = self.distribution.verify_many([item for item, _target in batch])
            if len(results) != len(batch):
                raise RuntimeError("verify_many returned a wrong number of results")
            outcome = [(target, bool(ok), None) for (_item, target), ok in zip(batch, results)]
        except Exception as exc:  # the batch failed as a whole: nothing was accepted
            log.error("verification batch failed: %s", type(exc).__name__)
            outcome = [(target, None, exc) for _item, target in batch]
        self.batch_log.append((len(batch), time.perf_counter() - started, time.thread_time() - cpu_started))
        self.batches += 1
        self.verified += len(batch)
        self._loop.call_soon_threadsafe(_resolve_all, outcome)

    def stats(self):
        """Verifications, batches, and the distribution of batch sizes and of the time each
        ``verify_many`` (services + durable commit) took: wall and this thread's CPU, in ms."""
        log_ = list(self.batch_log)
        summary = {"verified": self.verified, "batches": self.batches}
        if not log_:
            return summary
        summary["mean_batch"] = sum(size for size, _w, _c in log_) / len(log_)
        for key, column in (("batch_ms", 1), ("batch_cpu_ms", 2)):
            values = sorted(entry[column] * 1000 for entry in log_)
            summary[key] = {"p50": values[len(values) // 2], "p99": values[max(0, int(len(values) * 0.99) - 1)],
                            "max": values[-1]}
        return summary

    def stats_line(self):
        s = self.stats()
        if "mean_batch" not in s:
            return f"verifier: {s['verified']} verifications"
        wall, cpu = s["batch_ms"], s["batch_cpu_ms"]
        return (f"verifier: {s['verified']} verifications in {s['batches']} batches "
                f"(mean {s['mean_batch']:.1f}); batch time p50 {wall['p50']:.2f} ms p99 {wall['p99']:.2f} ms "
                f"max {wall['max']:.2f} ms; writer CPU per batch p50 {cpu['p50']:.2f} ms p99 {cpu['p99']:.2f} ms")

    def _run_call(self, call):
        try:
            result = call.fn(*call.args, **call.kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            self._loop.call_soon_threadsafe(_resolve_all, [(call.future, None, exc)])
        else:
            self._loop.call_soon_threadsafe(_resolve_all, [(call.future, result, None)])


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
