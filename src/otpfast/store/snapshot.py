"""Consistent copies of a store's database (``otpfast backup``).

* SQLite: the online backup API copies the database as of one read transaction (writers
  go on; what they commit meanwhile is not in the copy).
* PostgreSQL: every table of the store's schema, ``COPY ... TO STDOUT (FORMAT binary)`` inside
  one ``REPEATABLE READ READ ONLY`` transaction (one snapshot for all of them); loading
  creates the schema in an empty database, then COPYs each table back and moves every
  identity sequence past the rows loaded and every other sequence to its value in the
  snapshot (audit chain ids, row versions), all in one transaction.

The database's audit heads are read in the copy (every chain's, on PostgreSQL), so the head
files written beside it match the copy (not the live store, which may have moved on).
"""
import json
import os
import sqlite3

from otpfast.errors import StoreError

SEQUENCES_FILE = "sequences.json"    # beside the tables' COPY files


def copy_sqlite(source: str, target: str) -> None:
    """A consistent copy of the SQLite store ``source`` into the new file ``target`` (0600)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot copy the store {source}: {exc}") from None


def settle_sqlite(path: str) -> None:
    """Fold the WAL into ``path`` and leave it in rollback-journal mode: the file alone is
    then the whole database (the servers put it back in WAL mode when they open it)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()


def sqlite_head(path: str) -> tuple[int, bytes]:
    """(seq, hash) of the database audit head of the SQLite file ``path``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        seq, digest = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    finally:
        conn.close()
    return int(seq), bytes(digest)


def _tables(conn) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        " AND table_type = 'BASE TABLE' ORDER BY table_name")]


def _sequences(conn) -> list[str]:
    """The schema's sequences that no identity column owns (their values are not implied by
    the rows: audit chain ids, row versions)."""
    return [row[0] for row in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'S' AND n.nspname = current_schema() AND NOT EXISTS"
        " (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))"
        " ORDER BY c.relname")]


def _sequence_value(conn, name: str) -> tuple[int, bool]:
    value, called = conn.execute(f'SELECT last_value, is_called FROM "{name}"').fetchone()
    return int(value), bool(called)


def dump_postgres(url: str, directory: str) -> tuple[list[str], dict]:
    """Write ``<table>.copy`` (binary COPY) for every table of the store at ``url`` into
    ``directory``, all from one snapshot; returns the tables and the audit heads in it
    (chain -> (seq, hash): one chain per node process)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        tables = _tables(conn)
        for table in tables:
            fd = os.open(os.path.join(directory, f"{table}.copy"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, conn.cursor().copy(
                    f'COPY "{table}" TO STDOUT (FORMAT binary)') as copy:
                for chunk in copy:
                    out.write(chunk)
        sequences = {name: _sequence_value(conn, name) for name in _sequences(conn)}
        with open(os.open(os.path.join(directory, SEQUENCES_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                  "w") as out:
            json.dump(sequences, out)
        heads = {int(chain): (int(seq), bytes(digest)) for chain, seq, digest in conn.execute(
            "SELECT id, seq, hash FROM audit_head ORDER BY id")}
        conn.execute("COMMIT")
    return tables, heads


def load_postgres(url: str, directory: str, tables: list[str]) -> None:
    """Replace the rows of every table of the (just created) store at ``url`` with the
    dumped ones, in one transaction."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        present = _tables(conn)
        present_sequences = set(_sequences(conn))
        if sorted(present) != sorted(tables):
            raise StoreError("the backup's tables differ from this otpfast's schema: "
                             f"{sorted(set(present) ^ set(tables))}")
        conn.execute("BEGIN")
        try:
            conn.execute("TRUNCATE " + ", ".join(f'"{table}"' for table in tables))
            for table in tables:
                with open(os.path.join(directory, f"{table}.copy"), "rb") as fh, conn.cursor().copy(
                        f'COPY "{table}" FROM STDIN (FORMAT binary)') as copy:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
            for table, column in conn.execute(
                    "SELECT table_name, column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall():
                conn.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'),"
                             f' COALESCE((SELECT max("{column}") FROM "{table}"), 0) + 1, false)')
            with open(os.path.join(directory, SEQUENCES_FILE)) as fh:
                for name, (value, called) in json.load(fh).items():
                    if name in present_sequences:
                        conn.execute("SELECT setval(%s, %s, %s)", (name, value, called))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def postgres_is_empty(url: str) -> bool:
    """True if the database at ``url`` holds no otpfast store (no audit table)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return "audit" not in _tables(conn)
