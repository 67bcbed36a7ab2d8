import array
import hmac
import itertools
import math

import pytest

from otpfast.errors import InvalidParameter

POLY = 0x100009


def _vector_rows(rows):
    return [(a, otp) for a, otp in rows if otp is not None]


def test_rsa_lfsr_paper_vectors(impl, rsa_vectors):
    v = rsa_vectors
    lf = v["lfsr"]
    rows = _vector_rows(lf["candidates"])
    for method in ("auto", "crt", "sqm"):
        otps, nxt = impl.rsa_lfsr_generate(v["n"], v["e"], int(lf["poly"], 16), lf["state"], len(rows),
                                           method=method)
        assert otps.typecode == "I"
        assert otps.tolist() == [otp for _, otp in rows]
        assert nxt == impl.lfsr_step(int(lf["poly"], 16), rows[-1][0])
    assert lf["next_state"] == nxt


def test_rsa_primroot_paper_vectors(impl, rsa_vectors):
    v = rsa_vectors
    pr = v["primroot"]
    rows = _vector_rows(pr["candidates"])
    for method in ("auto", "crt", "sqm"):
        otps, nxt = impl.rsa_primroot_generate(v["n"], v["e"], pr["prime"], pr["generator"], pr["start"],
                                               len(rows), method=method)
        assert otps.tolist() == [otp for _, otp in rows]
        assert nxt == pr["next_exponent"]


def test_rsa_paper_otps_have_six_digits(impl, paper):
    otps, _ = impl.rsa_lfsr_generate(paper["n"], paper["e"], POLY, 1, 500)
    assert len(str(paper["n"] - 1)) == 6
    text = impl.format_decimal(otps, 6)
    lines = text.split(b"\n")[:-1]
    assert len(lines) == 500 and all(len(x) == 6 and x.isdigit() for x in lines)


@pytest.mark.parametrize("method", ["auto", "crt", "sqm"])
def test_rsa_lfsr_stream_skip_rule(impl, paper, reference_stream, lfsr_states, method):
    n, e = paper["n"], paper["e"]
    state = (1 << 20) - 1  # starts in the region >= n, so the first candidates are skipped
    count = 3000
    used, consumed = reference_stream(lfsr_states(POLY, state), n, count)
    otps, nxt = impl.rsa_lfsr_generate(n, e, POLY, state, count, method=method)
    assert otps.tolist() == [pow(a, e, n) for a in used]
    assert nxt == next(itertools.islice(lfsr_states(POLY, state), consumed, None))


def test_rsa_primroot_stream_skip_rule(impl, paper, reference_stream):
    n, e, prime, g, start = paper["n"], paper["e"], 999983, 5, 10**9
    powers = (pow(g, i, prime) for i in itertools.count(start))
    used, consumed = reference_stream(powers, n, 2000)
    otps, nxt = impl.rsa_primroot_generate(n, e, prime, g, start, 2000)
    assert otps.tolist() == [pow(a, e, n) for a in used]
    assert nxt == start + consumed


def test_rsa_lfsr_continuation_equals_one_call(impl, paper):
    n, e = paper["n"], paper["e"]
    whole, end = impl.rsa_lfsr_generate(n, e, POLY, 0xABCDE, 5000)
    first, mid = impl.rsa_lfsr_generate(n, e, POLY, 0xABCDE, 1234)
    second, end2 = impl.rsa_lfsr_generate(n, e, POLY, mid, 5000 - 1234)
    assert first + second == whole and end2 == end


def test_rsa_primroot_continuation_equals_one_call(impl, paper):
    n, e = paper["n"], paper["e"]
    whole, end = impl.rsa_primroot_generate(n, e, 999983, 5, 7, 3000)
    first, mid = impl.rsa_primroot_generate(n, e, 999983, 5, 7, 1000)
    second, end2 = impl.rsa_primroot_generate(n, e, 999983, 5, mid, 2000)
    assert first + second == whole and end2 == end


def test_rsa_generate_zero_count(impl, paper):
    otps, nxt = impl.rsa_lfsr_generate(paper["n"], paper["e"], POLY, 77, 0)
    assert len(otps) == 0 and nxt == 77
    otps, nxt = impl.rsa_primroot_generate(paper["n"], paper["e"], 999983, 5, 3, 0)
    assert len(otps) == 0 and nxt == 3


def test_rsa_every_generated_otp_verifies_and_altered_ones_do_not(impl, paper):
    n, e, d = paper["n"], paper["e"], paper["d"]
    otps, _ = impl.rsa_lfsr_generate(n, e, POLY, 99, 2000)
    assert impl.rsa_lfsr_verify(n, d, POLY, 99, otps) == 2000
    assert impl.rsa_lfsr_verify_mask(n, d, POLY, 99, otps) == b"\x01" * 2000
    altered = array.array("I", otps)
    for i in (0, 17, 1999):
        altered[i] = (altered[i] + 1) % n
    altered[500] = n          # out of range
    altered[501] = 991 * 5    # not a unit
    mask = impl.rsa_lfsr_verify_mask(n, d, POLY, 99, altered)
    assert [i for i, ok in enumerate(mask) if not ok] == [0, 17, 500, 501, 1999]
    assert impl.rsa_lfsr_verify(n, d, POLY, 99, altered) == 1995
    # a different stream position or a wrong d verifies (almost) nothing
    assert impl.rsa_lfsr_verify(n, d, POLY, 100, otps) < 5
    assert impl.rsa_lfsr_verify(n, d + 1, POLY, 99, otps) < 5


def test_rsa_primroot_verify(impl, paper):
    n, e, d = paper["n"], paper["e"], paper["d"]
    otps, _ = impl.rsa_primroot_generate(n, e, 999983, 5, 123, 1500)
    for method in ("auto", "crt", "sqm"):
        assert impl.rsa_primroot_verify(n, d, 999983, 5, 123, otps, method=method) == 1500
    bad = array.array("I", otps)
    bad[3] ^= 1
    mask = impl.rsa_primroot_verify_mask(n, d, 999983, 5, 123, bad)
    assert mask[3] == 0 and sum(mask) == 1499


def test_rsa_single_otp_verify_constant_time(impl, paper):
    # the recipe for one OTP: recover a = OTP^d and compare in constant time
    n, e, d = paper["n"], paper["e"], paper["d"]
    otps, _ = impl.rsa_lfsr_generate(n, e, POLY, 1, 3)
    expected_a = [1, 2, 4]
    for otp, a in zip(otps, expected_a):
        assert hmac.compare_digest(str(impl.modexp(otp, d, n)), str(a))


@pytest.mark.parametrize("n, e", [
    (15, 3),                       # tiny semiprime, CRT tables of size 3 and 5
    (3 * 3 * 5 * 7 * 11 * 13 * 17, 7),   # many primes, a square factor
    (2 * 999983, 5),               # even n, n2 with a big prime
    (1000003, 65537),              # prime n: CRT degenerates to one table
    ((1 << 32) - 5, 65537),        # largest n: 64-bit remainders, Montgomery sqm
    (4294836225, 7),               # 65535^2, not squarefree
])
def test_rsa_methods_agree_on_unusual_moduli(impl, n, e):
    poly = impl.lfsr_primitive_at(max(n.bit_length(), 4), 0)
    ref, ref_next = impl.rsa_lfsr_generate(n, e, poly, 1, 700, method="sqm")
    a = list(itertools.islice((s for s in impl.lfsr_fill(poly, 1, 200000) if math.gcd(s, n) == 1 and s < n), 700))
    assert ref.tolist() == [pow(x, e, n) for x in a]
    for method in ("auto", "crt"):
        try:
            got = impl.rsa_lfsr_generate(n, e, poly, 1, 700, method=method)
        except InvalidParameter as exc:
            assert method == "crt" and exc.field == "method"
            continue
        assert got == (ref, ref_next)


def test_rsa_crt_refused_when_n_does_not_split(impl):
    n = 4294967291  # prime, above the CRT table limit
    with pytest.raises(InvalidParameter) as info:
        impl.rsa_lfsr_generate(n, 3, impl.lfsr_primitive_at(32, 0), 1, 10, method="crt")
    assert info.value.field == "method"


def test_rsa_lfsr_thread_counts_agree(impl, paper):
    n, e = paper["n"], paper["e"]
    count = 200000 if impl.__name__.endswith("_core") else 3000
    base = impl.rsa_lfsr_generate(n, e, POLY, 3, count, num_threads=1)
    for t in (2, 3, 7, -1, None):
        assert impl.rsa_lfsr_generate(n, e, POLY, 3, count, num_threads=t) == base
    assert impl.rsa_lfsr_verify(paper["n"], paper["d"], POLY, 3, base[0], num_threads=3) == count


def test_rsa_primroot_thread_counts_agree(impl, paper):
    n, e = paper["n"], paper["e"]
    count = 200000 if impl.__name__.endswith("_core") else 3000
    base = impl.rsa_primroot_generate(n, e, 999983, 5, 11, count, num_threads=1)
    for t in (2, 5):
        assert impl.rsa_primroot_generate(n, e, 999983, 5, 11, count, num_threads=t) == base


def test_rsa_large_lfsr_degree_with_sparse_candidates(impl):
    # degree 28 over a 20-bit n: most states are >= n and skipped
    n, e = 988027, 65537
    poly = impl.lfsr_primitive_at(28, 0)
    otps, nxt = impl.rsa_lfsr_generate(n, e, poly, 1, 300)
    states = impl.lfsr_fill(poly, 1, 1 << 17)
    used = [s for s in states if s < n and math.gcd(s, n) == 1][:300]
    assert otps.tolist() == [pow(a, e, n) for a in used]


@pytest.mark.parametrize("kwargs, field", [
    (dict(n=1), "n"),
    (dict(n=1 << 32), "n"),
    (dict(e=0), "e"),
    (dict(e=1 << 64), "e"),
    (dict(poly=0x100008), "poly"),          # no bit 0
    (dict(poly=0x100003), "poly"),          # not primitive
    (dict(poly=(1 << 40) | 0x39), "poly"),  # degree far above n's size
    (dict(state=0), "state"),
    (dict(state=1 << 20), "state"),
    (dict(count=-1), "count"),
    (dict(num_threads=0), "num_threads"),
    (dict(method="fast"), "method"),
])
def test_rsa_lfsr_bad_input_names_the_field(impl, paper, kwargs, field):
    args = dict(n=paper["n"], e=paper["e"], poly=POLY, state=1, count=10)
    args.update(kwargs)
    with pytest.raises(InvalidParameter) as info:
        impl.rsa_lfsr_generate(**args)
    assert info.value.field == field


@pytest.mark.parametrize("kwargs, field", [
    (dict(prime=999981), "prime"),
    (dict(prime=2), "prime"),
    (dict(prime=1 << 32), "prime"),
    (dict(generator=4), "generator"),     # a square: not a primitive root
    (dict(generator=1), "generator"),
    (dict(generator=999983), "generator"),
    (dict(start=-1), "start"),
    (dict(n=15), "prime"),                # prime far above n
])
def test_rsa_primroot_bad_input_names_the_field(impl, paper, kwargs, field):
    args = dict(n=paper["n"], e=paper["e"], prime=999983, generator=5, start=0, count=10)
    args.update(kwargs)
    with pytest.raises(InvalidParameter) as info:
        impl.rsa_primroot_generate(**args)
    assert info.value.field == field


def test_rsa_verify_bad_input_names_the_field(impl, paper):
    with pytest.raises(InvalidParameter) as info:
        impl.rsa_lfsr_verify(paper["n"], 0, POLY, 1, [1])
    assert info.value.field == "d"
    with pytest.raises(InvalidParameter) as info:
        impl.rsa_lfsr_verify(paper["n"], paper["d"], POLY, 1, [1 << 32])
    assert info.value.field == "otps"


@pytest.mark.c_extension
def test_rsa_portable_paths_equal_vector_paths(paper):
    from otpfast._compat import NO_EXTENSIONS, load_impl
    if NO_EXTENSIONS:
        pytest.skip("OTPFAST_NO_EXTENSIONS=1")
    c = load_impl("c")
    n, e, d = paper["n"], paper["e"], paper["d"]
    runs = {}
    try:
        for level in (2, 1, 0):
            c._set_simd(level)
            otps = [c.rsa_lfsr_generate(n, e, POLY, 7, 50000, method=m) for m in ("crt", "sqm")]
            masks = [c.rsa_lfsr_verify_mask(n, d, POLY, 7, otps[0][0][:-1] + array.array("I", [3]), method=m)
                     for m in ("crt", "sqm")]
            runs[level] = (otps, masks)
    finally:
        c._set_simd(2)
    assert runs[2] == runs[1] == runs[0]
    otps, masks = runs[0]
    assert otps[0] == otps[1]
    assert masks[0] == masks[1] == b"\x01" * 49999 + b"\x00"
