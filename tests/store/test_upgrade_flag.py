"""``upgrade=False``: a store of an older schema is refused (StoreOutdated), untouched;
the default (and the servers) migrate it and tell the caller from which version."""
import pytest

from otpfast.errors import StoreOutdated
from otpfast.store import SCHEMA_VERSION
from otpfast.store.atrest import AtRestKeys


def _old(backend, key):
    conn = backend.module.connect(backend.target)
    try:
        backend.module.migrate(conn, target=SCHEMA_VERSION - 1, keys=AtRestKeys(key))
    finally:
        conn.close()


def test_store_upgrade_false_refuses_an_older_schema(backend, key):
    _old(backend, key)
    with pytest.raises(StoreOutdated) as refused:
        backend.open(upgrade=False)
    assert (refused.value.version, refused.value.current) == (SCHEMA_VERSION - 1, SCHEMA_VERSION)
    assert "otpfast init --upgrade" in str(refused.value)
    assert backend.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION - 1,)]
    store = backend.open()                                  # the default migrates
    assert store.upgraded_from == SCHEMA_VERSION - 1 and store.schema_version() == SCHEMA_VERSION
    again = backend.open(upgrade=False)                     # now current: opens
    assert again.upgraded_from is None


def test_store_new_store_is_no_upgrade(backend):
    assert backend.open(create=True, upgrade=False).upgraded_from is None
