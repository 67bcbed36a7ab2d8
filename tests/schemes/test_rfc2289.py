import hashlib

import pytest

from otpfast import rfc2289
from otpfast.errors import InvalidParameter, InvalidToken


def _cases(vectors):
    return vectors("rfc2289_appendix_c.json")["cases"]


@pytest.mark.parametrize("algorithm", ["md4", "md5", "sha1"])
def test_rfc2289_appendix_c(vectors, algorithm):
    if algorithm not in rfc2289.available_algorithms():
        pytest.skip(f"{algorithm} is not available in this OpenSSL (legacy provider)")
    for case in _cases(vectors):
        if case["algorithm"] != algorithm:
            continue
        value = rfc2289.otp(case["passphrase"], case["seed"], case["sequence"], algorithm)
        assert rfc2289.to_hex(value) == case["hex"]
        assert rfc2289.to_words(value) == case["words"]
        assert rfc2289.parse(case["words"]) == value
        assert rfc2289.parse(case["hex"].lower().replace(" ", "")) == value


def test_md4_unavailable_is_a_clear_error():
    if "md4" in rfc2289.available_algorithms():
        pytest.skip("md4 is available here")
    with pytest.raises(InvalidParameter) as info:
        rfc2289.otp("This is a test.", "TeSt", 1, "md4")
    assert info.value.field == "algorithm" and "not available" in info.value.message


def test_otps_newest_first_and_match_single():
    values = rfc2289.otps("This is a test.", "TeSt", 99, 100, "sha1")
    assert [n for n, _ in values] == list(range(99, -1, -1))
    assert values[0][1] == rfc2289.otp("This is a test.", "TeSt", 99, "sha1")
    assert values[-1][1] == rfc2289.otp("This is a test.", "TeSt", 0, "sha1")


def test_parse_is_case_and_space_insensitive():
    value = bytes.fromhex("9E876134D90499DD")
    for text in ["inch sea anne long ahem tour", "  INCH  Sea anne\tlong ahem TOUR ", "word:INCH SEA ANNE LONG AHEM TOUR",
                 "9e87 6134 d904 99dd", "hex:9E876134D90499DD"]:
        assert rfc2289.parse(text) == value


@pytest.mark.parametrize("text", [
    "INCH SEA ANNE LONG AHEM TOUS", "INCH SEA ANNE LONG AHEM", "INCH SEA ANNE LONG AHEM TOUR TOUR",
    "INCH SEA ANNE LONG AHEM ROUT", "9E876134D90499D", "9E876134D90499DG", "word:9E876134D90499DD",
    "١٢٣٤٥٦", "",
])
def test_parse_rejects(text):
    with pytest.raises(InvalidToken):
        rfc2289.parse(text)


def test_words_checksum_detects_changed_last_word():
    value = bytes.fromhex("9E876134D90499DD")
    words = rfc2289.to_words(value).split()
    index = rfc2289.WORDS.index(words[-1])
    for delta in (1, 2, 3):
        wrong = rfc2289.WORDS[(index & ~3) | ((index + delta) & 3)]
        with pytest.raises(InvalidToken):
            rfc2289.parse(" ".join(words[:-1] + [wrong]))


def test_verify_server_step():
    last = rfc2289.otp("This is a test.", "TeSt", 100, "md5")
    response = rfc2289.to_words(rfc2289.otp("This is a test.", "TeSt", 99, "md5"))
    assert rfc2289.verify(response, last, "md5") == rfc2289.parse(response)
    with pytest.raises(InvalidToken):
        rfc2289.verify(response, rfc2289.parse(response), "md5")


@pytest.mark.parametrize("passphrase,seed,field", [
    ("too short", "TeSt", "passphrase"), ("x" * 64, "TeSt", "passphrase"),
    ("This is a test.", "", "seed"), ("This is a test.", "a" * 17, "seed"),
    ("This is a test.", "te st", "seed"), ("This is a test.", "tést", "seed"),
])
def test_rules(passphrase, seed, field):
    with pytest.raises(InvalidParameter) as info:
        rfc2289.otp(passphrase, seed, 1)
    assert info.value.field == field


def test_seed_is_case_folded():
    assert rfc2289.otp("This is a test.", "TeSt", 5) == rfc2289.otp("This is a test.", "test", 5)
    folded = hashlib.md5(b"testThis is a test.").digest()
    assert rfc2289.otp("This is a test.", "TEST", 0) == bytes(a ^ b for a, b in zip(folded[:8], folded[8:]))


def test_dictionary_is_the_rfc_one():
    words = rfc2289.WORDS
    assert len(words) == 2048 and words[0] == "A" and words[570] == "YOU" and words[571] == "ABED"
    assert words[-1] == "YOKE" and list(words[:571]) == sorted(words[:571]) and list(words[571:]) == sorted(words[571:])


# --- fuzzing the parsers: arbitrary input is an OTP value or InvalidToken, nothing else ---------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TOKENS = st.one_of(
    st.sampled_from(rfc2289.WORDS), st.sampled_from(["word:", "hex:", "WORD:", "HEX:", " ", "\t", ":"]),
    st.text(alphabet="0123456789abcdefABCDEFg ", max_size=20), st.text(max_size=6),
)
_TEXTS = st.one_of(st.text(max_size=200), st.lists(_TOKENS, max_size=10).map(" ".join),
                   st.lists(_TOKENS, max_size=10).map("".join))


@given(text=_TEXTS)
@example(text="hex:word:INCH SEA ANNE LONG AHEM TOUR")
@example(text="x" * 129)
@example(text=b"9E876134D90499DD")
@example(text=None)
@settings(max_examples=3000, deadline=None)
def test_parse_fuzz_raises_only_invalid_token(text):
    try:
        value = rfc2289.parse(text)
    except InvalidToken:
        return
    assert isinstance(value, bytes) and len(value) == 8


@given(text=_TEXTS, last=st.binary(min_size=8, max_size=8))
@settings(max_examples=500, deadline=None)
def test_verify_fuzz_raises_only_invalid_token(text, last):
    try:
        x = rfc2289.verify(text, last, "md5")
    except InvalidToken:
        return
    assert x == rfc2289.parse(text)


@given(value=st.binary(min_size=8, max_size=8))
@settings(max_examples=500, deadline=None)
def test_words_and_hex_round_trip(value):
    assert rfc2289.parse(rfc2289.to_words(value)) == value
    assert rfc2289.parse(rfc2289.to_words(value).lower()) == value
    assert rfc2289.parse(rfc2289.to_hex(value)) == value
    assert rfc2289.parse("hex:" + rfc2289.to_hex(value)) == value
