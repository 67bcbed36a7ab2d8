"""otpfast.protocol: the wire protocol, sans-IO (bytes in, events out; no asyncio, no sockets)."""
