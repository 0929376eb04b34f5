"""The gateway's listening sockets: bound once, before anything says it serves, and handed down.

`devloop gateway` binds its sockets itself and turns a bind failure into one clear line. Under
`--reload` the supervisor binds them and every worker generation inherits the same sockets (their
file descriptors named in LISTEN_FDS_ENV), so the port never closes while code is reloaded: a
connection that arrives between two workers waits in the kernel's accept queue instead of being
refused.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from devloop.common.errors import UsageError

# "api=3,admin=4": the inherited listening sockets of a worker, by role.
LISTEN_FDS_ENV = "DEVLOOP_GATEWAY_LISTEN_FDS"
# A pipe the worker writes one byte to once it accepts connections (the supervisor waits on it).
READY_FD_ENV = "DEVLOOP_GATEWAY_READY_FD"
BACKLOG = 1024  # connections the kernel holds while a worker generation takes over

_HINTS = {
    errno.EADDRINUSE: "is another gateway running? pick a free one",
    errno.EACCES: "ports below 1024 need privileges; pick one above",
    errno.EADDRNOTAVAIL: "this machine has no such address; use 0.0.0.0 or 127.0.0.1",
}


@dataclass
class Listeners:
    """The bound sockets: the API port, and the admin port unless it is turned off."""

    api: socket.socket
    admin: socket.socket | None

    def fds(self) -> dict[str, int]:
        named = {"api": self.api.fileno()}
        if self.admin is not None:
            named["admin"] = self.admin.fileno()
        return named

    def close(self) -> None:
        for sock in (self.api, self.admin):
            if sock is not None:
                sock.close()


def bind(host: str, port: int, what: str, flag: str) -> socket.socket:
    """A listening TCP socket on host:port, or a UsageError that says what to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise UsageError(f"cannot listen on {host}:{port} for {what}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # Like aiohttp's reuse_address: a restarted gateway may rebind a port in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        hint = _HINTS.get(error.errno, "pick another")
        raise UsageError(
            f"cannot listen on {host}:{port} for {what}: {error.strerror}; {hint} ({flag})"
        ) from None
    return sock


def bind_all(host: str, port: int, admin_host: str, admin_port: int) -> Listeners:
    api = bind(host, port, "the API", "--port or GATEWAY_PORT")
    try:
        admin = (
            bind(admin_host, admin_port, "admin endpoints", "--admin-port or GATEWAY_ADMIN_PORT")
            if admin_port
            else None
        )
    except UsageError:
        api.close()
        raise
    return Listeners(api, admin)


def encode_fds(fds: dict[str, int]) -> str:
    return ",".join(f"{name}={fd}" for name, fd in fds.items())


def inherited(environ: dict[str, str] | None = None) -> Listeners | None:
    """The sockets a supervisor handed down, or None when this process must bind its own."""
    environ = os.environ if environ is None else environ
    spec = environ.get(LISTEN_FDS_ENV)
    if not spec:
        return None
    fds = dict(item.split("=", 1) for item in spec.split(","))
    admin = fds.get("admin")
    return Listeners(
        socket.socket(fileno=int(fds["api"])),
        socket.socket(fileno=int(admin)) if admin else None,
    )


def signal_ready(environ: dict[str, str] | None = None) -> None:
    """Tell the supervisor (if any) that this worker accepts connections now."""
    environ = os.environ if environ is None else environ
    fd = environ.get(READY_FD_ENV)
    if fd:
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except OSError:
            pass  # the supervisor is gone; nothing to tell
