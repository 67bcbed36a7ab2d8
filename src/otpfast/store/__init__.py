"""The store: one interface (otpfast.store.base) and its backends (SQLite by default,
PostgreSQL for shared deployments; psycopg is imported only when a PostgresStore opens).

Services import only the names re-exported here.
"""
from .atrest import AtRestKeys, load_key, new_key
from .base import (ACCOUNT_ACTIVE, ACCOUNT_PENDING, LOCKED_FOR_GOOD, AccountRecord, AuditEntry,
                   AuditReport, AuthorityRecord, ClientRecord, ContributionRecord, Store,
                   TokenRecord, Transaction)
from .common import new_serial
from .postgres import PostgresStore, describe_url
from .sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "ACCOUNT_ACTIVE", "ACCOUNT_PENDING", "AccountRecord", "AuditEntry", "AuditReport",
    "AuthorityRecord", "AtRestKeys", "ClientRecord", "ContributionRecord", "LOCKED_FOR_GOOD",
    "PostgresStore", "SCHEMA_VERSION", "SQLiteStore", "Store", "TokenRecord", "Transaction", "describe_url",
    "load_key", "new_key", "new_serial",
]
