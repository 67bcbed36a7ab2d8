"""Material and issuing for the RSA-type accounts (paper Algorithm 2 and rsa-prf), over the
token classes of otpfast.rsaotp.

All parameters come from the account secret, one HKDF/HMAC-DRBG label per value:

* p, q, e, d: ``rsaparams.generate_params(digits, randbits=DRBG("rsa params"))``;
* rsa-prf: the PRF key, HKDF(secret, "rsa-prf key"), 32 bytes;
* rsa-lfsr: the customer's primitive polynomial ``core.lfsr_primitive_at(20, index mod
  core.lfsr_count_primitive(20))`` (24,000 of degree 20, as in the paper) with
  ``index = DRBG("lfsr poly").getrandbits(64)``, and the start state, uniform in [1, 2^20);
* rsa-primroot: P = 999983, a generator g = 5^k mod P with k uniform among the units of
  Z_(P-1) (so g is a primitive root, one per customer), the start exponent in [0, P-1).

The account's ``counter`` is the token's stream index (0 at creation); issuing moves it to
the ``next_index`` the token returns, so no candidate is ever used twice.
"""
import math

from otpfast import core, rsaotp, rsaparams

from .derivation import HmacDrbg, _subkey

LFSR_DEGREE = 20
PRF_KEY_BYTES = 32


def derive(type: str, params: dict, secret: bytes) -> dict:
    rsa = rsaparams.generate_params(params["digits"], randbits=HmacDrbg(secret, "rsa params"))
    material = {"p": rsa.p, "q": rsa.q, "n": rsa.n, "e": rsa.e, "d": rsa.d}
    if type == "rsa-prf":
        material["key"] = _subkey(secret, "rsa-prf key", PRF_KEY_BYTES).hex()
    elif type == "rsa-lfsr":
        index = HmacDrbg(secret, "lfsr poly").getrandbits(64)
        index %= core.lfsr_count_primitive(LFSR_DEGREE)
        state = HmacDrbg(secret, "lfsr state").randrange(1, 1 << LFSR_DEGREE)
        material.update(poly_index=index, poly=core.lfsr_primitive_at(LFSR_DEGREE, index),
                        state=state)
    elif type == "rsa-primroot":
        prime = rsaparams.DEFAULT_PRIME
        drbg = HmacDrbg(secret, "primroot")
        while True:
            k = drbg.randrange(1, prime - 1)
            if math.gcd(k, prime - 1) == 1:
                break
        material.update(prime=prime, generator=pow(rsaparams.DEFAULT_GENERATOR, k, prime),
                        start=drbg.randrange(0, prime - 1))
    else:
        raise ValueError(f"not an RSA type: {type}")
    return material


def token(record):
    m = record.material
    params = rsaparams.RsaParams(m["p"], m["q"], m["n"], m["e"], m["d"])
    if record.type == "rsa-prf":
        return rsaotp.RsaPrfToken(bytes.fromhex(m["key"]), params)
    if record.type == "rsa-lfsr":
        return rsaotp.RsaLfsrToken(params, m["poly"], m["state"])
    if record.type == "rsa-primroot":
        return rsaotp.RsaPrimrootToken(params, m["prime"], m["generator"], m["start"])
    raise ValueError(f"not an RSA type: {record.type}")


def issue(record) -> tuple[str, int]:
    """(OTP, next counter)."""
    otp, next_index = token(record).generate(record.counter)
    return otp, next_index
