"""Key rotation in a data directory (``otpfast rotate tls|rsa|at-rest``).

* ``tls``: a new certificate: self-signed for the same key (``keep_key``: the pin clients
  hold stays valid), for a new key (a new pin), or the operator's certificate and key. A
  running server picks it up on SIGHUP.
* ``rsa``: a new RSA key for the key server (ceremony contributions are encrypted to it,
  receipts and transcripts signed with it). The old key is kept beside it as
  ``keyserver.pem.<UTC time>.old``; servers use the new one from their next start.
* ``at-rest``: a new at-rest key; the store re-encrypted and re-MACed in one transaction
  (otpfast.store.rekey). Two-phase with the files: ``at-rest.key.new`` and
  ``audit.head.new`` are written (fsynced) inside the transaction, before COMMIT, and renamed
  over the old files after it; a crash in between is settled by the next process that opens
  the data dir (``finish_at_rest``: the store says which key it holds). Servers must be
  stopped (they hold the old key). PostgreSQL with node chains: every chain is MACed again
  and this data dir's head files rewritten; every other node needs the new ``at-rest.key``
  and ``audit.head`` and must drop its ``audit.head.<N>`` files (MACed under the old key;
  rewritten at its next commit). A data dir with a share server's ``shares.db`` is refused
  (that store is under the same key and not re-encrypted here).

Files are replaced whole: written to a temporary name, fsynced, renamed, then the directory
fsynced, so a crash leaves either the old file or the new one.
"""
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import logging

from .datadir import (CERT_FILE, HEAD_FILE, KEY_FILE, PRIVATE_FILE_MODE, RSA_FILE, STORE_FILE, TLS_KEY_FILE,
                      DataDir, _self_signed)
from .errors import InvalidParameter
from .store import atrest
from .store.chain import HeadFile
from .store.shares import SHARES_FILE

PENDING = ".new"        # suffix of the files of an at-rest rotation not yet settled
log = logging.getLogger("otpfast.rotate")

_PEM_PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def replace_file(path: str, data: bytes) -> None:
    """Write ``path`` (0600) so that a crash leaves the old content or the new, never a mix."""
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
    sync_directory(os.path.dirname(path))


def sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _matching_pair(cert_pem: bytes, key_pem: bytes, field: str):
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise InvalidParameter(field, "not a PEM certificate and unencrypted PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise InvalidParameter(field, "the certificate is not for that private key")
    return cert, key


def rotate_tls(datadir: DataDir, *, keep_key: bool = False, cert_file: str | None = None,
               key_file: str | None = None) -> str:
    """Install a new TLS certificate; returns the key pin clients need (unchanged with
    ``keep_key``). ``cert_file`` + ``key_file``: the operator's pair instead of a self-signed one."""
    datadir.fingerprint()       # NotInitialised if there is nothing to rotate
    if (cert_file is None) != (key_file is None):
        raise InvalidParameter("tls-cert", "give both --tls-cert and --tls-key, or neither")
    if cert_file is not None:
        if keep_key:
            raise InvalidParameter("keep-key", "conflicts with --tls-cert/--tls-key")
        with open(cert_file, "rb") as fh:
            cert_pem = fh.read()
        with open(key_file, "rb") as fh:
            key_pem = fh.read()
        _matching_pair(cert_pem, key_pem, "tls-cert")
    else:
        if keep_key:
            with open(datadir.file(TLS_KEY_FILE), "rb") as fh:
                key_pem = fh.read()
            key = serialization.load_pem_private_key(key_pem, password=None)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = key.private_bytes(*_PEM_PKCS8)
        cert_pem = _self_signed(key).public_bytes(serialization.Encoding.PEM)
    # the key first: between the two renames a reload or start fails (a mismatched pair is
    # refused) and the previous certificate keeps serving
    replace_file(datadir.file(TLS_KEY_FILE), key_pem)
    replace_file(datadir.file(CERT_FILE), cert_pem)
    return datadir.fingerprint()


def rotate_rsa(datadir: DataDir, bits: int = 3072) -> str:
    """A new key server RSA key; returns the path the old one was kept at."""
    if bits < 2048:
        raise InvalidParameter("rsa-bits", "must be at least 2048")
    datadir.rsa_private_key()   # NotInitialised if there is nothing to rotate
    path = datadir.file(RSA_FILE)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kept = f"{path}.{stamp}.old"
    with open(path, "rb") as fh:
        old = fh.read()
    replace_file(kept, old)
    replace_file(path, rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(*_PEM_PKCS8))
    return kept


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def rotate_at_rest(datadir: DataDir) -> int:
    """A new at-rest key for the data dir and its store; returns the audit seq of the
    rotation entry. Servers must be stopped first."""
    from .store.rekey import rekey

    if os.environ.get(atrest.ENV_VAR):
        raise InvalidParameter("data-dir", f"the at-rest key comes from ${atrest.ENV_VAR}: rotate it with a key "
                               "file (unset it), or re-encrypt by hand")
    if os.path.exists(datadir.file(SHARES_FILE)):
        raise InvalidParameter("data-dir", f"it holds a share server's {SHARES_FILE}, which this rotation "
                               "does not re-encrypt (it would no longer open): nothing changed")
    key_path, head_path = datadir.file(KEY_FILE), datadir.file(HEAD_FILE)
    store = datadir.open_store()        # settles an earlier interrupted rotation first
    root = atrest.new_key()

    def before_commit(heads):
        key = root + store.keys.carried
        _write_new(key_path + PENDING, atrest.encode_key(key).encode() + b"\n")
        head_mac = atrest.AtRestKeys(key).head_mac
        for chain, head in heads.items():       # chain 1's file, and this node's chains'
            path = _head_path(head_path, chain)
            if chain == 1 or os.path.exists(path):
                HeadFile(path + PENDING, head_mac).rewrite(*head)
        sync_directory(datadir.path)

    try:
        seq = rekey(store, root, before_commit)[1][0]
    except BaseException:
        store.close()
        if not os.path.exists(key_path + PENDING):
            raise
        finish_at_rest(datadir)     # COMMIT failed or its outcome is unknown: ask the store
        raise
    store.close()
    _install_pending(datadir)
    return seq


def _head_path(head_path: str, chain: int) -> str:
    """The head file of an audit chain: audit.head for chain 1, audit.head.<chain> for a
    node chain (PostgreSQL)."""
    return head_path if chain == 1 else f"{head_path}.{chain}"


def _pending(datadir: DataDir) -> list[str]:
    """The files a rotation wrote under their temporary names, the key last."""
    names = sorted(name[:-len(PENDING)] for name in os.listdir(datadir.path)
                   if name.startswith(HEAD_FILE) and name.endswith(PENDING))
    return names + [KEY_FILE]


def _install_pending(datadir: DataDir) -> None:
    for name in _pending(datadir):          # the key last: it says the rotation is complete
        if os.path.exists(datadir.file(name) + PENDING):
            os.replace(datadir.file(name) + PENDING, datadir.file(name))
    sync_directory(datadir.path)


def finish_at_rest(datadir: DataDir) -> None:
    """Settle a rotation interrupted between writing ``at-rest.key.new`` and renaming it:
    installed if the store holds that key (the transaction committed), else dropped."""
    from .store.rekey import key_matches

    pending = datadir.file(KEY_FILE) + PENDING
    with open(pending, encoding="ascii") as fh:
        key = atrest.decode_key(fh.read())
    url = datadir.store_url()
    if key_matches(key, path=None if url else datadir.file(STORE_FILE), url=url):
        _install_pending(datadir)
        log.warning("finished an interrupted at-rest key rotation (the store holds the new key)")
    else:
        for name in _pending(datadir):
            if os.path.exists(datadir.file(name) + PENDING):
                os.unlink(datadir.file(name) + PENDING)
        sync_directory(datadir.path)
        log.warning("dropped an at-rest key rotation that did not commit (the store holds the old key)")
