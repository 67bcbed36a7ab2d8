"""``otpfast backup create FILE`` / ``otpfast backup restore FILE``.

A backup is one file: a gzip'ed tar of ``manifest.json``, the data directory's keys and
certificate (``at-rest.key`` unless the key comes from $OTPFAST_AT_REST_KEY, ``keyserver.pem``,
``tls.crt``, ``tls.key``), a consistent copy of the store (SQLite: ``store.db`` by the online
backup API; PostgreSQL: ``postgres/<table>.copy`` of every table from one snapshot, and
``store.url``) with the audit anchors inside it, and ``audit.head``: the head file written
for the copy's own audit head (MACed under the head key, as the servers write it); on
PostgreSQL also ``audit.head.<chain>`` for every node's chain in the copy, all checked by
``audit verify`` at create and at restore and installed in the restored data dir (which
keeps no other store's chain head files; a fresh data dir names a new node on first use).

It holds the at-rest key, so it is as secret as the data directory: it is created 0600
(never over an existing file) and, with a passphrase, encrypted: scrypt (n=2^15, r=8, p=1)
derives an AES-256-GCM key from it; the file is ``MAGIC || salt || nonce || ciphertext``,
the magic and salt being the associated data.

``create`` checks the copy with ``audit verify`` before writing the file; ``restore`` checks
it again before touching the target, refuses a target that holds a data directory (or a
database that holds a store) unless ``force``, and installs every file whole (temporary
name, fsync, rename).
"""
import datetime
import io
import json
import os
import secrets
import shutil
import tarfile
import tempfile

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .datadir import (CERT_FILE, HEAD_FILE, KEY_FILE, RSA_FILE, STORE_FILE, STORE_URL_FILE, TLS_KEY_FILE,
                      URL_SCHEMES, DataDir, PRIVATE_DIR_MODE)
from .errors import InvalidParameter, StoreError
from .rotate import sync_directory
from .store import PostgresStore, SQLiteStore, atrest, describe_url, snapshot
from .store.chain import HeadFile

FORMAT = "otpfast-backup-1"
MAGIC = b"otpfast-backup-encrypted-1\n"
SALT_BYTES, NONCE_BYTES = 16, 12
SCRYPT_N = 2**15        # 32 MiB, ~0.1 s: a passphrase-guesser pays that per guess
KEY_FILES = (KEY_FILE, RSA_FILE, CERT_FILE, TLS_KEY_FILE)
_PG_DIR = "postgres"


def _key_from(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase)


def encrypt(data: bytes, passphrase: bytes) -> bytes:
    salt, nonce = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(NONCE_BYTES)
    return MAGIC + salt + nonce + AESGCM(_key_from(passphrase, salt)).encrypt(nonce, data, MAGIC + salt)


def decrypt(blob: bytes, passphrase: bytes) -> bytes:
    salt = blob[len(MAGIC):len(MAGIC) + SALT_BYTES]
    nonce = blob[len(MAGIC) + SALT_BYTES:len(MAGIC) + SALT_BYTES + NONCE_BYTES]
    try:
        return AESGCM(_key_from(passphrase, salt)).decrypt(
            nonce, blob[len(MAGIC) + SALT_BYTES + NONCE_BYTES:], MAGIC + salt)
    except (InvalidTag, ValueError):
        raise InvalidParameter("passphrase-file", "wrong passphrase, or the backup is damaged") from None


def _write_head(path: str, key: bytes, head: tuple[int, bytes]) -> None:
    HeadFile(path, atrest.AtRestKeys(key).head_mac).rewrite(*head)


def _check(store) -> None:
    try:
        report = store.verify_audit()
    finally:
        store.close()
    if not report.ok:
        problems = ([] if report.first_bad is None else [report.reason]) + list(report.bad_rows)
        raise StoreError(f"audit verify fails on the copy: {'; '.join(problems)}")


def _key(directory: str) -> bytes:
    path = os.path.join(directory, KEY_FILE)
    if os.path.exists(path):
        os.chmod(path, 0o600)
        with open(path, encoding="ascii") as fh:
            return atrest.decode_key(fh.read())
    return atrest.load_key(None)        # $OTPFAST_AT_REST_KEY


def create(datadir: DataDir, path: str, *, passphrase: bytes | None = None) -> dict:
    """Write the backup of ``datadir`` to the new file ``path``; returns its manifest."""
    datadir.fingerprint()               # NotInitialised if there is nothing to back up
    if os.path.lexists(path):
        raise InvalidParameter("FILE", f"{path} exists: a backup never overwrites a file")
    key = atrest.load_key(datadir.file(KEY_FILE))
    url = datadir.store_url()
    with tempfile.TemporaryDirectory(prefix="otpfast-backup-") as work:     # 0700
        names = []
        for name in KEY_FILES + ((STORE_URL_FILE,) if url else ()):
            if os.path.exists(datadir.file(name)):
                shutil.copyfile(datadir.file(name), os.path.join(work, name))
                names.append(name)
        manifest = {"format": FORMAT, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "at_rest_key": "included" if KEY_FILE in names else "external ($OTPFAST_AT_REST_KEY)",
                    "pin": datadir.fingerprint()}
        head_path = os.path.join(work, HEAD_FILE)
        if url is None:
            snapshot.copy_sqlite(datadir.file(STORE_FILE), os.path.join(work, STORE_FILE))
            head = snapshot.sqlite_head(os.path.join(work, STORE_FILE))
            _write_head(head_path, key, head)
            _check(SQLiteStore(os.path.join(work, STORE_FILE), key, head_path=head_path))
            snapshot.settle_sqlite(os.path.join(work, STORE_FILE))
            names.append(STORE_FILE)
            manifest["store"] = "sqlite"
        else:
            os.mkdir(os.path.join(work, _PG_DIR), 0o700)
            tables, heads = snapshot.dump_postgres(url, os.path.join(work, _PG_DIR))
            for chain, chain_head in heads.items():     # every node's chain
                if chain != 1:
                    _write_head(f"{head_path}.{chain}", key, chain_head)
                    names.append(f"{HEAD_FILE}.{chain}")
            head = heads[1]
            _write_head(head_path, key, head)
            names.append(_PG_DIR)
            manifest.update(store="postgresql", source=describe_url(url), tables=tables,
                            audit_heads={str(chain): seq for chain, (seq, _) in heads.items()})
        names.append(HEAD_FILE)
        manifest["audit_head"] = head[0]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
            for name in names:
                tar.add(os.path.join(work, name), arcname=name)
        data = buffer.getvalue()
    if passphrase is not None:
        data = encrypt(data, passphrase)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    manifest["encrypted"] = passphrase is not None
    return manifest


def _unpack(path: str, passphrase: bytes | None, work: str) -> dict:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InvalidParameter("FILE", f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(MAGIC):
        if passphrase is None:
            raise InvalidParameter("passphrase-file", "the backup is encrypted: give its passphrase")
        data = decrypt(data, passphrase)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(work, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidParameter("FILE", f"{path} is not an otpfast backup ({exc})") from None
    try:
        with open(os.path.join(work, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        manifest = {}
    if manifest.get("format") != FORMAT:
        raise InvalidParameter("FILE", f"{path} is not an otpfast backup (no {FORMAT} manifest)")
    return manifest


def _install(source: str, target: str) -> None:
    """Copy ``source`` to ``target`` whole: a temporary name, fsync, rename."""
    temp = target + ".restore"
    with open(source, "rb") as src:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(temp, target)


def restore(path: str, datadir: DataDir, *, passphrase: bytes | None = None, force: bool = False,
            store_url: str | None = None) -> dict:
    """Restore the backup ``path`` into ``datadir`` (a new directory unless ``force``);
    a PostgreSQL store goes to ``store_url`` (default: the backed-up one), which must hold
    no store unless ``force``. Returns the manifest."""
    if store_url is not None and not store_url.startswith(URL_SCHEMES):
        raise InvalidParameter("store-url", "must be a postgresql://... URL")
    occupied = [name for name in KEY_FILES + (STORE_FILE, STORE_URL_FILE, HEAD_FILE)
                if os.path.exists(datadir.file(name))]
    if occupied and not force:
        raise InvalidParameter("data-dir", f"{datadir.path} holds a data directory ({', '.join(occupied)}): "
                               "restoring over it needs --force (stop its servers first)")
    with tempfile.TemporaryDirectory(prefix="otpfast-restore-") as work:
        manifest = _unpack(path, passphrase, work)
        key = _key(work)
        head_path = os.path.join(work, HEAD_FILE)
        if manifest.get("store") == "sqlite":
            _check(SQLiteStore(os.path.join(work, STORE_FILE), key, head_path=head_path))
            snapshot.settle_sqlite(os.path.join(work, STORE_FILE))
            url = None
        else:
            if store_url is None:
                with open(os.path.join(work, STORE_URL_FILE), encoding="utf-8") as fh:
                    store_url = fh.read().strip()
            url = store_url
            if not force and not snapshot.postgres_is_empty(url):
                raise InvalidParameter("store-url", f"{describe_url(url)} holds a store: restoring over it "
                                       "needs --force (stop its servers first)")
            PostgresStore(url, key, create=True).close()     # the schema, then the backed-up rows
            snapshot.load_postgres(url, os.path.join(work, _PG_DIR), manifest["tables"])
            _check(PostgresStore(url, key, head_path=head_path))
        os.makedirs(datadir.path, mode=PRIVATE_DIR_MODE, exist_ok=True)
        datadir.tighten()
        for suffix in ("-wal", "-shm"):          # a stale WAL must not be replayed into the copy
            if os.path.exists(datadir.file(STORE_FILE + suffix)):
                os.unlink(datadir.file(STORE_FILE + suffix))
        for name in os.listdir(datadir.path):      # another store's chains: not this one's
            if _chain_head_file(name):
                os.unlink(datadir.file(name))
        chain_heads = tuple(name for name in os.listdir(work) if _chain_head_file(name))
        for name in KEY_FILES + (HEAD_FILE, STORE_FILE if url is None else STORE_URL_FILE) + chain_heads:
            if os.path.exists(os.path.join(work, name)):
                _install(os.path.join(work, name), datadir.file(name))
        if url is not None:
            if store_url != datadir.store_url():
                _install_text(datadir.file(STORE_URL_FILE), store_url + "\n")
            if os.path.exists(datadir.file(STORE_FILE)):
                os.unlink(datadir.file(STORE_FILE))
        elif os.path.exists(datadir.file(STORE_URL_FILE)):
            os.unlink(datadir.file(STORE_URL_FILE))
        sync_directory(datadir.path)
    return manifest


def _chain_head_file(name: str) -> bool:
    """``audit.head.<chain>``: the head file of a node's chain (PostgreSQL)."""
    return name.startswith(HEAD_FILE + ".") and name[len(HEAD_FILE) + 1:].isdigit()


def _install_text(target: str, text: str) -> None:
    temp = target + ".restore"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, target)
