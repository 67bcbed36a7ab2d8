"""verify_many decides the same on every SQL path of the SQLite backend: the batched path
(accounts and issued OTPs read as one JSON / one aggregated row, UPDATE ... FROM (VALUES),
one multi-row audit INSERT) and the row-by-row fallback for older SQLite versions, with the
audit INSERT split into small chunks. Also: the cached HOTP look-ahead (HotpMatcher) agrees
with otpfast.hotp.HOTP.verify."""
import os

import pytest
from hypothesis import given, settings, strategies as st

import otpfast.store.sqlite as sqlite_backend
from otpfast.errors import InvalidToken
from otpfast.hotp import HOTP
from otpfast.services import audit, tokens
from otpfast.services.admin import Admin
from otpfast.services.distribution import ClientInfo, Distribution, VerifyItem
from otpfast.store import SQLiteStore, new_key
from otpfast.store.base import AccountRecord
from otpfast.store.common import ACCOUNT_SELECT, AccountDecoder
from otpfast.totp import TOTP

RP = ClientInfo("rp", None, True)
DEVICE = ClientInfo("dev-h", "h", False)


@pytest.fixture(params=["batched", "row-by-row"])
def sql_path(request, monkeypatch):
    if request.param == "row-by-row":
        monkeypatch.setattr(sqlite_backend, "_JSON", False)
        monkeypatch.setattr(sqlite_backend, "_UPDATE_FROM", False)
        monkeypatch.setattr(sqlite_backend, "_AUDIT_ROWS", 2)
    return request.param




def test_verify_many_same_decisions_on_every_sql_path(device_otps, sql_path, tmp_path, clock):
    store = SQLiteStore(str(tmp_path / "s.db"), new_key(), head_path=str(tmp_path / "head"),
                        create=True)
    admin, distribution = Admin(store, clock=clock), Distribution(store, clock=clock)
    admin.add_account("h", "hotp", lockout=4)
    admin.add_account('odd, "name"', "totp")
    admin.add_account("c", "hashchain", chain_length=10)
    next_h, next_c = device_otps(admin, distribution, "h"), device_otps(admin, distribution, "c")
    issued_h, issued_c = next_h(), next_c()
    app = HOTP(bytes.fromhex(store.account("h").material["key"]))
    counter = store.account("h").counter           # after issuing
    app_code = app.generate(counter)
    totp = TOTP(bytes.fromhex(store.account('odd, "name"').material["key"]))
    now_code = totp.generate(at=clock())
    wrong = "000000" if issued_h != "000000" else "111111"
    items = [VerifyItem("h", issued_h, "t", RP), VerifyItem("h", issued_h, "t", RP),
             VerifyItem("h", app_code, "t", RP), VerifyItem("h", app_code, "t", RP),
             VerifyItem('odd, "name"', now_code, "t"), VerifyItem('odd, "name"', now_code, "t"),
             VerifyItem("c", issued_c.upper(), "t", RP), VerifyItem("c", issued_c, "t", RP),
             VerifyItem("nobody", "123456", "t"), VerifyItem("h", "12345", "t"),
             VerifyItem("h", issued_h, "t", DEVICE)]
    assert distribution.verify_many(items) == [True, False, True, False, True, False, True,
                                               False, False, False, False]
    entries = list(store.audit_entries())
    assert [e.outcome for e in entries[-len(items):]] == [
        audit.ACCEPTED, audit.NO_MATCH, audit.ACCEPTED, audit.NO_MATCH, audit.ACCEPTED,
        audit.NO_MATCH, audit.ACCEPTED, audit.NO_MATCH, audit.NO_ACCOUNT, audit.BAD_FORMAT,
        audit.NOT_AUTHORISED]
    h = store.account("h")
    # successes do not reset failures
    assert (h.counter, h.failures, h.locked_at(clock())) == (counter + 1, 3, False)
    assert store.account('odd, "name"').last_step == int(clock() // 30)
    assert store.account("c").chain_last == bytes.fromhex(issued_c)
    # a fourth failure locks: then even the next valid code is refused
    assert distribution.verify_many([VerifyItem("h", wrong, "t"),
                                     VerifyItem("h", app.generate(counter + 1), "t")]) == [False, False]
    assert [e.outcome for e in list(store.audit_entries())[-2:]] == [audit.NO_MATCH, audit.LOCKED]
    assert store.account("h").counter == counter + 1
    assert store.verify_audit().ok


def test_batched_account_read_equals_row_read(tmp_path, clock):
    """The JSON read of the batch path gives records equal to a plain row read (names
    with quotes and commas, blobs, NULLs, created_at to the last bit)."""
    clock.now = 1763816213.1234567
    store = SQLiteStore(str(tmp_path / "s.db"), new_key(), create=True)
    admin = Admin(store, clock=clock)
    for kind in ("hotp", "totp", "hashchain"):
        admin.add_account(f'a,b "{kind}" \\ é', kind)
    admin.add_authority(1)
    admin.add_account("pending", "hotp", authorities=[1])
    names = [record.name for record in store.accounts()]
    with store.transaction() as tx:
        batched = tx.accounts(names + ["missing"])
    decoder = AccountDecoder(store.keys)
    rows = store._conn().execute(f"SELECT {ACCOUNT_SELECT} FROM accounts").fetchall()
    plain = {row[0]: decoder.account(row) for row in rows}
    assert batched == plain and len(plain) == 4
    assert all(batched[name].row == plain[name].row for name in plain)   # what the MAC covers
    assert all(isinstance(r, AccountRecord) for r in batched.values())
    assert batched[names[0]].created_at == 1763816213.1234567


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=20, max_size=64), counter=st.integers(0, 2**64 - 1),
       window=st.integers(0, 30), offset=st.integers(-3, 33),
       digits=st.sampled_from([6, 7, 8]), algorithm=st.sampled_from(["sha1", "sha256", "sha512"]))
def test_hotp_matcher_agrees_with_hotp_verify(key, counter, window, offset, digits, algorithm):
    record = AccountRecord(name="h", type="hotp", params={"digits": digits,
                           "algorithm": algorithm}, state="active",
                           material={"key": key.hex()}, counter=counter, last_step=-1,
                           chain_last=None, failures=0, transcript=None, created_at=0.0)
    reference = HOTP(key, digits=digits, algorithm=algorithm)
    target = min(max(counter + offset, 0), 2**64 - 1)
    otp = reference.generate(target)
    try:
        expected = reference.verify(otp, counter, window=window)
    except InvalidToken:
        expected = None
    assert tokens.HotpMatcher(record).match(otp, counter, window) == expected


def test_hotp_matcher_wrong_code():
    key = os.urandom(20)
    record = AccountRecord(name="h", type="hotp", params={"digits": 6, "algorithm": "sha1"},
                           state="active", material={"key": key.hex()}, counter=0,
                           last_step=-1, chain_last=None, failures=0, transcript=None,
                           created_at=0.0)
    codes = {HOTP(key).generate(c) for c in range(11)}
    wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in codes)
    assert tokens.HotpMatcher(record).match(wrong, 0, 10) is None
