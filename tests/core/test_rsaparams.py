import math
import random

import gmpy2
import pytest

from otpfast import rsaparams
from otpfast.errors import InvalidParameter
from otpfast.rsaparams import RsaParams, generate_params, validate_params


def test_paper_modulus():
    params = validate_params(991, 997, 65537)
    assert params.n == 988027 == rsaparams.PAPER_N
    assert params.digits == 6
    assert params.e * params.d % math.lcm(990, 996) == 1


@pytest.mark.parametrize("digits", range(2, 10))
def test_generate_params_has_exact_digits(digits):
    for _ in range(10):
        p = generate_params(digits)
        assert isinstance(p, RsaParams)
        assert len(str(p.n - 1)) == digits == p.digits
        assert len(str(p.n)) == digits
        assert gmpy2.is_prime(p.p) and gmpy2.is_prime(p.q) and p.p != p.q
        assert p.n == p.p * p.q
        assert 1 < p.e < p.lam and math.gcd(p.e, p.lam) == 1
        assert p.e * p.d % p.lam == 1
        a = 12345 % p.n or 1
        if math.gcd(a, p.n) == 1:
            assert pow(pow(a, p.e, p.n), p.d, p.n) == a


def test_generate_params_deterministic_from_injected_randbits():
    one = generate_params(6, randbits=random.Random(7).getrandbits)
    two = generate_params(6, randbits=random.Random(7).getrandbits)
    other = generate_params(6, randbits=random.Random(8).getrandbits)
    assert one == two != other


@pytest.mark.parametrize("digits", [1, 10, "6", True])
def test_generate_params_bad_digits(digits):
    with pytest.raises(InvalidParameter) as info:
        generate_params(digits)
    assert info.value.field == "digits"


@pytest.mark.parametrize("p, q, e, field", [
    (991, 996, 65537, "q"),
    (990, 997, 65537, "p"),
    (1, 997, 65537, "p"),
    (991, 991, 65537, "q"),
    (991, 997, 1, "e"),
    (991, 997, 3, "e"),               # 3 divides lambda
    (991, 997, 164341, "e"),          # e = 1 mod lambda
    (991.0, 997, 65537, "p"),
])
def test_validate_params_errors_name_the_field(p, q, e, field):
    with pytest.raises(InvalidParameter) as info:
        validate_params(p, q, e)
    assert info.value.field == field


def test_default_primitive_root():
    prime, g = rsaparams.DEFAULT_PRIME, rsaparams.DEFAULT_GENERATOR
    assert prime == 999983 and gmpy2.is_prime(prime)
    # by definition: g^i for i in [1, P-1) never hits 1, and no smaller g does the same
    assert rsaparams.is_primitive_root(g, prime)
    assert rsaparams.smallest_primitive_root(prime) == g
    for h in range(2, g):
        assert not rsaparams.is_primitive_root(h, prime)
    seen, x = set(), 1
    for _ in range(prime - 1):
        x = x * g % prime
        seen.add(x)
    assert len(seen) == prime - 1


def test_random_e_is_valid():
    for _ in range(50):
        e = rsaparams.random_e(991, 997)
        assert validate_params(991, 997, e).e == e
