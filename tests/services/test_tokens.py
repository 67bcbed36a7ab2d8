"""Users with several tokens, token resync, PIN + OTP and recovery codes (issue 10)."""
import pytest

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.hotp import HOTP
from otpfast.services import audit
from otpfast.services.distribution import Distribution, VerifyItem
from otpfast.services.usertokens import TokenAdmin
from otpfast.totp import TOTP


@pytest.fixture
def tokens(store, clock):
    return TokenAdmin(store, clock=clock)


def _hotp(store, token):
    material = token.material or store.account(token.user).material
    return HOTP(bytes.fromhex(material["key"]))


def _totp(store, token, clock):
    material = token.material or store.account(token.user).material
    return TOTP(bytes.fromhex(material["key"]), clock=clock)


def _outcomes(store):
    return [entry.outcome for entry in store.audit_entries() if entry.event == audit.VERIFY]


def test_tokens_account_add_makes_a_main_token(admin, tokens, store):
    admin.add_account("alice", "totp")
    [main] = tokens.list("alice")
    assert main.main and main.enabled and main.type == "totp"
    assert main.serial.startswith("OTPF") and len(main.serial) == 12
    assert tokens.get(main.serial) == main
    assert store.verify_audit().ok


def test_tokens_several_tokens_each_verifies_and_serial_is_audited(admin, tokens, distribution,
                                                                   store, clock):
    admin.add_account("alice", "totp")
    [main] = tokens.list("alice")
    hotp_token, codes = tokens.add("alice", "hotp", description="key fob")
    assert codes is None and not hotp_token.main and hotp_token.description == "key fob"
    fob = _hotp(store, hotp_token)
    distribution.verify("alice", fob.generate(0), source="t")
    distribution.verify("alice", _totp(store, main, clock).generate(), source="t")
    with pytest.raises(InvalidToken):                         # no reuse
        distribution.verify("alice", fob.generate(0), source="t")
    distribution.verify("alice", fob.generate(3), source="t")     # look-ahead
    assert tokens.get(hotp_token.serial).counter == 4
    assert _outcomes(store)[:2] == [f"accepted:{hotp_token.serial}", f"accepted:{main.serial}"]
    assert store.verify_audit().ok


def test_tokens_disabled_token_is_refused_and_enabled_again(admin, tokens, distribution, store):
    admin.add_account("alice", "hotp")
    [main] = tokens.list("alice")
    otp = _hotp(store, main).generate(0)
    tokens.set_enabled(main.serial, False)
    assert not tokens.get(main.serial).enabled
    with pytest.raises(InvalidToken):
        distribution.verify("alice", otp, source="t")
    tokens.set_enabled(main.serial, True)
    distribution.verify("alice", otp, source="t")


def test_tokens_delete_further_token_only(admin, tokens, store):
    admin.add_account("alice", "hotp")
    [main] = tokens.list("alice")
    extra, _ = tokens.add("alice", "totp")
    with pytest.raises(InvalidParameter):
        tokens.delete(main.serial)
    tokens.delete(extra.serial)
    assert [t.serial for t in tokens.list("alice")] == [main.serial]
    admin.delete("alice")
    assert tokens.list() == []
    assert store.verify_audit().ok


def test_tokens_further_types_only(admin, tokens):
    admin.add_account("alice", "hotp")
    with pytest.raises(InvalidParameter) as exc:
        tokens.add("alice", "hashchain")
    assert exc.value.field == "type"
    with pytest.raises(InvalidParameter):
        tokens.add("nobody", "totp")


def test_tokens_one_otp_accepted_once_in_a_batch(admin, tokens, store, clock):
    admin.add_account("alice", "hotp")
    extra, _ = tokens.add("alice", "hotp")
    dist = Distribution(store, clock=clock)
    otp = _hotp(store, extra).generate(0)
    assert dist.verify_many([VerifyItem("alice", otp, "t"), VerifyItem("alice", otp, "t")]) \
        == [True, False]


def test_tokens_resync_hotp(admin, tokens, distribution, store):
    admin.add_account("alice", "hotp")
    extra, _ = tokens.add("alice", "hotp")
    fob = _hotp(store, extra)
    with pytest.raises(InvalidToken):                         # beyond the look-ahead
        distribution.verify("alice", fob.generate(500), source="t")
    assert tokens.resync(extra.serial, fob.generate(700), fob.generate(701))["counter"] == 702
    distribution.verify("alice", fob.generate(702), source="t")
    with pytest.raises(InvalidToken):
        tokens.resync(extra.serial, fob.generate(5000), fob.generate(5001))
    [main] = [t for t in tokens.list("alice") if t.main]
    device = _hotp(store, main)
    tokens.resync(main.serial, device.generate(300), device.generate(301))
    assert store.account("alice").counter == 302
    distribution.verify("alice", device.generate(305), source="t")


@pytest.mark.parametrize("which", ["main", "further"])
def test_tokens_resync_totp_stores_drift(admin, tokens, distribution, store, clock, which):
    admin.add_account("alice", "totp")
    [token] = tokens.list("alice")
    if which == "further":
        token, _ = tokens.add("alice", "totp")
    device = _totp(store, token, clock)
    ahead = clock() + 3 * 3600                                # the device's clock: 3 h fast
    with pytest.raises(InvalidToken):
        distribution.verify("alice", device.generate(ahead), source="t")
    result = tokens.resync(token.serial, device.generate(ahead), device.generate(ahead + 30))
    assert result["drift_steps"] == 3 * 120 + 1
    clock.advance(60)
    distribution.verify("alice", device.generate(ahead + 60), source="t")
    assert tokens.describe(tokens.get(token.serial))["drift"] == 361


def test_tokens_request_refused_when_main_disabled(admin, tokens, distribution, device_otps):
    admin.add_account("dev", "hotp")
    request = device_otps(admin, distribution, "dev")
    assert request()
    [main] = tokens.list("dev")
    tokens.set_enabled(main.serial, False)
    with pytest.raises(Exception):
        request()


def test_pin_plus_otp_only(admin, tokens, distribution, store, clock):
    admin.add_account("alice", "hotp")
    [main] = tokens.list("alice")
    extra, _ = tokens.add("alice", "totp", digits=8)
    tokens.set_pin("alice", "4821")
    assert "pin" not in store.account("alice").params or \
        "4821" not in str(store.account("alice").params)
    device, app = _hotp(store, main), TOTP(bytes.fromhex(extra.material["key"]), digits=8,
                                           clock=clock)
    with pytest.raises(InvalidToken):                      # the OTP alone
        distribution.verify("alice", device.generate(0), source="t")
    with pytest.raises(InvalidToken):                      # a wrong PIN
        distribution.verify("alice", "4822" + device.generate(0), source="t")
    distribution.verify("alice", "4821" + device.generate(0), source="t")
    distribution.verify("alice", "4821" + app.generate(), source="t")   # 8 digits: its split
    assert _outcomes(store)[-1] == f"accepted:{extra.serial}"
    # a wrong PIN with the right OTP did not use the OTP up... and is not told apart
    assert _outcomes(store)[1] == audit.NO_MATCH == _outcomes(store)[0]
    tokens.set_pin("alice", None)
    distribution.verify("alice", device.generate(1), source="t")


def test_pin_with_server_issued_main_token(admin, tokens, distribution, device_otps):
    admin.add_account("dev", "hotp")
    request = device_otps(admin, distribution, "dev")
    tokens.set_pin("dev", "secret pin")
    otp = request()
    with pytest.raises(InvalidToken):
        distribution.verify("dev", "wrong pin!" + otp, source="t")
    distribution.verify("dev", "secret pin" + otp, source="t")


def test_pin_policy(admin, tokens):
    admin.add_account("alice", "totp")
    for bad in ("123", "x" * 65, "12\n34"):
        with pytest.raises(InvalidParameter) as exc:
            tokens.set_pin("alice", bad)
        assert exc.value.field == "pin"


def test_pin_required_refuses_users_without_one(admin, tokens, store, clock):
    admin.add_account("alice", "hotp")
    admin.add_account("bob", "hotp")
    tokens.set_pin("bob", "1234")
    strict = Distribution(store, clock=clock, require_pin=True)
    [alice] = tokens.list("alice")
    [bob] = tokens.list("bob")
    with pytest.raises(InvalidToken):
        strict.verify("alice", _hotp(store, alice).generate(0), source="t")
    strict.verify("bob", "1234" + _hotp(store, bob).generate(0), source="t")
    assert _outcomes(store)[0] == audit.PIN_REQUIRED


def test_recovery_codes_single_use(admin, tokens, distribution, store):
    admin.add_account("alice", "totp")
    token, codes = tokens.add("alice", "recovery", count=10)
    assert len(codes) == len(set(codes)) == 10
    assert all(len(code) == 14 and code.count("-") == 2 for code in codes)
    text = str(store.token(token.serial))
    assert not any(code.replace("-", "") in text for code in codes)
    assert tokens.describe(tokens.get(token.serial))["remaining"] == 10
    distribution.verify("alice", codes[3], source="t")
    with pytest.raises(InvalidToken):
        distribution.verify("alice", codes[3], source="t")
    distribution.verify("alice", codes[7].replace("-", " ").lower(), source="t")
    assert tokens.describe(tokens.get(token.serial))["remaining"] == 8
    tokens.set_pin("alice", "9999")
    with pytest.raises(InvalidToken):
        distribution.verify("alice", codes[0], source="t")
    distribution.verify("alice", "9999" + codes[0], source="t")
    with pytest.raises(InvalidParameter):
        tokens.add("alice", "recovery", count=0)
    assert store.verify_audit().ok


def test_tokens_edited_token_row_is_refused(admin, tokens, distribution, store):
    admin.add_account("alice", "hotp")
    extra, _ = tokens.add("alice", "hotp")
    conn = store._conn()         # someone who can write the database, not the key
    sql = "UPDATE tokens SET description = 'x' WHERE serial = %s" if \
        type(store).__name__ == "PostgresStore" else \
        "UPDATE tokens SET description = 'x' WHERE serial = ?"
    conn.execute(sql, (extra.serial,))
    if hasattr(conn, "commit"):
        conn.commit()
    assert store.token(extra.serial) is None
    with pytest.raises(InvalidToken):
        distribution.verify("alice", _hotp(store, extra).generate(0), source="t")
    assert not store.verify_audit().ok


def test_tokens_migration_of_a_store_written_by_the_landed_version(tmp_path):
    """tests/vectors/store_v4: a SQLite store written by the landed version (schema v4:
    a hotp account "hot" whose counter is at 1 after one verification, a totp account
    "tot", a device client of "hot"; key in key.hex). Opened here it migrates: each account
    becomes a user with one main token, and verification keeps working."""
    import pathlib
    import shutil
    from otpfast.store import SQLiteStore

    here = pathlib.Path(__file__).parent.parent / "vectors" / "store_v4"
    for name in ("store.db", "audit.head"):
        shutil.copy(here / name, tmp_path / name)
    key = bytes.fromhex((here / "key.hex").read_text().strip())
    store = SQLiteStore(str(tmp_path / "store.db"), key, head_path=str(tmp_path / "audit.head"))
    try:
        now = 1_700_000_000.0
        tokens = TokenAdmin(store, clock=lambda: now)
        listed = tokens.list()
        assert [(t.user, t.type, t.main) for t in listed] == [("hot", "hotp", True),
                                                              ("tot", "totp", True)]
        assert len({t.serial for t in listed}) == 2
        assert store.verify_audit().ok
        dist = Distribution(store, clock=lambda: now)
        hot = HOTP(bytes.fromhex(store.account("hot").material["key"]))
        with pytest.raises(InvalidToken):                      # used before the upgrade
            dist.verify("hot", hot.generate(0), source="t")
        dist.verify("hot", hot.generate(1), source="t")
        tot = TOTP(bytes.fromhex(store.account("tot").material["key"]), clock=lambda: now)
        dist.verify("tot", tot.generate(), source="t")
        extra, _ = tokens.add("hot", "totp")                   # and takes further tokens
        dist.verify("hot", TOTP(bytes.fromhex(extra.material["key"]),
                                clock=lambda: now).generate(), source="t")
        assert store.verify_audit().ok
    finally:
        store.close()


def test_tokens_rolled_back_token_row_is_refused(admin, tokens, distribution, store):
    """A database writer restores the older, validly MACed copy of a recovery token (its
    used code unused again): this process has seen the newer version and refuses it; audit
    verify reports it too."""
    admin.add_account("alice", "totp")
    token, codes = tokens.add("alice", "recovery", count=2)
    conn = store._conn()
    mark = "%s" if type(store).__name__ == "PostgresStore" else "?"
    old = conn.execute(f"SELECT counter, ver, mac FROM tokens WHERE serial = {mark}",
                       (token.serial,)).fetchone()
    distribution.verify("alice", codes[0], source="t")
    conn.execute(f"UPDATE tokens SET counter = {mark}, ver = {mark}, mac = {mark}"
                 f" WHERE serial = {mark}", (*old, token.serial))
    if hasattr(conn, "commit"):
        conn.commit()
    with pytest.raises(InvalidToken):
        distribution.verify("alice", codes[0], source="t")
    assert store.token(token.serial) is None
    assert not store.verify_audit().ok


def test_tokens_disabled_hashchain_main_with_further_totp(admin, tokens, distribution, store,
                                                          clock, device_otps):
    """A server-issued main token disabled: its issued OTP is refused, a further token
    still logs in."""
    admin.add_account("dev", "hashchain", chain_length=5)
    request = device_otps(admin, distribution, "dev")
    otp = request()
    extra, _ = tokens.add("dev", "totp")
    [main] = [t for t in tokens.list("dev") if t.main]
    tokens.set_enabled(main.serial, False)
    with pytest.raises(InvalidToken):
        distribution.verify("dev", otp, source="t")
    distribution.verify("dev", _totp(store, extra, clock).generate(), source="t")
