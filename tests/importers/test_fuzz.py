"""Whatever bytes arrive, each reader returns tokens or raises InvalidParameter, nothing else."""
import pathlib

from hypothesis import given, settings, strategies as st

from otpfast.errors import InvalidParameter
from otpfast.importers import FORMATS, read_tokens

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "pskc"
SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*.pskcxml"))] + [
    b"HW1, 3132333435363738393031323334353637383930, totp, 8, 30, sha256\n",
    b"otpauth://hotp/a?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=1\n",
]


def _read(data, fmt, **kwargs):
    try:
        specs = read_tokens(data, fmt, **kwargs)
    except InvalidParameter:
        return
    assert specs and all(s.secret for s in specs)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(FORMATS))
def test_readers_take_arbitrary_bytes(data, fmt):
    _read(data, fmt)


@st.composite
def mutated(draw):
    """A known-good file with a slice replaced: reaches deeper than random bytes."""
    seed = draw(st.sampled_from(SEEDS))
    start = draw(st.integers(0, len(seed)))
    end = draw(st.integers(start, min(len(seed), start + 16)))
    return seed[:start] + draw(st.binary(max_size=16)) + seed[end:]


@settings(max_examples=300, deadline=None)
@given(mutated(), st.sampled_from(FORMATS),
       st.sampled_from([{}, {"psk": bytes.fromhex("12345678901234567890123456789012")},
                        {"password": "qwerty"}]))
def test_readers_take_mutated_files(data, fmt, kwargs):
    _read(data, fmt, **(kwargs if fmt == "pskc" else {}))
