"""Files of otpauth:// URIs: parsed by keyuri.parse_uri, bad lines named by number."""
import base64

import pytest

from otpfast.errors import InvalidParameter
from otpfast.importers import read_tokens, read_uris

B32 = base64.b32encode(b"12345678901234567890").decode().rstrip("=")


def test_uri_file_reads_hotp_and_totp_skipping_blank_and_comment_lines():
    data = "\n".join([
        "# exported from an authenticator app",
        f"otpauth://totp/Acme:alice@example.com?secret={B32}&issuer=Acme&period=60&digits=8",
        "",
        f"  otpauth://hotp/bob?secret={B32}&counter=7&algorithm=SHA256  ",
    ]).encode()
    first, second = read_tokens(data, "uri")
    assert (first.type, first.user, first.issuer, first.period, first.t0, first.digits,
            first.source) == ("totp", "alice@example.com", "Acme", 60, 0, 8, "line 2")
    assert (second.type, second.user, second.counter, second.algorithm, second.source) == (
        "hotp", "bob", 7, "sha256", "line 4")
    assert first.secret == second.secret == b"12345678901234567890"
    assert first.serial is None


@pytest.mark.parametrize("line, message", [
    ("https://example.com/", "scheme must be otpauth"),
    (f"otpauth://totp/alice?secret={B32}&digits=9", "digits"),
    ("otpauth://totp/alice?secret=ABC", "secret"),
    (f"otpauth://hotp/alice?secret={B32}", "counter: required for hotp"),
    (f"otpauth://totp/alice?secret={B32}&foo=1", "unknown parameter"),
    ("otpauth://totp/%ff?secret=" + B32, "line 2"),
])
def test_uri_bad_line_named_and_nothing_imported(line, message):
    data = f"otpauth://totp/ok?secret={B32}\n{line}\n".encode()
    with pytest.raises(InvalidParameter) as info:
        read_uris(data)
    assert info.value.field == "line 2"
    assert message in str(info.value)
    assert B32 not in str(info.value)


@pytest.mark.parametrize("data", [b"", b"# nothing\n", b"\xff"])
def test_uri_empty_or_unreadable_refused(data):
    with pytest.raises(InvalidParameter):
        read_uris(data)
