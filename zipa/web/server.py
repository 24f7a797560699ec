"""Serving the application with uvicorn on a socket bound first, so that the address (port 0:
one the system picks) is known, and printed, before the server starts; and the ``Host`` names
the application answers for an address (`allowed_hosts`)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # Host names as browsers write them (IPv6 in brackets)


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


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.1, ::1, localhost)."""
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names (without port) a server listening on ``host`` answers: ``host`` itself,
    the loopback names when it is a loopback address, this machine's name as well when it is
    every interface (0.0.0.0, ::), and ``extra`` (``zipa serve --allow-host``). IPv6 addresses
    are written in brackets, as in a URL; ``*.example.org`` stands for its subdomains, ``*`` for
    any name. ValueError for an ``extra`` that is none of these (a port, a URL)."""
    for name in extra:
        if not (name == "*" or re.fullmatch(r"(\*\.)?[\w-]+(\.[\w-]+)*\.?", name) or _is_ip(name.strip("[]"))):
            raise ValueError(f"--allow-host {name}: not a host name, an IP address or *.domain")
    names = [host]
    if is_loopback(host):
        names += LOOPBACK_HOSTS
    elif host in ("0.0.0.0", "::"):
        names += [*LOOPBACK_HOSTS, socket.gethostname()]
    names += extra
    bracketed = [f"[{name}]" if ":" in name and not name.startswith("[") else name for name in names]
    return list(dict.fromkeys(name.lower() for name in bracketed))


def run(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn's handling: requests in flight finish)."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
