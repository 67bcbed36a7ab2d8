"""Issue 9, finding 4: authentication and verification failures were free for the attacker
(no throttling per source or client; every refusal a durable commit of its own and an audit
row for ever). Now failures count per source address and per client name (token buckets:
over the limit refused before any account is read), refusal entries are queued and written
with the next batch, and floods become one aggregated entry."""
import asyncio

import pytest

from otpfast.hotp import HOTP
from otpfast.net import verifier as verifier_module
from otpfast.net.eventloop import run as run_loop
from otpfast.services import audit, policy, refusals
from otpfast.services.distribution import ClientInfo, VerifyItem

RP = ClientInfo("rp", None, True)
BURST = int(policy.FAILED_PER_SOURCE.burst)


def code_of(store, account):
    return HOTP(bytes.fromhex(store.account(account).material["key"])).generate(
        store.account(account).counter)


def wrong(code):
    return "000000" if code != "000000" else "111111"


def entries(store):
    return list(store.audit_entries())


def count_transactions(store, monkeypatch):
    opened = []
    transaction = store.transaction

    def counting(**kwargs):
        opened.append(kwargs)
        return transaction(**kwargs)
    monkeypatch.setattr(store, "transaction", counting)
    return opened


def test_refusals_hot_source_cannot_lock_many_accounts(admin, distribution, store, clock):
    """The attack: one source sprays wrong codes at many accounts to lock them all out."""
    names = [f"user{i}" for i in range(30)]
    for name in names:
        admin.add_account(name, "hotp")
    items = [VerifyItem(name, wrong(code_of(store, name)), "203.0.113.9")
             for _ in range(policy.DEFAULT_LOCKOUT) for name in names]
    assert not any(distribution.verify_many(items))
    counted = sum(store.account(name).failures for name in names)
    assert counted == BURST                  # the rest refused before any account was read
    assert sum(store.account(name).locked_at(clock()) for name in names) == 0
    # the owner of an account, from elsewhere, is not affected
    assert distribution.verify_many([VerifyItem("user0", code_of(store, "user0"),
                                                "198.51.100.1")]) == [True]
    # refused cheaply even with the right code, and the account is not touched
    before = store.account("user1")
    assert distribution.verify_many([VerifyItem("user1", code_of(store, "user1"),
                                                "203.0.113.9")]) == [False]
    assert store.account("user1") == before
    clock.advance(1 / policy.FAILED_PER_SOURCE.rate)    # one failure's worth back
    assert distribution.verify_many([VerifyItem("user1", code_of(store, "user1"),
                                                "203.0.113.9")]) == [True]


def test_refusals_client_budget_spans_sources(admin, distribution, store):
    admin.add_account("alice", "hotp", lockout=100)
    items = [VerifyItem("alice", "000000", f"10.0.{i // 250}.{i % 250}", RP)
             for i in range(BURST + 5)]
    results = distribution.verify_many(items)
    assert not any(results)
    assert store.account("alice").failures == int(policy.FAILED_PER_CLIENT.burst)
    assert distribution.throttled("10.99.0.1", "rp") and not distribution.throttled("10.99.0.1")


def test_refusals_note_refusal_counts_and_is_not_a_commit_of_its_own(
        admin, distribution, store, clock, monkeypatch):
    admin.add_account("alice", "hotp")
    opened = count_transactions(store, monkeypatch)
    before = len(entries(store))
    for _ in range(BURST):
        distribution.note_refusal(clock(), audit.AUTHENTICATE, "-", "mallory", "192.0.2.7",
                                  audit.REFUSED)
    assert opened == [] and len(entries(store)) == before
    assert distribution.throttled("192.0.2.7") and distribution.throttled("x", "mallory")
    # written with the next verification batch, in its transaction, before its entries
    assert distribution.verify_many([VerifyItem("alice", code_of(store, "alice"),
                                                "198.51.100.1")]) == [True]
    assert len(opened) == 1
    written = entries(store)[before:]
    assert [e.event for e in written[:-1]] == [audit.AUTHENTICATE] * (len(written) - 1)
    assert written[-1].outcome == audit.ACCEPTED
    assert store.verify_audit().ok


def test_refusals_flood_is_aggregated(distribution, store, clock):
    before = len(entries(store))
    for i in range(1000):
        distribution.note_refusal(clock(), audit.AUTHENTICATE, "-", f"c{i % 3}", "192.0.2.7",
                                  audit.REFUSED)
        clock.advance(0.01)
    distribution.note_refusal(clock(), audit.AUTHENTICATE, "-", "bob", "192.0.2.8",
                              audit.REFUSED)
    assert distribution.flush_refusals() == refusals.AGGREGATE_AFTER + 1
    clock.advance(refusals.AGGREGATE_WINDOW)
    assert distribution.flush_refusals() == 1
    written = entries(store)[before:]
    assert len(written) == refusals.AGGREGATE_AFTER + 2
    flood = written[-1]
    assert (flood.event, flood.account, flood.client, flood.source) == (
        audit.AUTHENTICATE, "-", "*", "192.0.2.7")
    assert flood.outcome == f"refused:aggregated:{1000 - refusals.AGGREGATE_AFTER}:10s"
    assert not distribution.refusals_pending() and store.verify_audit().ok


def test_refusals_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(refusals, "MAX_QUEUED", 50)
    monkeypatch.setattr(refusals, "MAX_SOURCES", 20)
    log = refusals.RefusalLog()
    for i in range(10_000):     # every refusal from another source
        log.add(1.0, audit.AUTHENTICATE, "-", "-", f"10.0.{i // 200}.{i % 200}", audit.REFUSED)
        assert len(log._queue) <= 50 and len(log._windows) <= 20
    taken = log.take(1.0, everything=True)
    singles = [e for e in taken if not e[5].startswith(refusals.AGGREGATED)]
    assert len(singles) == 50 and len(taken) == 51
    assert taken[-1][4] == "*" and taken[-1][5] == f"{refusals.AGGREGATED}:{10_000 - 50}:1s"


def test_refusals_failed_transaction_keeps_them_queued(admin, distribution, store, clock,
                                                       monkeypatch):
    admin.add_account("alice", "hotp")
    distribution.note_refusal(clock(), audit.REQUEST, "alice", "dev", "192.0.2.7",
                              audit.REFUSED)

    def broken(**kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(store, "transaction", broken)
    with pytest.raises(OSError):
        distribution.verify_many([VerifyItem("alice", "123456", "t")])
    monkeypatch.undo()
    assert distribution.flush_refusals() == 1
    assert entries(store)[-1].event == audit.REQUEST


def test_refusals_written_by_the_verifier_when_idle(distribution, store, clock, monkeypatch):
    monkeypatch.setattr(verifier_module, "REFUSAL_FLUSH", 0.02)
    before = len(entries(store))

    async def main():
        verifier = verifier_module.AsyncVerifier(distribution)

        def refuse():
            distribution.note_refusal(clock(), audit.AUTHENTICATE, "-", "x", "192.0.2.1",
                                      audit.REFUSED)
        await verifier.call(refuse)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(entries(store)) > before:
                break
        written = len(entries(store)) - before
        for _ in range(20):     # a flood window still open at shutdown is written too
            refuse()
        await verifier.aclose()
        return written
    assert run_loop(main()) == 1
    assert entries(store)[-1].outcome.startswith(refusals.AGGREGATED)
    assert len(entries(store)) - before == 1 + (refusals.AGGREGATE_AFTER - 1) + 1
