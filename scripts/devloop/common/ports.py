"""Local TCP ports for the servers this package and its tests start."""

from __future__ import annotations

import errno
import socket
import subprocess
import time

from devloop.common.errors import DevloopError, UsageError


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now. Another process could take it before the caller's
    server binds it; callers start their server at once, and a clash fails loudly at bind."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_listening(
    port: int, process: subprocess.Popen, timeout: float, host: str = "127.0.0.1"
) -> None:
    """Return once `process` accepts connections on `port`. Raises DevloopError if it exits
    first (a bind clash, a bad flag) or nothing listens within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevloopError(
                f"{process.args[0]} exited with code {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise DevloopError(f"nothing listening on {host}:{port} after {timeout} s")


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on host:port (in use, not an address of this machine), or
    None when it could."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def port_is_free(host: str, port: int) -> bool:
    return bind_error(host, port) is None


def check_port(host: str, port: int, bad_host_fix: str, in_use_fix: str) -> None:
    """A UsageError (exit 2) unless a server could listen on host:port now; the fixes are the
    caller's words (its flags or settings)."""
    error = bind_error(host, port)
    if error is None:
        return
    if isinstance(error, socket.gaierror) or error.errno != errno.EADDRINUSE:
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror}): {bad_host_fix}")
    raise UsageError(f"port {port} on {host} is in use (another server?): {in_use_fix}")
