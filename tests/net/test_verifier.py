import asyncio
import threading

import pytest

from otpfast.errors import Refused
from otpfast.net.verifier import AsyncVerifier


class Recorder:
    def __init__(self, fail=False):
        self.batches = []
        self.calls = []
        self.threads = set()
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def verify_many(self, items):
        self.gate.wait()
        self.threads.add(threading.get_ident())
        self.batches.append([item.otp for item in items])
        if self.fail:
            raise OSError("disk I/O error")
        return [item.otp.startswith("ok") for item in items]

    def note(self, value):
        self.threads.add(threading.get_ident())
        self.calls.append((value, len(self.batches)))
        if value == "refuse":
            raise Refused()
        return value * 2


def test_verifier_one_batch_per_loop_iteration():
    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder)
        results = await asyncio.gather(*(verifier.verify("a", f"{'ok' if i % 3 else 'no'}{i}", source="t")
                                         for i in range(100)))
        await verifier.aclose()
        return recorder, results
    recorder, results = asyncio.run(main())
    assert results == [bool(i % 3) for i in range(100)]
    assert len(recorder.batches) == 1 and len(recorder.batches[0]) == 100
    assert recorder.threads and threading.get_ident() not in recorder.threads


def test_verifier_group_commit_gathers_requests_while_busy():
    async def main():
        recorder = Recorder()
        verifier = AsyncVerifier(recorder)
        recorder.gate.clear()
        first = verifier.verify_future("a", "ok-first", source="t")
        await asyncio.sleep(0.05)   # the writer thread is now blocked inside the first batch
        later = [verifier.verify_future("a", f"ok{i}", source="t") for i in range(10)]
        await asyncio.sleep(0.01)
        more = [verifier.verify_future("a", f"ok{i}", source="t") for i in range(10, 20)]
        await asyncio.sleep(0.01)
        recorder.gate.set()
        await asyncio.gather(first, *later, *more)
        await verifier.aclose()
        return recorder
    recorder = asyncio.run(main())
    assert [len(batch) for batch in recorder.batches] == [1, 20]


def test_verifier_calls_keep_submission_order():
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
    recorder = asyncio.run(main())
    assert recorder.calls[0] == ("x", 1)  # ran after the first verification's batch
    assert recorder.batches == [["ok1"], ["ok2"]]
    assert len(recorder.threads) == 1


def test_verifier_failed_batch_fails_every_waiter():
    async def main():
        verifier = AsyncVerifier(Recorder(fail=True))
        outcomes = await asyncio.gather(*(verifier.verify("a", "ok", source="t") for _ in range(5)),
                                        return_exceptions=True)
        await verifier.aclose()
        return outcomes
    assert all(isinstance(outcome, OSError) for outcome in asyncio.run(main()))


def test_verifier_refuses_work_after_close():
    async def main():
        verifier = AsyncVerifier(Recorder())
        assert await verifier.verify("a", "ok", source="t")
        await verifier.aclose()
        with pytest.raises(RuntimeError):
            verifier.verify_future("a", "ok", source="t")
    asyncio.run(main())
