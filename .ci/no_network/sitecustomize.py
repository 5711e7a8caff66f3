"""Blocks the network for every Python process started with this folder on PYTHONPATH.

`make evaluate` runs each recipe's quick run this way: that is the offline guarantee (bundled
data, bundled models, no download). Loopback and Unix sockets stay allowed (they never leave
the machine). An attempt raises NetworkBlocked (not an OSError, so no "offline fallback"
swallows it quietly) and is appended to $FINETUNE_NETWORK_LOG when set, so even an attempt
that some library catches fails the step that checks the log.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys


class NetworkBlocked(AssertionError):
    pass


_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str, target: object) -> None:
    message = f"network access attempted ({what} {target!r}) while the network is blocked"
    log = os.environ.get("FINETUNE_NETWORK_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as file:
            file.write(f"pid {os.getpid()} {' '.join(sys.argv)[:200]}: {message}\n")
    raise NetworkBlocked(message)


_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect,
    socket.socket.connect_ex,
    socket.getaddrinfo,
)


def _checked(sock: socket.socket, address: object, what: str) -> None:
    family = getattr(socket, "AF_UNIX", None)
    if sock.family == family:
        return
    host = address[0] if isinstance(address, tuple) else address
    if not _is_local(host):
        _refuse(what, address)


def connect(self: socket.socket, address: object) -> None:
    _checked(self, address, "connect")
    return _connect(self, address)


def connect_ex(self: socket.socket, address: object) -> int:
    _checked(self, address, "connect_ex")
    return _connect_ex(self, address)


def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if not _is_local(host):
        _refuse("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
