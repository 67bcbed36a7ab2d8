"""TLS contexts. Servers: TLS 1.2+ from the data directory. Clients: TLS 1.2+ with the
server authenticated by the pin of its public key, given (``--pin sha256:HEX``) or trusted on
first use and remembered in a known-servers file (as ssh's known_hosts).

Pins: ``sha256:HEX`` of the certificate's SubjectPublicKeyInfo (DER), as HPKP and curl's
``--pinnedpubkey`` do, so a certificate renewed with the same key keeps every client working.
A pin of earlier versions is the SHA-256 of the whole certificate: it still matches the
certificate it was taken from (with a warning naming the key pin to use instead), and a
known-servers line holding one is rewritten to the key pin on its next match.

Channel binding (RFC 5929 tls-server-end-point, always SHA-256): both ends bind the
authentication proof to SHA-256 of the server certificate's DER (the certificate, not the
key). The client reads it from the connection; a server cannot read its own certificate back
from ``ssl``, so ``server_context`` records it with the context (``remember_end_point`` for
contexts built elsewhere), and a handler looks it up for the context its connection was
handshaken with (``connection_end_point``): after a reload (``ServerIdentity``) connections
opened before it keep the old certificate's binding.
"""
import hashlib
import hmac
import logging
import os
import ssl
import weakref

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import InvalidParameter, Refused

KNOWN_SERVERS_ENV = "OTPFAST_KNOWN_SERVERS"
log = logging.getLogger("otpfast.tls")


class FingerprintMismatch(Refused):
    """The server's certificate does not match the pinned or remembered fingerprint."""


_END_POINTS = weakref.WeakKeyDictionary()   # server SSLContext -> its channel binding


def end_point(der_certificate):
    """tls-server-end-point channel binding of a DER certificate."""
    return hashlib.sha256(der_certificate).digest()


def remember_end_point(context, der_certificate):
    """Record the certificate a server context presents (for ``server_end_point``)."""
    _END_POINTS[context] = end_point(der_certificate)
    return context


def server_end_point(context):
    """The channel binding of a server context's certificate; ValueError if not recorded."""
    try:
        return _END_POINTS[context]
    except KeyError:
        raise ValueError("server context without a recorded certificate "
                         "(use tls.server_context or tls.remember_end_point)") from None


def connection_end_point(transport, default):
    """The channel binding of the certificate a server connection was handshaken with
    (its context's, see ServerIdentity), else ``default``."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return default
    return _END_POINTS.get(ssl_object.context, default)


def server_context(datadir):
    """The data directory's server context, with TLS 1.2 as the floor whatever it says."""
    context = datadir.ssl_server_context()
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    _END_POINTS[context] = end_point(datadir.certificate_der())
    return context


class ServerIdentity:
    """The server's certificate and key, replaceable while serving. ``context`` is the one
    the listeners use; each handshake switches to the newest loaded context (an SNI
    callback, called with or without SNI), so ``reload()`` takes effect for the next
    connection and leaves established ones (and their channel binding) alone."""

    def __init__(self, datadir):
        self._datadir = datadir
        self.context = self.current = server_context(datadir)
        self.context.sni_callback = self._select

    def _select(self, ssl_object, _server_name, context):
        current = self.current
        if current is not context:
            ssl_object.context = current

    def load(self):
        """A context from the data directory's files now: raises (OSError, ssl.SSLError,
        ValueError, OtpfastError) if they are bad, leaving the served one alone."""
        return server_context(self._datadir)

    def use(self, context):
        self.current = context

    def pin(self):
        """The key pin of the files loaded last."""
        return self._datadir.fingerprint()


def client_context():
    """TLS 1.2+; the certificate chain is not checked against CAs: the fingerprint is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def pin_of(der_certificate):
    """``sha256:HEX`` of the certificate's SubjectPublicKeyInfo: the pin clients keep."""
    try:
        key = x509.load_der_x509_certificate(der_certificate).public_key()
    except ValueError:
        raise FingerprintMismatch("the server's certificate does not parse") from None
    return pin_of_key(key)


def pin_of_key(public_key):
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def certificate_fingerprint(der_certificate):
    """``sha256:HEX`` of the whole certificate: the pin format of earlier versions."""
    return "sha256:" + hashlib.sha256(der_certificate).hexdigest()


def parse_pin(pin):
    """Normalise ``sha256:HEX`` (64 hex digits, colons allowed); InvalidParameter('pin') if bad."""
    text = pin.strip().lower()
    if not text.startswith("sha256:"):
        raise InvalidParameter("pin", "must look like sha256:<64 hex digits>")
    digits = text[len("sha256:"):].replace(":", "")
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidParameter("pin", "must look like sha256:<64 hex digits>")
    return "sha256:" + digits


def fingerprints_equal(a, b):
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def known_servers_path():
    """$OTPFAST_KNOWN_SERVERS, else $XDG_CONFIG_HOME/otpfast/known_servers (~/.config/...)."""
    explicit = os.environ.get(KNOWN_SERVERS_ENV)
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "otpfast", "known_servers")


class KnownServers:
    """A text file of ``host:port sha256:HEX`` lines."""

    def __init__(self, path=None):
        self.path = path or known_servers_path()

    def _entries(self):
        entries = {}
        try:
            with open(self.path, encoding="ascii") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and not parts[0].startswith("#"):
                        entries[parts[0]] = parts[1]
        except FileNotFoundError:
            pass
        return entries

    def lookup(self, address):
        return self._entries().get(address)

    def replace(self, address, old, new):
        """Rewrite ``address old`` lines as ``address new`` (atomically: temp file + rename)."""
        with open(self.path, encoding="ascii") as f:
            lines = f.readlines()
        out = [f"{address} {new}\n" if line.split() == [address, old] else line for line in lines]
        temp = self.path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.writelines(out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)

    def remember(self, address, fingerprint):
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as f:
            f.write(f"{address} {fingerprint}\n")


def check_server(address, der_certificate, *, pin=None, known_servers=None, on_first_use=None):
    """Authenticate the server: against ``pin`` if given, else the known-servers file (trust on
    first use: remember it and call ``on_first_use(address, fingerprint)``).
    Raises FingerprintMismatch before anything secret has been sent."""
    if der_certificate is None:
        raise FingerprintMismatch("the server presented no certificate")
    actual = pin_of(der_certificate)
    if pin is not None:
        pin = parse_pin(pin)
        if fingerprints_equal(pin, actual):
            return actual
        if fingerprints_equal(pin, certificate_fingerprint(der_certificate)):
            log.warning("--pin %s is the fingerprint of the certificate (the pin format of "
                        "earlier versions), which a renewed certificate breaks: pin its key with --pin %s",
                        pin, actual)
            return actual
        raise FingerprintMismatch(f"server {address} does not match the pinned key")
    known_servers = known_servers or KnownServers()
    remembered = known_servers.lookup(address)
    if remembered is None:
        known_servers.remember(address, actual)
        if on_first_use is not None:
            on_first_use(address, actual)
        return actual
    if fingerprints_equal(remembered, actual):
        return actual
    if fingerprints_equal(remembered, certificate_fingerprint(der_certificate)):
        known_servers.replace(address, remembered, actual)
        log.warning("%s: the certificate fingerprint remembered for %s is now its key pin %s "
                    "(a renewed certificate with the same key keeps working)",
                    known_servers.path, address, actual)
        return actual
    raise FingerprintMismatch(
        f"server {address} changed its certificate's key (remembered in {known_servers.path}); "
        "if this is expected, remove that line")
