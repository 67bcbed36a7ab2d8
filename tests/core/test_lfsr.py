import array
import itertools

import pytest

from otpfast.errors import InvalidParameter


def test_lfsr_fill_matches_hand_vectors(impl, lfsr_vectors):
    for seq in lfsr_vectors["sequences"]:
        poly = int(seq["poly"], 16)
        states = seq["states"]
        got = impl.lfsr_fill(poly, 1, len(states) + 1)
        assert isinstance(got, array.array) and got.typecode == "Q"
        assert got.tolist() == states + [1], seq["name"]


def test_lfsr_step_matches_hand_vectors(impl, lfsr_vectors):
    for seq in lfsr_vectors["sequences"]:
        poly = int(seq["poly"], 16)
        states = seq["states"]
        for a, b in zip(states, states[1:] + states[:1]):
            assert impl.lfsr_step(poly, a) == b


def test_lfsr_is_primitive_matches_hand_vectors(impl, lfsr_vectors):
    for seq in lfsr_vectors["sequences"]:
        assert impl.lfsr_is_primitive(int(seq["poly"], 16)) is seq["primitive"], seq["name"]


def test_lfsr_advance_period_of_hand_vectors(impl, lfsr_vectors):
    for seq in lfsr_vectors["sequences"]:
        poly = int(seq["poly"], 16)
        assert impl.lfsr_advance(poly, 1, seq["period"]) == 1
        assert all(impl.lfsr_advance(poly, 1, k) != 1 for k in range(1, seq["period"]))


def test_lfsr_count_primitive_known_values(impl, lfsr_vectors):
    for degree, count in lfsr_vectors["primitive_counts"]["counts"].items():
        assert impl.lfsr_count_primitive(int(degree)) == count


def test_lfsr_count_primitive_paper_degree_20(impl):
    assert impl.lfsr_count_primitive(20) == 24000


def test_lfsr_primitive_all_small_degrees(impl, lfsr_vectors):
    assert [hex(p) for p in impl.lfsr_primitive_all(4)] == lfsr_vectors["primitive_degree_4"]
    assert [hex(p) for p in impl.lfsr_primitive_all(5)] == lfsr_vectors["primitive_degree_5"]


@pytest.mark.parametrize("degree", range(2, 13))
def test_lfsr_primitive_all_equals_brute_force(impl, degree):
    brute = [p for p in range((1 << degree) | 1, 1 << (degree + 1), 2) if impl.lfsr_is_primitive(p)]
    got = impl.lfsr_primitive_all(degree)
    assert got.typecode == "Q"
    assert got.tolist() == brute
    assert len(got) == impl.lfsr_count_primitive(degree)


def test_lfsr_primitive_all_degree_20_paper_count(impl):
    got = impl.lfsr_primitive_all(20)
    assert len(got) == 24000
    assert got.tolist() == sorted(set(got))
    assert all(p >> 20 == 1 and p & 1 for p in got)
    assert 0x100009 in got  # x^20 + x^3 + 1, the paper's example
    sample = got[::997]
    assert all(impl.lfsr_is_primitive(p) for p in sample)


def test_lfsr_primitive_at_consistent_with_all(impl):
    for degree in (3, 8, 13, 20):
        table = impl.lfsr_primitive_all(degree)
        for k in {0, 1, len(table) // 2, len(table) - 1}:
            assert impl.lfsr_primitive_at(degree, k) == table[k]


def test_lfsr_primitive_at_scan_for_large_degree(impl):
    # degree 32 is above every indexing threshold: found by scanning upward
    first = [impl.lfsr_primitive_at(32, k) for k in range(3)]
    assert first == sorted(first)
    assert all(impl.lfsr_is_primitive(p) for p in first)
    below = range((1 << 32) | 1, first[0], 2)
    assert not any(impl.lfsr_is_primitive(p) for p in below)


def test_lfsr_period_of_paper_polynomial_is_full(impl):
    period = (1 << 20) - 1
    states = impl.lfsr_fill(0x100009, 1, period + 1)
    assert states[period] == 1
    assert len(set(states[:period])) == period  # every nonzero state once


def test_lfsr_paper_polynomial_is_primitive(impl):
    assert impl.lfsr_is_primitive(0x100009)
    assert not impl.lfsr_is_primitive(0x100003)  # x^20 + x + 1 is not irreducible-primitive


@pytest.mark.parametrize("poly", [0x100009, 0x13, (1 << 64) | 0x1B, (1 << 33) | 0x8D, 0x1F])
def test_lfsr_advance_equals_stepping(impl, poly):
    state = 5
    stepped = list(itertools.islice(_steps(impl, poly, state), 300))
    for k in (0, 1, 2, 63, 64, 65, 299):
        assert impl.lfsr_advance(poly, state, k) == stepped[k]


def _steps(impl, poly, state):
    while True:
        yield state
        state = impl.lfsr_step(poly, state)


def test_lfsr_advance_composes(impl):
    poly, s = (1 << 61) | 0x27, 0x123456789
    a = impl.lfsr_advance(poly, s, 10**15)
    assert impl.lfsr_advance(poly, a, 2**62) == impl.lfsr_advance(
        poly, impl.lfsr_advance(poly, s, 2**62), 10**15)


def test_lfsr_degree_64_wraps_correctly(impl):
    poly = (1 << 64) | 0x1B  # x^64 + x^4 + x^3 + x + 1 (primitive)
    assert impl.lfsr_is_primitive(poly)
    top = 1 << 63
    assert impl.lfsr_step(poly, top) == 0x1B
    assert impl.lfsr_step(poly, top | 1) == 0x1B ^ 2
    assert impl.lfsr_advance(poly, 1, (1 << 64) - 1) == 1


def test_lfsr_primitive_degrees_2_to_64(impl):
    # the k = 0 polynomial of each degree is primitive and its x has full order
    for degree in (2, 17, 31, 33, 47, 59, 61, 62, 64):
        p = impl.lfsr_primitive_at(degree, 0)
        assert p.bit_length() == degree + 1
        assert impl.lfsr_advance(p, 1, (1 << degree) - 1) == 1


@pytest.mark.parametrize("call, field", [
    (lambda m: m.lfsr_step(0x100008, 1), "poly"),        # no bit 0
    (lambda m: m.lfsr_step(0b11, 1), "poly"),             # degree 1
    (lambda m: m.lfsr_step(1 << 65 | 1, 1), "poly"),      # degree 65
    (lambda m: m.lfsr_step(-5, 1), "poly"),
    (lambda m: m.lfsr_step("0x13", 1), "poly"),
    (lambda m: m.lfsr_step(0x13, 0), "state"),
    (lambda m: m.lfsr_step(0x13, 16), "state"),
    (lambda m: m.lfsr_fill(0x13, 1, -1), "count"),
    (lambda m: m.lfsr_advance(0x13, 1, -1), "k"),
    (lambda m: m.lfsr_advance(0x13, 1, 1 << 64), "k"),
    (lambda m: m.lfsr_is_primitive(0x12), "poly"),
    (lambda m: m.lfsr_count_primitive(1), "degree"),
    (lambda m: m.lfsr_count_primitive(65), "degree"),
    (lambda m: m.lfsr_primitive_all(29), "degree"),
    (lambda m: m.lfsr_primitive_at(4, 2), "k"),
    (lambda m: m.lfsr_primitive_at(4, -1), "k"),
])
def test_lfsr_bad_input_names_the_field(impl, call, field):
    with pytest.raises(InvalidParameter) as info:
        call(impl)
    assert info.value.field == field
