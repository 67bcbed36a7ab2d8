"""The hash kernels: C twin == Python twin, thread-count independence, edge cases."""
import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpfast._compat import NO_EXTENSIONS, load_impl

ALGS = ["sha1", "sha256", "sha512"]


def _reference_hotp(key, counter, digits, algorithm):
    mac = hmac.new(key, struct.pack(">Q", counter), algorithm).digest()
    off = mac[-1] & 15
    return (int.from_bytes(mac[off:off + 4], "big") & 0x7FFFFFFF) % 10**digits


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=0, max_size=200), counter=st.integers(0, 2**64 - 40),
       count=st.integers(0, 40), digits=st.integers(1, 9), algorithm=st.sampled_from(ALGS))
def test_hotp_batch_matches_hmac(impl, key, counter, count, digits, algorithm):
    got = impl.hotp_batch(key, counter, count, digits, algorithm)
    assert list(got) == [_reference_hotp(key, counter + i, digits, algorithm) for i in range(count)]
    assert got.typecode == "I"


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled core")
@settings(max_examples=25, deadline=None)
@given(key=st.binary(min_size=1, max_size=150), counter=st.integers(0, 2**64 - 300),
       count=st.integers(0, 300), digits=st.integers(1, 9), algorithm=st.sampled_from(ALGS))
def test_hotp_batch_c_equals_py(key, counter, count, digits, algorithm):
    c, py = load_impl("c"), load_impl("py")
    assert c.hotp_batch(key, counter, count, digits, algorithm) == py.hotp_batch(key, counter, count, digits, algorithm)


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled core")
@pytest.mark.parametrize("algorithm", ALGS)
def test_hotp_batch_thread_count_does_not_matter(algorithm):
    c = load_impl("c")
    key = bytes(range(32))
    one = c.hotp_batch(key, 2**33, 70_001, 8, algorithm, num_threads=1)
    assert c.hotp_batch(key, 2**33, 70_001, 8, algorithm, num_threads=2) == one
    assert c.hotp_batch(key, 2**33, 70_001, 8, algorithm, num_threads=3) == one
    assert c.hotp_batch(key, 2**33, 70_001, 8, algorithm) == one
    assert c.hotp_batch(key, 2**33, 70_001, 8, algorithm, num_threads=-1) == one
    assert one[-1] == _reference_hotp(key, 2**33 + 70_000, 8, algorithm)


@pytest.mark.parametrize("num_threads", [0, 1.5, True])
def test_hotp_batch_rejects_num_threads(impl, num_threads):
    with pytest.raises(ValueError):
        impl.hotp_batch(b"k", 0, 1, 6, "sha1", num_threads=num_threads)


@pytest.mark.parametrize("args", [
    (b"k", 0, 1, 0, "sha1"), (b"k", 0, 1, 10, "sha1"), (b"k", -1, 1, 6, "sha1"),
    (b"k", 2**64 - 1, 2, 6, "sha1"), (b"k", 0, -1, 6, "sha1"), (b"k", 0, 1, 6, "md5"),
])
def test_hotp_batch_rejects(impl, args):
    with pytest.raises(ValueError):
        impl.hotp_batch(*args)


@settings(max_examples=30, deadline=None)
@given(seed=st.binary(max_size=100), length=st.integers(1, 50),
       algorithm=st.sampled_from(["sha1", "sha256", "sha384", "sha512"]))
def test_hashchain_batch_matches_hashlib(impl, seed, length, algorithm):
    out = impl.hashchain_batch(seed, length, algorithm)
    size = hashlib.new(algorithm).digest_size
    assert len(out) == length * size
    h, forward = seed, []
    for _ in range(length):
        h = hashlib.new(algorithm, h).digest()
        forward.append(h)
    assert [out[i * size:(i + 1) * size] for i in range(length)] == forward[::-1]


@settings(max_examples=30, deadline=None)
@given(start=st.binary(min_size=8, max_size=8), sequence=st.integers(0, 60), data=st.data(),
       algorithm=st.sampled_from(["md5", "sha1"]))
def test_rfc2289_batch_matches_stepwise(impl, start, sequence, data, algorithm):
    count = data.draw(st.integers(1, sequence + 1))
    out = impl.rfc2289_batch(start, sequence, count, algorithm)
    chain = [start]
    for _ in range(sequence):
        chain.append(impl.rfc2289_fold(hashlib.new(algorithm, chain[-1]).digest(), algorithm))
    assert [out[8 * k:8 * k + 8] for k in range(count)] == [chain[sequence - k] for k in range(count)]


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled core")
@settings(max_examples=20, deadline=None)
@given(start=st.binary(min_size=8, max_size=8), sequence=st.integers(0, 300), data=st.data(),
       algorithm=st.sampled_from(["md5", "sha1"]), seed=st.binary(max_size=40), length=st.integers(1, 200))
def test_chain_kernels_c_equals_py(start, sequence, data, algorithm, seed, length):
    c, py = load_impl("c"), load_impl("py")
    count = data.draw(st.integers(1, sequence + 1))
    assert c.rfc2289_batch(start, sequence, count, algorithm) == py.rfc2289_batch(start, sequence, count, algorithm)
    digest = hashlib.new(algorithm, seed).digest()
    assert c.rfc2289_fold(digest, algorithm) == py.rfc2289_fold(digest, algorithm)
    chain_alg = "sha1" if algorithm == "sha1" else "sha256"
    assert c.hashchain_batch(seed, length, chain_alg) == py.hashchain_batch(seed, length, chain_alg)


def test_rfc2289_fold_sha1_is_little_endian_words(impl):
    digest = bytes(range(20))
    words = struct.unpack(">5I", digest)
    expected = struct.pack("<2I", words[0] ^ words[2] ^ words[4], words[1] ^ words[3])
    assert impl.rfc2289_fold(digest, "sha1") == expected
    assert impl.rfc2289_fold(bytes(range(16)), "md5") == bytes(a ^ b for a, b in zip(range(8), range(8, 16)))


@pytest.mark.parametrize("args", [
    (b"12345678", 5, 0, "md5"), (b"12345678", 5, 7, "md5"), (b"1234567", 5, 1, "md5"),
    (b"12345678", -1, 1, "md5"), (b"12345678", 5, 1, "sha256"),
])
def test_rfc2289_batch_rejects(impl, args):
    with pytest.raises(ValueError):
        impl.rfc2289_batch(*args)
