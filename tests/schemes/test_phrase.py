import hashlib
import struct

import pytest

from otpfast.errors import InvalidParameter
from otpfast.phrase import DEFAULT_HASHES, OTHER_HASH, Phrase, encode_input, secret_phrase

R = bytes(range(32))


@pytest.mark.parametrize("authority,algorithm", [(1, "sha256"), (2, "sha512"), (3, "sha384"), (4, "sha512")])
def test_default_mapping_and_known_answer(authority, algorithm):
    assert DEFAULT_HASHES[authority] == algorithm
    phrase = secret_phrase(authority, 123456789, random_bytes=R)
    message = b"otpfast secret phrase v1\x00" + struct.pack(">I", 4) + (123456789).to_bytes(4, "big") + R
    message += struct.pack(">I", authority)
    digest = hashlib.new(algorithm, message).digest()
    assert phrase == Phrase(int.from_bytes(digest, "big"), digest, algorithm)
    assert str(phrase.integer) not in repr(phrase)


def test_encoding_is_unambiguous():
    # (value 0x0102, authority 3) and (value 0x01, ...) must never share an encoding
    a = encode_input(3, 0x0102, R)
    b = encode_input(3, 0x01, R)
    assert a != b and encode_input(1, 0, R) != encode_input(1, 1, R)
    assert len(encode_input(1, 0, R)) == 25 + 4 + 1 + 32 + 4


def test_fresh_randomness_by_default():
    assert secret_phrase(1, 42).data != secret_phrase(1, 42).data


def test_mapping_is_configurable():
    phrase = secret_phrase(7, 1, random_bytes=R, hashes={7: "sha3_256"})
    assert phrase.algorithm == "sha3_256" and len(phrase.data) == 32


@pytest.mark.parametrize("args,kwargs,field", [
    ((0, 1), {}, "authority"), ((2**31, 1), {}, "authority"), ((1, -1), {}, "value"), ((1, 1), dict(random_bytes=b"x" * 31), "random_bytes"),
    ((1, 1), dict(hashes={1: "md5"}), "hashes"), ((1, True), {}, "value"),
])
def test_phrase_rejects(args, kwargs, field):
    with pytest.raises(InvalidParameter) as info:
        secret_phrase(*args, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("authority", [5, 6, 7, 2**31 - 1])
def test_phrase_any_created_authority_uses_the_documented_hash(authority):
    phrase = secret_phrase(authority, 99, random_bytes=R)
    assert phrase.algorithm == OTHER_HASH == "sha512"
    assert phrase.data == hashlib.sha512(encode_input(authority, 99, R)).digest()
