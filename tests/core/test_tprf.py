"""otpfast.tprf: RFC 9497 ristretto255-SHA512 vectors (OPRF, VOPRF with DLEQ proofs), the
threshold scheme (Shamir, Feldman, combine) and the attacks on it, at small scale."""
import itertools
import json
import secrets

import pytest

from otpfast import tprf
from otpfast.errors import InvalidElement, InvalidParameter, InvalidScalar, TprfError

from .conftest import VECTORS

RFC = json.loads((VECTORS / "rfc9497_ristretto255.json").read_text())
MODES = [pytest.param(RFC["OPRF"], id="oprf"), pytest.param(RFC["VOPRF"], id="voprf")]
ORDER = (1 << 252) + 27742317777372353535851937790883648493
IDENTITY = bytes(32)
# RFC 9496 Appendix A.2: a non-canonical field encoding and a negative one; plus all-ones
BAD_ELEMENTS = [
    IDENTITY,
    bytes.fromhex("00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000"),
    b"\xff" * 32,
    b"\x00" * 31,
    b"\x00" * 33,
]
BAD_SCALARS = [
    ORDER.to_bytes(32, "little"),
    (ORDER + 1).to_bytes(32, "little"),
    b"\xff" * 32,
    b"\x01" * 31,
    b"\x01" * 33,
]


def _h(values):
    return [bytes.fromhex(v) for v in values]


def _key(suite):
    sk, pk = tprf.derive_key_pair(bytes.fromhex(suite["Seed"]), bytes.fromhex(suite["KeyInfo"]),
                                  suite["mode"])
    return sk, pk


# ------------------------------------------------------------------ RFC 9497

@pytest.mark.parametrize("suite", MODES)
def test_tprf_derive_key_pair_matches_rfc(suite):
    sk, pk = _key(suite)
    assert sk.hex() == suite["skSm"]
    if "pkSm" in suite:
        assert pk.hex() == suite["pkSm"]
        assert tprf.public_key(sk) == pk


@pytest.mark.parametrize("suite", MODES)
def test_tprf_blind_evaluate_finalize_match_rfc(suite):
    sk, _ = _key(suite)
    mode = suite["mode"]
    for vector in suite["vectors"]:
        inputs, blinds = _h(vector["Input"]), _h(vector["Blind"])
        blinded = [tprf.evaluate(r, tprf.hash_to_group(x, mode)) for x, r in zip(inputs, blinds)]
        assert [b.hex() for b in blinded] == vector["BlindedElement"]
        evaluated = tprf.evaluate_many(sk, blinded)
        assert [e.hex() for e in evaluated] == vector["EvaluationElement"]
        outputs = [tprf.finalize(x, tprf.evaluate(tprf.scalar_invert(r), e), mode)
                   for x, r, e in zip(inputs, blinds, evaluated)]
        assert [o.hex() for o in outputs] == vector["Output"]


@pytest.mark.parametrize("suite", MODES)
def test_tprf_prf_is_the_rfc_output_without_blinding(suite):
    sk, _ = _key(suite)
    for vector in suite["vectors"]:
        inputs = _h(vector["Input"])
        assert [tprf.prf(sk, x, suite["mode"]).hex() for x in inputs] == vector["Output"]
        partials = tprf.evaluate_inputs(sk, inputs, suite["mode"])
        assert [tprf.finalize(x, p).hex() for x, p in zip(inputs, partials)] == vector["Output"]


def test_tprf_prove_matches_rfc_and_verifies():
    suite = RFC["VOPRF"]
    sk, pk = _key(suite)
    for vector in suite["vectors"]:
        blinded, evaluated = _h(vector["BlindedElement"]), _h(vector["EvaluationElement"])
        proof = tprf.prove(sk, pk, blinded, evaluated,
                           nonce=bytes.fromhex(vector["ProofRandomScalar"]))
        assert proof.hex() == vector["Proof"]
        assert tprf.verify_proof(pk, blinded, evaluated, bytes.fromhex(vector["Proof"]))


# ---------------------------------------------------------------------- DLEQ

@pytest.fixture(scope="module")
def cluster():
    """k shared 3-of-5; the public key and each share server's g^k_j."""
    k = tprf.random_scalar()
    coeffs = tprf.random_polynomial(3, k)
    shares = {j: tprf.poly_eval(coeffs, j) for j in range(1, 6)}
    return {"k": k, "public": tprf.public_key(k), "shares": shares,
            "publics": {j: tprf.public_key(s) for j, s in shares.items()},
            "commitments": tprf.feldman_commitments(coeffs)}


def _partial(cluster, j, x):
    h = tprf.hash_to_group(x, tprf.MODE_VOPRF)
    e = tprf.evaluate(cluster["shares"][j], h)
    return h, e, tprf.prove(cluster["shares"][j], cluster["publics"][j], [h], [e])


def test_tprf_dleq_accepts_an_honest_partial(cluster):
    h, e, proof = _partial(cluster, 2, b"alice|7")
    assert tprf.verify_proof(cluster["publics"][2], [h], [e], proof)
    assert tprf.verify_proof(cluster["publics"][2], h, e, proof)  # one element, unwrapped


def test_tprf_dleq_rejects_a_wrong_partial(cluster):
    h, e, proof = _partial(cluster, 2, b"alice|7")
    wrong = tprf.evaluate(tprf.random_scalar(), h)
    assert not tprf.verify_proof(cluster["publics"][2], [h], [wrong], proof)
    # a lying server that proves its lie against a key of its own
    liar = tprf.random_scalar()
    forged = tprf.prove(liar, tprf.public_key(liar), [h], [tprf.evaluate(liar, h)])
    assert not tprf.verify_proof(cluster["publics"][2], [h], [tprf.evaluate(liar, h)], forged)
    # another server's honest partial and proof, passed off as server 2's
    _, e3, proof3 = _partial(cluster, 3, b"alice|7")
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e3], proof3)
    # garbage instead of a partial, or a proof bit-flipped / cut short
    assert not tprf.verify_proof(cluster["publics"][2], [h], [b"\xff" * 32], proof)
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e], proof[:-1] + bytes([proof[-1] ^ 1]))
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e], bytes([proof[0] ^ 1]) + proof[1:])
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e], proof[:40])
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e], b"\xff" * 64)
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e], bytes(64))
    assert not tprf.verify_proof(cluster["publics"][2], [h], [e], proof[32:] + proof[:32])


def test_tprf_dleq_rejects_a_wrong_public_key(cluster):
    h, e, proof = _partial(cluster, 2, b"alice|7")
    assert not tprf.verify_proof(cluster["publics"][1], [h], [e], proof)
    assert not tprf.verify_proof(cluster["public"], [h], [e], proof)


def test_tprf_dleq_rejects_a_swapped_order(cluster):
    k, pk = cluster["shares"][1], cluster["publics"][1]
    hs = [tprf.hash_to_group(x, tprf.MODE_VOPRF) for x in (b"c|1", b"c|2", b"c|3")]
    es = tprf.evaluate_many(k, hs)
    proof = tprf.prove(k, pk, hs, es)
    assert tprf.verify_proof(pk, hs, es, proof)
    assert not tprf.verify_proof(pk, hs, [es[1], es[0], es[2]], proof)
    assert not tprf.verify_proof(pk, [hs[1], hs[0], hs[2]], es, proof)
    assert not tprf.verify_proof(pk, hs[:2], es[:2], proof)
    assert not tprf.verify_proof(pk, hs, es[:2], proof)


def test_tprf_dleq_refuses_bad_verifier_inputs(cluster):
    h, e, proof = _partial(cluster, 2, b"x")
    for bad in BAD_ELEMENTS:
        with pytest.raises(InvalidElement):
            tprf.verify_proof(bad, [h], [e], proof)
        with pytest.raises(InvalidElement):
            tprf.verify_proof(cluster["publics"][2], [bad], [e], proof)
    with pytest.raises(InvalidParameter):
        tprf.verify_proof(cluster["publics"][2], [h], [e], proof, mode=2)


# --------------------------------------------------------- threshold scheme

@pytest.mark.parametrize("threshold,count", [(1, 1), (1, 3), (2, 3), (3, 5), (5, 5)])
def test_tprf_combine_of_any_t_partials_is_evaluate_k(threshold, count):
    k = tprf.random_scalar()
    shares = dict(tprf.split(k, threshold, count))
    x = b"account=alice|serial=T1|counter=42"
    h = tprf.hash_to_group(x)
    want = tprf.evaluate(k, h)
    partials = {j: tprf.evaluate(s, h) for j, s in shares.items()}
    for quorum in itertools.combinations(sorted(shares), threshold):
        assert tprf.combine({j: partials[j] for j in quorum}) == want
        assert tprf.recover_secret({j: shares[j] for j in quorum}) == k
    assert tprf.finalize(x, want) == tprf.prf(k, x)
    # more than t partials interpolate the same polynomial
    assert tprf.combine(partials) == want


def test_tprf_fewer_than_t_shares_with_a_guess_never_match(cluster):
    """t - 1 = 2 shares read straight from two stores, the third share guessed: the combined
    value never equals F_k over 1,000 counters (neither does any 2-share interpolation)."""
    inputs = [b"alice|T1|%d" % c for c in range(1000)]
    hs = [tprf.hash_to_group(x) for x in inputs]
    truth = tprf.evaluate_inputs(cluster["k"], inputs)
    p1 = tprf.evaluate_many(cluster["shares"][1], hs)
    p2 = tprf.evaluate_many(cluster["shares"][2], hs)
    guess = tprf.evaluate_many(tprf.random_scalar(), hs)
    hits = 0
    for x, t, a, b, g in zip(inputs, truth, p1, p2, guess):
        want = tprf.finalize(x, t)
        hits += tprf.finalize(x, tprf.combine({1: a, 2: b, 3: g})) == want
        hits += tprf.finalize(x, tprf.combine({1: a, 2: b})) == want
    assert hits == 0


def test_tprf_feldman_accepts_good_shares_and_detects_a_bad_one(cluster):
    commitments = cluster["commitments"]
    assert tprf.commitment_at(commitments, 0 + 1) == cluster["publics"][1]
    for j, share in cluster["shares"].items():
        assert tprf.verify_share(j, share, commitments)
        assert tprf.commitment_at(commitments, j) == cluster["publics"][j]
    bumped = tprf.scalar_add(cluster["shares"][4], tprf.scalar_from_int(1))
    assert not tprf.verify_share(4, bumped, commitments)
    assert not tprf.verify_share(5, cluster["shares"][4], commitments)
    assert not tprf.verify_share(4, tprf.random_scalar(), commitments)
    for bad in BAD_SCALARS + [bytes(32)]:
        assert not tprf.verify_share(4, bad, commitments)
    # a dealer whose commitments are for another polynomial
    other = tprf.feldman_commitments(tprf.random_polynomial(3, cluster["k"]))
    assert other[0] == commitments[0]
    assert not tprf.verify_share(4, cluster["shares"][4], other)
    with pytest.raises(InvalidElement):
        tprf.verify_share(4, cluster["shares"][4], [commitments[0], b"\xff" * 32, commitments[2]])


def test_tprf_split_and_lagrange_refuse_bad_arguments():
    k = tprf.random_scalar()
    for threshold, count in [(0, 3), (4, 3), (1, 0), (2, tprf.MAX_INDEX + 1), (True, 3)]:
        with pytest.raises(InvalidParameter):
            tprf.split(k, threshold, count)
    with pytest.raises(InvalidScalar):
        tprf.split(bytes(32), 2, 3)
    for indices in ([], [1, 1], [0, 1], [-1, 2], [1, tprf.MAX_INDEX + 1], ["1"]):
        with pytest.raises(InvalidParameter):
            tprf.lagrange_coefficients(indices)
    with pytest.raises(InvalidParameter):
        tprf.combine({})
    h = tprf.hash_to_group(b"x")
    with pytest.raises(InvalidElement):
        tprf.combine({1: h, 2: IDENTITY})
    with pytest.raises(InvalidParameter):
        tprf.poly_eval([], 1)


def test_tprf_lagrange_coefficients_sum_to_one():
    lam = tprf.lagrange_coefficients([2, 5, 9])
    total = bytes(32)
    for value in lam.values():
        total = tprf.scalar_add(total, value)
    assert total == tprf.scalar_from_int(1)


# ------------------------------------------------------------ bad encodings

def test_tprf_refuses_invalid_elements():
    k = tprf.random_scalar()
    for bad in BAD_ELEMENTS:
        assert not tprf.is_element(bad)
        with pytest.raises(InvalidElement):
            tprf.evaluate(k, bad)
        with pytest.raises(InvalidElement):
            tprf.evaluate_many(k, [tprf.hash_to_group(b"a"), bad])
        with pytest.raises(InvalidElement):
            tprf.finalize(b"x", bad)
        with pytest.raises(InvalidElement):
            tprf.element_add(tprf.hash_to_group(b"a"), bad)
    for not_bytes in (None, 7, "ab" * 16):
        with pytest.raises(TprfError):
            tprf.evaluate(k, not_bytes)
    h = tprf.hash_to_group(b"a")
    with pytest.raises(InvalidElement):
        tprf.element_add(h, tprf.evaluate(tprf.scalar_negate(tprf.scalar_from_int(1)), h))


def test_tprf_refuses_invalid_scalars():
    h = tprf.hash_to_group(b"a")
    for bad in BAD_SCALARS + [bytes(32)]:
        with pytest.raises(InvalidScalar):
            tprf.evaluate(bad, h)
        with pytest.raises(InvalidScalar):
            tprf.public_key(bad)
        with pytest.raises(InvalidScalar):
            tprf.evaluate_inputs(bad, [b"a"])
        with pytest.raises(InvalidScalar):
            tprf.scalar_invert(bad)
    for bad in BAD_SCALARS:
        with pytest.raises(InvalidScalar):
            tprf.scalar_add(bad, tprf.scalar_from_int(1))
    with pytest.raises(InvalidScalar):
        tprf.scalar_from_int(ORDER)


def test_tprf_refuses_bad_inputs_and_modes():
    k = tprf.random_scalar()
    for mode in (2, -1, True, "0"):
        with pytest.raises(InvalidParameter):
            tprf.hash_to_group(b"x", mode)
    with pytest.raises(InvalidParameter):
        tprf.hash_to_group(b"x" * 65536)
    with pytest.raises(InvalidParameter):
        tprf.evaluate_inputs(k, ["text"])
    with pytest.raises(InvalidParameter):
        tprf.hash_to_scalar(b"x", b"")
    with pytest.raises(InvalidParameter):
        tprf.evaluate_many(k, [tprf.hash_to_group(b"x")], num_threads=0)


def test_tprf_modes_are_domain_separated():
    assert tprf.hash_to_group(b"x", tprf.MODE_OPRF) != tprf.hash_to_group(b"x", tprf.MODE_VOPRF)
    assert tprf.context_string(1) == b"OPRFV1-\x01-ristretto255-SHA512"


# ---------------------------------------------------------------------- OTP

def test_tprf_otp_digits_is_the_output_mod_ten_to_the_digits():
    output = bytes(63) + b"\x07"
    assert tprf.otp_digits(output, 6) == "000007"
    full = secrets.token_bytes(64)
    for digits in (6, 7, 8):
        code = tprf.otp_digits(full, digits)
        assert len(code) == digits and code.isdigit()
        assert int(code) == int.from_bytes(full, "big") % 10 ** digits
    for digits in (5, 9, True, "6"):
        with pytest.raises(InvalidParameter):
            tprf.otp_digits(full, digits)
    with pytest.raises(InvalidParameter):
        tprf.otp_digits(full[:32], 6)


def test_tprf_otp_digits_look_uniform():
    counts = [0] * 10
    for _ in range(5000):
        counts[int(tprf.otp_digits(secrets.token_bytes(64), 6)[0])] += 1
    assert min(counts) > 380 and max(counts) < 620
