"""OATH CSV (privacyIDEA / LinOTP seed files): good lines, bad lines named by number."""
import pytest

from otpfast.errors import InvalidParameter
from otpfast.hotp import HOTP
from otpfast.importers import read_oathcsv, read_tokens

KEY_HEX = b"3132333435363738393031323334353637383930"  # RFC 4226's key


def test_oathcsv_reads_every_documented_column():
    data = b"\n".join([
        b"# seed file from the vendor",
        b"HW1, " + KEY_HEX,
        b"",
        b"HW2, " + KEY_HEX + b", hotp, 8, 42",
        b"HW3, " + KEY_HEX + b", TOTP, 6, 60",
        b'"HW4", ' + KEY_HEX + b", totp, 8, 30, sha256",
        b"HW5," + KEY_HEX + b",totp",
    ]) + b"\n"
    specs = read_oathcsv(data)
    got = [(s.serial, s.type, s.digits, s.counter, s.period, s.algorithm, s.source)
           for s in specs]
    assert got == [
        ("HW1", "hotp", 6, 0, None, "sha1", "line 2"),
        ("HW2", "hotp", 8, 42, None, "sha1", "line 4"),
        ("HW3", "totp", 6, None, 60, "sha1", "line 5"),
        ("HW4", "totp", 8, None, 30, "sha256", "line 6"),
        ("HW5", "totp", 6, None, 30, "sha1", "line 7"),
    ]
    assert all(s.secret == b"12345678901234567890" for s in specs)
    assert HOTP(specs[1].secret, digits=8).generate(0) == "84755224"


def test_oathcsv_version_2_carries_the_user():
    data = b"# version: 2\nalice, ldap, realm1, HW1, " + KEY_HEX + b", hotp, 6\n"
    (spec,) = read_tokens(data, "oathcsv")
    assert (spec.user, spec.serial, spec.source) == ("alice", "HW1", "line 2")


@pytest.mark.parametrize("line, message", [
    (b"HW1", "at least a serial and a hex key"),
    (b"HW1, zz", "key: not valid hex"),
    (b"HW1, 00112233", "key: the key has 32 bits"),
    (b"HW1, KEY, ocra, OCRA-1:HOTP-SHA1-6:QN08", "type 'ocra' is not supported"),
    (b"HW1, KEY, hotp, 9", "digits: must be an integer from 6 to 8"),
    (b"HW1, KEY, hotp, six", "digits: must be a decimal number"),
    (b"HW1, KEY, hotp, 6, -1", "counter: must be a decimal number"),
    (b"HW1, KEY, totp, 6, 0", "period: must be an integer from 1 to 3600"),
    (b"HW1, KEY, totp, 6, 30, md5", "algorithm: must be one of"),
    (b"HW1, KEY, totp, 6, 30, sha1, extra", "has 7 columns"),
    (b"HW\x001, KEY", "line 2"),
])
def test_oathcsv_bad_line_named_and_nothing_imported(line, message):
    data = b"GOOD, " + KEY_HEX + b"\n" + line.replace(b"KEY", KEY_HEX) + b"\n"
    with pytest.raises(InvalidParameter) as info:
        read_oathcsv(data)
    assert info.value.field == "line 2"
    assert message in str(info.value)
    assert KEY_HEX.decode() not in str(info.value)


def test_oathcsv_duplicate_serial_refused():
    data = b"HW1, " + KEY_HEX + b"\nHW1, " + KEY_HEX + b"\n"
    with pytest.raises(InvalidParameter, match="line 2: serial 'HW1' was already given by line 1"):
        read_oathcsv(data)


@pytest.mark.parametrize("data, field", [
    (b"", "oathcsv"), (b"# only a comment\n\n", "oathcsv"),
    (b"# version: 3\n", "line 1"), (b"ok\n\xff\xfe\n", "line 2"),
])
def test_oathcsv_empty_or_unreadable_refused(data, field):
    with pytest.raises(InvalidParameter) as info:
        read_oathcsv(data)
    assert info.value.field == field


def test_read_tokens_refuses_a_key_for_plain_formats():
    with pytest.raises(InvalidParameter, match="only goes with pskc"):
        read_tokens(b"HW1, " + KEY_HEX, "oathcsv", password="x")
    with pytest.raises(InvalidParameter, match="must be one of pskc, oathcsv, uri"):
        read_tokens(b"", "csv")
