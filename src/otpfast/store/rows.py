"""Row authentication: what protects the store's rows from someone who can write the
database but does not hold the at-rest key.

Every row whose fields decide access or replay carries two columns: ``ver`` and ``mac``.

* ``mac`` = keyed BLAKE2b-256 under the row key (AtRestKeys.row_key) of the table's tag,
  the covered columns in a fixed order (each type-tagged and length-prefixed: the spec is
  otpfast._core_py_store), then ``ver``. The hot paths MAC a whole batch in one core call
  (row_macs); row_mac does one row with the keyed state AtRestKeys.row_mac.
  Covered: clients: name, account, verifier flag, admin flag, credential hash, masking key,
  creation time; authorities: id, credential
  hash, creation time; tokens: every column (serial, user, type, params, description,
  enabled flag, main flag, material, counter, last step, chain value, creation time); accounts: every column of ACCOUNT_COLUMNS (type, params with the
  lockout policy, state, material, counter, last step, chain value, failures, transcript,
  ... - columns added there later are covered without more code); issued OTPs: id,
  account, OTP digest, expiry and ``used_at`` (what decides its use). The primary key is
  covered, so a row copied under another key fails.
* ``ver`` = the seq of the audit entry of the transaction that last wrote the row: the first
  entry that transaction appended, whose ``rows`` field lists the rows it wrote, a JSON
  object ``{tag: [key, ...], "-" + tag: [deleted key, ...], "=": [[tag, key, ver], ...]}``
  (``=``: versions an archive carries over). The field is inside the entry's chained MAC.
  On PostgreSQL, where each node process has its own chain, versions come from one
  sequence instead and the entry names its version (``"v"``; otpfast.store.postgres).

What is caught, and where:

* At read time, by every server and CLI process: any edit of a covered column (or of
  ``ver``/``mac``) without the key. The row is refused as if absent (an unknown client,
  account or authority, an issued OTP that does not exist), logged as a warning, and the
  rest of a verification batch goes on.
* At read time, a rollback to an older *valid* copy (a restored ``used_at = NULL`` with its
  old MAC, an older counter/step/chain/failure count) of a row this process has already
  seen or written in a newer version since it started: accounts through the high-water
  version the account decoder keeps per name, issued OTPs through the ids this process
  marked used and the version it marked them with (a later OTP that reuses a purged id has
  a newer one); both bounded in memory, see HIGH_WATER_SIZE.
* By ``otpfast audit verify`` (every row, every time): any MAC failure, and any row whose
  ``ver`` is not the seq of the last audit entry that wrote it (a rollback to an older copy
  by someone else's process, or across a restart), a row the log never wrote, and a
  row restored after its recorded deletion. Deleting an issued OTP row (expired ones are
  purged routinely) only withholds an OTP and is not reported.

Rows do not stop a database writer from deleting rows or from breaking the store (denial of
service); they stop the store from accepting or granting anything through an edited row.
"""
import hmac
import json
import logging

from otpfast.core import issued_used_macs as core_issued_used_macs, row_encode, row_macs as core_row_macs

_log = logging.getLogger("otpfast.store")
_compact_json = json.JSONEncoder(separators=(",", ":")).encode

ROW_COLUMNS = "ver, mac"
CLIENT_NAMES_V5 = ("name", "account", "verifier", "credential_hash", "mask_key_enc", "created_at")
# schema v6: the admin flag (the migration re-seals the rows that pass their v5 MAC)
CLIENT_NAMES = (*CLIENT_NAMES_V5, "admin")
AUTHORITY_NAMES = ("id", "credential_hash", "created_at")
# what decides an issued OTP's use (the requesting client and issue time do not)
ISSUED_NAMES = ("id", "account", "otp_digest", "expires_at", "used_at")
# tokens (schema v5): every column
TOKEN_NAMES = ("serial", "user_name", "type", "params", "description", "enabled", "main",
               "material_enc", "counter", "last_step", "chain_last", "created_at")
HIGH_WATER_SIZE = 65536


def tables(account_names) -> dict:
    """table -> (tag in the MAC and the audit records, covered columns, key column)."""
    return {"clients": ("c", CLIENT_NAMES, "name"),
            "authorities": ("u", AUTHORITY_NAMES, "id"),
            "accounts": ("a", tuple(account_names), "name"),
            "issued": ("i", ISSUED_NAMES, "id"),
            "tokens": ("t", TOKEN_NAMES, "serial")}


# one column value, type-tagged and length-prefixed (the MAC input): the spec is
# otpfast._core_py_store.row_encode
encode = row_encode


def row_mac(mac, tag: str, values, ver) -> bytes:
    """The MAC of one row: ``mac`` is the keyed hash state of the row key."""
    state = mac.copy()
    state.update(b"%b\0%b%b" % (tag.encode("ascii"), b"".join(map(row_encode, values)),
                                row_encode(ver)))
    return state.digest()


def row_macs(keys, tag: str, rows) -> list:
    """row_mac of many rows in one call (the hot paths): ``rows`` are sequences of the
    covered values with the version last; ``keys`` the store's AtRestKeys."""
    return core_row_macs(keys.row_key, tag, rows)


def issued_used_macs(keys, rows, now, ver) -> list:
    """Of issued rows read as unused, (id, account, otp_digest, expires_at, ver, mac): per
    row its MAC once marked used at ``now`` with version ``ver``, or None if it fails its
    MAC as read (one core call for a batch; the spec is otpfast._core_py_store)."""
    return core_issued_used_macs(keys.row_key, rows, now, ver)


def row_ok(mac, tag: str, values, ver, stored) -> bool:
    if stored is None or ver is None:
        return False
    return hmac.compare_digest(row_mac(mac, tag, values, ver), bytes(stored))


def refuse(table: str, key, why: str = "fails its integrity check") -> None:
    _log.warning("store: the %s row %r %s (edited without the at-rest key?): refused",
                 table, key, why)


def records_text(written: dict, version: int | None = None) -> str | None:
    """The ``rows`` field of an audit entry: ``written`` maps (tag, key) -> None (written),
    "-" (deleted) or a carried-over version. ``version``: the rows' version when it is not
    the entry's seq (PostgreSQL's per-node chains draw versions from one sequence), as "v"."""
    if not written:
        return None
    out: dict = {} if version is None else {"v": version}
    for (tag, key), what in written.items():
        if what is None:
            out.setdefault(tag, []).append(key)
        elif what == "-":
            out.setdefault("-" + tag, []).append(key)
        else:
            out.setdefault("=", []).append([tag, key, what])
    return _compact_json(out)


def note_records(latest: dict, seq: int, text: str | None) -> None:
    """Fold one entry's ``rows`` field into ``latest``: (tag, key) -> version or "-"."""
    if not text:
        return
    for tag, keys in json.loads(text).items():
        if tag == "v":
            continue
        if tag == "=":
            for carried_tag, key, ver in keys:
                latest[carried_tag, key] = ver
        elif tag.startswith("-"):
            for key in keys:
                latest[tag[1:], key] = "-"
        else:
            for key in keys:
                latest[tag, key] = seq


def check_rows(keys, table_specs: dict, latest: dict, rows_of,
               anchor_seq: int = 0) -> list[str]:
    """Every row of every authenticated table against its MAC and the last audit entry
    that wrote it. ``rows_of(table, columns)`` yields the rows (covered columns, then
    ver, mac); ``latest`` is from note_records over the whole chain; ``keys`` the store's
    AtRestKeys. Returns problems."""
    problems = []
    for table, (tag, columns, key_column) in table_specs.items():
        key_index = columns.index(key_column)
        rows = list(rows_of(table, columns))
        for start in range(0, len(rows), _CHECK_CHUNK):
            chunk = rows[start:start + _CHECK_CHUNK]
            macs = row_macs(keys, tag, [row[:-1] for row in chunk])
            for row, mac in zip(chunk, macs):
                problem = _row_problem(table, tag, row, mac, key_index, latest, anchor_seq)
                if problem is not None:
                    problems.append(problem)
    return problems


_CHECK_CHUNK = 4096     # rows MACed per core call in check_rows


def _row_problem(table: str, tag: str, row, mac: bytes, key_index: int, latest: dict,
                 anchor_seq: int) -> str | None:
    """What is wrong with one row (covered values, ver, stored MAC) whose MAC computes
    to ``mac``, or None."""
    ver, stored = row[-2], row[-1]
    key = row[key_index]
    where = f"{table} row {key!r}"
    if stored is None or ver is None or not hmac.compare_digest(mac, bytes(stored)):
        return f"{where} fails its integrity check (edited without the at-rest key)"
    last = latest.get((tag, key))
    if last == ver:
        return None
    if last == "-":
        return f"{where} was restored after its deletion"
    if last is None and ver > anchor_seq:
        return (f"{where} (version {ver}) was never written by the logged "
                "transactions")
    if last is None:
        return (f"{where} (version {ver}) is not accounted for after the "
                "archive anchor")
    if ver < last:
        return (f"{where} was rolled back to an older copy (version {ver}, "
                f"last written by entry {last})")
    return f"{where} has version {ver}, but the log last wrote it in entry {last}"
