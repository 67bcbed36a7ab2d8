"""Service fixtures. ``store`` runs each service test against both backends (SQLite and
PostgreSQL); a module or test keeps to SQLite with
``pytest.mark.parametrize("store", ["sqlite"], indirect=True)``. PostgreSQL comes from the
``pg_url`` fixture of tests/conftest.py."""

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from otpfast.services import masking
from otpfast.services.admin import Admin
from otpfast.services.distribution import Distribution
from otpfast.services.keyserver import KeyServer
from otpfast.store import PostgresStore, SQLiteStore, new_key

TEST_ITERATIONS = 1000   # the default (600,000) is tested in test_keyserver; this keeps tests fast


class FakeClock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    head = str(tmp_path / "audit.head")
    if request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "store.db"), new_key(), head_path=head, create=True)
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"), new_key(), head_path=head,
                          create=True)
    yield s
    s.close()


@pytest.fixture
def admin(store, clock):
    return Admin(store, clock=clock)


@pytest.fixture
def distribution(store, clock):
    return Distribution(store, clock=clock)


@pytest.fixture
def keyserver(store, clock, rsa_key):
    return KeyServer(store, rsa_key, iterations=TEST_ITERATIONS, clock=clock)


def _state(store):
    """Every table but the audit log, for 'nothing changed' checks."""
    conn = store._conn()
    tables = ("accounts", "contributions", "issued", "clients", "authorities")
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}


@pytest.fixture
def state_of():
    return _state


@pytest.fixture
def device_otps():
    """``device_otps(admin, distribution, account)``: adds a device client of ``account``
    and returns a function that requests its next OTP and unmasks it."""
    def make(admin, distribution, account):
        credential = admin.add_client(f"dev-{account}", account=account)
        client = distribution.login(f"dev-{account}", credential)

        def next_otp():
            issued = distribution.request(client, account)
            return masking.unmask(client.session_key, account, issued.nonce, issued.masked,
                                  issued.expires_at_ms)
        return next_otp
    return make
