"""Tokens in bulk (issue 10 items 4-5): import into the store in one transaction, export,
an existing secret for account add, and enrolling many users at once."""
import base64
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.hotp import HOTP
from otpfast.importers import read_pskc, read_tokens
from otpfast.services import bulk as bulk_module
from otpfast.services.bulk import Bulk
from otpfast.totp import TOTP

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "pskc"
RFC4226_KEY = b"12345678901234567890"
FIGURE6_PSK = bytes.fromhex("12345678901234567890123456789012")
KEY_HEX = RFC4226_KEY.hex()


@pytest.fixture
def bulk(store, clock):
    return Bulk(store, clock=clock)


def _figure(n):
    return (VECTORS / f"rfc6030-figure{n}.pskcxml").read_bytes()


def _snapshot(store):
    return ([(a.name, a.counter) for a in store.accounts()],
            [(t.serial, t.user) for t in store.tokens()],
            [e.seq for e in store.audit_entries()])


@pytest.mark.parametrize("n, kwargs", [(3, {}), (6, {"psk": FIGURE6_PSK}),
                                       (7, {"password": "qwerty"})],
                         ids=["plaintext-figure3", "psk-figure6", "pbkdf2-figure7"])
def test_bulk_rfc6030_import_verifies_rfc4226_8_digits(bulk, distribution, store, n, kwargs):
    specs = read_tokens(_figure(n), "pskc", **kwargs)
    [done] = bulk.import_tokens(specs, user="bob")
    user = done["user"]
    assert done["serial"] == "987654321" and done["main"] and done["new_user"]
    assert store.account(user).params["digits"] == 8
    with pytest.raises(InvalidToken):           # the 6-digit code of the same key
        distribution.verify(user, "755224", source="test")
    distribution.verify(user, "84755224", source="test")     # counter 0
    distribution.verify(user, "94287082", source="test")     # counter 1
    with pytest.raises(InvalidToken):           # used
        distribution.verify(user, "94287082", source="test")
    assert store.verify_audit().ok


def test_bulk_tampered_mac_imports_nothing(bulk, store):
    import re
    data = _figure(6)
    match = re.search(rb"<(\w+:)?ValueMAC>\s*([A-Za-z0-9+/=]+)\s*<", data)
    mac = bytearray(base64.b64decode(match.group(2)))
    mac[0] ^= 1
    data = data[:match.start(2)] + base64.b64encode(bytes(mac)) + data[match.end(2):]
    before = _snapshot(store)
    with pytest.raises(InvalidParameter, match="KeyPackage 1"):
        bulk.import_tokens(read_tokens(data, "pskc", psk=FIGURE6_PSK), user="bob")
    assert _snapshot(store) == before


def test_bulk_existing_serial_refuses_the_whole_import(bulk, store, admin):
    admin.add_account("carol", "totp")
    bulk.import_tokens(read_tokens(_figure(3), "pskc"))
    before = _snapshot(store)
    data = f"NEW1, {KEY_HEX}\n987654321, {KEY_HEX}\n".encode()
    with pytest.raises(InvalidParameter, match=r"line 2.*987654321.*exists already"):
        bulk.import_tokens(read_tokens(data, "oathcsv"), user="carol")
    assert _snapshot(store) == before


def test_bulk_import_gives_existing_users_further_tokens(bulk, store, admin, distribution,
                                                         clock):
    admin.add_account("carol", "totp")
    data = (f"HW1, {KEY_HEX}, hotp, 6, 5\nHW2, {KEY_HEX}, totp, 8, 60, sha256\n"
            f"HW3, {(b'y' * 20).hex()}, hotp\n").encode()
    done = bulk.import_tokens(read_tokens(data, "oathcsv"), user="carol")
    assert [(d["serial"], d["main"], d["new_user"]) for d in done] == [
        ("HW1", False, False), ("HW2", False, False), ("HW3", False, False)]
    hw2 = store.token("HW2")
    assert (hw2.type, hw2.params["digits"], hw2.params["algorithm"], hw2.params["period"]) == \
        ("totp", 8, "sha256", 60)
    assert store.token("HW1").counter == 5
    hotp = HOTP(RFC4226_KEY)
    with pytest.raises(InvalidToken):           # before the imported counter
        distribution.verify("carol", hotp.generate(0), source="test")
    distribution.verify("carol", hotp.generate(5), source="test")
    totp = TOTP(RFC4226_KEY, digits=8, algorithm="sha256", step=60, clock=clock)
    distribution.verify("carol", totp.generate(), source="test")
    assert store.verify_audit().ok


def test_bulk_import_new_user_first_token_is_main_others_further(bulk, store, distribution):
    uris = (f"otpauth://hotp/Acme:dave?secret={base64.b32encode(RFC4226_KEY).decode()}"
            f"&counter=3\n"
            f"otpauth://totp/Acme:dave?secret={base64.b32encode(b'x' * 20).decode()}\n").encode()
    done = bulk.import_tokens(read_tokens(uris, "uri"))
    assert [(d["user"], d["main"], d["new_user"], d["source"]) for d in done] == [
        ("dave", True, True, "line 1"), ("dave", False, True, "line 2")]
    assert store.account("dave").counter == 3
    distribution.verify("dave", HOTP(RFC4226_KEY).generate(3), source="test")


def test_bulk_import_totp_drift_and_t0_carried(bulk, store, distribution, clock):
    data = (VECTORS.parent / "pskc" / "draft-hoyer-totp.pskcxml").read_bytes()
    [spec] = read_pskc(data)
    [done] = bulk.import_tokens([spec], user="erin")
    assert store.account("erin").params["drift"] == spec.drift
    at = clock.now + spec.drift * spec.period           # the token's clock
    code = TOTP(RFC4226_KEY, digits=spec.digits, clock=lambda: at).generate()
    distribution.verify("erin", code, source="test")
    # a T0 of 10 steps: step(now) = (now - T0) / period
    shifted = spec.__class__(**{**spec.__dict__, "serial": "T0", "user": "fay", "t0": 300,
                                "drift": 0, "source": "KeyPackage 1"})
    bulk.import_tokens([shifted])
    assert store.account("fay").params["drift"] == -10
    code = TOTP(RFC4226_KEY, digits=spec.digits, clock=lambda: clock.now - 300).generate()
    distribution.verify("fay", code, source="test")
    odd = spec.__class__(**{**shifted.__dict__, "serial": "T1", "t0": 7})
    with pytest.raises(InvalidParameter, match="whole number of time steps"):
        bulk.import_tokens([odd])


def test_bulk_import_needs_a_user(bulk, store):
    data = f"HW1, {KEY_HEX}\n".encode()
    with pytest.raises(InvalidParameter, match="line 1.*--user"):
        bulk.import_tokens(read_tokens(data, "oathcsv"))


def test_bulk_export_round_trip(bulk, admin, store):
    from otpfast.importers import export_pskc
    from otpfast.services.usertokens import TokenAdmin
    admin.add_account("gus", "hotp")
    admin.add_account("hal", "hashchain")
    TokenAdmin(store).add("gus", "totp", digits=8)
    TokenAdmin(store).add("gus", "recovery")
    bulk.import_tokens(read_tokens(_figure(3), "pskc"))
    specs, skipped = bulk.export_specs()
    assert sorted(kind for _, kind in skipped) == ["hashchain", "recovery"]
    assert len(specs) == 3
    back = read_pskc(export_pskc(specs, psk=FIGURE6_PSK), psk=FIGURE6_PSK)
    strip = lambda s: {k: v for k, v in s.__dict__.items() if k != "source"}   # noqa: E731
    assert [strip(s) for s in back] == [strip(s) for s in specs]
    gus = [s for s in specs if s.user == "gus"]
    assert {s.type for s in gus} == {"hotp", "totp"}
    main = store.account("gus")
    assert any(s.secret == bytes.fromhex(main.material["key"]) for s in gus)
    only, _ = bulk.export_specs("gus")
    assert {s.user for s in only} == {"gus"}


def test_bulk_account_add_with_existing_secret(admin, distribution):
    admin.add_account("ivy", "hotp", secret=RFC4226_KEY, digits=8)
    distribution.verify("ivy", "84755224", source="test")
    with pytest.raises(InvalidParameter) as err:
        admin.add_account("jon", "hotp", secret=b"short")
    assert err.value.field == "secret-file" and "bits" in err.value.message
    with pytest.raises(InvalidParameter, match="hotp or totp"):
        admin.add_account("kim", "hashchain", secret=RFC4226_KEY)


def _users(count, start=0):
    return ((n + 1, f"user{n:06d}", None) for n in range(start, start + count))


def test_bulk_add_many_one_transaction(bulk, store, distribution, clock, monkeypatch):
    monkeypatch.setattr(bulk_module, "CHUNK", 100)
    out = list(bulk.add_many(_users(250), "totp", issuer="Acme"))
    assert len(out) == 250 and len({uri for _, _, uri in out}) == 250
    assert [number for number, _, _ in out] == list(range(1, 251))
    assert len(store.accounts()) == 250 and len(store.tokens()) == 250
    _, name, uri = out[137]
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    distribution.verify(name, TOTP(base64.b32decode(secret), clock=clock).generate(), source="t")
    outcomes = [e.outcome for e in store.audit_entries()]
    assert outcomes.count("accounts-added:250") == 1
    assert store.verify_audit().ok
    # a name that exists (in chunk 2) or is given twice: nothing added, the line named
    before = _snapshot(store)
    users = [(1, "new1", None), *[(n + 2, f"x{n}", None) for n in range(150)],
             (160, "user000010", None)]
    with pytest.raises(InvalidParameter, match=r"line 160.*user000010.*exists already"):
        list(bulk.add_many(iter(users), "totp"))
    with pytest.raises(InvalidParameter, match=r"line 3.*twice"):
        list(bulk.add_many(iter([(1, "a", None), (2, "b", None), (3, "a", None)]), "hotp"))
    with pytest.raises(InvalidParameter, match=r"line 2"):
        list(bulk.add_many(iter([(1, "a", None), (2, "", None)]), "hotp"))
    assert _snapshot(store) == before


def test_bulk_add_many_rejects_other_types(bulk):
    with pytest.raises(InvalidParameter, match="hotp or totp"):
        list(bulk.add_many(_users(1), "hashchain"))
