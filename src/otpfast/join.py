"""Another node for a shared (PostgreSQL) store: ``otpfast node export FILE`` on a node,
``otpfast init --join FILE`` on the new machine.

What the nodes of one store share travels in the join file: the store URL, the at-rest key
(unless the nodes take it from $OTPFAST_AT_REST_KEY: then it is not in the file, and the new
node needs the variable too), the key server's RSA key (ceremony contributions are
encrypted to it, receipts signed with it) and the TLS identity (certificate and key: every
node presents the same key, so one SPKI pin fits all of them). What each node keeps for
itself is made by the join: its node name (``node.id``: its audit chains), its audit head
files (chain 1's starts at the store's current head; its own chains' as it writes them).

The file holds the at-rest key: it is written 0600, never over an existing file, and with
a passphrase encrypted (scrypt + AES-256-GCM, as ``otpfast backup``); it never goes through
a command line. The join checks the store before it writes anything: the database must
exist and hold the store, at this otpfast's schema, under the file's key.
"""
import datetime
import json
import os

from . import backup
from .datadir import (CERT_FILE, HEAD_FILE, KEY_FILE, PRIVATE_DIR_MODE, RSA_FILE, STORE_URL_FILE,
                      TLS_KEY_FILE, URL_SCHEMES, DataDir, _write_private)
from .errors import InvalidParameter, StoreError
from .rotate import _matching_pair, sync_directory
from .store import PostgresStore, atrest, describe_url
from .store.chain import HeadFile

FORMAT = "otpfast-join-1"
MAGIC = b"otpfast-join-encrypted-1\n"
_FILES = {"keyserver_pem": RSA_FILE, "tls_crt": CERT_FILE, "tls_key": TLS_KEY_FILE}


def export(datadir: DataDir, path: str, *, passphrase: bytes | None = None) -> dict:
    """Write the join file of ``datadir``'s store to the new file ``path``; returns what
    it says (without the secrets)."""
    url = datadir.store_url()
    pin = datadir.fingerprint()         # NotInitialised if there is nothing to export
    if url is None:
        raise InvalidParameter("data-dir", f"{datadir.path} keeps a SQLite store, which one "
                               "machine uses alone: nodes share a PostgreSQL store "
                               "(`otpfast init --store-url`)")
    if os.path.lexists(path):
        raise InvalidParameter("FILE", f"{path} exists: an export never overwrites a file")
    datadir.open_store().close()        # the store answers, with this key
    document = {"format": FORMAT, "store_url": url, "pin": pin,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    if os.path.exists(datadir.file(KEY_FILE)):
        with open(datadir.file(KEY_FILE), encoding="ascii") as fh:
            document["at_rest_key"] = fh.read().strip()
    for field, name in _FILES.items():
        with open(datadir.file(name), encoding="ascii") as fh:
            document[field] = fh.read()
    data = json.dumps(document).encode("utf-8")
    if passphrase is not None:
        data = backup.encrypt(data, passphrase, magic=MAGIC)
    _write_private(path, data)
    return {"store": describe_url(url), "pin": pin, "encrypted": passphrase is not None,
            "at_rest_key": "included" if "at_rest_key" in document
            else f"external (${atrest.ENV_VAR})"}


def _read(path: str, passphrase: bytes | None) -> dict:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InvalidParameter("join", f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(MAGIC):
        if passphrase is None:
            raise InvalidParameter("passphrase-file", "the join file is encrypted: give its "
                                   "passphrase")
        data = backup.decrypt(data, passphrase, magic=MAGIC)
    try:
        document = json.loads(data)
        if document.get("format") != FORMAT:
            raise ValueError(document.get("format"))
        return document
    except (ValueError, AttributeError):
        raise InvalidParameter("join", f"{path} is not an otpfast join file (from "
                               "`otpfast node export`)") from None


def join(datadir: DataDir, path: str, *, passphrase: bytes | None = None,
         store_url: str | None = None, tls_cert: str | None = None,
         tls_key: str | None = None) -> dict:
    """Make ``datadir`` (new) a node of the store the join file ``path`` names.
    ``store_url``: this node's URL of that database (another host name or role) instead of
    the file's; ``tls_cert`` + ``tls_key``: a TLS identity of its own instead of the shared
    one (clients then pin each node's key). Returns the node's name, pin and store."""
    if datadir.initialised or any(os.path.exists(datadir.file(name)) for name in
                                  (KEY_FILE, RSA_FILE, CERT_FILE, TLS_KEY_FILE, HEAD_FILE)):
        raise InvalidParameter("data-dir", f"{datadir.path} is initialised already")
    if (tls_cert is None) != (tls_key is None):
        raise InvalidParameter("tls-cert", "give both --tls-cert and --tls-key, or neither")
    document = _read(path, passphrase)
    url = store_url or document["store_url"]
    if not url.startswith(URL_SCHEMES):
        raise InvalidParameter("store-url", "must be a postgresql://... URL")
    key_text = document.get("at_rest_key")
    if key_text is None and not os.environ.get(atrest.ENV_VAR):
        raise InvalidParameter("join", f"the store's nodes take the at-rest key from "
                               f"${atrest.ENV_VAR}: set it here too")
    key = atrest.decode_key(key_text) if key_text is not None else atrest.load_key(None)
    files = {name: document[field].encode("ascii") for field, name in _FILES.items()}
    if tls_cert is not None:
        with open(tls_cert, "rb") as fh:
            files[CERT_FILE] = fh.read()
        with open(tls_key, "rb") as fh:
            files[TLS_KEY_FILE] = fh.read()
        _matching_pair(files[CERT_FILE], files[TLS_KEY_FILE], "tls-cert")
    try:       # the database must exist and hold the store, under this key, at this schema
        store = PostgresStore(url, key, create=False, upgrade=False)
    except StoreError as exc:
        raise StoreError(f"cannot join {describe_url(url)}: {exc} (the database must exist "
                         "and hold the store: `otpfast init --store-url` on the first node)"
                         ) from None
    try:
        head = store.audit_heads()[1]
    finally:
        store.close()
    os.makedirs(datadir.path, mode=PRIVATE_DIR_MODE, exist_ok=True)
    datadir.tighten()
    if key_text is not None:
        _write_private(datadir.file(KEY_FILE), key_text.encode("ascii") + b"\n")
    for name, data in files.items():
        _write_private(datadir.file(name), data)
    # chain 1 (migrations, key rotations) is checked from where it is now: a lower bound
    HeadFile(datadir.file(HEAD_FILE), atrest.AtRestKeys(key).head_mac).rewrite(*head)
    node = datadir.node_id()
    _write_private(datadir.file(STORE_URL_FILE), url.encode("utf-8") + b"\n")    # last
    sync_directory(datadir.path)
    return {"node": node, "pin": datadir.fingerprint(), "store": describe_url(url),
            "shared_pin": datadir.fingerprint() == document.get("pin")}
