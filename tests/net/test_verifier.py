import asyncio
import threading

import pytest

from otpfast.errors import Refused, StoreBusy
from otpfast.net.eventloop import run as _run
from otpfast.net.verifier import AsyncVerifier


def run_on(name, coroutine):
    return _run(coroutine, name=name)


class Recorder:
    def __init__(self, fail=False):
        self.batches = []
        self.calls = []
        self.threads = set()
        self.fail = fail

    def verify_many(self, items, *, wait=True, durable=True):
        self.threads.add(threading.get_ident())
        self.batches.append([item.otp for item in items])
        if self.fail:
            raise OSError("disk I/O error")
        return [item.otp.startswith("ok") for item in items]

    def refusals_pending(self):       # no refusal entries queued
        return False

    def flush_refusals(self, **kwargs):
        return 0

    def note(self, value):
        self.threads.add(threading.get_ident())
        self.calls.append((value, len(self.batches)))
        if value == "refuse":
            raise Refused()
        return value * 2


def test_verifier_one_batch_per_loop_iteration(event_loop_name):
    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder)
        results = await asyncio.gather(*(verifier.verify("a", f"{'ok' if i % 3 else 'no'}{i}", source="t")
                                         for i in range(100)))
        await verifier.aclose()
        return recorder, results
    recorder, results = run_on(event_loop_name, main())
    assert results == [bool(i % 3) for i in range(100)]
    assert len(recorder.batches) == 1 and len(recorder.batches[0]) == 100
    assert recorder.threads == {threading.get_ident()}  # the store stays on the loop's thread


def test_verifier_group_commit_gathers_what_arrives_during_a_pass(event_loop_name):
    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder)
        first = verifier.verify_future("a", "ok-first", source="t")
        await asyncio.sleep(0)      # the pass ends: the first batch is decided alone
        assert first.done() and first.result()
        later = [verifier.verify_future("a", f"ok{i}", source="t") for i in range(20)]
        assert not any(f.done() for f in later)   # decided together at the end of this pass
        await asyncio.gather(*later)
        await verifier.aclose()
        return recorder
    recorder = run_on(event_loop_name, main())
    assert [len(batch) for batch in recorder.batches] == [1, 20]


def test_verifier_splits_batches_at_max_batch(event_loop_name):
    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder, max_batch=8)
        await asyncio.gather(*(verifier.verify("a", f"ok{i}", source="t") for i in range(20)))
        await verifier.aclose()
        return recorder
    assert [len(batch) for batch in run_on(event_loop_name, main()).batches] == [8, 8, 4]


def test_verifier_calls_keep_submission_order(event_loop_name):
    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder)
        before = verifier.verify_future("a", "ok1", source="t")
        call = verifier.call_future(recorder.note, "x")
        after = verifier.verify_future("a", "ok2", source="t")
        assert await call == "xx"
        assert await before and await after
        with pytest.raises(Refused):
            await verifier.call(recorder.note, "refuse")
        await verifier.aclose()
        return recorder
    recorder = run_on(event_loop_name, main())
    assert recorder.calls[0] == ("x", 1)  # ran after the first verification's batch
    assert recorder.batches == [["ok1"], ["ok2"]]
    assert len(recorder.threads) == 1


def test_verifier_failed_batch_fails_every_waiter(event_loop_name):
    async def main():
        verifier = AsyncVerifier(Recorder(fail=True))
        outcomes = await asyncio.gather(*(verifier.verify("a", "ok", source="t") for _ in range(5)),
                                        return_exceptions=True)
        await verifier.aclose()
        return outcomes
    assert all(isinstance(outcome, OSError) for outcome in run_on(event_loop_name, main()))


def test_verifier_refuses_work_after_close(event_loop_name):
    async def main():
        verifier = AsyncVerifier(Recorder())
        assert await verifier.verify("a", "ok", source="t")
        await verifier.aclose()
        with pytest.raises(RuntimeError):
            verifier.verify_future("a", "ok", source="t")
    run_on(event_loop_name, main())


def test_verifier_callbacks_then_one_replies_ready_per_owner(event_loop_name):
    class Owner:
        def __init__(self):
            self.results = []
            self.ready_calls = []

        def callback(self, index):
            def fill(ok, exc):
                self.results.append((index, ok, exc))
                return self
            return fill

        def replies_ready(self):
            self.ready_calls.append(len(self.results))

    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder)
        owners = [Owner(), Owner()]
        for i in range(6):
            verifier.verify_callback("a", f"{'ok' if i % 2 else 'no'}{i}", owners[i % 2].callback(i), source="t")
        done = await verifier.verify("a", "ok-last", source="t")  # same batch, resolved with it
        await verifier.aclose()
        return recorder, owners, done
    recorder, owners, done = run_on(event_loop_name, main())
    assert done and len(recorder.batches) == 1
    assert owners[0].results == [(0, False, None), (2, False, None), (4, False, None)]
    assert owners[1].results == [(1, True, None), (3, True, None), (5, True, None)]
    assert owners[0].ready_calls == [3] and owners[1].ready_calls == [3]  # once, after all its replies


def test_verifier_callback_gets_the_batch_failure(event_loop_name):
    async def main():
        verifier = AsyncVerifier(Recorder(fail=True))
        seen = []
        verifier.verify_callback("a", "ok", lambda ok, exc: seen.append((ok, type(exc))), source="t")
        with pytest.raises(OSError):
            await verifier.verify("a", "ok", source="t")
        await verifier.aclose()
        return seen
    assert run_on(event_loop_name, main()) == [(None, OSError)]


def test_verifier_stats_report_batches(event_loop_name):
    async def main():
        verifier = AsyncVerifier(Recorder())
        await asyncio.gather(*(verifier.verify("a", f"ok{i}", source="t") for i in range(10)))
        await verifier.aclose()
        return verifier
    verifier = run_on(event_loop_name, main())
    stats = verifier.stats()
    assert stats["verified"] == 10 and stats["batches"] == 1 and stats["mean_batch"] == 10
    assert 0 <= stats["batch_ms"]["p50"] <= stats["batch_ms"]["max"]
    assert "10 verifications in 1 batches" in verifier.stats_line()


class BusyRecorder(Recorder):
    """A store whose write lock another process holds for the first ``busy`` attempts."""

    def __init__(self, busy):
        super().__init__()
        self.busy = busy
        self.waits = []

    def verify_many(self, items, *, wait=True, durable=True):
        self.waits.append(wait)
        if self.busy and not wait:
            self.busy -= 1
            raise StoreBusy("busy")
        return super().verify_many(items)


def test_verifier_retries_a_batch_while_another_process_writes(event_loop_name):
    """The loop is never blocked on the write lock: a busy batch stays pending, keeps
    growing with what arrives meanwhile, and is decided once the lock is free."""
    async def main():
        recorder = BusyRecorder(busy=3)
        verifier = AsyncVerifier(recorder)
        first = [verifier.verify_future("a", f"ok{i}", source="t") for i in range(5)]
        await asyncio.sleep(0)               # the first attempt finds the lock taken
        assert not any(f.done() for f in first)
        later = [verifier.verify_future("a", f"no{i}", source="t") for i in range(3)]
        results = await asyncio.gather(*first, *later)
        await verifier.aclose()
        return recorder, verifier, results
    recorder, verifier, results = run_on(event_loop_name, main())
    assert results == [True] * 5 + [False] * 3
    assert recorder.batches == [[f"ok{i}" for i in range(5)] + [f"no{i}" for i in range(3)]]
    assert recorder.waits == [False] * 4 and verifier.busy == 3


def test_verifier_call_decides_a_busy_batch_first_by_waiting(event_loop_name):
    async def main():
        recorder = BusyRecorder(busy=100)
        verifier = AsyncVerifier(recorder)
        pending = verifier.verify_future("a", "ok1", source="t")
        await asyncio.sleep(0)               # busy: still pending
        assert not pending.done()
        assert await verifier.call(recorder.note, "x") == "xx"
        assert pending.done() and pending.result() is True
        await verifier.aclose()
        return recorder
    recorder = run_on(event_loop_name, main())
    assert recorder.calls == [("x", 1)] and recorder.waits[-1] is True


def test_verifier_answers_only_after_sync_made_the_batch_durable(event_loop_name):
    """With ``sync``, batches commit without waiting for the disk; their waiters are resolved
    only once sync() (in a helper thread) returned. What arrives while a sync runs waits for
    it to end before it is committed (one larger batch), then for the next sync."""
    releases = [threading.Event(), threading.Event()]
    synced = []

    def sync():
        releases[len(synced)].wait(10)
        synced.append(threading.get_ident())

    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder, sync=sync)
        first = verifier.verify_future("a", "ok1", source="t")
        await asyncio.sleep(0.05)
        second = verifier.verify_future("a", "no2", source="t")   # arrives while the sync runs
        third = verifier.verify_future("a", "ok3", source="t")
        await asyncio.sleep(0.05)
        assert len(recorder.batches) == 1 and not first.done() and not second.done()
        releases[0].set()
        assert await first is True
        await asyncio.sleep(0.05)
        assert len(recorder.batches) == 2 and len(recorder.batches[1]) == 2   # one batch
        assert not second.done() and not third.done()       # committed, not yet durable
        releases[1].set()
        assert await second is False and await third is True
        await verifier.aclose()
        return recorder
    run_on(event_loop_name, main())
    assert len(synced) == 2 and threading.get_ident() not in synced


def test_verifier_tick_left_empty_by_a_call_does_not_stall_later_batches(event_loop_name):
    """A call (Request, login) decides the pending verifications at once; the tick scheduled
    for them then finds nothing while a sync runs, and must not leave later verifications
    waiting for a tick that never comes."""
    release = threading.Event()

    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder, sync=lambda: release.wait(10))
        first = verifier.verify_future("a", "ok1", source="t")
        await asyncio.sleep(0.05)                       # committed; its sync runs
        second = verifier.verify_future("a", "ok2", source="t")
        await verifier.call(lambda: None)               # decides `second` at once
        await asyncio.sleep(0.05)                       # the empty tick runs during the sync
        release.set()
        assert await first is True and await second is True
        third = verifier.verify_future("a", "ok3", source="t")
        assert await asyncio.wait_for(third, 5) is True
        await verifier.aclose()
    run_on(event_loop_name, main())


def test_verifier_full_batch_does_not_wait_for_the_running_sync(event_loop_name):
    """A batch that reached max_batch is committed at once even while a sync runs."""
    release = threading.Event()

    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder, sync=lambda: release.wait(10), max_batch=3)
        first = verifier.verify_future("a", "ok0", source="t")
        await asyncio.sleep(0.05)
        waiting = [verifier.verify_future("a", f"ok{i}", source="t") for i in range(1, 4)]
        await asyncio.sleep(0.05)
        assert [len(batch) for batch in recorder.batches] == [1, 3]
        release.set()
        assert await first is True and await asyncio.gather(*waiting) == [True] * 3
        await verifier.aclose()
    run_on(event_loop_name, main())


def test_verifier_failed_sync_fails_the_waiters(event_loop_name):
    def sync():
        raise OSError("fsync failed")

    async def main():
        verifier = AsyncVerifier(Recorder(), sync=sync)
        outcome = await asyncio.gather(verifier.verify("a", "ok1", source="t"), return_exceptions=True)
        await verifier.aclose()
        return outcome
    [outcome] = run_on(event_loop_name, main())
    assert isinstance(outcome, OSError)
