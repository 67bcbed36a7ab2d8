"""AsyncVerifier: one writer thread that batches concurrent verifications (group commit).

Every verification submitted while the thread is busy committing the previous batch joins
the next batch, which ``Distribution.verify_many`` decides in ONE transaction: one durable
commit for many accepts. The same thread runs the other (synchronous, SQLite) service calls
in submission order, so the store is only ever used from this thread.
"""
import asyncio
import logging
import queue
import threading

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
        self._tick_batch = []          # verifications submitted during this loop iteration
        self._tick_scheduled = False
        self.batches = 0
        self.verified = 0

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
            if stop:
                return

    def _flush(self, batch):
        if not batch:
            return
        try:
            results = self.distribution.verify_many([item for item, _future in batch])
            if len(results) != len(batch):
                raise RuntimeError("verify_many returned a wrong number of results")
            outcome = [(future, bool(ok), None) for (_item, future), ok in zip(batch, results)]
        except Exception as exc:  # the batch failed as a whole: nothing was accepted
            log.error("verification batch failed: %s", type(exc).__name__)
            outcome = [(future, None, exc) for _item, future in batch]
        self.batches += 1
        self.verified += len(batch)
        self._loop.call_soon_threadsafe(_resolve_all, outcome)

    def _run_call(self, call):
        try:
            result = call.fn(*call.args, **call.kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            self._loop.call_soon_threadsafe(_resolve_all, [(call.future, None, exc)])
        else:
            self._loop.call_soon_threadsafe(_resolve_all, [(call.future, result, None)])


def _resolve_all(outcome):
    for future, result, exc in outcome:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
