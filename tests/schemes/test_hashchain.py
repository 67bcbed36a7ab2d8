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
    ((b"short", 5), "seed"), ((bytes(257), 5), "seed"), ((SEED, 0), "length"), ((SEED, 5, "md5"), "algorithm"),
])
def test_chain_rejects(args, field):
    with pytest.raises(InvalidParameter) as info:
        HashChain(*args)
    assert info.value.field == field


# --- fuzzing the OTP input: arbitrary text is accepted or InvalidToken, nothing else -----------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OTP_TEXTS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="0123456789abcdefABCDEF \t\n", max_size=300),
    st.binary(max_size=64).map(bytes.hex),
)


@given(text=_OTP_TEXTS, algorithm=st.sampled_from(["sha1", "sha256", "sha384", "sha512"]))
@example(text=b"00" * 32, algorithm="sha256")
@example(text=None, algorithm="sha256")
@example(text="0" * 100_000, algorithm="sha256")
@settings(max_examples=2000, deadline=None)
def test_chain_verify_fuzz_raises_only_invalid_token(text, algorithm):
    chain = HashChain(SEED, 2, algorithm)
    server = ChainVerifier.enrol(chain)
    try:
        server.verify(text)
    except InvalidToken:
        assert server.remaining == 2 and server.last == chain.anchor
        return
    assert server.remaining == 1 and server.last == chain.value(1)


def test_chain_rejects_wrong_length_before_hashing(monkeypatch):
    chain = HashChain(SEED, 2)
    calls = []
    real_new = hashlib.new
    monkeypatch.setattr(hashlib, "new", lambda *a, **k: calls.append(a) or real_new(*a, **k))
    for bad in ["00" * 15, "0" * 65, "00" * 257, "00" * 10_000]:
        with pytest.raises(InvalidToken):
            verify_chain(bad, chain.anchor, 2)
    assert calls == []


@pytest.mark.parametrize("algorithm,seed_bytes", [("sha1", 32), ("sha512", 16), ("sha256", 256)])
def test_last_use_is_the_seed_whatever_its_length(algorithm, seed_bytes):
    chain = HashChain(bytes(i % 256 for i in range(seed_bytes)), 2, algorithm)
    server = ChainVerifier.enrol(chain)
    assert server.verify(" " + chain.otp(1).upper() + "\n") == 1
    assert server.verify(chain.otp(2)) == 0
