"""The data directory: store, at-rest key, key server RSA key, TLS certificate, audit head.

Layout (the directory is 0700 and every file in it 0600, created so: never briefly looser;
opening the store tightens a directory left looser, with a warning per fix):

    store.db        SQLite store (WAL: store.db-wal, store.db-shm beside it), the default
    store.url       instead of store.db: the PostgreSQL URL of a shared store (0600: a URL
                    may carry a password)
    at-rest.key     32-byte at-rest key, base64url (absent if $OTPFAST_AT_REST_KEY is used)
    keyserver.pem   the key server's RSA private key (PKCS#8 PEM)
    tls.crt         TLS certificate (self-signed unless given to init)
    tls.key         TLS private key
    audit.head      the head (seq, hash) of the audit chain (tail-truncation check; see
                    otpfast.store.common.HeadFile); on PostgreSQL also audit.head.<chain>,
                    one per chain of this node
    node.id         this node's name on a shared (PostgreSQL) store: its processes append
                    to audit chains of their own (never shared with another data dir)
    store.primary   the newest primary (system identifier, timeline) this node wrote
                    through: an older one (an old primary back after a failover) is refused
    shares.db       a share server's shares and counters (tprf tokens; otpfast.store.shares)
    shares.head     the head of the share store's event chain (rollback check)
"""
import datetime
import hashlib
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import ssl
import stat
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .errors import InvalidParameter, NotInitialised, StoreError, StoreUnavailable
from .store import PostgresStore, SQLiteStore, Store, atrest, describe_url

STORE_FILE = "store.db"
STORE_URL_FILE = "store.url"
KEY_FILE = "at-rest.key"
RSA_FILE = "keyserver.pem"
CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"
HEAD_FILE = "audit.head"
NODE_FILE = "node.id"
FENCE_FILE = "store.primary"
STARTUP_RETRY = 120.0       # seconds a server's start waits for an unreachable store
ENV_DATA_DIR = "OTPFAST_DATA_DIR"
ENV_STORE_URL = "OTPFAST_STORE_URL"
URL_SCHEMES = ("postgresql://", "postgres://")
# TLS 1.2 suites the servers offer: AEAD with forward secrecy only (no CBC, no static RSA
# key exchange); TLS 1.3 has only such suites and keeps OpenSSL's defaults
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

log = logging.getLogger("otpfast.datadir")


def default_path() -> str:
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "otpfast")


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _tighten(path: str, st: os.stat_result) -> str | None:
    """Drop group and other permissions from `path`; returns `path` if it had any."""
    loose = stat.S_IMODE(st.st_mode)
    if not loose & 0o077:
        return None
    try:
        os.chmod(path, loose & ~0o077)
    except OSError as exc:
        log.warning("%s is mode %04o and cannot be tightened: %s", path, loose, exc.strerror)
        return None
    log.warning("%s was mode %04o, open to group or others: tightened to %04o", path, loose,
                loose & ~0o077)
    return path


def _self_signed(key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otpfast")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


class DataDir:
    STARTUP_RETRY = STARTUP_RETRY

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    @classmethod
    def resolve(cls, path: str | None) -> "DataDir":
        """--data-dir, else $OTPFAST_DATA_DIR, else $XDG_DATA_HOME/otpfast."""
        return cls(path if path else default_path())

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def initialised(self) -> bool:
        return os.path.exists(self.file(STORE_FILE)) or os.path.exists(self.file(STORE_URL_FILE))

    def tighten(self) -> list[str]:
        """Take every group and other permission off the directory and the regular files in it
        (symbolic links are left alone, never followed); returns the paths that had any, each
        logged as a warning."""
        fixed = [_tighten(self.path, os.stat(self.path))]
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    fixed.append(_tighten(entry.path, entry.stat(follow_symlinks=False)))
        return [path for path in fixed if path is not None]

    def store_url(self) -> str | None:
        """The PostgreSQL URL recorded by ``init --store-url``; None for the SQLite store."""
        try:
            with open(self.file(STORE_URL_FILE), encoding="utf-8") as fh:
                return fh.read().strip()
        except FileNotFoundError:
            return None

    def describe_store(self) -> str:
        """Which store this data dir uses, for messages (never shows a password)."""
        url = self.store_url()
        if url is not None:
            return describe_url(url)
        return f"sqlite file {self.file(STORE_FILE)}"

    def init(self, *, tls_cert: str | None = None, tls_key: str | None = None,
             rsa_bits: int = 3072, store_url: str | None = None, join: bool = False,
             key_file: str | None = None) -> str:
        """Create everything; returns the TLS fingerprint. Refuses an initialised dir.
        ``store_url`` (else $OTPFAST_STORE_URL) selects a PostgreSQL store instead of the
        SQLite file; it is recorded in ``store.url`` (0600). ``join``: the store exists
        already (another node created it) - this data dir becomes a new node of it, with
        the store's at-rest key from ``key_file`` (a copy of the first node's at-rest.key)
        or $OTPFAST_AT_REST_KEY, its own node id, and its own RSA and TLS keys (or the
        --tls-cert/--tls-key given: one TLS identity for every node)."""
        if store_url is None:
            store_url = os.environ.get(ENV_STORE_URL) or None
        if store_url is not None and not store_url.startswith(URL_SCHEMES):
            raise InvalidParameter("store-url", "must be a postgresql://... URL")
        if join and store_url is None:
            raise InvalidParameter("join", "needs --store-url (the shared PostgreSQL store)")
        if join and key_file is None and not os.environ.get(atrest.ENV_VAR):
            raise InvalidParameter("join", "needs the store's at-rest key: --at-rest-key-file "
                                   "(a copy of the first node's at-rest.key) or "
                                   f"${atrest.ENV_VAR}")
        if rsa_bits < 2048:
            raise InvalidParameter("rsa-bits", "must be at least 2048")
        if (tls_cert is None) != (tls_key is None):
            raise InvalidParameter("tls-cert", "give both --tls-cert and --tls-key, or neither")
        if self.initialised or any(os.path.exists(self.file(f)) for f in
                                   (KEY_FILE, RSA_FILE, CERT_FILE, TLS_KEY_FILE,
                                    STORE_URL_FILE)):
            raise InvalidParameter("data-dir", f"{self.path} is initialised already")
        os.makedirs(self.path, mode=PRIVATE_DIR_MODE, exist_ok=True)
        self.tighten()
        if tls_cert is not None:
            with open(tls_cert, "rb") as fh:
                cert_pem = fh.read()
            with open(tls_key, "rb") as fh:
                key_pem = fh.read()
            try:
                x509.load_pem_x509_certificate(cert_pem)
                serialization.load_pem_private_key(key_pem, password=None)
            except ValueError:
                raise InvalidParameter("tls-cert", "not a PEM certificate and unencrypted "
                                       "PEM private key") from None
        else:
            tls_private = ec.generate_private_key(ec.SECP256R1())
            cert_pem = _self_signed(tls_private).public_bytes(serialization.Encoding.PEM)
            key_pem = tls_private.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        if key_file is not None:
            try:
                key = atrest.load_key(key_file)
            except (OSError, StoreError) as exc:
                raise InvalidParameter("at-rest-key-file", str(exc)) from None
        else:
            key = (atrest.decode_key(os.environ[atrest.ENV_VAR])
                   if os.environ.get(atrest.ENV_VAR) else atrest.new_key())
        if store_url is not None:
            # first: a database that is unreachable or holds another key's store leaves the
            # directory uninitialised
            try:
                store = PostgresStore(store_url, key, head_path=self.file(HEAD_FILE),
                                      create=not join, node=self.node_id() if join else None,
                                      fence_path=self.file(FENCE_FILE))
                try:
                    if join:
                        store.adopt_head()
                finally:
                    store.close()
            except StoreError as exc:
                self._forget_node()
                if not join and "does not match" in str(exc):
                    raise StoreError(
                        "this database holds an otpfast store already (another at-rest key): "
                        "to add a node, run "
                        "`otpfast init --join --store-url URL --at-rest-key-file FILE` with "
                        "a copy of the first node's at-rest.key") from None
                if join and "no otpfast store" in str(exc):
                    raise StoreError("no otpfast store in this database to join: run "
                                     "`otpfast init --store-url URL` on the first node") from None
                raise
            if key_file is not None:
                _write_private(self.file(KEY_FILE), atrest.encode_key(key).encode() + b"\n")
            _write_private(self.file(STORE_URL_FILE), store_url.encode("utf-8") + b"\n")
        if not os.environ.get(atrest.ENV_VAR) and not os.path.exists(self.file(KEY_FILE)):
            _write_private(self.file(KEY_FILE), atrest.encode_key(key).encode() + b"\n")
        _write_private(self.file(RSA_FILE), rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        _write_private(self.file(TLS_KEY_FILE), key_pem)
        _write_private(self.file(CERT_FILE), cert_pem)
        if store_url is None:
            SQLiteStore(self.file(STORE_FILE), key, head_path=self.file(HEAD_FILE),
                        create=True).close()
        return self.fingerprint()

    def _require(self) -> None:
        if not self.initialised:
            what = ("does not exist" if not os.path.exists(self.path)
                    else "is not an otpfast data directory")
            raise NotInitialised(f"{self.path} {what} (run `otpfast init` to create one)")

    def fingerprint(self) -> str:
        """The pin clients keep: "sha256:<hex>" of the certificate's SubjectPublicKeyInfo
        (unchanged by a certificate renewed with the same key; see otpfast.net.tls)."""
        spki = self.certificate().public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(spki).hexdigest()

    def certificate(self) -> x509.Certificate:
        self._require()
        with open(self.file(CERT_FILE), "rb") as fh:
            return x509.load_pem_x509_certificate(fh.read())

    def certificate_der(self) -> bytes:
        return self.certificate().public_bytes(serialization.Encoding.DER)

    def ssl_server_context(self) -> ssl.SSLContext:
        self._require()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.load_cert_chain(self.file(CERT_FILE), self.file(TLS_KEY_FILE))
        return context

    def open_store(self, *, synchronous: str = "FULL", upgrade: bool = False,
                   retry_for: float = 0.0) -> Store:
        """The PostgreSQL store recorded in ``store.url``, else the SQLite file
        (``synchronous`` applies to SQLite; PostgreSQL commits are always durable).
        Tightens a loose data directory first (see ``tighten``). A store with an older
        schema raises StoreOutdated unless ``upgrade`` (``otpfast init --upgrade``, the
        servers' start): then it is migrated, and a warning names both versions.
        ``retry_for`` (the servers' start): a PostgreSQL store that cannot be reached is
        tried again with back-off (0.5 s doubling to 8 s, each failure logged with its
        cause) for up to that many seconds, and every transaction of the server is cut off
        if the store stops answering (PostgresStore ``server``)."""
        self._require()
        self.tighten()
        if os.path.exists(self.file(KEY_FILE) + ".new"):     # an interrupted `rotate at-rest`
            from .rotate import finish_at_rest
            finish_at_rest(self)
        key = atrest.load_key(self.file(KEY_FILE))
        url = self.store_url()
        if url is not None:
            give_up, pause = time.monotonic() + retry_for, 0.5
            while True:
                try:
                    store = PostgresStore(url, key, head_path=self.file(HEAD_FILE), create=False,
                                          upgrade=upgrade, node=self.node_id(),
                                          fence_path=self.file(FENCE_FILE),
                                          server=retry_for > 0)
                    break
                except StoreUnavailable as exc:
                    if time.monotonic() + pause > give_up:
                        raise
                    log.warning("%s; trying again in %.1f s", exc, pause)
                    time.sleep(pause)
                    pause = min(pause * 2, 8.0)
        else:
            store = SQLiteStore(self.file(STORE_FILE), key, head_path=self.file(HEAD_FILE),
                                synchronous=synchronous, upgrade=upgrade)
        if store.upgraded_from is not None:
            log.warning("upgraded the store schema from version %d to %d (%s); older otpfast "
                        "versions cannot open it now", store.upgraded_from, store.schema_version(),
                        self.describe_store())
        return store

    def _forget_node(self) -> None:
        """A failed init leaves no node id, fence or head file behind."""
        for name in (NODE_FILE, FENCE_FILE, HEAD_FILE):
            try:
                os.remove(self.file(name))
            except FileNotFoundError:
                pass

    def node_id(self) -> str:
        """This data dir's node name (created on first use: the host name and 8 random
        hex digits). Each data dir is one node: never copy node.id to another machine."""
        try:
            with open(self.file(NODE_FILE), encoding="utf-8") as fh:
                return fh.read().strip()
        except FileNotFoundError:
            pass
        name = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
        try:
            _write_private(self.file(NODE_FILE), name.encode("utf-8") + b"\n")
        except FileExistsError:         # another process of this node wrote it first
            return self.node_id()
        return name

    def rsa_private_key(self):
        self._require()
        with open(self.file(RSA_FILE), "rb") as fh:
            return serialization.load_pem_private_key(fh.read(), password=None)

    def keyserver(self, clock=time.time, *, iterations: int | None = None, upgrade: bool = False,
                  retry_for: float = 0.0):
        from .services.keyserver import KeyServer
        from .services.derivation import DEFAULT_ITERATIONS

        return KeyServer(self.open_store(upgrade=upgrade, retry_for=retry_for),
                         self.rsa_private_key(), clock=clock,
                         iterations=DEFAULT_ITERATIONS if iterations is None else iterations)

    def distribution(self, clock=time.time, *, ttl: float | None = None,
                     require_pin: bool = False, upgrade: bool = False, retry_for: float = 0.0):
        from .services.distribution import Distribution

        return Distribution(self.open_store(upgrade=upgrade, retry_for=retry_for), clock=clock,
                            ttl=ttl,
                            require_pin=require_pin)

    def share_server(self, clock=time.time, *, synchronous: str = "FULL", check: bool = True):
        """The share-server role (tprf tokens) over this data dir: its own ``shares.db``
        (created on first use) and ``shares.head``, the at-rest key, its RSA key (DKG
        signatures and shares). ``check``: refuse a store whose event chain fails."""
        from .services.shares import ShareServer
        from .store.shares import SHARES_FILE, ShareStore

        fingerprint = self.fingerprint()
        self.tighten()
        store = ShareStore(self.file(SHARES_FILE), atrest.load_key(self.file(KEY_FILE)), synchronous=synchronous,
                           check=check)
        return ShareServer(store, self.rsa_private_key(), fingerprint, clock=clock)

    def admin(self, clock=time.time):
        from .services.admin import Admin

        return Admin(self.open_store(), clock=clock)

    def remove(self) -> None:
        """Delete the whole data directory (tests and `otpfast demo` temp dirs only)."""
        shutil.rmtree(self.path)
