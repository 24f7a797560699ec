"""Serving the application with uvicorn on a socket bound first, so that the address (port 0:
one the system picks) is known, and printed, before the server starts."""

from __future__ import annotations

import ipaddress
import socket


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (OSError when it cannot be)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def address(sock: socket.socket) -> str:
    """The page's address on a bound socket: ``http://127.0.0.1:8000/`` (``[::1]`` for IPv6)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.1, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn's handling: requests in flight finish)."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
