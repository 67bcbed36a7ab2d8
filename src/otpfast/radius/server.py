"""asyncio glue for the RADIUS front end: UDP and UNIX stream listeners.

Every valid Access-Request becomes one ``verify(account, otp, source)`` call (``source``:
``"radius ADDRESS"`` for UDP, ``"radius unix"``: what the audit log and the service's
per-source throttling see). Retransmissions
(same source, identifier and request authenticator, RFC 5080 §2.2.2) are answered from
a reply cache, and copies arriving while the first is still being verified wait for
its answer, so a retransmission never burns an OTP nor counts as a failure. A copy of a
request authenticator under another Identifier or source port is a replay, not a
retransmission: dropped. Everything else that is wrong is dropped, counted in
:attr:`RadiusFrontEnd.counters` and logged without the password.

Per UDP source address, bad packets and failed verifications are rate limited
(services.throttle): over a limit, that source's requests are dropped before any work,
and one warning naming it is logged (at most once a minute per source and limit). Each
verification in flight counts as a possible failure, so a source never has more in flight
than it has failures left: pipelining cannot overshoot the failure limit.
"""
import asyncio
import collections
import ipaddress
import itertools
import logging
import os
import socket
import stat
import time

from otpfast.net.address import format_address
from otpfast.radius import codec
from otpfast.radius.codec import DropReason, PacketDropped
from otpfast.services.throttle import Rate, RateLimiter

logger = logging.getLogger("otpfast.radius")

_UNIX_IN_FLIGHT_PER_CONNECTION = 256
_MAX_CACHED_REPLIES = 1 << 18
_DROP_LOGS_PER_SECOND = 20
_LIMIT_LOG = Rate(rate=1 / 60, burst=1)  # one "over the limit" warning per source, limit and minute
_REPLAYED = "replayed"  # a request authenticator seen under another Identifier or source port


class _Pending:
    """One request being verified, or its cached reply; waiters get the reply. ``port``
    and ``identifier`` tell a retransmission from a replay under another Identifier."""

    __slots__ = ("reply", "done", "waiters", "expires_at", "port", "identifier")

    def __init__(self, port, identifier):
        self.reply = None
        self.done = False
        self.waiters = []
        self.expires_at = None
        self.port = port
        self.identifier = identifier


class RadiusFrontEnd:
    """The running listeners. ``counters`` maps counter names to ints:

    ``requests`` (valid Access-Requests verified), ``accepted``, ``rejected``,
    ``duplicates`` (answered from the cache or waited for), ``replayed`` (a cached request
    authenticator under another Identifier or port), ``verify_errors``, ``unknown_client``,
    ``rate_limited`` (dropped: the source is over a limit), ``overload``, ``connections``,
    ``send_dropped`` (UDP send buffer full), ``drop_logs_suppressed`` (more than 20 drop
    warnings in a second), and one counter per :class:`~otpfast.radius.codec.DropReason` value.
    """

    def __init__(self, config, verify, clock=time.monotonic, metrics=None):
        self.config = config
        self._verify = verify
        self._metrics = metrics      # net.metrics.FrontEndMetrics, or None
        self._clock = clock
        self.counters = collections.Counter()
        self._cache = {}
        self._expiry = collections.deque()
        self._in_flight = 0
        self._udp_transport = None
        self._unix_server = None
        self._unix_writers = set()
        self._connection_ids = itertools.count(1)
        self._log_window = (0.0, 0)  # (second, drop warnings logged in it)
        self._bad_packets = RateLimiter(Rate(*config.bad_packet_limit), clock=clock)
        self._failures = RateLimiter(Rate(*config.failure_limit), clock=clock)
        self._limit_logs = RateLimiter(_LIMIT_LOG, clock=clock)
        self._unix_client = config.unix_client
        self._pending = collections.Counter()  # UDP source address -> verifications in flight
        self._closed = asyncio.Event()
        self.udp_address = None
        self.socket_path = None
        self._owns_socket_path = False

    # --- lifecycle -------------------------------------------------------------------------
    async def _start(self, udp_sock, unix_sock):
        try:
            if self.config.udp is not None:
                self._udp_transport = _UdpListener(self, udp_sock or bind_udp(*self.config.udp))
                self.udp_address = self._udp_transport.address
                logger.info("RADIUS listening on udp %s", format_address(*self.udp_address[:2]))
                self._log_clients()
            if self.config.unix_socket is not None:
                path = self.config.unix_socket
                if unix_sock is None:
                    unix_sock = bind_unix(path)
                    self._owns_socket_path = True     # else the supervisor's: it removes the file
                self._unix_server = await asyncio.start_unix_server(self._serve_stream, sock=unix_sock)
                self.socket_path = path
                logger.info("RADIUS listening on unix socket %s", path)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Stop listening; requests being verified are abandoned."""
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._unix_server is not None:
            self._unix_server.close()
            for writer in list(self._unix_writers):
                writer.close()
            self._unix_server = None
            if self._owns_socket_path:
                _remove_stale_socket(self.socket_path)
        if not self._closed.is_set():
            logger.info("RADIUS front end closed; counters: %s", dict(sorted(self.counters.items())))
        self._closed.set()

    def reload(self, config):
        """Serve the next requests under ``config``: its clients (secrets, networks,
        Message-Authenticator rules), realm stripping and limits. The listening addresses
        stay: ``config`` must ask for the same kinds of listener."""
        if (config.udp is None) != (self.config.udp is None) or config.unix_socket != self.config.unix_socket:
            raise ValueError("the RADIUS listening addresses change only at a restart")
        self.config = config
        self._bad_packets.limit = Rate(*config.bad_packet_limit)
        self._failures.limit = Rate(*config.failure_limit)
        self._unix_client = config.unix_client
        if config.udp is not None:
            self._log_clients()

    def _log_clients(self):
        clients = self.config.clients
        logger.info("RADIUS clients: %s", ", ".join(map(str, clients.networks)))
        opted_out = clients.without_message_authenticator()
        if opted_out:
            logger.warning(
                "RADIUS clients %s may send Access-Requests WITHOUT a Message-Authenticator "
                "(no-message-authenticator): anyone on their path can forge requests and answers "
                "(Blast-RADIUS, CVE-2024-3596). Prefer the UNIX socket (--radius-socket) or a client "
                "that sends one.", ", ".join(map(str, opted_out)))
        if all(network.is_loopback for network in clients.networks) and \
                not ipaddress.ip_address(self.udp_address[0]).is_loopback:
            logger.warning("RADIUS listens on %s but only loopback clients are configured: list the "
                           "others with --radius-client-networks or --radius-clients", self.udp_address[0])

    async def wait_closed(self):
        await self._closed.wait()
        await asyncio.sleep(0)

    # --- the request path shared by both transports ----------------------------------------
    def _drop(self, reason, source, detail):
        name = reason.value if isinstance(reason, DropReason) else reason
        self.counters[name] += 1
        if self._metrics is not None:
            self._metrics.refused(name)
        second = int(self._clock())
        window, logged = self._log_window
        if window != second:
            window, logged = second, 0
        if logged < _DROP_LOGS_PER_SECOND:  # a flood of bad packets must not flood the log
            kind, host, port = source
            where = f"udp {format_address(host, port)}" if kind == "udp" else f"unix#{host}"
            logger.warning("RADIUS packet from %s dropped (%s): %s", where, name, detail)
        else:
            self.counters["drop_logs_suppressed"] += 1
        self._log_window = (window, logged + 1)

    def _expire(self, now):
        expiry = self._expiry
        cache = self._cache
        while expiry and expiry[0][0] <= now:
            _, key = expiry.popleft()
            entry = cache.get(key)
            if entry is not None and entry.done and entry.expires_at <= now:
                del cache[key]

    def _bad_packet(self, reason, source, detail):
        """Drop a packet from a known client, charged to its source address (UDP)."""
        self._drop(reason, source, detail)
        if source[0] == "udp":
            self._charge(self._bad_packets, "bad-packet", source[1])

    def _charge(self, limiter, what, host):
        limiter.charge(host)
        if limiter.blocked(host) and self._limit_logs.allow((what, host)):
            limit = limiter.limit
            logger.warning("RADIUS source %s is over the %s limit (%g/s, burst %g): its requests are "
                           "dropped until it slows down", host, what, limit.rate, limit.burst)

    def submit(self, raw, source, client, send):
        """Handle one packet from ``source`` (``("udp", ip, port)`` or ``("unix", n, 0)``)
        sent by ``client`` (a :class:`~otpfast.radius.config.RadiusClient`, None when the
        source is unknown); ``send(reply_bytes)`` is called at most once, maybe later.
        Returns False when the packet was dropped (``send`` will never be called)."""
        if len(raw) > codec.MAX_PACKET_SIZE:
            self._drop(DropReason.OVERSIZE, source, f"{len(raw)} bytes")
            return False
        if len(raw) < codec.HEADER_SIZE:
            self._drop(DropReason.BAD_LENGTH, source, f"truncated: {len(raw)} bytes")
            return False
        if client is None:
            self._drop("unknown_client", source, "no shared secret for this source address")
            return False
        kind, host, port = source
        if kind == "udp" and (self._bad_packets.blocked(host)
                              or self._failures.tokens(host) < self._pending[host] + 1):
            self.counters["rate_limited"] += 1
            if self._metrics is not None:
                self._metrics.refused("rate_limited")
            return False
        now = self._clock()
        if self._expiry:
            self._expire(now)
        # RFC 5080 keys duplicates on (source, Identifier, authenticator); the authenticator
        # alone is unique per request, so the same one under another Identifier or source
        # port is a replayed copy (the port is never authenticated, and without a
        # Message-Authenticator the Identifier is not either)
        key = (kind, host, raw[4:20])
        entry = self._cache.get(key)
        if entry is not None:
            if entry.identifier != raw[1] or entry.port != port:
                self._bad_packet(_REPLAYED, source, "a request authenticator seen under another "
                                                    "Identifier or source port")
                return False
            self.counters["duplicates"] += 1
            if entry.done:
                send(entry.reply)
            else:
                entry.waiters.append(send)
            return True
        try:
            request = codec.decode_access_request(
                raw, client.secret, require_message_authenticator=client.require_message_authenticator)
        except PacketDropped as exc:
            self._bad_packet(exc.reason, source, exc.detail)
            return False
        if self._in_flight >= self.config.max_in_flight:
            self._drop("overload", source, "too many requests in flight")
            return False
        entry = _Pending(port, raw[1])
        entry.waiters.append(send)
        self._cache[key] = entry
        self._in_flight += 1
        if kind == "udp":
            self._pending[host] += 1
        self.counters["requests"] += 1
        account = self.config.account_for(request.user_name)
        started = time.perf_counter()
        try:
            future = asyncio.ensure_future(self._verify(
                account, request.password, f"radius {host}" if kind == "udp" else "radius unix"))
        except Exception as exc:  # verify failed before returning an awaitable
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        future.add_done_callback(lambda fut: self._finish(key, entry, request, account, fut, started))
        return True

    def _finish(self, key, entry, request, account, future, started):
        self._in_flight -= 1
        if key[0] == "udp":
            left = self._pending[key[1]] - 1
            if left:
                self._pending[key[1]] = left
            else:
                del self._pending[key[1]]
        accepted = refused = False
        if future.cancelled():
            self.counters["verify_errors"] += 1
        elif future.exception() is not None:
            # the store failed (unreachable, timed out): no reply at all, so the client
            # retries, here or at another server - a Reject would say "wrong OTP"
            self.counters["verify_errors"] += 1
            logger.error("RADIUS verify failed for account %r (no reply sent): %s", account,
                         future.exception())
            self._cache.pop(key, None)          # a retransmission is verified afresh
            waiters, entry.waiters = entry.waiters, []
            if key[0] != "udp":
                for send in waiters:            # frees the stream's slot, writes nothing
                    send(b"")
            return
        else:
            accepted = future.result() is True
            refused = not accepted
        self.counters["accepted" if accepted else "rejected"] += 1
        if self._metrics is not None:
            self._metrics.decided(accepted if accepted or refused else None, started)
        if refused and key[0] == "udp":  # a store failure is not the source's
            self._charge(self._failures, "failure", key[1])
        logger.debug("RADIUS %s for account %r", "accept" if accepted else "reject", account)
        reply = codec.encode_reply(request, accepted)
        entry.reply = reply
        entry.done = True
        entry.expires_at = self._clock() + self.config.duplicate_window
        self._expiry.append((entry.expires_at, key))
        while len(self._expiry) > _MAX_CACHED_REPLIES:  # bound memory under a flood
            _, old_key = self._expiry.popleft()
            old = self._cache.get(old_key)
            if old is not None and old.done:
                del self._cache[old_key]
        waiters, entry.waiters = entry.waiters, []
        for send in waiters:
            send(reply)
        if self.config.duplicate_window == 0:
            self._cache.pop(key, None)

    # --- UNIX stream socket: plain packets back to back ------------------------------------
    async def _serve_stream(self, reader, writer):
        source = ("unix", next(self._connection_ids), 0)
        self.counters["connections"] += 1
        self._unix_writers.add(writer)
        slots = asyncio.Semaphore(_UNIX_IN_FLIGHT_PER_CONNECTION)
        client = self._unix_client

        def sender():
            replied = False

            def send(reply):
                nonlocal replied
                if not replied:
                    replied = True
                    slots.release()
                    if not writer.is_closing():
                        writer.write(reply)
            return send

        try:
            while True:
                try:
                    header = await reader.readexactly(4)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        self._drop(DropReason.BAD_LENGTH, source, "stream ended inside a header")
                    return
                try:
                    length = codec.packet_length(header)
                except PacketDropped as exc:
                    # framing is lost: nothing after this can be trusted
                    self._drop(exc.reason, source, f"{exc.detail}; closing the connection")
                    return
                try:
                    raw = header + await reader.readexactly(length - 4)
                except asyncio.IncompleteReadError:
                    self._drop(DropReason.BAD_LENGTH, source, "stream ended inside a packet")
                    return
                await slots.acquire()
                if not self.submit(raw, source, client, sender()):
                    slots.release()
        except (ConnectionError, OSError):
            return
        finally:
            self._unix_writers.discard(writer)
            writer.close()


def bind_udp(host, port, *, reuse_port=False):
    """A non-blocking UDP socket bound to (host, port), with a large receive buffer.
    ``reuse_port``: several sockets (server workers) share the address; the kernel sends all
    datagrams of one source address and port to the same socket."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_unix(path, backlog=128):
    """A listening UNIX stream socket at ``path`` (mode 0600; a stale socket file is replaced)."""
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


def _remove_stale_socket(path):
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    os.unlink(path)


class _UdpListener:
    """A non-blocking UDP socket read with ``add_reader``: every wake-up drains all queued
    datagrams (asyncio's datagram transport handles one per loop iteration)."""

    _DRAIN = 512

    def __init__(self, front_end, sock):
        self._front_end = front_end
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read_ready)
        self.address = sock.getsockname()[:2]

    def _read_ready(self):
        sock = self._sock
        front_end = self._front_end
        client_for = front_end.config.clients.client_for
        submit = front_end.submit
        for _ in range(self._DRAIN):
            try:
                # one byte more than allowed, so an oversize datagram shows as oversize
                data, addr = sock.recvfrom(codec.MAX_PACKET_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                logger.debug("RADIUS udp socket error: %s", exc)
                continue
            submit(data, ("udp", addr[0], addr[1]), client_for(addr[0]), self._sender(addr))

    def _sender(self, addr):
        sock = self._sock

        def send(reply):
            try:
                sock.sendto(reply, addr)
            except (BlockingIOError, InterruptedError):
                self._front_end.counters["send_dropped"] += 1
            except OSError as exc:
                if sock.fileno() != -1:
                    logger.debug("RADIUS udp send to %s failed: %s", addr[0], exc)
        return send

    def close(self):
        if self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


async def start_radius(config, verify, *, udp_sock=None, unix_sock=None, metrics=None):
    """Start the listeners of ``config``; ``verify(account, otp, source)`` returns an
    awaitable bool.
    ``udp_sock`` / ``unix_sock``: already bound sockets to serve instead of binding
    ``config.udp`` / ``config.unix_socket`` (server workers share the supervisor's).
    ``metrics``: a net.metrics.FrontEndMetrics to count verifications and drops in.

    Returns the :class:`RadiusFrontEnd` (``close()`` / ``await wait_closed()``).
    """
    front_end = RadiusFrontEnd(config, verify, metrics=metrics)
    await front_end._start(udp_sock, unix_sock)
    return front_end
