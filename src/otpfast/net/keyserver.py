"""Key server over the network: Hello -> PublicKey, Contribute -> Receipt.

Contributions are slow (RSA decryption, PBKDF2, a durable commit), so they are rationed:
one at a time per connection (a Contribute is a barrier: the connection's later requests
wait, unread), at most ``CONTRIBUTION_QUEUE`` queued or running across the server (beyond
that a Contribute is refused at once: one Error, connection closed), and a contribution not
started yet is cancelled when its connection goes.
"""
import asyncio
import concurrent.futures
import logging
import threading

from ..protocol import keyserver as keyserver_protocol
from ..protocol.messages import Contribute, Error, Hello, PublicKey, Receipt
from ..services.throttle import Rate, RateLimiter
from ._stream import Reply, ServerLimits, start_server

log = logging.getLogger("otpfast.net")

# Contributions queued or running at once, server-wide: a ceremony has a handful of
# authorities; more than this waiting means a flood, and the queue's tail would wait for
# seconds of PBKDF2 anyway.
CONTRIBUTION_QUEUE = 8


class ContributionQueue:
    """The key server's executor behind a bound: ``submit(fn, *args)`` returns an asyncio
    future, or None when ``limit`` contributions are already queued or running."""

    def __init__(self, executor, limit=CONTRIBUTION_QUEUE):
        self.executor = executor
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._log_limit = RateLimiter(Rate(rate=0.2, burst=3), max_keys=1)
        self.refused = 0

    def submit(self, fn, *args):
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            if self._log_limit.allow("full"):
                log.warning("contribution refused: %d already queued (%d refused so far)", self.limit, self.refused)
            return None
        try:
            work = self.executor.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        work.add_done_callback(self._release)   # also when cancelled before it started
        return asyncio.wrap_future(work)

    def _release(self, _work):
        self._slots.release()


class KeyServerHandler:
    """Per-connection handler. ``queue`` (a ContributionQueue) runs the (slow, PBKDF2)
    contributions. ``authenticated`` once a contribution was accepted (its credential held)."""

    def __init__(self, keyserver, public_key_pem, queue):
        self._keyserver = keyserver
        self._public_key = Reply(PublicKey(public_key_pem))
        self._queue = queue
        self.authenticated = False

    def _receipt(self, receipt):
        self.authenticated = True
        return Receipt(receipt)

    def handle(self, event):
        if type(event) is Hello:
            return self._public_key
        if type(event) is Contribute:
            future = self._queue.submit(self._keyserver.contribute,
                                        event.account, event.authority_id, event.credential, event.ciphertext)
            if future is None:
                return Reply(Error(), barrier=True)
            return Reply(future=future, convert=self._receipt, barrier=True)
        raise AssertionError(f"unexpected event {type(event).__name__}")


def keyserver_executor():
    """One thread: contributions are rare and each one is a single store transaction."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpfast-keyserver")


async def serve_keyserver(keyserver, ssl_context, host, port, *, limits=None, executor=None):
    """Serve the key server with TLS on (host, port); return a Listener."""
    executor = executor or keyserver_executor()
    queue = ContributionQueue(executor)
    pem = keyserver.public_key_pem()

    def make_handler():
        return KeyServerHandler(keyserver, pem, queue)

    return await start_server(keyserver_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor)


__all__ = ["serve_keyserver", "KeyServerHandler", "ContributionQueue", "ServerLimits"]
