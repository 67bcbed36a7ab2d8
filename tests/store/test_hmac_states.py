"""HmacSha256 (precomputed inner/outer SHA-256 states) is RFC 2104 HMAC-SHA256: the RFC 4231
test cases, and equality with the standard library for keys around the block size."""
import hashlib
import hmac

import pytest
from hypothesis import given, strategies as st

from otpfast.store.atrest import AtRestKeys, HmacSha256, _derive
from otpfast.store.common import chain_entries

# RFC 4231 section 4: test cases 1, 2, 6 (HMAC-SHA-256 column)
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]


@pytest.mark.parametrize("key, message, expected", RFC4231)
def test_hmac_states_rfc4231(key, message, expected):
    assert HmacSha256(key)(message).hex() == expected


@given(key=st.binary(max_size=150), message=st.binary(max_size=300))
def test_hmac_states_equal_stdlib(key, message):
    mac = HmacSha256(key)
    assert mac(message) == hmac.digest(key, message, "sha256")
    assert mac(message) == mac(message)          # the keyed states are never consumed


def test_chain_entries_same_with_key_or_states():
    keys = AtRestKeys(bytes(range(32)))
    entries = [(1.5, "verify", f"a{i % 3}", "-", "net", "accepted" if i % 2 else "rejected")
               for i in range(10)]
    head = (7, hashlib.sha256(b"x").digest())
    assert chain_entries(keys.audit_key, head, entries) == chain_entries(keys.audit_mac, head,
                                                                         entries)
    otp_key = _derive(bytes(range(32)), b"otpfast otp digest")
    assert keys.otp_digest("a", "123456") == hmac.digest(otp_key, b"a\x00123456", "sha256")
