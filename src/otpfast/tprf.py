"""Threshold PRF over ristretto255: RFC 9497's OPRF (ristretto255-SHA512) used non-obliviously,
its key Shamir-shared t-of-n with Feldman commitments.

    F_k(x) = Finalize(x, H1(x)^k)          H1 = HashToGroup, Finalize = SHA-512 (RFC 9497 §3.3)

A share server holding k_j = f(j) returns H1(x)^{k_j} with a DLEQ proof against g^{k_j}
(RFC 9497 §2.2.1, batched); any t partials combine into H1(x)^k by Lagrange interpolation in
the exponent. Pure recipe layer: bytes in, bytes out, no I/O. The group and every scalar
operation mod the group order come from libsodium through ``otpfast.core``.

Elements are 32-byte ristretto255 encodings (never the identity), scalars 32 bytes
little-endian below the group order. Bad values raise InvalidElement / InvalidScalar
(both TprfError, an InvalidParameter); other bad arguments raise InvalidParameter.
"""
import functools
import hashlib
import hmac
import operator

from . import core
from .errors import InvalidElement, InvalidParameter, InvalidScalar, TprfError

__all__ = [
    "ELEMENT_BYTES", "SCALAR_BYTES", "OUTPUT_BYTES", "PROOF_BYTES", "MODE_OPRF", "MODE_VOPRF",
    "MAX_INDEX", "MIN_DIGITS", "MAX_DIGITS",
    "require", "context_string", "hash_to_group", "hash_to_scalar", "derive_key_pair",
    "random_scalar", "scalar_from_int", "scalar_add", "scalar_sub", "scalar_mul",
    "scalar_negate", "scalar_invert", "is_element", "element_add",
    "public_key", "evaluate", "evaluate_many", "evaluate_inputs", "finalize", "prf",
    "prove", "verify_proof",
    "random_polynomial", "poly_eval", "split", "feldman_commitments", "commitment_at",
    "verify_share", "lagrange_coefficients", "combine", "recover_secret", "otp_digits",
]

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
OUTPUT_BYTES = 64
PROOF_BYTES = 2 * SCALAR_BYTES
MODE_OPRF = 0
MODE_VOPRF = 1
#: Share indices run 1..MAX_INDEX (they are the x of Shamir's polynomial, never 0).
MAX_INDEX = 65535
MIN_DIGITS = 6
MAX_DIGITS = 8
_MAX_INPUT = 65535  # RFC 9497 frames inputs with a 2-byte length
_ZERO = bytes(SCALAR_BYTES)
_IDENTITY = bytes(ELEMENT_BYTES)


# ------------------------------------------------------------------ helpers

def _mode(mode):
    if type(mode) is not int or mode not in (MODE_OPRF, MODE_VOPRF):
        raise InvalidParameter("mode", "must be MODE_OPRF (0) or MODE_VOPRF (1)")
    return mode


def _data(data, field="data"):
    try:
        data = bytes(memoryview(data))
    except TypeError:
        raise InvalidParameter(field, f"must be bytes, got {type(data).__name__}") from None
    if len(data) > _MAX_INPUT:
        raise InvalidParameter(field, f"must be at most {_MAX_INPUT} bytes")
    return data


def _index(index, field="index"):
    if isinstance(index, bool):
        raise InvalidParameter(field, "must be an integer")
    try:
        index = operator.index(index)
    except TypeError:
        raise InvalidParameter(field, "must be an integer") from None
    if not 1 <= index <= MAX_INDEX:
        raise InvalidParameter(field, f"must be 1..{MAX_INDEX}, got {index}")
    return index


def _list(values, field):
    if isinstance(values, (bytes, bytearray, memoryview)):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise InvalidParameter(field, "must be a sequence of byte strings") from None


def _framed(value):
    return len(value).to_bytes(2, "big") + value


def require():
    """Raise ThresholdUnavailable (exit early, with the install hint) unless libsodium is
    installed; without it every function below that touches the group raises it too."""
    core.require_ristretto()


def context_string(mode):
    """RFC 9497 contextString: "OPRFV1-" || I2OSP(mode, 1) || "-ristretto255-SHA512"."""
    return b"OPRFV1-" + bytes([_mode(mode)]) + b"-ristretto255-SHA512"


# ------------------------------------------------------------ scalars, group

def scalar_from_int(n):
    """The scalar n, 0 <= n < the group order."""
    if isinstance(n, bool):
        raise InvalidParameter("n", "must be an integer")
    try:
        n = operator.index(n)
    except TypeError:
        raise InvalidParameter("n", "must be an integer") from None
    if not 0 <= n < core.R255_ORDER:
        raise InvalidScalar("n", "must be in [0, the group order)")
    return n.to_bytes(SCALAR_BYTES, "little")


def random_scalar():
    """A uniform non-zero scalar (libsodium's CSPRNG)."""
    return core.r255_scalar_random()


scalar_add = core.r255_scalar_add
scalar_sub = core.r255_scalar_sub
scalar_mul = core.r255_scalar_mul
scalar_negate = core.r255_scalar_negate
scalar_invert = core.r255_scalar_invert
is_element = core.r255_is_valid


def element_add(p, q):
    """p + q; raises InvalidElement if the sum is the identity."""
    total = core.r255_add(p, q)
    if total == _IDENTITY:
        raise InvalidElement("q", "p + q is the identity")
    return total


def hash_to_group(data, mode=MODE_OPRF):
    """RFC 9497 HashToGroup: hash_to_ristretto255 with DST "HashToGroup-" || contextString."""
    return core.r255_hash_to_group(_data(data), b"HashToGroup-" + context_string(mode))


def hash_to_scalar(data, dst):
    """RFC 9497 HashToScalar with the given DST (expand_message_xmd SHA-512, 64 bytes, mod order)."""
    return core.r255_hash_to_scalar(data, dst)


def _hash_to_scalar(data, mode):
    return core.r255_hash_to_scalar(data, b"HashToScalar-" + context_string(mode))


def derive_key_pair(seed, info, mode=MODE_OPRF):
    """RFC 9497 §3.2.1 DeriveKeyPair: (skS, pkS) from a 32-byte seed and an info string."""
    seed = _data(seed, "seed")
    if len(seed) != 32:
        raise InvalidParameter("seed", "must be 32 bytes")
    derive_input = seed + _framed(_data(info, "info"))
    dst = b"DeriveKeyPair" + context_string(mode)
    for counter in range(256):
        sk = core.r255_hash_to_scalar(derive_input + bytes([counter]), dst)
        if sk != _ZERO:
            return sk, public_key(sk)
    raise TprfError("seed", "DeriveKeyPair found no key")  # pragma: no cover - probability 2^-64000


# ----------------------------------------------------------------- the PRF

def public_key(k):
    """g^k."""
    return core.r255_mul_base(k)


def evaluate(k, element):
    """element^k (BlindEvaluate; H1(x)^k_j for a share server)."""
    return core.r255_mul(k, element)


def evaluate_many(k, elements, num_threads=None):
    """[e^k for e in elements], in the core with the GIL released."""
    return core.r255_mul_many(k, elements, num_threads)


def evaluate_inputs(k, inputs, mode=MODE_OPRF, num_threads=None):
    """[H1(x)^k for x in inputs]: hash and evaluate in one pass of the core."""
    inputs = [_data(x, "inputs") for x in _list(inputs, "inputs")]
    return core.r255_hash_mul_many(k, inputs, b"HashToGroup-" + context_string(mode), num_threads)


def finalize(data, element, mode=MODE_OPRF):
    """RFC 9497 Finalize (OPRF and VOPRF modes): SHA-512 over the framed input and element."""
    _mode(mode)
    data = _data(data)
    if not core.r255_is_valid(element):
        raise InvalidElement("element", "is not a ristretto255 element (or is the identity)")
    return hashlib.sha512(_framed(data) + _framed(bytes(element)) + b"Finalize").digest()


def prf(k, data, mode=MODE_OPRF):
    """F_k(x) = Finalize(x, H1(x)^k): what t combined partials give, computed with k itself."""
    return finalize(data, evaluate(k, hash_to_group(data, mode)), mode)


# -------------------------------------------------------------------- DLEQ

def _composites(public, elements, evaluated, mode, k=None):
    """RFC 9497 ComputeComposites (ComputeCompositesFast when k is given): (M, Z)."""
    if len(elements) != len(evaluated):
        raise InvalidParameter("evaluated", "must be as many as the elements")
    if not 1 <= len(elements) <= 0xFFFF:
        raise InvalidParameter("elements", "must hold 1..65535 elements")
    seed_dst = b"Seed-" + context_string(mode)
    seed = hashlib.sha512(_framed(public) + _framed(seed_dst)).digest()
    weights = [
        _hash_to_scalar(_framed(seed) + i.to_bytes(2, "big") + _framed(c) + _framed(d)
                        + b"Composite", mode)
        for i, (c, d) in enumerate(zip(elements, evaluated))
    ]
    m = core.r255_msm(weights, elements)
    if m == _IDENTITY:
        raise InvalidElement("elements", "their composite is the identity")
    z = core.r255_mul(k, m) if k is not None else core.r255_msm(weights, evaluated)
    if z == _IDENTITY:
        raise InvalidElement("evaluated", "their composite is the identity")
    return m, z


def _mul_base_or_identity(s):
    return _IDENTITY if core.r255_scalar_add(s, _ZERO) == _ZERO else core.r255_mul_base(s)


def _add_or_identity(p, q):
    if p == _IDENTITY:
        return q
    return p if q == _IDENTITY else core.r255_add(p, q)


def _challenge(public, m, z, t2, t3, mode):
    transcript = b"".join(_framed(v) for v in (public, m, z, t2, t3)) + b"Challenge"
    return _hash_to_scalar(transcript, mode)


def _elements(values, field):
    values = [bytes(v) if isinstance(v, (bytearray, memoryview)) else v
              for v in _list(values, field)]
    for v in values:
        if not core.r255_is_valid(v):
            raise InvalidElement(field, "holds a value that is not a ristretto255 element")
    return values


def prove(k, public, elements, evaluated, *, nonce=None, mode=MODE_VOPRF):
    """RFC 9497 GenerateProof: a DLEQ proof (c || s, 64 bytes) that log_g(public) equals
    log_{elements[i]}(evaluated[i]) for every i, batched through a composite.
    nonce (the proof's random scalar r) exists for the RFC's test vectors only."""
    _mode(mode)
    elements = _elements(elements, "elements")
    evaluated = _elements(evaluated, "evaluated")
    public = _elements([public], "public")[0]
    m, z = _composites(public, elements, evaluated, mode, k)
    r = random_scalar() if nonce is None else nonce
    t2 = core.r255_mul_base(r)
    t3 = core.r255_mul(r, m)
    c = _challenge(public, m, z, t2, t3, mode)
    s = core.r255_scalar_sub(r, core.r255_scalar_mul(c, k))
    return c + s


def verify_proof(public, elements, evaluated, proof, *, mode=MODE_VOPRF):
    """RFC 9497 VerifyProof. False for a proof that fails or a malformed evaluated element
    or proof (what a lying share server sends); InvalidParameter / TprfError for a bad
    public key or elements (the verifier's own inputs)."""
    _mode(mode)
    elements = _elements(elements, "elements")
    public = _elements([public], "public")[0]
    try:
        evaluated = _elements(evaluated, "evaluated")
        proof = bytes(memoryview(proof))
        if len(proof) != PROOF_BYTES:
            return False
        c, s = proof[:SCALAR_BYTES], proof[SCALAR_BYTES:]
        m, z = _composites(public, elements, evaluated, mode)
        t2 = _add_or_identity(_mul_base_or_identity(s), core.r255_msm([c], [public]))
        t3 = core.r255_msm([s, c], [m, z])
    except (TprfError, TypeError):
        return False
    except InvalidParameter as exc:
        if exc.field == "evaluated":
            return False
        raise
    if _IDENTITY in (t2, t3):
        return False
    return hmac.compare_digest(_challenge(public, m, z, t2, t3, mode), c)


# ------------------------------------------------------- Shamir and Feldman

def random_polynomial(threshold, constant=None):
    """Coefficients a_0..a_{t-1} (a_0 = constant, or random), all random non-zero scalars."""
    threshold = _index(threshold, "threshold")
    coeffs = [random_scalar() for _ in range(threshold)]
    if constant is not None:
        core.r255_mul_base(constant)  # validates: a canonical non-zero scalar
        coeffs[0] = bytes(constant)
    return coeffs


def poly_eval(coeffs, index):
    """f(index) = sum a_i index^i mod the group order (Horner)."""
    coeffs = _list(coeffs, "coeffs")
    if not coeffs:
        raise InvalidParameter("coeffs", "must not be empty")
    x = scalar_from_int(_index(index))
    acc = core.r255_scalar_add(coeffs[-1], _ZERO)
    for a in reversed(coeffs[:-1]):
        acc = core.r255_scalar_add(core.r255_scalar_mul(acc, x), a)
    return acc


def split(secret, threshold, count):
    """Shamir shares [(j, f(j)) for j in 1..count] of secret with f of degree threshold - 1.
    A dealer's tool (and the tests'): the DKG never has the secret in one place."""
    threshold = _index(threshold, "threshold")
    count = _index(count, "count")
    if threshold > count:
        raise InvalidParameter("threshold", f"must be at most count ({count})")
    while True:
        coeffs = random_polynomial(threshold, secret)
        shares = [(j, poly_eval(coeffs, j)) for j in range(1, count + 1)]
        if all(s != _ZERO for _, s in shares):  # a zero share: probability ~count / 2^252
            return shares


def feldman_commitments(coeffs):
    """[g^a_i]: the public commitments to a polynomial's coefficients."""
    return [core.r255_mul_base(a) for a in _list(coeffs, "coeffs")]


def commitment_at(commitments, index):
    """g^f(index) = prod C_i^(index^i), from the commitments alone."""
    commitments = _list(commitments, "commitments")
    if not commitments:
        raise InvalidParameter("commitments", "must not be empty")
    x = scalar_from_int(_index(index))
    powers = [scalar_from_int(1)]
    for _ in commitments[1:]:
        powers.append(core.r255_scalar_mul(powers[-1], x))
    return core.r255_msm(powers, commitments)


def verify_share(index, share, commitments):
    """Whether g^share == g^f(index) under the dealer's commitments. False for a share that
    does not match or is not a non-zero scalar; InvalidElement for malformed commitments."""
    expected = commitment_at(commitments, index)
    try:
        actual = core.r255_mul_base(share)
    except (TprfError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def lagrange_coefficients(indices):
    """{i: lambda_i}: the Lagrange coefficients at 0 for distinct indices."""
    indices = [_index(i, "indices") for i in _list(indices, "indices")]
    if not indices or len(set(indices)) != len(indices):
        raise InvalidParameter("indices", "must be distinct and not empty")
    return dict(zip(sorted(indices), _lagrange(tuple(sorted(indices)))))


@functools.lru_cache(maxsize=256)
def _lagrange(indices):
    """The coefficients for sorted indices; cached, as a cluster meets the same quorums again."""
    xs = [scalar_from_int(i) for i in indices]
    out = []
    for i, xi in enumerate(xs):
        num = den = scalar_from_int(1)
        for j, xj in enumerate(xs):
            if j != i:
                num = core.r255_scalar_mul(num, xj)
                den = core.r255_scalar_mul(den, core.r255_scalar_sub(xj, xi))
        out.append(core.r255_scalar_mul(num, core.r255_scalar_invert(den)))
    return tuple(out)


def _indexed(values, field):
    if not isinstance(values, dict):
        try:
            values = dict(values)
        except (TypeError, ValueError):
            raise InvalidParameter(field, "must map share indices to values") from None
    if not values:
        raise InvalidParameter(field, "must not be empty")
    return values


def combine(partials):
    """H1(x)^k from {j: H1(x)^k_j} for t distinct indices: interpolation in the exponent."""
    partials = _indexed(partials, "partials")
    weights = lagrange_coefficients(list(partials))
    total = core.r255_msm([weights[j] for j in partials], list(partials.values()))
    if total == _IDENTITY:
        raise InvalidElement("partials", "combine to the identity")
    return total


def recover_secret(shares):
    """k from {j: k_j} for t distinct indices (tests and resharing; never on a share server)."""
    shares = _indexed(shares, "shares")
    weights = lagrange_coefficients(list(shares))
    total = _ZERO
    for j, s in shares.items():
        total = core.r255_scalar_add(total, core.r255_scalar_mul(weights[j], s))
    return total


# -------------------------------------------------------------------- OTPs

def otp_digits(output, digits):
    """A `digits`-digit decimal OTP (6..8) from a Finalize output: the 512-bit big-endian
    integer mod 10^digits. No rejection loop needed: the bias is below 10^8 / 2^512."""
    try:
        output = bytes(memoryview(output))
    except TypeError:
        raise InvalidParameter("output", "must be bytes") from None
    if len(output) != OUTPUT_BYTES:
        raise InvalidParameter("output", f"must be {OUTPUT_BYTES} bytes")
    if isinstance(digits, bool) or not isinstance(digits, int) or not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise InvalidParameter("digits", f"must be {MIN_DIGITS}..{MAX_DIGITS}")
    return str(int.from_bytes(output, "big") % 10 ** digits).zfill(digits)
