"""Who holds a connection slot: counted from accept (TLS handshake included), capped per
source address, the oldest unauthenticated connection evicted when the table is full, and
the process's file limit raised to fit ``--max-connections``.

A connection (``ServerProtocol``) is admitted in ``connection_made`` of the raw TCP
transport, before TLS starts. It exposes ``source`` (the peer's address), ``authenticated()``
(its handler says so) and ``evict()`` (abort now). Refusals and evictions are logged, at most
a few lines per kind and per ten seconds, each naming a source and the number left unsaid.
"""
import collections
import logging
import resource

from ..services.throttle import Rate, RateLimiter

log = logging.getLogger("otpfast.net")

# Descriptors kept free besides the connections: the listening sockets, the store (database,
# WAL, shared memory, audit files), the workers' pipes, RADIUS sockets and its UNIX clients,
# the TLS key files read at start, logging.
FD_HEADROOM = 256

_LOG_RATE = Rate(rate=0.5, burst=5)     # per kind of event: 5 lines, then one every 2 s


class Tracker:
    """The connection table of one listener: ``admit(protocol)`` at accept, ``discard(protocol)``
    when it closes. ``protocols`` is every open connection."""

    def __init__(self, limit, per_source):
        self.limit = limit
        self.per_source = per_source
        self.protocols = set()
        self._by_source = collections.Counter()
        # Accept order of connections not (yet) known to be authenticated; checked lazily
        # when an eviction looks for a victim, so each connection is looked at once.
        self._unauthenticated = collections.OrderedDict()
        self._log_limit = RateLimiter(_LOG_RATE, max_keys=16)
        self._unlogged = collections.Counter()

    def full(self):
        return len(self.protocols) >= self.limit

    def admit(self, protocol):
        """True if ``protocol`` gets a slot (evicting the oldest unauthenticated connection if
        the table is full); False: the caller closes it."""
        source = protocol.source
        if self._by_source[source] >= self.per_source:
            self._note("refused", "connection from %s refused: %d connections from this source (%d more unlogged)",
                       source, self.per_source)
            return False
        if len(self.protocols) >= self.limit and not self._evict_one():
            self._note("full", "connection from %s refused: connection limit reached, all %d authenticated "
                       "(%d more unlogged)", source, self.limit)
            return False
        self.protocols.add(protocol)
        self._by_source[source] += 1
        self._unauthenticated[protocol] = None
        return True

    def discard(self, protocol):
        if protocol in self.protocols:
            self.protocols.discard(protocol)
            source = protocol.source
            self._by_source[source] -= 1
            if not self._by_source[source]:
                del self._by_source[source]
        self._unauthenticated.pop(protocol, None)

    def note_accept_failure(self, exc):
        self._note("accept", "connection dropped at accept: %s (%d more unlogged)", exc.strerror or exc)

    def authenticated(self, protocol):
        """``protocol`` authenticated: it is never evicted."""
        self._unauthenticated.pop(protocol, None)

    def _evict_one(self):
        queue = self._unauthenticated
        while queue:
            victim, _ = queue.popitem(last=False)
            if victim.authenticated():
                continue
            self._note("evicted", "connection from %s evicted: connection limit reached, oldest unauthenticated "
                       "(%d more unlogged)", victim.source)
            self.discard(victim)
            victim.evict()
            return True
        return False

    def _note(self, kind, message, source, *args):
        if self._log_limit.allow(kind):
            log.warning(message, source, *args, self._unlogged.pop(kind, 0))
        else:
            self._unlogged[kind] += 1


def raise_file_limit(max_connections, headroom=FD_HEADROOM):
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (a flood then finds every
    descriptor the system allows, and --max-connections sheds it first); return the soft
    limit now in force. Raises ValueError (naming the numbers) if ``max_connections`` plus
    ``headroom`` do not fit."""
    needed = max_connections + headroom
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft != hard:
        target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ValueError(f"{max_connections} connections need {needed} file descriptors ({headroom} kept for the "
                         f"store and the other sockets), but this process may open only {soft} "
                         f"(hard limit {'unlimited' if hard == resource.RLIM_INFINITY else hard}; "
                         "raise it with ulimit -n / LimitNOFILE=)")
    return soft
