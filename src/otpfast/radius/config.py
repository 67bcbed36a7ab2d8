"""RADIUS front-end configuration: listeners, the clients (network, shared secret,
Message-Authenticator policy) and limits.

Files only: no sockets, no event loop. Secrets never appear in errors or repr.
"""
import ipaddress
from dataclasses import dataclass, field

from otpfast.errors import InvalidParameter

DEFAULT_DUPLICATE_WINDOW = 10.0  # seconds a reply stays cached for retransmissions (RFC 5080)
# RFC 2865 §3 asks for at least 16 octets: MD5(secret + authenticator) is the only key
MIN_SECRET_LENGTH = 16
# --radius-secret-file serves these sources unless --radius-client-networks says otherwise
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
# the clients-file flag of a client that may omit the Message-Authenticator
NO_MESSAGE_AUTHENTICATOR = "no-message-authenticator"
# Per source address, (events per second, burst). Bad packets (wrong Message-Authenticator,
# malformed, replayed) are never legitimate in numbers. Failures come from all the users
# behind a KDC or NAS, so the failure limit is a flood brake, not a guessing brake (that
# is per account); its burst also caps a source's verifications in flight (each may fail).
DEFAULT_BAD_PACKET_LIMIT = (1.0, 20)
DEFAULT_FAILURE_LIMIT = (5.0, 256)


def check_secret(secret, option, where):
    """A shared secret of at least MIN_SECRET_LENGTH bytes, else InvalidParameter(option)."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise InvalidParameter(option, f"{where}: the shared secret is shorter than {MIN_SECRET_LENGTH} "
                                       "characters (make one with: openssl rand -hex 32)")
    return secret


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
    return check_secret(secret, option, path)


def parse_network(text, option, where=None):
    """An address or CIDR (host bits ignored); never one covering every address."""
    prefix = f"{where}: " if where else ""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidParameter(option, f"{prefix}{text!r} is not an address or CIDR") from None
    if network.prefixlen == 0:
        raise InvalidParameter(option, f"{prefix}{network} is every address: a shared secret belongs to "
                                       "the clients' own addresses or networks")
    return network


def parse_networks(text, option="radius-client-networks"):
    """``CIDR[,CIDR...]`` -> a list of networks."""
    networks = [parse_network(item.strip(), option) for item in text.split(",") if item.strip()]
    if not networks:
        raise InvalidParameter(option, "give at least one address or CIDR")
    return networks


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


@dataclass(frozen=True, slots=True)
class RadiusClient:
    """One RADIUS client: the network it sends from, its shared secret, and whether its
    requests must carry a Message-Authenticator (RFC 3579; the Blast-RADIUS defence)."""

    network: object  # an ipaddress network; None for the UNIX socket's peer
    secret: bytes = field(repr=False)
    require_message_authenticator: bool = True


class RadiusClients:
    """The clients list of a RADIUS server: every shared secret bound to its networks.

    Clients file (``--radius-clients``): ``ADDRESS-or-CIDR SECRET [no-message-authenticator]``
    per line; blank lines and ``#`` lines are ignored; the most specific network wins. The
    flag lets that client omit the Message-Authenticator (krb5 1.20, pam_radius_auth). A
    secret may contain spaces; one ending in `` no-message-authenticator`` cannot be written.
    """

    def __init__(self, clients):
        seen = set()
        for client in clients:
            check_secret(client.secret, "radius-clients", str(client.network))
            if client.network in seen:
                raise InvalidParameter("radius-clients", f"{client.network} is listed twice")
            seen.add(client.network)
        self._clients = sorted(clients, key=lambda client: client.network.prefixlen, reverse=True)
        self._cache = {}

    def __repr__(self):
        return f"RadiusClients(<{len(self._clients)} networks>)"

    @classmethod
    def shared(cls, secret, networks=LOOPBACK_NETWORKS, *, require_message_authenticator=True):
        """One secret for the sources in ``networks`` (``CIDR[,CIDR]`` text or networks)."""
        if isinstance(networks, str):
            networks = parse_networks(networks)
        return cls([RadiusClient(network, secret, require_message_authenticator) for network in networks])

    @classmethod
    def from_files(cls, clients_file=None, secret_file=None, secret_networks=LOOPBACK_NETWORKS,
                   secret_file_requires_message_authenticator=True):
        """The clients of ``clients_file`` plus, with ``secret_file``, its secret for the
        sources in ``secret_networks``."""
        clients = cls._parse_clients_file(clients_file) if clients_file is not None else []
        if secret_file is not None:
            secret = read_secret_file(secret_file)
            clients += [RadiusClient(network, secret, secret_file_requires_message_authenticator)
                        for network in parse_networks(secret_networks)]
        return cls(clients)

    @staticmethod
    def _parse_clients_file(path, option="radius-clients"):
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise InvalidParameter(option, f"cannot read {path}: {exc.strerror}") from None
        clients = []
        flag = NO_MESSAGE_AUTHENTICATOR.encode()
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            where = f"{path} line {number}"
            parts = line.split(None, 1)
            if len(parts) != 2 or parts[1] == flag:
                raise InvalidParameter(option, f"{where}: expected 'ADDRESS-or-CIDR SECRET [{NO_MESSAGE_AUTHENTICATOR}]'")
            try:
                address = parts[0].decode("ascii")
            except UnicodeDecodeError:
                raise InvalidParameter(option, f"{where}: not an address or CIDR") from None
            network = parse_network(address, option, where)
            secret = parts[1]
            words = secret.rsplit(None, 1)
            require = not (len(words) == 2 and words[1] == flag)
            if not require:
                secret = words[0]
            clients.append(RadiusClient(network, check_secret(secret, option, where), require))
        if not clients:
            raise InvalidParameter(option, f"{path}: no clients listed")
        return clients

    def client_for(self, address):
        """The client a source address (str) belongs to, or None for an unknown source."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        found = None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is not None and ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip is not None:
            for client in self._clients:
                if ip.version == client.network.version and ip in client.network:
                    found = client
                    break
        if len(self._cache) < 65536:
            self._cache[address] = found
        return found

    @property
    def networks(self):
        return [client.network for client in self._clients]

    def without_message_authenticator(self):
        """The networks whose clients may omit the Message-Authenticator (opted out)."""
        return [client.network for client in self._clients if not client.require_message_authenticator]


@dataclass(frozen=True)
class RadiusConfig:
    """Where the front end listens and how it treats requests.

    ``udp``: (host, port) for RADIUS/UDP, needs ``clients``. ``unix_socket``: a path for
    RADIUS over a UNIX stream socket (krb5/ipa-otpd style, shared secret ``unix_secret``,
    empty by default; no Message-Authenticator needed unless
    ``unix_require_message_authenticator``, no per-source limits: only the socket's owner
    can connect). ``strip_realm`` maps ``alice@REALM`` to account ``alice``.
    ``bad_packet_limit`` / ``failure_limit``: (per second, burst) per UDP source address;
    over either, that source's requests are dropped until it is back under.
    """

    udp: tuple | None = None
    clients: RadiusClients | None = field(default=None, repr=False)
    unix_socket: str | None = None
    unix_secret: bytes = field(default=b"", repr=False)
    unix_require_message_authenticator: bool = False
    strip_realm: bool = False
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW
    max_in_flight: int = 8192
    bad_packet_limit: tuple = DEFAULT_BAD_PACKET_LIMIT
    failure_limit: tuple = DEFAULT_FAILURE_LIMIT

    def __post_init__(self):
        if self.udp is None and self.unix_socket is None:
            raise InvalidParameter("radius", "give --radius HOST:PORT and/or --radius-socket PATH")
        if self.udp is not None and self.clients is None:
            raise InvalidParameter("radius-secret-file",
                                   "--radius needs --radius-secret-file or --radius-clients")
        if self.duplicate_window < 0:
            raise InvalidParameter("duplicate_window", "must be >= 0")

    @property
    def unix_client(self):
        return RadiusClient(None, self.unix_secret, self.unix_require_message_authenticator)

    def account_for(self, user_name):
        """The otpfast account a RADIUS User-Name maps to."""
        if self.strip_realm:
            return user_name.rpartition("@")[0] or user_name
        return user_name
