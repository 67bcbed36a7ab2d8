"""Server workers: ``otpfast serve --workers N`` runs N server processes on the same addresses.

The supervisor (the process the command started) binds every listening socket, then forks:

* one TCP socket per worker, all on one address with SO_REUSEPORT: the kernel spreads new
  connections over them;
* for RADIUS/UDP one socket per worker, likewise, with a socket filter that picks the worker
  by the packet's Request Authenticator (its first byte; Linux; else the kernel's hash of the
  source address and port): a retransmission, or a replayed copy under another Identifier or
  port, reaches the worker whose duplicate cache holds it, and the requests of one NAS, which
  all come from one port, still use every worker;
* one RADIUS UNIX socket that every worker accepts on (a krb5kdc connection stays with the
  worker that accepted it).

Each worker runs the ordinary one-process server on its sockets, with its own event loop and
store connection. The store's write lock orders the workers' group commits; a worker never
blocks its loop waiting for it: AsyncVerifier asks without waiting, and a worker that
committed wakes its siblings at once (Handoff: a byte down each sibling's pipe). Workers
die with the supervisor (PR_SET_PDEATHSIG, even on SIGKILL); the supervisor stops all of
them on SIGTERM/SIGINT, and when one of them exits on its own.
"""
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys

log = logging.getLogger("otpfast.net.workers")

_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class WorkerSockets:
    """The listening sockets one worker serves."""

    tcp: socket.socket
    udp: socket.socket | None = None
    unix: socket.socket | None = None
    http: socket.socket | None = None       # the HTTPS front end (serve --http)

    def close(self, *, keep_unix=False):
        for sock in (self.tcp, self.udp, None if keep_unix else self.unix, self.http):
            if sock is not None:
                sock.close()


def _bind_tcp(host, port, backlog):
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=backlog, reuse_port=True)


def bind_worker_sockets(count, host, port, *, backlog, radius_udp=None, radius_socket=None, http=None):
    """``count`` WorkerSockets on (host, port) (port 0: one free port for all), plus RADIUS
    sockets and the HTTPS front end's (``http``: (host, port)) when asked for; raises OSError
    (nothing left open) if an address is taken."""
    from ..radius.server import bind_udp, bind_unix

    unix = bind_unix(radius_socket) if radius_socket is not None else None
    made = []
    try:
        for _ in range(count):
            sockets = WorkerSockets(tcp=_bind_tcp(host, port, backlog), unix=unix)
            made.append(sockets)
            port = sockets.tcp.getsockname()[1]
            if radius_udp is not None:
                sockets.udp = bind_udp(*radius_udp, reuse_port=True)
                radius_udp = (radius_udp[0], sockets.udp.getsockname()[1])
            if http is not None:
                sockets.http = _bind_tcp(*http, backlog)
                http = (http[0], sockets.http.getsockname()[1])
        if radius_udp is not None and count > 1:
            _pick_worker_by_radius_authenticator(made[0].udp, count)
    except BaseException:
        for sockets in made:
            sockets.close(keep_unix=True)
        if unix is not None:
            unix.close()
            os.unlink(radius_socket)
        raise
    return made


class Handoff:
    """A worker's line to its siblings: ``notify()`` after each commit (the write lock is
    free), ``fileno()`` readable when a sibling committed, then ``drain()``. Non-blocking
    pipes; a full pipe already holds a wake-up."""

    def __init__(self, read_fd, sibling_fds):
        self._read_fd = read_fd
        self._siblings = list(sibling_fds)

    @classmethod
    def for_workers(cls, count):
        pipes = [os.pipe() for _ in range(count)]
        for read_fd, write_fd in pipes:
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
        return [cls(pipes[i][0], [w for j, (_r, w) in enumerate(pipes) if j != i]) for i in range(count)]

    def fileno(self):
        return self._read_fd

    def fds(self):
        """Every descriptor this worker's ends use."""
        return {self._read_fd, *self._siblings}

    def drain(self):
        try:
            os.read(self._read_fd, 4096)
        except (BlockingIOError, InterruptedError):
            pass

    def notify(self):
        for fd in self._siblings:
            try:
                os.write(fd, b"!")
            except (BlockingIOError, InterruptedError, BrokenPipeError):
                pass



def _fds(handoffs):
    return set().union(*(handoff.fds() for handoff in handoffs))


def _close_fds(fds):
    for fd in fds:
        os.close(fd)


_SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _pick_worker_by_radius_authenticator(sock, count):
    """Attach ``A = payload[4] % count; return A`` to the reuseport group of UDP ``sock``
    (the filter sees the UDP payload; byte 4 of a RADIUS packet starts its Request
    Authenticator, random per request). Returns False where the kernel does not support
    it: the kernel's hash then picks the worker."""
    program = (_SockFilter * 3)(
        _SockFilter(0x30, 0, 0, 4),          # BPF_LD | BPF_B | BPF_ABS: A = payload[4]
        _SockFilter(0x94, 0, 0, count),      # BPF_ALU | BPF_MOD | BPF_K: A %= count
        _SockFilter(0x16, 0, 0, 0))          # BPF_RET | BPF_A
    fprog = _SockFprog(len(program), program)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
    except OSError as exc:
        log.info("RADIUS workers picked by source address (no reuseport filter: %s)", exc)
        return False
    return True


def _die_with_parent(parent):
    """The kernel sends SIGTERM to this process when its parent exits (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:       # the parent is already gone
        os._exit(1)


def _exit_worker(code):
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def supervise(all_sockets, run_worker, announce):
    """Fork one worker per WorkerSockets; in each, ``run_worker(sockets, handoff, ready)``
    serves until SIGTERM and calls ``ready()`` once it listens. ``announce()`` runs once
    every worker is ready. Returns the exit status: 0 after a requested stop, 1 otherwise."""
    parent = os.getpid()
    unix_path = all_sockets[0].unix.getsockname() if all_sockets[0].unix is not None else None
    ready_r, ready_w = os.pipe()
    handoffs = Handoff.for_workers(len(all_sockets))
    for stream in (sys.stdout, sys.stderr):     # else a child would write the buffer again
        stream.flush()
    children = {}
    for index, sockets in enumerate(all_sockets):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                _die_with_parent(parent)
                for other in all_sockets:
                    if other is not sockets:
                        other.close(keep_unix=True)
                _close_fds(_fds(handoffs) - _fds([handoffs[index]]))     # keep this worker's ends

                def ready():
                    os.write(ready_w, b"r")
                    os.close(ready_w)

                run_worker(sockets, handoffs[index], ready)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - report and leave the worker, never the parent's code
                log.exception("server worker %d failed", index)
            _exit_worker(code)
        children[pid] = index
    os.close(ready_w)
    _close_fds(_fds(handoffs))
    for sockets in all_sockets:
        sockets.close()

    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        _signal_all(children, signal.SIGTERM)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: _signal_all(children, signal.SIGHUP))
    status = 0
    try:
        started = 0
        while started < len(children):
            data = os.read(ready_r, len(children))
            if not data:            # a worker exited before it was ready
                break
            started += len(data)
        os.close(ready_r)
        if started == len(children) and not stopping:
            announce()
        else:
            status = 1
            stopping = True
            _signal_all(children, signal.SIGTERM)
        while children:
            pid, wait_status = os.wait()
            index = children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if code != 0 or not stopping:
                status = 1
                if not stopping:
                    log.error("server worker %d exited (%s); stopping the others", index, code)
                    stopping = True
                    _signal_all(children, signal.SIGTERM)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if unix_path:
            try:
                os.unlink(unix_path)
            except FileNotFoundError:
                pass
    return status


def _signal_all(children, signum):
    for pid in children:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
