"""TLS contexts. Servers: TLS 1.2+ from the data directory. Clients: TLS 1.2+ with the
server authenticated by its certificate fingerprint, pinned (``--pin sha256:HEX``) or
trusted on first use and remembered in a known-servers file (as ssh's known_hosts).

Channel binding (RFC 5929 tls-server-end-point, always SHA-256): both ends bind the
authentication proof to SHA-256 of the server certificate's DER. The client reads it from the
connection; a server cannot read its own certificate back from ``ssl``, so ``server_context``
records it with the context (``remember_end_point`` for contexts built elsewhere).
"""
import hashlib
import hmac
import os
import ssl
import weakref

from ..errors import InvalidParameter, Refused

KNOWN_SERVERS_ENV = "OTPFAST_KNOWN_SERVERS"


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


def server_context(datadir):
    """The data directory's server context, with TLS 1.2 as the floor whatever it says."""
    context = datadir.ssl_server_context()
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    _END_POINTS[context] = bytes.fromhex(datadir.fingerprint().removeprefix("sha256:"))
    return context


def client_context():
    """TLS 1.2+; the certificate chain is not checked against CAs: the fingerprint is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fingerprint_of(der_certificate):
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
    actual = fingerprint_of(der_certificate)
    if pin is not None:
        if not fingerprints_equal(parse_pin(pin), actual):
            raise FingerprintMismatch(f"server {address} does not match the pinned fingerprint")
        return actual
    known_servers = known_servers or KnownServers()
    remembered = known_servers.lookup(address)
    if remembered is None:
        known_servers.remember(address, actual)
        if on_first_use is not None:
            on_first_use(address, actual)
        return actual
    if not fingerprints_equal(remembered, actual):
        raise FingerprintMismatch(
            f"server {address} changed its certificate (remembered in {known_servers.path}); "
            "if this is expected, remove that line")
    return actual
