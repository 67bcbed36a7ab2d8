"""A new at-rest key for a store (``otpfast rotate at-rest``), in ONE write transaction.

Inside it (every other writer waits: SQLite ``BEGIN IMMEDIATE``, PostgreSQL an EXCLUSIVE
lock on every table): every secret is decrypted with the old key and encrypted with the new
(account and token material, contribution digests, the key check; the unused client mask
keys of protocol v1 are cleared); every authenticated row is MACed again with its version
unchanged; the audit chain from the archive anchor is MACed again under the new audit key
(the anchor's MAC too; on a PostgreSQL store with node chains, every chain from its
genesis); and one ``at-rest-key-rotated`` entry is appended. Each old MAC is
checked on the way: a store that fails ``audit verify`` is refused, never sealed anew.

The PIN pepper and the OTP-digest key cannot change (what they hashed is gone): the new key
carries them over (otpfast.store.atrest, 96-byte keys).

Crash safety is two-phase, with the data directory (otpfast.rotate.rotate_at_rest):
``before_commit`` writes the new key and head file under temporary names (fsynced), then
COMMIT, then they are renamed over the old ones. Whoever finds the temporary files later
(``pending_key``) asks the store which key it holds: the old one means the transaction never
committed (the files are dropped), the new one that it did (the renames are finished).
"""
import time

from .archive import anchor_mac, read_anchor
from .atrest import AtRestKeys
from .chain import audit_mac, chain_entries
from .common import (ACCOUNT_NAMES, KEY_CHECK_LABEL, TABLES, TOKEN_NAMES, account_aad, check_key,
                     contribution_aad, insert_audit, token_aad)
from .postgres import PostgresStore
from .rows import CLIENT_NAMES, row_mac, row_ok
from ..errors import StoreError

_LOCKED = ("meta", "accounts", "clients", "authorities", "tokens", "contributions", "issued", "audit",
           "audit_head", "audit_anchor")
_SECRETS = {      # table -> (column index of the encrypted secret, associated data of a row)
    "accounts": (ACCOUNT_NAMES.index("material_enc"), lambda row: account_aad(row[0])),
    "tokens": (TOKEN_NAMES.index("material_enc"), lambda row: token_aad(row[0])),
}
ROTATED = "at-rest-key-rotated"


def _refused(what: str) -> StoreError:
    return StoreError(f"{what}: refused, nothing changed (run `otpfast audit verify`)")


def rekey(store, new_key: bytes, before_commit=lambda heads: None, now: float | None = None) -> dict:
    """Re-encrypt and re-MAC ``store`` under ``new_key`` (32 bytes; the carried keys are
    appended here); ``before_commit(heads)`` runs last inside the transaction with the new
    audit heads (chain -> (seq, hash); chain 1 holds the rotation entry). Returns them. The
    store object keeps the old keys: close it."""
    report = store.verify_audit()
    if not report.ok:
        raise _refused(f"the store fails audit verify ({report.reason})")
    old = store.keys
    new = AtRestKeys(new_key + old.carried)
    sql, conn = store._sql, store._conn()
    postgres = isinstance(store, PostgresStore)
    conn.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
    try:
        if postgres:
            conn.execute(f"LOCK TABLE {', '.join(_LOCKED)} IN EXCLUSIVE MODE")
        conn.execute(sql("UPDATE meta SET value = :v WHERE key = 'key_check'"),
                     {"v": new.encrypt(KEY_CHECK_LABEL, KEY_CHECK_LABEL)})
        _reseal_rows(conn, sql, old, new)
        for account, authority, digest in conn.execute(
                "SELECT account, authority_id, digest_enc FROM contributions").fetchall():
            aad = contribution_aad(account, authority)
            conn.execute(sql("UPDATE contributions SET digest_enc = :d WHERE account = :a AND authority_id = :u"),
                         {"d": new.encrypt(old.decrypt(bytes(digest), aad), aad), "a": account, "u": authority})
        heads = _rechain(conn, sql, store, old, new, time.time() if now is None else now)
        before_commit(heads)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return heads


def _reseal_rows(conn, sql, old, new) -> None:
    for table, (tag, columns, key_column) in TABLES.items():
        key_index = columns.index(key_column)
        secret = _SECRETS.get(table)
        for row in conn.execute(f"SELECT {', '.join(columns)}, ver, mac FROM {table}").fetchall():
            values, ver, mac = list(row[:-2]), row[-2], row[-1]
            if not row_ok(old.row_mac, tag, values, ver, mac):
                raise _refused(f"the {table} row {values[key_index]!r} fails its integrity check")
            changes = {}
            if secret is not None and values[secret[0]] is not None:
                index, aad = secret[0], secret[1](values)
                values[index] = new.encrypt(old.decrypt(bytes(values[index]), aad), aad)
                changes[columns[index]] = values[index]
            if table == "clients":
                index = CLIENT_NAMES.index("mask_key_enc")
                values[index] = changes["mask_key_enc"] = b""
            changes["mac"] = row_mac(new.row_mac, tag, values, ver)
            assignments = ", ".join(f"{column} = :{column}" for column in changes)
            conn.execute(sql(f"UPDATE {table} SET {assignments} WHERE {key_column} = :row_key"),
                         {**changes, "row_key": values[key_index]})


def _chains(conn, store) -> list[int]:
    """The audit chains: one per node process on a PostgreSQL store that has node chains
    (``store._chain_start``), else chain 1."""
    if not hasattr(store, "_chain_start"):
        return [1]
    return [int(row[0]) for row in conn.execute("SELECT id FROM audit_head ORDER BY id").fetchall()]


def _rechain(conn, sql, store, old, new, now) -> dict:
    """MAC every chain again under the new audit key (from its archive anchor, whose hash
    stays: the archive files end there; a node chain without one from its genesis, which the
    audit key derives); append the rotation entry to chain 1; move the database heads and
    re-MAC the anchors. Returns chain -> its new head (seq, hash)."""
    from . import chain as chain_module

    chains = _chains(conn, store)
    where = " AND chain = :c" if chains != [1] else ""
    heads = {}
    for chain in chains:
        start = store._chain_start(conn, chain) if chain != 1 else read_anchor(store, conn)
        if isinstance(start, str):
            raise _refused(start)
        seq, old_prev = int(start[0]), bytes(start[1])
        # an archive anchor's hash stays (the archive files end there); a genesis is the key's
        new_prev = old_prev if chain == 1 or seq else chain_module.chain_genesis(new.audit_mac, chain)
        for entry in conn.execute(sql("SELECT seq, time, event, account, client, source, outcome, hash, rows"
                                      " FROM audit WHERE seq > :s" + where + " ORDER BY seq"),
                                  {"s": seq, "c": chain}).fetchall():
            entry_seq, fields, stored = int(entry[0]), entry[1:7], bytes(entry[7])
            if entry_seq != seq + 1 or audit_mac(old.audit_key, old_prev, entry_seq, *fields, entry[8]) != stored:
                raise _refused(f"audit entry {seq + 1}" + (f" of chain {chain}" if where else "")
                               + " is missing or altered")
            new_prev = audit_mac(new.audit_key, new_prev, entry_seq, *fields, entry[8])
            conn.execute(sql("UPDATE audit SET hash = :h WHERE seq = :s" + where),
                         {"h": new_prev, "s": entry_seq, "c": chain})
            seq, old_prev = entry_seq, stored
        heads[chain] = (seq, new_prev)
        if chain != 1:
            conn.execute(sql("UPDATE audit_head SET hash = :hash WHERE id = :c"), {"hash": new_prev, "c": chain})
            if start[0]:        # the chain's own archive anchor (otpfast.store.archive)
                conn.execute(sql("UPDATE audit_anchor SET mac = :m WHERE id = :c"),
                             {"m": anchor_mac(new, int(start[0]), bytes(start[1]), chain), "c": chain})
    anchor = read_anchor(store, conn)
    if anchor[0]:
        conn.execute(sql("UPDATE audit_anchor SET mac = :m WHERE id = 1"),
                     {"m": anchor_mac(new, int(anchor[0]), bytes(anchor[1]))})
    rows = chain_entries(new.audit_mac, heads[1], [(now, "store", "-", "-", "-", ROTATED)])
    insert_audit(conn, sql, rows)
    conn.execute(sql("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"),
                 {"seq": rows[-1][0], "hash": rows[-1][7]})
    heads[1] = (rows[-1][0], rows[-1][7])
    return heads


def key_matches(key: bytes, *, path: str | None = None, url: str | None = None) -> bool:
    """Whether the store (SQLite file ``path`` or PostgreSQL ``url``) holds ``key``: its key
    check opens with it. Reads only (no migration, no lock)."""
    if path is not None:
        import sqlite3

        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
    try:
        check_key(AtRestKeys(key), row[0])
    except StoreError:
        return False
    return True
