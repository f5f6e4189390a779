"""`serve`'s listening sockets, bound before anything is drawn.

Bound here rather than by uvicorn, so that a port already in use is one line naming the port
and the fix, printed before the paste line and the dashboard (which would otherwise promise a
proxy that never starts); uvicorn then serves on them (`Server.run(sockets=...)`).
"""

from __future__ import annotations

import errno
import socket

from claude_bridge.proxy.config import ConfigError

BACKLOG = 2048
"""uvicorn's default accept queue."""


class ListenError(ConfigError):
    """The address cannot be listened on: the CLI prints it as one `error:` line."""


def bind(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening TCP sockets for every address `host` resolves to, on `port` (0: a free port,
    the same one on each address); `reuse_port`: in a `SO_REUSEPORT` group (`bind_group`)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As uvicorn and asyncio bind: reuse a port whose old connections linger in
            # TIME_WAIT, and keep an IPv6 socket off the IPv4 addresses.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            # Listening now, not when uvicorn starts: a second process binding the same port
            # fails here, not later.
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(_reason(exc, host, port)) from None
    return sockets


def bind_group(host: str, port: int, count: int) -> list[list[socket.socket]]:
    """`count` sets of listening sockets on the same addresses and port, one per worker of
    `serve --workers`, with `SO_REUSEPORT`: the kernel spreads new connections over them
    evenly (one shared accept queue lets whichever worker wakes first take a whole burst).
    One set, shared by all, where the platform has no `SO_REUSEPORT`."""
    # Bound once without it first: a port already taken (even by another group of
    # `SO_REUSEPORT` sockets, which would otherwise let us join it) is the usual error.
    first = bind(host, port)
    if count == 1:
        return [first]
    if not hasattr(socket, "SO_REUSEPORT"):
        return [first] * count
    port = bound_port(first)
    for sock in first:
        sock.close()
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            groups.append(bind(host, port, reuse_port=True))
    except ListenError:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def bound_port(sockets: list[socket.socket]) -> int:
    port: int = sockets[0].getsockname()[1]
    return port


def _reason(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another `claude-bridge serve`?): stop "
            "it, or pick another port with --port"
        )
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port}: pick one above 1023 with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: pick another with --host"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
