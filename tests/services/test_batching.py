"""verify_many decides a batch exactly as the same calls one by one would (it reads the
batch's accounts and issued OTPs once, then follows every change in memory): duplicates
within a batch, several accounts mixed, lockout counted inside the batch, and a batch whose
issued OTPs changed under it accepts nothing. Runs on both backends (conftest `store`)."""
import base64
import sqlite3

import pyotp
import pytest

from otpfast.errors import StoreBusy
from otpfast.services import audit
from otpfast.services.distribution import ClientInfo, VerifyItem

RP = ClientInfo("rp", None, True)


def app(store, name):
    record = store.account(name)
    return pyotp.HOTP(base64.b32encode(bytes.fromhex(record.material["key"])).decode(),
                      digits=record.params["digits"], digest=record.params["algorithm"])




def outcomes(store, n):
    return [e.outcome for e in list(store.audit_entries())[-n:]]


def test_batch_duplicates_accept_exactly_once(device_otps, admin, distribution, store):
    admin.add_account("h", "hotp")
    admin.add_account("c", "hashchain", chain_length=10)
    next_h, next_c = device_otps(admin, distribution, "h"), device_otps(admin, distribution, "c")
    issued_h, chain_value = next_h(), next_c()
    app_code = app(store, "h").at(5)            # an authenticator app, inside the window
    items = [VerifyItem("h", issued_h, "net", RP), VerifyItem("c", chain_value, "net", RP),
             VerifyItem("h", issued_h, "net", RP), VerifyItem("h", app_code, "app", RP),
             VerifyItem("c", chain_value.upper(), "net", RP),
             VerifyItem("h", app_code, "app", RP), VerifyItem("h", issued_h, "net", RP)]
    assert distribution.verify_many(items) == [True, True, False, True, False, False, False]
    assert store.account("h").counter == 6
    # every refusal counts; a success in between does not reset the count
    assert (store.account("h").failures, store.account("c").failures) == (3, 1)
    assert store.account("c").chain_last == bytes.fromhex(chain_value)
    assert outcomes(store, 7) == [audit.ACCEPTED, audit.ACCEPTED, audit.NO_MATCH,
                                  audit.ACCEPTED, audit.NO_MATCH, audit.NO_MATCH,
                                  audit.NO_MATCH]
    assert distribution.verify_many(items) == [False] * 7      # and nothing in a later batch
    assert store.verify_audit().ok


def test_batch_two_issued_copies_of_one_value_are_two_uses(admin, distribution, store, clock):
    """Two issued rows with one digest (a value issued twice) serve two verifications."""
    admin.add_account("h", "hotp")
    now = clock()
    with store.transaction() as tx:
        for _ in range(2):
            tx.issue("h", "dev", store.keys.otp_digest("h", "123456"), now, now + 60)
    items = [VerifyItem("h", "123456", "net")] * 3
    assert distribution.verify_many(items) == [True, True, False]


def test_batch_mixed_accounts_and_refusals(device_otps, admin, distribution, store, clock):
    for name in ("a", "b"):
        admin.add_account(name, "hotp")
    admin.add_account("t", "totp")
    next_a, next_b = device_otps(admin, distribution, "a"), device_otps(admin, distribution, "b")
    a1, b1, a2 = next_a(), next_b(), next_a()
    record = store.account("t")
    totp = pyotp.TOTP(base64.b32encode(bytes.fromhex(record.material["key"])).decode())
    near = {totp.at(clock() + d) for d in (-30, 0, 30)}
    wrong_totp = next(c for c in ("000000", "111111", "222222", "333333") if c not in near)
    device = ClientInfo("dev-a", "a", False)
    items = [VerifyItem("b", a1, "net", RP),          # a's OTP for b: refused
             VerifyItem("a", a1, "net", RP),
             VerifyItem("nobody", a1, "net", RP),
             VerifyItem("a", a2, "net", device),      # an account client may not verify
             VerifyItem("b", b1, "net", None),
             VerifyItem("a", "12345", "net", RP),     # bad format
             VerifyItem(None, a2, "net", RP),
             VerifyItem("a", a2, "net", RP),
             VerifyItem("t", wrong_totp, "net", RP)]
    results = distribution.verify_many(items)
    assert results == [False, True, False, False, True, False, False, True, False]
    assert outcomes(store, 9) == [audit.NO_MATCH, audit.ACCEPTED, audit.NO_ACCOUNT,
                                  audit.NOT_AUTHORISED, audit.ACCEPTED, audit.BAD_FORMAT,
                                  audit.NO_ACCOUNT, audit.ACCEPTED, audit.NO_MATCH]
    # refusals stay counted, successes after them notwithstanding
    assert [store.account(name).failures for name in "abt"] == [1, 1, 1]


def test_batch_lockout_is_counted_inside_the_batch(device_otps, admin, distribution, store,
                                                  clock):
    admin.add_account("h", "hotp", lockout=3)
    next_h = device_otps(admin, distribution, "h")
    good = next_h()
    wrong = "000000" if good != "000000" else "111111"
    items = [VerifyItem("h", wrong, "net", RP)] * 2 + [VerifyItem("h", good, "net", RP)]
    items += [VerifyItem("h", wrong, "net", RP)] * 3 + [VerifyItem("h", next_h(), "net", RP)]
    # two failures, a success (no reset), a third failure locks, then even a valid OTP fails
    assert distribution.verify_many(items) == [False, False, True, False, False, False, False]
    assert outcomes(store, 7)[-4:] == [audit.NO_MATCH, audit.LOCKED, audit.LOCKED,
                                       audit.LOCKED]
    record = store.account("h")
    assert record.failures == 3 and record.locked_at(clock()) and not record.locked
    admin.unlock("h")
    assert distribution.verify_many([items[-1]]) == [True]


@pytest.mark.parametrize("behind", ["issued-used", "counter-moved"])
def test_batch_whose_rows_changed_accepts_nothing(device_otps, admin, distribution, store, monkeypatch,
                                                  behind):
    """The final conditional updates find an issued row already used, or an account no
    longer in the state read (as if written behind the lock): the whole batch rolls back -
    no OTP accepted, no audit entry, no state change."""
    admin.add_account("h", "hotp")
    next_h = device_otps(admin, distribution, "h")
    first, second = next_h(), next_h()
    counter = store.account("h").counter
    transaction = store.transaction

    def sneaky_transaction(**kwargs):
        context = transaction(**kwargs)
        tx = context.__enter__()
        original = tx.find_issued

        def find_then_use(wanted, now):
            found = original(wanted, now)
            if behind == "issued-used":
                assert tx.use_issued("h", store.keys.otp_digest("h", first), now)
            else:
                assert tx.advance_counter("h", counter, counter + 1)
            return found
        tx.find_issued = find_then_use

        class Wrapper:
            def __enter__(self):
                return tx

            def __exit__(self, *exc):
                return context.__exit__(*exc)
        return Wrapper()

    entries = store.verify_audit().entries
    monkeypatch.setattr(store, "transaction", sneaky_transaction)
    with pytest.raises(RuntimeError):
        distribution.verify_many([VerifyItem("h", first, "net", RP),
                                  VerifyItem("h", "000000" if second != "000000" else "1" * 6,
                                             "net", RP),
                                  VerifyItem("h", second, "net", RP)])
    monkeypatch.undo()
    assert store.verify_audit().entries == entries
    assert (store.account("h").counter, store.account("h").failures) == (counter, 0)
    assert distribution.verify_many([VerifyItem("h", first, "net", RP),
                                     VerifyItem("h", second, "net", RP)]) == [True, True]


def _hold_write_lock(store, request):
    """Another writer, as a raw connection: takes the write lock; returns its connection."""
    if hasattr(store, "path"):
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn
    import psycopg
    conn = psycopg.connect(request.getfixturevalue("pg_url"))
    conn.execute("SELECT 1 FROM audit_head FOR UPDATE")
    return conn


def test_batch_without_waiting_decides_nothing_while_the_store_is_busy(device_otps, admin, distribution,
                                                                       store, request):
    """verify_many(wait=False) while another writer holds the lock: StoreBusy, nothing
    decided or audited; the same batch verifies afterwards."""
    admin.add_account("h", "hotp")
    otp = device_otps(admin, distribution, "h")()
    entries = len(list(store.audit_entries()))
    other = _hold_write_lock(store, request)
    try:
        with pytest.raises(StoreBusy):
            distribution.verify_many([VerifyItem("h", otp, "net", RP)], wait=False)
    finally:
        other.rollback()
        other.close()
    assert len(list(store.audit_entries())) == entries
    assert distribution.verify_many([VerifyItem("h", otp, "net", RP)], wait=False) == [True]
