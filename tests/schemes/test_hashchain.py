import hashlib

import pytest

from otpfast.errors import InvalidParameter, InvalidToken
from otpfast.hashchain import ChainVerifier, HashChain, verify_chain

SEED = bytes(range(32))


def _h(algorithm, x, times):
    for _ in range(times):
        x = hashlib.new(algorithm, x).digest()
    return x


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
def test_chain_values_follow_algorithm_1(algorithm):
    chain = HashChain(SEED, 10, algorithm)
    assert chain.anchor == _h(algorithm, SEED, 10)
    for i in range(1, 11):
        assert chain.value(i) == _h(algorithm, SEED, 10 - i)
    assert chain.otp(10) == SEED.hex()
    assert chain.otps()[0] == _h(algorithm, SEED, 9).hex()


def test_verifier_accepts_in_order_and_advances():
    chain = HashChain(SEED, 5)
    server = ChainVerifier.enrol(chain)
    for i in range(1, 6):
        assert server.verify(chain.otp(i)) == 5 - i
    assert server.exhausted
    with pytest.raises(InvalidToken):
        server.verify(chain.otp(5))


def test_verifier_rejects_replay_skip_and_garbage():
    chain = HashChain(SEED, 5)
    server = ChainVerifier.enrol(chain)
    server.verify(chain.otp(1))
    with pytest.raises(InvalidToken):
        server.verify(chain.otp(1))  # replay
    with pytest.raises(InvalidToken):
        server.verify(chain.otp(3))  # skipped one
    for bad in ["", "zz", "abc", "١٢", chain.anchor.hex()]:
        with pytest.raises(InvalidToken):
            server.verify(bad)
    assert server.remaining == 4
    assert server.verify(chain.otp(2).upper()) == 3


def test_verify_chain_pure_function():
    chain = HashChain(SEED, 3, "sha512")
    last, remaining = verify_chain(chain.otp(1), chain.anchor, 3, "sha512")
    assert (last, remaining) == (chain.value(1), 2)
    with pytest.raises(InvalidToken):
        verify_chain(chain.otp(1), chain.anchor, 0, "sha512")


@pytest.mark.parametrize("args,field", [
    ((b"short", 5), "seed"), ((SEED, 0), "length"), ((SEED, 5, "md5"), "algorithm"),
])
def test_chain_rejects(args, field):
    with pytest.raises(InvalidParameter) as info:
        HashChain(*args)
    assert info.value.field == field
