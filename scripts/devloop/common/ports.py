"""Local TCP ports for the servers this package and its tests start."""

from __future__ import annotations

import socket
import subprocess
import time

from devloop.common.errors import DevloopError


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
