"""OTPs as people type them (issue 10 item 7): "123 456" as authenticator apps show it is
accepted on every path (the service strips ASCII spaces once, at the start of verify_many);
non-ASCII digits are refused like any wrong OTP."""
import base64

import pyotp
import pytest

from otpfast.errors import InvalidToken
from otpfast.services import otp_input
from otpfast.services.distribution import VerifyItem


def _totp(store, name):
    record = store.account(name)
    return pyotp.TOTP(base64.b32encode(bytes.fromhex(record.material["key"])).decode())


@pytest.mark.parametrize("typed,meant", [
    ("123 456", "123456"), (" 123456 ", "123456"), ("1 2 3 4 5 6", "123456"),
    ("12345678", "12345678"), ("ab12 CD34", "ab12CD34"),
    ("pin word123 456", "pin word123 456"),     # other characters: left as typed
    ("A BAD CAB DAB FAD BEE", "A BAD CAB DAB FAD BEE"),   # words, not digit groups
    ("١٢٣ ٤٥٦", "١٢٣ ٤٥٦"), ("123\t456", "123\t456"), ("123\u00a0456", "123\u00a0456"),
])
def test_otp_input_normalise_strips_only_ascii_spaces_between_digits(typed, meant):
    assert otp_input.normalise(typed) == meant


def test_otp_input_normalise_items_keeps_the_list_without_spaces():
    items = [VerifyItem("a", "123456", "s"), VerifyItem("b", None, "s")]
    assert otp_input.normalise_items(items) is items
    spaced = otp_input.normalise_items([VerifyItem("a", "123 456", "s"), items[0]])
    assert [item.otp for item in spaced] == ["123456", "123456"] and spaced[1] is items[0]


@pytest.mark.parametrize("typed", ["١٢٣٤٥٦", "１２３４５６", "۱۲۳۴۵۶"])
def test_otp_input_names_non_ascii_digits(typed):
    assert "non-ASCII digits" in otp_input.typed_otp_problem(typed)


def test_otp_input_plain_otps_have_no_problem():
    assert otp_input.typed_otp_problem("123 456") is None
    assert "non-ASCII characters" in otp_input.typed_otp_problem("12345é")


def test_otp_input_spaced_totp_is_accepted_once_and_not_a_failure(admin, distribution, store, clock):
    admin.add_account("t", "totp")
    otp = _totp(store, "t").at(clock())
    distribution.verify("t", f"{otp[:3]} {otp[3:]}", source="app")
    assert store.account("t").failures == 0
    with pytest.raises(InvalidToken):                      # still single use, spaced or not
        distribution.verify("t", otp, source="app")


def test_otp_input_spaced_batch_decides_in_order(admin, distribution, store, clock):
    admin.add_account("t", "totp")
    otp = _totp(store, "t").at(clock())
    spaced = f"{otp[:3]} {otp[3:]}"
    assert distribution.verify_many([VerifyItem("t", spaced, "a"), VerifyItem("t", otp, "a")]) == [True, False]


@pytest.mark.parametrize("zero", ["\u0660", "\uff10"], ids=["arabic-indic", "fullwidth"])
def test_otp_input_non_ascii_digits_refused_by_the_service(admin, distribution, store, clock, zero):
    """The network's view: the same generic refusal as any wrong OTP, even when the digits
    mean the right OTP."""
    admin.add_account("t", "totp")
    otp = _totp(store, "t").at(clock())
    translated = otp.translate(str.maketrans("0123456789", "".join(chr(ord(zero) + i) for i in range(10))))
    assert translated != otp and int(translated) == int(otp)
    with pytest.raises(InvalidToken):
        distribution.verify("t", translated, source="app")
    distribution.verify("t", otp, source="app")            # the real one still works
