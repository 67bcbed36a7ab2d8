"""Issue 9, findings 6 and 7 and the undecryptable-row part of 10: rows edited by someone who
can write the database but lacks the at-rest key are refused by the server and the CLI's
store, and ``audit verify`` lists them; rollbacks to older valid copies are caught (at read
time by a process that saw the newer copy, always by ``audit verify``). Each attack edits
the database with the plain driver, as an attacker would; both backends."""
import hashlib
import json

import pytest

from otpfast import totp
from otpfast.errors import InvalidToken, Refused
from otpfast.services import credentials, masking
from otpfast.services.admin import Admin
from otpfast.services.distribution import Distribution, VerifyItem
from otpfast.store import AtRestKeys, SCHEMA_VERSION
from otpfast.store.common import ZERO_HASH, TABLES, audit_mac, encrypt_material
from otpfast.store.rows import row_mac

NOW = 1_700_000_000.0


class World:
    """A store with a server-issued hotp account and its device, a verifier, an authority."""

    def __init__(self, backend, store):
        self.backend, self.store = backend, store
        self.admin = Admin(store, clock=lambda: NOW)
        self.dist = Distribution(store, clock=lambda: NOW)
        self.admin.add_account("alice", "hotp", lockout=3)
        self.admin.add_account("bob", "hotp")
        self.device = self.admin.add_client("dev", account="alice")
        self.admin.add_client("rp", verifier=True)
        self.admin.add_authority(1)

    def otp(self, account="alice", client="dev", credential=None):
        info = self.dist.login(client, credential or self.device)
        issued = self.dist.request(info, account)
        return masking.unmask(info.session_key, account, issued.nonce, issued.masked,
                              issued.expires_at_ms)

    def verify(self, otp, account="alice", dist=None):
        return (dist or self.dist).verify_many([VerifyItem(account, otp, "test")])[0]

    def refused_rows(self, store=None):
        report = (store or self.store).verify_audit()
        assert report.first_bad is None, report.reason      # the chain itself is intact
        return report.bad_rows

    def row(self, table, key):
        """Every column of one row (an attacker's copy)."""
        tag, columns, key_column = TABLES[table]
        names = (*columns, "ver", "mac")
        [values] = self.backend.sql(f"SELECT {', '.join(names)} FROM {table}"
                                    f" WHERE {key_column} = %s", (key,))
        return dict(zip(names, values))

    def restore(self, table, key, copy):
        """Write an earlier copy of a row back (the rollback attack)."""
        key_column = TABLES[table][2]
        columns = [c for c in copy if c != key_column]
        self.backend.sql(f"UPDATE {table} SET {', '.join(c + ' = %s' for c in columns)}"
                         f" WHERE {key_column} = %s", (*[copy[c] for c in columns], key))


@pytest.fixture
def world(backend, store):
    return World(backend, store)


def _fresh(world):
    """Another server process (no memory of what this one read or wrote)."""
    store = world.backend.open(head=True)
    return store, Distribution(store, clock=lambda: NOW)


def test_rows_fresh_store_verifies(world):
    otp = world.otp()
    assert world.verify(otp) and not world.verify(otp)
    report = world.store.verify_audit()
    assert report.ok, report.reason


def test_rows_used_otp_reenabled_by_used_at_null_is_refused(world):
    otp = world.otp()
    assert world.verify(otp)
    world.backend.sql("UPDATE issued SET used_at = NULL")
    for dist in (world.dist, _fresh(world)[1]):
        assert not world.verify(otp, dist=dist)
    assert any("issued row" in p and "integrity" in p for p in world.refused_rows())


def test_rows_totp_last_step_reset_is_refused(world):
    world.admin.add_account("tina", "totp")
    code = totp.TOTP(bytes.fromhex(world.store.account("tina").material["key"])).generate(NOW)
    assert world.verify(code, "tina")
    world.backend.sql("UPDATE accounts SET last_step = -1 WHERE name = 'tina'")
    for dist in (world.dist, _fresh(world)[1]):
        assert not world.verify(code, "tina", dist=dist)
    assert world.store.account("tina") is None          # refused, as if absent
    assert any("accounts row 'tina'" in p for p in world.refused_rows())


def test_rows_unlock_by_editing_failures_is_refused(world):
    otp = world.otp()
    for _ in range(3):
        assert not world.verify("000000")
    assert world.store.account("alice").locked_until > NOW      # a temporary lock
    world.backend.sql("UPDATE accounts SET failures = 0, locked_until = 0 WHERE name = 'alice'")
    assert not world.verify(otp, dist=_fresh(world)[1])
    assert any("accounts row 'alice'" in p for p in world.refused_rows())


def test_rows_device_repointed_to_another_account_is_refused(world):
    world.backend.sql("UPDATE clients SET account = 'bob' WHERE name = 'dev'")
    assert world.store.client("dev") is None
    with pytest.raises(Refused):
        world.otp("bob")
    assert any("clients row 'dev'" in p for p in world.refused_rows())


def test_rows_verifier_credential_hash_swapped_is_refused(world):
    mine = credentials.new_credential()
    world.backend.sql("UPDATE clients SET credential_hash = %s WHERE name = 'rp'",
                      (credentials.credential_hash(mine),))
    assert world.store.client("rp") is None
    with pytest.raises(Refused):
        world.dist.login("rp", mine)
    assert any("clients row 'rp'" in p for p in world.refused_rows())


def test_rows_authority_credential_hash_swapped_is_refused(world):
    world.backend.sql("UPDATE authorities SET credential_hash = %s",
                      (credentials.credential_hash(credentials.new_credential()),))
    assert world.store.authority(1) is None
    assert any("authorities row 1" in p for p in world.refused_rows())


def test_rows_copied_under_another_key_is_refused(world):
    """A valid issued row duplicated under a new id (two unused copies of one OTP)."""
    otp = world.otp()
    [(issued_id,)] = world.backend.sql("SELECT MAX(id) FROM issued")
    columns = "account, client, otp_digest, issued_at, expires_at, used_at, ver, mac"
    world.backend.sql(f"INSERT INTO issued (id, {columns}) SELECT id + 1000, {columns}"
                      " FROM issued WHERE id = %s", (issued_id,))
    assert world.verify(otp) and not world.verify(otp)
    assert any(f"issued row {issued_id + 1000}" in p for p in world.refused_rows())


def test_rows_issued_rollback_to_older_valid_copy(world):
    """used_at restored together with the row's earlier version and MAC: refused by the
    process that marked it used; reported by audit verify in any case."""
    otp = world.otp()
    [(issued_id,)] = world.backend.sql("SELECT id FROM issued")
    before = world.row("issued", issued_id)
    assert world.verify(otp)
    world.restore("issued", issued_id, before)
    assert not world.verify(otp)                         # read time: this process knows
    problems = world.refused_rows(_fresh(world)[0])
    assert any(f"issued row {issued_id}" in p and "rolled back" in p for p in problems)


def test_rows_account_rollback_to_older_valid_copy(world):
    """An older copy of the account row (fewer failures, an earlier counter)."""
    world.otp()
    before = world.row("accounts", "alice")
    for _ in range(3):
        assert not world.verify("000000")                # locked now
    world.restore("accounts", "alice", before)
    assert world.store.account("alice") is None          # read time: an older version
    assert not world.verify("000000")
    problems = world.refused_rows(_fresh(world)[0])
    assert any("accounts row 'alice'" in p and "rolled back" in p for p in problems)


def test_rows_deleted_account_restored_is_reported(world):
    copy = world.row("accounts", "bob")
    world.admin.delete("bob")
    world.backend.sql(f"INSERT INTO accounts ({', '.join(copy)}, lockout) VALUES "
                      f"({', '.join(['%s'] * len(copy))}, 10)", tuple(copy.values()))
    assert any("accounts row 'bob'" in p and "deletion" in p
               for p in world.refused_rows(_fresh(world)[0]))


def test_rows_batch_refuses_only_the_broken_account(world):
    """Finding 10: one account row that fails its MAC, and one whose MAC is valid but whose
    material does not decrypt (corruption), refuse only their own items."""
    world.admin.add_account("carol", "hotp")
    otps = {name: world.otp(name, f"dev-{name}",
                            world.admin.add_client(f"dev-{name}", account=name))
            for name in ("bob", "carol")}
    good = world.otp()
    world.backend.sql("UPDATE accounts SET counter = counter + 5 WHERE name = 'bob'")
    keys = AtRestKeys(world.backend.key)
    row = world.row("accounts", "carol")
    row["material_enc"] = encrypt_material(keys, "someone-else", {"key": "00"})
    covered = [row[c] for c in TABLES["accounts"][1]]
    row["mac"] = row_mac(keys.row_mac, "a", covered, row["ver"])
    world.restore("accounts", "carol", row)
    for dist in (world.dist, _fresh(world)[1]):
        results = dist.verify_many([VerifyItem("bob", otps["bob"], "t"),
                                    VerifyItem("alice", good, "t"),
                                    VerifyItem("carol", otps["carol"], "t")])
        assert results == [False, dist is world.dist, False]


def test_rows_migration_from_v2_seals_existing_rows(backend, key, tmp_path):
    """A store written by the landed version (schema v2: no row MACs, audit entries without
    row records, an unkeyed head file) keeps working: the v3 migration seals its rows in
    one audited transaction and re-keys the head file; edits after that are caught."""
    conn = backend.module.connect(backend.target)
    try:
        assert backend.module.migrate(conn, target=2) == 2
        params = json.dumps({"algorithm": "sha1", "authorities": [], "digits": 6,
                             "lockout": 10, "ttl": 300, "window": 10}, sort_keys=True)
        material = AtRestKeys(key).encrypt(json.dumps({"key": "31" * 20}).encode(),
                                           b"account\0old")
        backend.execute(conn, "INSERT INTO accounts (name, type, params, state, material_enc,"
                        " counter, lockout, created_at) VALUES ('old', 'hotp', %s, 'active',"
                        " %s, 0, 10, 1.0)", (params, material))
        backend.execute(conn, "INSERT INTO clients VALUES ('olddev', 'old', %s, %s, %s, 1.0)",
                        (False, b"h" * 32, AtRestKeys(key).encrypt(b"M" * 32, b"client\0olddev")))
        backend.execute(conn, "INSERT INTO authorities VALUES (7, %s, 1.0)", (b"a" * 32,))
        digest = AtRestKeys(key).otp_digest("old", "123456")
        backend.execute(conn, "INSERT INTO issued (account, client, otp_digest, issued_at,"
                        " expires_at) VALUES ('old', 'olddev', %s, %s, %s)",
                        (digest, NOW - 10, NOW + 290))
        prev = ZERO_HASH
        for seq in (1, 2):
            prev = audit_mac(AtRestKeys(key).audit_key, prev, seq, 5.0, "admin", "old", "-",
                             "cli", "ok")
            backend.execute(conn, "INSERT INTO audit VALUES (%s, 5.0, 'admin', 'old', '-',"
                            " 'cli', 'ok', %s)", (seq, prev))
        backend.execute(conn, "UPDATE audit_head SET seq = 2, hash = %s", (prev,))
        backend.execute(conn, "INSERT INTO meta (key, value) VALUES ('key_check', %s)",
                        (AtRestKeys(key).encrypt(b"otpfast key check", b"otpfast key check"),))
    finally:
        conn.close()
    with open(backend.head_path, "w") as fh:              # the landed format
        check = hashlib.sha256(f"2 {prev.hex()}".encode()).hexdigest()[:16]
        fh.write(f"2 {prev.hex()} {check}".ljust(511) + "\n" + " " * 512)
    store = backend.open(head=True)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.client("olddev").account == "old" and store.authority(7) is not None
    report = store.verify_audit()
    # v4 seals the rows (entry 3), v5 gives the account its main token (entry 4), v6
    # re-seals the clients with their admin flag (entry 5)
    assert report.ok and report.head_seq == 5, report.reason
    assert [e.outcome for e in store.audit_entries()][-3:] == ["rows-sealed"] * 3
    assert store.client("olddev").admin is False
    assert store._head_file.read()[0] == 2                # re-keyed, still the landed head
    assert [(t.user, t.main) for t in store.tokens()] == [("old", True)]   # v5
    dist = Distribution(store, clock=lambda: NOW)
    assert dist.verify_many([VerifyItem("old", "123456", "t")]) == [True]
    assert dist.verify_many([VerifyItem("old", "123456", "t")]) == [False]
    store.close()
    backend.sql("UPDATE issued SET used_at = NULL")
    reopened = backend.open(head=True)
    assert Distribution(reopened, clock=lambda: NOW).verify_many(
        [VerifyItem("old", "123456", "t")]) == [False]
    assert not reopened.verify_audit().ok


def test_rows_tx_without_audit_entry_is_recorded(backend, store):
    """A transaction that writes rows but audits nothing still records them (one "store"
    entry), so every row version is bound to the chain."""
    with store.transaction() as tx:
        assert tx.add_authority(3, b"h" * 32, 1.0)
    [entry] = list(store.audit_entries())
    records = json.loads(entry.rows)
    # PostgreSQL draws row versions from a sequence: the entry names the version ("v")
    version = records.pop("v", entry.seq)
    assert (entry.event, records) == ("store", {"u": [3]})
    assert backend.sql("SELECT ver FROM authorities WHERE id = 3") == [(version,)]
    assert store.verify_audit().ok


def test_rows_verify_single_otp_raises_for_refused_row(world):
    otp = world.otp()
    world.backend.sql("UPDATE accounts SET failures = 1 WHERE name = 'alice'")
    with pytest.raises(InvalidToken):
        world.dist.verify("alice", otp, source="t")


def test_rows_issued_batch_path_matches_the_generic_mac():
    """The verification hot path's batch MACs (rows.row_macs, the core) are row_mac's."""
    from otpfast.store.rows import row_macs

    keys = AtRestKeys(bytes(range(32)))
    rows = [(42, "é, \"x\"", b"\x00" * 32, expires_at, used_at, 7)
            for expires_at in (1_700_000_300.0, 1_700_000_300.123456789, 5e-324)
            for used_at in (None, 1_700_000_100.25, 1_700_000_100)]
    assert row_macs(keys, "i", rows) == [row_mac(keys.row_mac, "i", row[:-1], row[-1])
                                         for row in rows]


def test_rows_admin_flag_granted_by_editing_is_refused(world):
    """A verifier made an admin by setting the admin flag (the admin API's access): refused
    as if absent, and listed by audit verify."""
    credential = world.admin.add_client("ops", verifier=True)
    assert world.dist.login("ops", credential).admin is False
    world.backend.sql("UPDATE clients SET admin = %s WHERE name = 'ops'", (True,))
    assert world.store.client("ops") is None
    with pytest.raises(Refused):
        world.dist.login("ops", credential)
    assert any("clients row 'ops'" in p for p in world.refused_rows())


def test_rows_admin_flag_removed_by_editing_is_refused(world):
    credential = world.admin.add_client("boss", admin=True)
    assert world.dist.login("boss", credential).admin is True
    world.backend.sql("UPDATE clients SET admin = %s, verifier = %s WHERE name = 'boss'",
                      (False, True))
    assert world.store.client("boss") is None
    assert any("clients row 'boss'" in p for p in world.refused_rows())


def test_rows_migration_to_v6_reseals_only_authentic_clients(backend, key):
    """v6 adds the admin flag to the clients' MAC: rows that pass their v5 MAC are re-sealed
    (one audited transaction); a row edited before the upgrade is not laundered."""
    from otpfast.store.rows import CLIENT_NAMES_V5

    conn = backend.module.connect(backend.target)
    keys = AtRestKeys(key)
    try:
        assert backend.module.migrate(conn, target=5, keys=keys) == 5
        for name, verifier in (("rp", True), ("evil", False)):
            values = (name, None, verifier, b"h" * 32, b"", 1.0)
            backend.execute(conn, f"INSERT INTO clients ({', '.join(CLIENT_NAMES_V5)}, ver, mac)"
                            " VALUES (%s, %s, %s, %s, %s, %s, 1, %s)",
                            (*values, row_mac(keys.row_mac, "c", values, 1)))
        backend.execute(conn, "UPDATE clients SET verifier = %s WHERE name = 'evil'", (True,))
    finally:
        conn.close()
    store = backend.open()
    assert store.upgraded_from == 5 and store.schema_version() == SCHEMA_VERSION
    rp = store.client("rp")
    assert rp is not None and rp.verifier and not rp.admin
    assert store.client("evil") is None
    report = store.verify_audit()
    assert report.first_bad is None and [e.outcome for e in store.audit_entries()] == ["rows-sealed"]
    assert len(report.bad_rows) == 1 and "clients row 'evil'" in report.bad_rows[0]
