"""The ristretto255 primitives of both twins (otpfast._ristretto, otpfast._core_py_ristretto):
RFC 9496 known answers, errors, and the compiled module == the ctypes twin on random inputs
(hypothesis). _ristretto is optional (built only with libsodium-dev): in CI it must be built."""
import importlib.util

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otpfast import core
from otpfast._compat import NO_EXTENSIONS, load_ristretto
from otpfast.errors import InvalidElement, InvalidParameter, InvalidScalar, ThresholdUnavailable

from ..conftest import IN_CI

ORDER = (1 << 252) + 27742317777372353535851937790883648493
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUUX = b"QUUX-V01-CS02-with-expander-SHA512-256"
# RFC 9496 Appendix A.1: the first multiples of the generator
MULTIPLES = [
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
]


BUILT = importlib.util.find_spec("otpfast._ristretto") is not None


def _one(n):
    return n.to_bytes(32, "little")


def _params():
    params = [pytest.param("py", id="py")]
    if not NO_EXTENSIONS:
        params.insert(0, pytest.param("c", id="c", marks=pytest.mark.c_extension))
    return params


def _load(name):
    if name == "c" and not BUILT and not IN_CI:
        pytest.skip("otpfast._ristretto not built (no libsodium-dev)")
    module = load_ristretto(name)
    try:
        module.require()
    except ThresholdUnavailable:
        if IN_CI:
            raise
        pytest.skip("libsodium is not installed")
    return module


@pytest.fixture(scope="module", params=_params())
def impl(request):
    """Each ristretto255 twin in turn: otpfast._ristretto ([c]) and the ctypes twin ([py])."""
    if request.param == "c" and request.config.getoption("--no-c-extensions"):
        pytest.skip("--no-c-extensions")
    return _load(request.param)


@pytest.mark.skipif(not IN_CI or NO_EXTENSIONS, reason="CI builds the fast path")
def test_ristretto_extension_is_built_in_ci():
    """tools/install-system-deps.sh installs libsodium-dev, so setup.py must have built it."""
    assert BUILT, "otpfast._ristretto was not built: is libsodium-dev installed?"
    assert core.RISTRETTO_IMPLEMENTATION == "c"
    assert load_ristretto("c").r255_mul_base(_one(1)).hex() == MULTIPLES[0]


def test_ristretto_multiples_of_the_generator(impl):
    g = impl.r255_mul_base(_one(1))
    assert g.hex() == MULTIPLES[0]
    assert impl.r255_mul_base(_one(2)).hex() == MULTIPLES[1]
    assert impl.r255_add(g, impl.r255_mul(_one(2), g)).hex() == MULTIPLES[2]
    assert impl.r255_sub(g, g) == bytes(32)
    assert impl.r255_msm([_one(3), bytes(32)], [g, g]).hex() == MULTIPLES[2]
    assert impl.r255_mul_many(_one(2), [g, g]) == [bytes.fromhex(MULTIPLES[1])] * 2


def test_ristretto_hash_to_scalar_is_xmd_reduced(impl):
    # the reduction against integer arithmetic, and the DST bound
    wide = bytes(range(64))
    assert int.from_bytes(impl.r255_scalar_reduce(wide), "little") == int.from_bytes(wide, "little") % ORDER
    s = impl.r255_hash_to_scalar(b"abc", QUUX)
    assert int.from_bytes(s, "little") < ORDER
    with pytest.raises(InvalidParameter):
        impl.r255_hash_to_scalar(b"abc", b"d" * 256)
    with pytest.raises(InvalidParameter):
        impl.r255_hash_to_group(b"abc", b"")


def test_ristretto_scalar_arithmetic(impl):
    a, b = 12345678901234567890, ORDER - 5
    assert impl.r255_scalar_add(_one(a), _one(b)) == _one((a + b) % ORDER)
    assert impl.r255_scalar_sub(_one(a), _one(b)) == _one((a - b) % ORDER)
    assert impl.r255_scalar_mul(_one(a), _one(b)) == _one(a * b % ORDER)
    assert impl.r255_scalar_negate(_one(a)) == _one(-a % ORDER)
    assert impl.r255_scalar_invert(_one(a)) == _one(pow(a, -1, ORDER))
    r = impl.r255_scalar_random()
    assert 0 < int.from_bytes(r, "little") < ORDER
    with pytest.raises(InvalidScalar):
        impl.r255_scalar_invert(bytes(32))
    with pytest.raises(InvalidScalar):
        impl.r255_scalar_add(_one(ORDER), _one(1))


def test_ristretto_refuses_bad_values(impl):
    g = impl.r255_mul_base(_one(1))
    for bad in (bytes(32), b"\xff" * 32, b"\x01" + bytes(31), g[:31], g + b"\0", None, "x" * 32):
        assert not impl.r255_is_valid(bad)
        with pytest.raises(InvalidElement):
            impl.r255_mul(_one(1), bad)
        with pytest.raises(InvalidElement):
            impl.r255_mul_many(_one(1), [g, bad])
        with pytest.raises(InvalidElement):
            impl.r255_msm([_one(1)], [bad])
    for bad in (bytes(32), _one(ORDER), b"\xff" * 32, b"\x01" * 31):
        with pytest.raises(InvalidScalar):
            impl.r255_mul_base(bad)
        with pytest.raises(InvalidScalar):
            impl.r255_hash_mul_many(bad, [b"m"], b"dst")
    for bad in (b"m", "text", 5):
        with pytest.raises(InvalidParameter):
            impl.r255_hash_mul_many(_one(1), bad, b"dst")
    with pytest.raises(InvalidParameter):
        impl.r255_msm([_one(1), _one(2)], [g])
    with pytest.raises(InvalidParameter):
        impl.r255_mul_many(_one(1), [g], num_threads=0)


def test_ristretto_batches_match_one_at_a_time(impl):
    k = impl.r255_scalar_random()
    msgs = [b"m%d" % i for i in range(300)]
    points = [impl.r255_hash_to_group(m, b"dst") for m in msgs]
    single = [impl.r255_mul(k, p) for p in points]
    assert impl.r255_hash_mul_many(k, msgs, b"dst") == single
    assert impl.r255_mul_many(k, points) == single
    assert impl.r255_mul_many(k, points, num_threads=1) == single
    assert impl.r255_hash_mul_many(k, msgs, b"dst", num_threads=2) == single
    assert impl.r255_mul_many(k, []) == []


# ------------------------------------------------------------ C == Python

def needs_c(test):
    test = pytest.mark.skipif(NO_EXTENSIONS, reason="OTPFAST_NO_EXTENSIONS=1: no compiled core")(test)
    return pytest.mark.c_extension(test)


@pytest.fixture(scope="module")
def twins():
    return _load("c"), _load("py")


def _same(twins, name, *args):
    results = []
    for impl in twins:
        try:
            results.append(("ok", getattr(impl, name)(*args)))
        except InvalidParameter as exc:
            results.append((type(exc).__name__, exc.field))
    assert results[0] == results[1], (name, args)
    return results[0]


scalars = st.one_of(st.integers(0, ORDER - 1).map(_one), st.binary(min_size=32, max_size=32),
                    st.sampled_from([bytes(32), _one(ORDER), _one(1)]))
blobs = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40))


@needs_c
@SETTINGS
@given(msg=st.binary(max_size=300), dst=st.binary(max_size=260))
def test_ristretto_twins_hash_alike(twins, msg, dst):
    _same(twins, "r255_hash_to_group", msg, dst)
    _same(twins, "r255_hash_to_scalar", msg, dst)


@needs_c
@SETTINGS
@given(a=scalars, b=scalars, wide=st.binary(min_size=64, max_size=64))
def test_ristretto_twins_scalar_ops_alike(twins, a, b, wide):
    for name in ("r255_scalar_add", "r255_scalar_sub", "r255_scalar_mul"):
        _same(twins, name, a, b)
    _same(twins, "r255_scalar_negate", a)
    _same(twins, "r255_scalar_invert", a)
    _same(twins, "r255_scalar_reduce", wide)


@needs_c
@SETTINGS
@given(k=scalars, seeds=st.lists(st.binary(max_size=20), min_size=1, max_size=4), junk=blobs,
       weights=st.lists(scalars, min_size=1, max_size=4))
def test_ristretto_twins_group_ops_alike(twins, k, seeds, junk, weights):
    c, _ = twins
    points = [c.r255_hash_to_group(s, b"eq") for s in seeds]
    assert c.r255_is_valid(junk) == twins[1].r255_is_valid(junk)
    _same(twins, "r255_mul_base", k)
    _same(twins, "r255_mul", k, points[0])
    _same(twins, "r255_mul", k, junk)
    _same(twins, "r255_mul_many", k, points)
    _same(twins, "r255_mul_many", k, points + [junk])
    _same(twins, "r255_hash_mul_many", k, seeds, b"eq")
    _same(twins, "r255_add", points[0], points[-1])
    _same(twins, "r255_sub", points[0], junk)
    n = min(len(weights), len(points))
    _same(twins, "r255_msm", weights[:n], points[:n])
    _same(twins, "r255_msm", weights, [junk] * len(weights))


@needs_c
def test_ristretto_twins_same_public_api(twins):
    c, py = twins
    for name in py.__all__:
        assert hasattr(c, name), name
    assert c.OPENMP_ENABLED in (True, False) and py.OPENMP_ENABLED is False
    assert c.R255_ORDER == py.R255_ORDER == ORDER
