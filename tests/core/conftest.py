import json
import math
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


@pytest.fixture(scope="session")
def lfsr_vectors():
    return json.loads((VECTORS / "lfsr_small.json").read_text())


@pytest.fixture(scope="session")
def rsa_vectors():
    return json.loads((VECTORS / "rsa_paper.json").read_text())


@pytest.fixture(scope="session")
def paper():
    """The paper's N = 991 * 997 with e = 65537 and d = e^-1 mod lambda(N)."""
    p, q, e = 991, 997, 65537
    lam = math.lcm(p - 1, q - 1)
    return {"p": p, "q": q, "n": p * q, "e": e, "d": pow(e, -1, lam), "lam": lam}


@pytest.fixture(scope="session")
def reference_stream():
    """reference_stream(candidates, n, count) -> (used a's, index after the last one):
    the skip rule written out independently of otpfast."""
    def used(candidates, n, count):
        out = []
        i = 0
        for i, a in enumerate(candidates, 1):
            if len(out) == count:
                return out, i - 1
            if 1 <= a < n and math.gcd(a, n) == 1:
                out.append(a)
        return out, i
    return used


@pytest.fixture(scope="session")
def lfsr_states():
    """lfsr_states(poly, state): infinite LFSR states by the DESIGN section 3 rule."""
    def states(poly, state):
        degree = poly.bit_length() - 1
        while True:
            yield state
            state <<= 1
            if state >> degree:
                state ^= poly
    return states
