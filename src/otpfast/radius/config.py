"""RADIUS front-end configuration: listeners, per-client shared secrets, policy.

Files only: no sockets, no event loop. Secrets never appear in errors or repr.
"""
import ipaddress
from dataclasses import dataclass, field

from otpfast.errors import InvalidParameter

DEFAULT_DUPLICATE_WINDOW = 10.0  # seconds a reply stays cached for retransmissions (RFC 5080)


def read_secret_file(path, option="radius-secret-file"):
    """The shared secret: the first line of ``path`` (like krb5's ``[otp] secret``), stripped."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as exc:
        raise InvalidParameter(option, f"cannot read {path}: {exc.strerror}") from None
    secret = line.strip()
    if not secret:
        raise InvalidParameter(option, f"{path}: the first line (the shared secret) is empty")
    return secret


def parse_host_port(text, option="radius"):
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> (host, port); port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not port_text.isascii():
        raise InvalidParameter(option, f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidParameter(option, f"write IPv6 addresses as [ADDR]:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise InvalidParameter(option, f"port {port} is out of range")
    return host, port


class ClientSecrets:
    """Shared secret per source address: the clients list of a RADIUS server.

    File format: ``ADDRESS-or-CIDR SECRET`` per line; blank lines and ``#`` lines are
    ignored; the most specific network wins. ``default`` (from --radius-secret-file)
    applies to every source not listed.
    """

    def __init__(self, networks=(), default=None):
        self._networks = sorted(networks, key=lambda item: item[0].prefixlen, reverse=True)
        self._default = default
        self._cache = {}

    def __repr__(self):
        return f"ClientSecrets(<{len(self._networks)} networks>, default={'set' if self._default else 'none'})"

    @classmethod
    def from_files(cls, clients_file=None, secret_file=None):
        default = read_secret_file(secret_file) if secret_file is not None else None
        networks = cls._parse_clients_file(clients_file) if clients_file is not None else []
        return cls(networks, default)

    @staticmethod
    def _parse_clients_file(path, option="radius-clients"):
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise InvalidParameter(option, f"cannot read {path}: {exc.strerror}") from None
        networks = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise InvalidParameter(option, f"{path} line {number}: expected 'ADDRESS-or-CIDR SECRET'")
            try:
                network = ipaddress.ip_network(parts[0].decode("ascii"), strict=False)
            except (ValueError, UnicodeDecodeError):
                raise InvalidParameter(option, f"{path} line {number}: not an address or CIDR") from None
            networks.append((network, parts[1].strip()))
        if not networks:
            raise InvalidParameter(option, f"{path}: no clients listed")
        return networks

    def secret_for(self, address):
        """The secret for a source address (str), or None for an unknown client."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        secret = self._default
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is not None and ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip is not None:
            for network, network_secret in self._networks:
                if ip.version == network.version and ip in network:
                    secret = network_secret
                    break
        if len(self._cache) < 65536:
            self._cache[address] = secret
        return secret


@dataclass(frozen=True)
class RadiusConfig:
    """Where the front end listens and how it treats requests.

    ``udp``: (host, port) for RADIUS/UDP, needs ``secrets``. ``unix_socket``: a path for
    RADIUS over a UNIX stream socket (krb5/ipa-otpd style, shared secret ``unix_secret``,
    empty by default). ``strip_realm`` maps ``alice@REALM`` to account ``alice``.
    """

    udp: tuple | None = None
    secrets: ClientSecrets | None = field(default=None, repr=False)
    unix_socket: str | None = None
    unix_secret: bytes = field(default=b"", repr=False)
    require_message_authenticator: bool = False
    strip_realm: bool = False
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW
    max_in_flight: int = 8192

    def __post_init__(self):
        if self.udp is None and self.unix_socket is None:
            raise InvalidParameter("radius", "give --radius HOST:PORT and/or --radius-socket PATH")
        if self.udp is not None and self.secrets is None:
            raise InvalidParameter("radius-secret-file",
                                   "--radius needs --radius-secret-file or --radius-clients")
        if self.duplicate_window < 0:
            raise InvalidParameter("duplicate_window", "must be >= 0")

    def account_for(self, user_name):
        """The otpfast account a RADIUS User-Name maps to."""
        if self.strip_realm:
            return user_name.rpartition("@")[0] or user_name
        return user_name
