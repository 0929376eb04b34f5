"""Local TCP ports for the servers this package and its tests start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now. Another process could take it before the caller's
    server binds it; callers start their server at once, and a clash fails loudly at bind."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
