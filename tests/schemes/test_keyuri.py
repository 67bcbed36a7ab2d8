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


# --- fuzzing: any malformed URI is an InvalidParameter, never another exception ---------------

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = st.sampled_from([
    "otpauth://", "otpauth:", "OTPAUTH://", "totp", "hotp", "/", ":", "?", "&", "=", "#", "%",
    "%ff", "%c3", "%c3%a9", "%00", "%2F", "%3A", "[", "]", "[::1", "@", " ", "+", "secret=",
    f"secret={B32}", "issuer=", "digits=", "period=", "counter=", "algorithm=", "SHA1",
    "9" * 30, "0", "-1", "\x00", "\x7f", "é",
])
_URIS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=30).map("".join),
    st.builds(lambda kind, label, query: f"otpauth://{kind}/{label}?{query}",
              st.sampled_from(["totp", "hotp", "TOTP", "x", ""]),
              st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=6).map("".join),
              st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=12).map("".join)),
)


@given(uri=_URIS)
@example(uri=f"otpauth://totp/%ff?secret={B32}")
@example(uri=f"otpauth://totp/a?secret={B32}&issuer=%ff")
@example(uri=f"otpauth://[::1/a?secret={B32}")
@example(uri=f"otpauth://totp/a?secret={B32}&digits=" + "9" * 4000)
@example(uri=f"otpauth://secret={B32}")  # found by this test: the type echoed the secret
@example(uri=f"otpauth://totp/a?algorithm=secret={B32}")
@example(uri=f"otpauth://totp/a?{B32}=1")
@example(uri=b"otpauth://totp/a")
@example(uri=None)
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_uri_fuzz_raises_only_invalid_parameter(uri):
    try:
        parsed = parse_uri(uri)
    except InvalidParameter as exc:
        assert exc.field and exc.message
        assert B32 not in str(exc)
        return
    assert parsed.kind in ("totp", "hotp") and len(parsed.secret) >= 16


@pytest.mark.parametrize("uri,field", [
    (f"otpauth://totp/%ff?secret={B32}", "label"),
    (f"otpauth://totp/a?secret={B32}&issuer=%ff", "uri"),
    (f"otpauth://[::1/a?secret={B32}", "uri"),
    (f"otpauth://totp/a?secret={B32}&period=" + "9" * 25, "period"),
])
def test_parse_uri_malformed_names_the_part(uri, field):
    with pytest.raises(InvalidParameter) as info:
        parse_uri(uri)
    assert info.value.field == field


def test_qr_too_long_for_a_code_is_invalid_parameter():
    uri = build_uri("totp", KEY, "alice", issuer="x" * 3000)
    with pytest.raises(InvalidParameter) as info:
        qr_text(uri)
    assert info.value.field == "uri"


# --- QR files hold the secret: 0600, never through a symlink -----------------------------------

@pytest.mark.parametrize("name", ["code.png", "code.svg"])
def test_save_qr_file_is_private(tmp_path, name):
    import os
    import stat
    uri = build_uri("totp", KEY, "alice")
    old = os.umask(0o022)
    try:
        save_qr(uri, tmp_path / name)
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
        loose = tmp_path / ("loose" + name[4:])
        loose.write_bytes(b"old content that is longer than nothing" * 100)
        os.chmod(loose, 0o644)
        save_qr(uri, loose)  # an existing file is tightened and replaced, not appended to
        assert stat.S_IMODE(os.stat(loose).st_mode) == 0o600
        assert b"old content" not in loose.read_bytes()
    finally:
        os.umask(old)


def test_save_qr_refuses_symlink_and_special_files(tmp_path):
    import os
    uri = build_uri("totp", KEY, "alice")
    target = tmp_path / "victim"
    link = tmp_path / "link.png"
    link.symlink_to(target)
    with pytest.raises(InvalidParameter, match="symbolic link"):
        save_qr(uri, link)
    assert not target.exists()
    target.write_bytes(b"keep")
    with pytest.raises(InvalidParameter, match="symbolic link"):
        save_qr(uri, link)
    assert target.read_bytes() == b"keep"
    fifo = tmp_path / "fifo.svg"
    os.mkfifo(fifo)
    with pytest.raises(OSError):  # no reader: refused at once, never hangs
        save_qr(uri, fifo)
    os.mkdir(tmp_path / "dir.png")
    with pytest.raises(OSError):
        save_qr(uri, tmp_path / "dir.png")
