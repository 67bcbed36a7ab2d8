"""Row authentication: what protects the store's rows from someone who can write the
database but does not hold the at-rest key.

Every row whose fields decide access or replay carries two columns: ``ver`` and ``mac``.

* ``mac`` = keyed BLAKE2b-256 under the row key (AtRestKeys.row_mac: the keyed state, copied
  per MAC, so each MAC is one hash) of the table's tag, the covered columns in a fixed order
  (each type-tagged and length-prefixed), then ``ver``. Covered: clients: name, account,
  verifier flag, credential hash, masking key, creation time; authorities: id, credential
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
  marked used (both bounded in memory, see HIGH_WATER_SIZE).
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
import struct

_log = logging.getLogger("otpfast.store")

ROW_COLUMNS = "ver, mac"
CLIENT_NAMES = ("name", "account", "verifier", "credential_hash", "mask_key_enc", "created_at")
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


_DOUBLE = struct.Struct(">d").pack


def _float(value: float) -> bytes:
    # numbers by value: an integral REAL reads back as a float from one driver, an int
    # from another
    if value.is_integer() and abs(value) < 2**53:
        return b"i%d;" % int(value)
    return b"f" + _DOUBLE(value)


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return b"s%d:%b" % (len(raw), raw)


def _bytes(value) -> bytes:
    raw = bytes(value)
    return b"b%d:%b" % (len(raw), raw)


_ENCODERS = {type(None): lambda value: b"N", bool: lambda value: b"i%d;" % value,
             int: lambda value: b"i%d;" % value, float: _float, str: _str, bytes: _bytes}
_NAMES: dict = {}           # encoded account names (the verification hot path)


def encode(value) -> bytes:
    """One column value, type-tagged and length-prefixed (the MAC input)."""
    return _ENCODERS.get(type(value), _bytes)(value)


def row_mac(mac, tag: str, values, ver) -> bytes:
    """The MAC of one row: ``mac`` is the keyed hash state of the row key."""
    state = mac.copy()
    state.update(b"%b\0%b%b" % (tag.encode("ascii"), b"".join(map(encode, values)),
                                encode(ver)))
    return state.digest()


class RowSealer:
    """row_mac for many rows of one table that differ only in the columns at ``varying``
    (bulk inserts): the other columns of ``template`` and ``ver`` are encoded once, so a
    row costs the encoding of its varying values and one copy of the keyed state."""

    def __init__(self, mac, tag: str, template, varying, ver):
        self._mac = mac
        self._parts, start = [], 0
        head = b"%b\0" % tag.encode("ascii")
        for index in varying:
            self._parts.append(head + b"".join(map(encode, template[start:index])))
            head, start = b"", index + 1
        self._tail = head + b"".join(map(encode, template[start:])) + encode(ver)

    def __call__(self, *values) -> bytes:
        pieces = []
        for part, value in zip(self._parts, values):
            pieces += (part, encode(value))
        state = self._mac.copy()
        state.update(b"".join(pieces) + self._tail)
        return state.digest()


def issued_prefix(id_: int, account: str, otp_digest: bytes, expires_at: float) -> bytes:
    """The MAC input of an issued row up to used_at, in one step (the verification hot
    path): row_mac(mac, "i", (id, account, digest, expiry, used_at), ver) hashes this, then
    used_at and ver encoded."""
    name = _NAMES.get(account)
    if name is None:
        name = _str(account)
        if len(_NAMES) < HIGH_WATER_SIZE:
            _NAMES[account] = name
    return b"i\0i%d;%bb%d:%b%b" % (id_, name, len(otp_digest), otp_digest, _float(expires_at))


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
    return json.dumps(out, separators=(",", ":"))


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


def check_rows(mac, table_specs: dict, latest: dict, rows_of,
               anchor_seq: int = 0) -> list[str]:
    """Every row of every authenticated table against its MAC and the last audit entry
    that wrote it. ``rows_of(table, columns)`` yields the rows (covered columns, then
    ver, mac); ``latest`` is from note_records over the whole chain. Returns problems."""
    problems = []
    for table, (tag, columns, key_column) in table_specs.items():
        key_index = columns.index(key_column)
        for row in rows_of(table, columns):
            values, ver, stored = row[:-2], row[-2], row[-1]
            key = values[key_index]
            where = f"{table} row {key!r}"
            if not row_ok(mac, tag, values, ver, stored):
                problems.append(f"{where} fails its integrity check (edited without the "
                                "at-rest key)")
                continue
            last = latest.get((tag, key))
            if last == ver:
                continue
            if last == "-":
                problems.append(f"{where} was restored after its deletion")
            elif last is None and ver > anchor_seq:
                problems.append(f"{where} (version {ver}) was never written by the logged "
                                "transactions")
            elif last is None:
                problems.append(f"{where} (version {ver}) is not accounted for after the "
                                "archive anchor")
            elif ver < last:
                problems.append(f"{where} was rolled back to an older copy (version {ver}, "
                                f"last written by entry {last})")
            else:
                problems.append(f"{where} has version {ver}, but the log last wrote it in "
                                f"entry {last}")
    return problems
