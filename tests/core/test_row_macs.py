"""The row-MAC kernel (otpfast.store.rows): the compiled core equals its pure-Python twin on
random rows, the twin is keyed BLAKE2b-256 of the documented encoding, and the store's
single-row row_mac gives the same MACs."""
import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otpfast._compat import NO_EXTENSIONS, load_impl

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=200),
    st.binary(max_size=300), st.binary(max_size=40).map(bytearray),
    st.binary(max_size=40).map(memoryview))
rows = st.lists(st.lists(values, max_size=16), max_size=8)
keys = st.binary(max_size=64)
tags = st.sampled_from(["a", "i", "c", "u", "t", "", "decoy"])


def _impls():
    return [load_impl("py")] + ([] if NO_EXTENSIONS else [load_impl("c")])


def _encode(value) -> bytes:
    """The encoding written out once more, independently of both twins."""
    if value is None:
        return b"N"
    if type(value) in (bool, int):
        return b"i" + str(int(value)).encode() + b";"
    if type(value) is float:
        if value == value and abs(value) < 2**53 and value == int(value):
            return b"i" + str(int(value)).encode() + b";"
        return b"f" + struct.pack(">d", value)
    if type(value) is str:
        raw = value.encode()
        return b"s" + str(len(raw)).encode() + b":" + raw
    raw = bytes(value)
    return b"b" + str(len(raw)).encode() + b":" + raw


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
@SETTINGS
@given(key=keys, tag=tags, batch=rows)
def test_row_macs_are_keyed_blake2b_of_the_encoding(impl, key, tag, batch):
    expected = [hashlib.blake2b(tag.encode() + b"\0" + b"".join(map(_encode, row)), key=key,
                                digest_size=32).digest() for row in batch]
    assert impl.row_macs(key, tag, batch) == expected
    assert [impl.row_encode(value) for row in batch for value in row] == \
        [_encode(value) for row in batch for value in row]


@pytest.mark.skipif(NO_EXTENSIONS, reason="OTPFAST_NO_EXTENSIONS=1: no compiled core")
@SETTINGS
@given(key=keys, tag=tags, batch=rows)
def test_row_macs_twins_equal(key, tag, batch):
    c, py = load_impl("c"), load_impl("py")
    assert c.row_macs(key, tag, batch) == py.row_macs(key, tag, batch)
    # generators and tuples as rows, long messages (several BLAKE2b blocks)
    long_rows = [tuple(row) * 20 for row in batch]
    assert c.row_macs(key, tag, (iter(row) for row in long_rows)) == \
        py.row_macs(key, tag, long_rows)


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
def test_row_macs_refuse_what_the_encoding_refuses(impl):
    with pytest.raises(TypeError):
        impl.row_macs(b"k", "a", [("ok", 5.5, object())])
    with pytest.raises(TypeError):       # a str subclass is encoded as bytes(value)
        impl.row_macs(b"k", "a", [(type("S", (str,), {})("x"),)])
    with pytest.raises(UnicodeEncodeError):
        impl.row_macs(b"k", "a", [("\ud800",)])
    with pytest.raises(ValueError):
        impl.row_macs(b"k" * 65, "a", [()])


@SETTINGS
@given(key=st.binary(min_size=1, max_size=64), tag=tags, batch=rows)
def test_store_row_mac_equals_the_batch(key, tag, batch):
    from otpfast.store.rows import row_mac

    mac = hashlib.blake2b(key=key, digest_size=32)
    batch = [row for row in batch if row]
    from otpfast import core
    assert core.row_macs(key, tag, batch) == [row_mac(mac, tag, row[:-1], row[-1])
                                              for row in batch]


texts = st.text(max_size=40)
entries = st.lists(st.tuples(st.one_of(st.floats(allow_nan=False), st.integers(-2**40, 2**40)),
                             texts, texts, texts, texts, texts), max_size=6)


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
@SETTINGS
@given(key=st.binary(max_size=100), seq=st.integers(0, 2**40), prev=st.binary(max_size=40),
       batch=entries, rows=st.none() | texts)
def test_audit_chain_macs_are_the_chained_audit_mac(impl, key, seq, prev, batch, rows):
    from otpfast.store.chain import audit_mac

    expected, mac, first = [], prev, rows
    for number, (when, event, account, client, source, outcome) in enumerate(batch, seq + 1):
        mac = audit_mac(key, mac, number, when, event, account, client, source, outcome, first)
        expected.append(mac)
        first = None
    assert impl.audit_chain_macs(key, seq, prev, batch, rows) == expected


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
def test_audit_chain_macs_refuse_non_text_fields(impl):
    with pytest.raises(TypeError):
        impl.audit_chain_macs(b"k", 0, b"", [(1.0, "e", b"account", "c", "s", "o")])
    with pytest.raises(ValueError):
        impl.audit_chain_macs(b"k", 0, b"", [(1.0, "e", "a")])


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
@SETTINGS
@given(key=st.binary(max_size=150), message=st.binary(max_size=300))
def test_hmac_sha256_states_equal_stdlib(impl, key, message):
    import hmac

    mac = impl.HmacSha256(key)
    assert mac(message) == mac(bytearray(message)) == hmac.digest(key, message, "sha256")
    assert mac.key == (key if len(key) <= 64 else hashlib.sha256(key).digest())


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
@SETTINGS
@given(key=st.binary(max_size=150), message=st.binary(max_size=300))
def test_hmac_md5_states_equal_stdlib(impl, key, message):
    import hmac

    mac = impl.HmacMd5(key)
    assert mac(message) == mac(bytearray(message)) == hmac.digest(key, message, "md5")


issued_rows = st.lists(st.tuples(
    st.integers(min_value=-2**63, max_value=2**63 - 1), st.text(max_size=40), st.binary(max_size=40),
    st.floats(allow_nan=False), st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
    st.sampled_from(["right", "wrong", "short", "none"])), max_size=8)


def _issued_case(key, spec):
    """Rows (id, account, digest, expires_at, ver, stored MAC) whose stored MAC is right,
    flipped, short or missing, and the expected used MACs, from hashlib directly."""
    def mac(values):
        return hashlib.blake2b(b"i\0" + b"".join(map(_encode, values)), key=key, digest_size=32).digest()
    rows, expected = [], []
    for id_, account, digest, expires_at, ver, how in spec:
        right = mac((id_, account, digest, expires_at, None, ver))
        stored = {"right": right, "wrong": bytes([right[0] ^ 1]) + right[1:], "short": right[:31],
                  "none": None}[how]
        rows.append((id_, account, digest, expires_at, ver, stored))
        ok = how == "right" and ver is not None
        expected.append(mac((id_, account, digest, expires_at, 1_700_000_000.25, 77)) if ok else None)
    return rows, expected


@pytest.mark.parametrize("impl", _impls(), ids=lambda impl: impl.__name__)
@SETTINGS
@given(key=keys, spec=issued_rows)
def test_issued_used_macs_check_then_reseal(impl, key, spec):
    """An issued row read as unused passes only with the MAC of (its values, used_at None,
    its version); it then gets the MAC of the row marked used (the verify path's one call)."""
    rows, expected = _issued_case(key, spec)
    assert impl.issued_used_macs(key, rows, 1_700_000_000.25, 77) == expected


@pytest.mark.skipif(NO_EXTENSIONS, reason="OTPFAST_NO_EXTENSIONS=1: no compiled core")
@SETTINGS
@given(key=keys, spec=issued_rows)
def test_issued_used_macs_twins_equal(key, spec):
    rows, _ = _issued_case(key, spec)
    rows = [(*row[:5], None if row[5] is None else memoryview(row[5])) for row in rows]
    c, py = load_impl("c"), load_impl("py")
    assert c.issued_used_macs(key, rows, 1_700_000_000.25, 77) == py.issued_used_macs(key, rows, 1_700_000_000.25, 77)
