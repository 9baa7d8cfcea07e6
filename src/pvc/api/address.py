"""``api.listen``: HOST:PORT (an IPv6 host in brackets)."""

from __future__ import annotations

from pvc.errors import InvalidInput


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"expected HOST:PORT (port 1-65535), got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidInput(f"an IPv6 host goes in brackets ([::1]:8443), got {listen!r}")
    return host, int(port)
