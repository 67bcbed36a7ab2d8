import base64

import pyotp
import pytest

from otpfast.errors import InvalidParameter
from otpfast.keyuri import KeyUri, build_uri, parse_uri, qr_text, save_qr

KEY = b"12345678901234567890"
B32 = base64.b32encode(KEY).decode()


def test_build_uri_totp_matches_pyotp_fields():
    uri = build_uri("totp", KEY, "alice@example.com", issuer="Example Co", algorithm="sha256", digits=8, period=60)
    assert uri.startswith("otpauth://totp/Example%20Co:alice@example.com?")
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == B32.rstrip("=")
    assert parsed.name == "alice@example.com" and parsed.issuer == "Example Co"
    assert parsed.digits == 8 and parsed.interval == 60
    assert parsed.at(1234) == pyotp.TOTP(B32, digits=8, interval=60, digest=__import__("hashlib").sha256).at(1234)


def test_build_and_parse_round_trip_hotp():
    uri = build_uri("hotp", KEY, "bob", issuer="ACME", digits=7, counter=42)
    parsed = parse_uri(uri)
    assert parsed == KeyUri("hotp", KEY, "bob", "ACME", "sha1", 7, None, 42)
    assert parse_uri(parsed.uri()) == parsed
    assert "1234" not in repr(parsed) and B32 not in repr(parsed)


def test_parse_pyotp_uri():
    uri = pyotp.TOTP(B32, issuer="Big Bank", name="carol@x.org").provisioning_uri()
    parsed = parse_uri(uri)
    assert (parsed.kind, parsed.secret, parsed.account, parsed.issuer, parsed.period) == (
        "totp", KEY, "carol@x.org", "Big Bank", 30)


def test_parse_defaults_and_case():
    parsed = parse_uri(f"otpauth://TOTP/alice?secret={B32.lower()}&algorithm=sha512")
    assert parsed.kind == "totp" and parsed.algorithm == "sha512" and parsed.digits == 6
    assert parsed.period == 30 and parsed.issuer is None


@pytest.mark.parametrize("uri,field", [
    (f"http://totp/a?secret={B32}", "uri"),
    (f"otpauth://motp/a?secret={B32}", "type"),
    (f"otpauth://totp/?secret={B32}", "label"),
    ("otpauth://totp/a?digits=6", "secret"),
    ("otpauth://totp/a?secret=GEZDGNBV", "secret"),
    ("otpauth://totp/a?secret=GEZ1GNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "secret"),
    (f"otpauth://totp/A:a?secret={B32}&issuer=B", "issuer"),
    (f"otpauth://totp/a?secret={B32}&digits=5", "digits"),
    (f"otpauth://totp/a?secret={B32}&digits=10", "digits"),
    (f"otpauth://totp/a?secret={B32}&digits=%D9%A6", "digits"),
    (f"otpauth://totp/a?secret={B32}&algorithm=MD5", "algorithm"),
    (f"otpauth://totp/a?secret={B32}&period=0", "period"),
    (f"otpauth://totp/a?secret={B32}&counter=1", "counter"),
    (f"otpauth://hotp/a?secret={B32}", "counter"),
    (f"otpauth://hotp/a?secret={B32}&counter=1&period=30", "period"),
    (f"otpauth://totp/a?secret={B32}&secret={B32}", "secret"),
    (f"otpauth://totp/a?secret={B32}&foo=1", "foo"),
    (f"otpauth://totp/é?secret={B32}", "uri"),
])
def test_parse_uri_is_strict(uri, field):
    with pytest.raises(InvalidParameter) as info:
        parse_uri(uri)
    assert info.value.field == field
    assert B32 not in str(info.value)


@pytest.mark.parametrize("kwargs,field", [
    (dict(kind="totp", secret=b"short", account="a"), "secret"),
    (dict(kind="totp", secret=KEY, account=""), "account"),
    (dict(kind="totp", secret=KEY, account="a:b"), "account"),
    (dict(kind="xotp", secret=KEY, account="a"), "kind"),
    (dict(kind="hotp", secret=KEY, account="a", counter=-1), "counter"),
    (dict(kind="totp", secret=KEY, account="a", period=0), "period"),
])
def test_build_uri_rejects(kwargs, field):
    with pytest.raises(InvalidParameter) as info:
        build_uri(**kwargs)
    assert info.value.field == field


def test_qr_text_png_svg(tmp_path):
    uri = build_uri("totp", KEY, "alice", issuer="Example")
    text = qr_text(uri)
    assert len(text.splitlines()) > 15 and "█" in text
    save_qr(uri, tmp_path / "code.png")
    save_qr(uri, tmp_path / "code.SVG")
    assert (tmp_path / "code.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in (tmp_path / "code.SVG").read_bytes()
    with pytest.raises(InvalidParameter):
        save_qr(uri, tmp_path / "code.gif")
    with pytest.raises(InvalidParameter):
        qr_text("otpauth://totp/a?secret=AAAA")


def test_qr_encodes_the_uri():
    import segno
    uri = build_uri("totp", KEY, "alice", issuer="Example")
    reference = segno.make(uri, error="m", micro=False)
    assert qr_text(uri, compact=False).count("\n") == len(reference.matrix) + 2 * reference.default_border_size
