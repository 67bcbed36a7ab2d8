"""The store: one interface (otpfast.store.base) and its backends (SQLite by default).

Services import only the names re-exported here.
"""
from .atrest import AtRestKeys, load_key, new_key
from .base import (ACCOUNT_ACTIVE, ACCOUNT_PENDING, AccountRecord, AuditEntry, AuditReport,
                   AuthorityRecord, ClientRecord, ContributionRecord, Store, Transaction)
from .sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "ACCOUNT_ACTIVE", "ACCOUNT_PENDING", "AccountRecord", "AuditEntry", "AuditReport",
    "AuthorityRecord", "AtRestKeys", "ClientRecord", "ContributionRecord", "SCHEMA_VERSION",
    "SQLiteStore", "Store", "Transaction", "load_key", "new_key",
]
