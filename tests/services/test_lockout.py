"""Issue 9, finding 8: lockout was a denial of service (ten wrong codes from anyone locked an
account for good) and no brake on slow guessing (a success reset the count: 45 wrong
guesses interleaved with 5 real logins left ``failures: 0``). Now failures leak away over
time, a lock is temporary with exponential back-off, and a hard lock is a policy."""
import pytest

from otpfast.errors import InvalidToken
from otpfast.hotp import HOTP
from otpfast.services import audit, policy
from otpfast.services.admin import describe
from otpfast.services.distribution import VerifyItem
from otpfast.store import SQLiteStore, new_key
from otpfast.store import sqlite as sqlite_backend


class App:
    """An authenticator app of a hotp account (its codes verify through the window)."""

    def __init__(self, store, account):
        self.hotp = HOTP(bytes.fromhex(store.account(account).material["key"]))
        self.store, self.account = store, account

    def next(self):
        return self.hotp.generate(self.store.account(self.account).counter)


def wrong(code):
    return "000000" if code != "000000" else "111111"


def verify(distribution, account, otp, source="10.0.0.1"):
    return distribution.verify_many([VerifyItem(account, otp, source)])[0]


def last_outcome(store):
    return list(store.audit_entries())[-1].outcome


def test_lockout_interleaved_logins_do_not_reset_failures(admin, distribution, store):
    """The attack: 45 wrong guesses interleaved with 5 real logins."""
    admin.add_account("alice", "hotp", lockout=100)
    app = App(store, "alice")
    for _ in range(5):
        for _ in range(9):
            assert not verify(distribution, "alice", wrong(app.next()), source=f"10.1.0.{_}")
        assert verify(distribution, "alice", app.next())
    assert store.account("alice").failures == 45


def test_lockout_default_threshold_locks_the_interleaving_guesser(admin, distribution, store,
                                                                 clock):
    admin.add_account("alice", "hotp")          # lockout 10 by default
    app = App(store, "alice")
    results = []
    for round_ in range(5):
        for i in range(9):
            verify(distribution, "alice", wrong(app.next()), source=f"10.2.{round_}.{i}")
        results.append(verify(distribution, "alice", app.next()))
    assert results[0] and not any(results[1:])     # the 10th failure locked the account
    assert store.account("alice").locked_at(clock())


def test_lockout_is_temporary_and_lifts_by_itself(admin, distribution, store, clock):
    admin.add_account("alice", "hotp", lockout=3)
    app = App(store, "alice")
    for _ in range(3):
        assert not verify(distribution, "alice", wrong(app.next()))
    record = store.account("alice")
    assert record.locked_until == clock() + policy.FIRST_LOCK and not record.locked
    # the owner's right code is refused during the lock: that is the point of a lock
    assert not verify(distribution, "alice", app.next())
    assert last_outcome(store) == audit.LOCKED
    clock.advance(policy.FIRST_LOCK - 1)
    assert not verify(distribution, "alice", app.next())
    clock.advance(1)                           # no admin needed
    assert verify(distribution, "alice", app.next())
    assert last_outcome(store) == audit.ACCEPTED


def test_lockout_repeated_locks_double_up_to_the_cap(admin, distribution, store, clock):
    admin.add_account("alice", "hotp", lockout=3)
    app = App(store, "alice")
    for _ in range(3):
        verify(distribution, "alice", wrong(app.next()))
    durations = []
    for _ in range(8):
        record = store.account("alice")
        durations.append(record.locked_until - clock())
        clock.now = record.locked_until
        # failures leak only once a lock ends: one more wrong code locks again, for longer
        assert not verify(distribution, "alice", wrong(app.next()))
        assert store.account("alice").locked_at(clock())
    assert durations == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]
    assert policy.lock_duration(1000) == policy.MAX_LOCK


def test_lockout_failures_leak_and_back_off_starts_over(admin, distribution, store, clock):
    admin.add_account("alice", "hotp", lockout=3)
    app = App(store, "alice")
    for _ in range(2):
        verify(distribution, "alice", wrong(app.next()))
    clock.advance(policy.FAILURE_LEAK)         # one forgiven
    assert describe(store.account("alice"), clock())["failures"] == 1
    verify(distribution, "alice", wrong(app.next()))
    assert not store.account("alice").locked_at(clock())
    verify(distribution, "alice", wrong(app.next()))   # 3: locked, first level
    assert store.account("alice").locks == 1
    clock.now = store.account("alice").locked_until + 3 * policy.FAILURE_LEAK
    assert describe(store.account("alice"), clock())["failures"] == 0
    verify(distribution, "alice", wrong(app.next()))   # all leaked: the back-off starts over
    assert (store.account("alice").failures, store.account("alice").locks) == (1, 0)
    for _ in range(2):
        verify(distribution, "alice", wrong(app.next()))
    assert store.account("alice").locked_until - clock() == policy.FIRST_LOCK


def test_lockout_permanent_policy_holds_until_unlock(admin, distribution, store, clock):
    admin.add_account("alice", "hotp", lockout=2, lockout_policy="permanent")
    app = App(store, "alice")
    for _ in range(2):
        verify(distribution, "alice", wrong(app.next()))
    clock.advance(30 * 86400)
    assert store.account("alice").locked
    assert not verify(distribution, "alice", app.next())
    admin.unlock("alice")
    assert verify(distribution, "alice", app.next())
    record = store.account("alice")
    assert (record.failures, record.locked_until, record.locks) == (0, 0, 0)


def test_lockout_admin_lock_and_unlock(admin, distribution, store, clock):
    admin.add_account("alice", "hotp")
    app = App(store, "alice")
    admin.lock("alice")
    clock.advance(365 * 86400)
    with pytest.raises(InvalidToken):
        distribution.verify("alice", app.next(), source="t")
    info = describe(store.account("alice"), clock())
    assert info["locked"] and info["locked_until"] == "permanent"
    admin.unlock("alice")
    distribution.verify("alice", app.next(), source="t")
    outcomes = [e.outcome for e in store.audit_entries() if e.event == audit.ADMIN]
    assert outcomes[-2:] == ["account-locked", "account-unlocked"]


def test_lockout_bad_policy_is_refused(admin):
    from otpfast.errors import InvalidParameter
    with pytest.raises(InvalidParameter) as exc:
        admin.add_account("alice", "hotp", lockout_policy="never")
    assert exc.value.field == "lockout-policy"


def test_lockout_migration_keeps_old_permanent_locks(tmp_path):
    """A store locked under the old policy (failures >= lockout) stays locked after v3."""
    path = str(tmp_path / "old.db")
    conn = sqlite_backend.connect(path)
    sqlite_backend.migrate(conn, target=2)
    for name, failures in (("locked", 3), ("fine", 1)):
        conn.execute("INSERT INTO accounts (name, type, params, state, failures, lockout,"
                     " created_at) VALUES (?, 'totp', '{\"lockout\": 3}', 'pending', ?, 3, 1.0)",
                     (name, failures))
    conn.close()
    store = SQLiteStore(path, new_key())
    try:
        assert store.account("locked").locked and not store.account("fine").locked
        assert store.account("fine").locked_until == 0
    finally:
        store.close()


def test_lockout_migration_keeps_old_permanent_locks_postgres(pg_url):
    from otpfast.store import PostgresStore
    from otpfast.store import postgres as postgres_backend
    conn = postgres_backend.connect(pg_url)
    postgres_backend.migrate(conn, target=2)
    for name, failures in (("locked", 3), ("fine", 1)):
        conn.execute("INSERT INTO accounts (name, type, params, state, failures, lockout,"
                     " created_at) VALUES (%s, 'totp', '{\"lockout\": 3}', 'pending', %s, 3, 1.0)",
                     (name, failures))
    conn.close()
    store = PostgresStore(pg_url, new_key())
    try:
        assert store.account("locked").locked and not store.account("fine").locked
        assert store.account("fine").locked_until == 0
    finally:
        store.close()
