"""Key server over the network: Hello -> PublicKey, Contribute -> Receipt."""
import asyncio
import concurrent.futures

from ..protocol import keyserver as keyserver_protocol
from ..protocol.messages import Contribute, Hello, PublicKey, Receipt
from ._stream import Reply, ServerLimits, start_server


class KeyServerHandler:
    """Per-connection handler. ``executor`` runs the (slow, PBKDF2) contributions."""

    def __init__(self, keyserver, public_key_pem, executor):
        self._keyserver = keyserver
        self._public_key = Reply(PublicKey(public_key_pem))
        self._executor = executor

    def handle(self, event):
        if type(event) is Hello:
            return self._public_key
        if type(event) is Contribute:
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, self._keyserver.contribute,
                event.account, event.authority_id, event.credential, event.ciphertext)
            return Reply(future=future, convert=Receipt)
        raise AssertionError(f"unexpected event {type(event).__name__}")


def keyserver_executor():
    """One thread: contributions are rare and each one is a single store transaction."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="otpfast-keyserver")


async def serve_keyserver(keyserver, ssl_context, host, port, *, limits=None, executor=None):
    """Serve the key server with TLS on (host, port); return a Listener."""
    executor = executor or keyserver_executor()
    pem = keyserver.public_key_pem()

    def make_handler():
        return KeyServerHandler(keyserver, pem, executor)

    return await start_server(keyserver_protocol.Connection, make_handler, ssl_context, host, port, limits,
                              executor=executor)


__all__ = ["serve_keyserver", "KeyServerHandler", "ServerLimits"]
