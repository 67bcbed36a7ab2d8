"""Which event loop runs the servers and clients: uvloop when it is installed (its TLS,
transports and callbacks are compiled: measured on loopback, about 12 us of server CPU per TLS
request + reply against 30 us with asyncio's pure-Python ``sslproto``), else asyncio's own.
``OTPFAST_EVENT_LOOP=asyncio`` forces asyncio's loop.
Both behave the same for otpfast: the tests run the network layer on each.

With uvloop, glibc's allocator is tuned once (:func:`tune_allocator`): uvloop receives into a
256 KiB buffer and shrinks it to the bytes read, which with glibc's defaults costs an mmap,
an mremap and a munmap per read -- more kernel CPU than the TLS itself.
"""
import asyncio
import ctypes
import importlib.util
import os
import platform

EVENT_LOOP_ENV = "OTPFAST_EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")


def available(name):
    if name == "asyncio":
        return True
    if name != "uvloop":
        raise ValueError(f"unknown event loop {name!r}")
    return importlib.util.find_spec("uvloop") is not None


def chosen():
    """The loop's name: ``$OTPFAST_EVENT_LOOP`` if set (``uvloop`` or ``asyncio``), else uvloop
    when installed, else asyncio."""
    wanted = os.environ.get(EVENT_LOOP_ENV, "").strip().lower()
    if wanted:
        if wanted not in LOOPS:
            raise ValueError(f"{EVENT_LOOP_ENV} must be one of {', '.join(LOOPS)}")
        if not available(wanted):
            raise RuntimeError(f"{EVENT_LOOP_ENV}={wanted} but {wanted} is not installed")
        return wanted
    return "uvloop" if available("uvloop") else "asyncio"


def loop_factory(name=None):
    """A callable returning a new event loop of kind ``name`` (default: :func:`chosen`)."""
    name = name or chosen()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = None


def tune_allocator():
    """glibc only: serve allocations below 1 MiB from the heap (not mmap) and keep up to
    16 MiB of freed heap; returns True if applied. Idempotent; a no-op elsewhere."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            _tuned = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 16 << 20))
    return _tuned


def run(coroutine, *, name=None):
    """``asyncio.run(coroutine)`` on the chosen event loop."""
    name = name or chosen()
    if name == "uvloop":
        tune_allocator()
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(coroutine)
