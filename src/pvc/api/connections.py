"""The CLI's API connections (`pvc connection add|list|remove`, `pvc -c NAME`): a JSON file in the
user's configuration directory, ``$XDG_CONFIG_HOME/pvc/connections.json`` (default ``~/.config``),
readable by its owner alone (mode 0600: it holds tokens)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from pvc.errors import InvalidInput, NotFound


class Connection(msgspec.Struct, kw_only=True):
    url: str  # http(s)://HOST:PORT, the API's root (/api/v1 is added)
    token: str
    ca: str = ""  # a CA certificate (PEM) to trust for https, "" = the system's


def path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "pvc" / "connections.json"


def load() -> dict[str, Connection]:
    try:
        data = path().read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidInput(f"cannot read {path()}: {exc.strerror}") from None
    try:
        return msgspec.json.decode(data, type=dict[str, Connection])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidInput(f"{path()} is not a valid connections file: {exc}") from None


def save(connections: dict[str, Connection]) -> None:
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.format(msgspec.json.encode(dict(sorted(connections.items()))), indent=2) + b"\n")
    os.chmod(tmp, 0o600)  # whatever the umask
    os.replace(tmp, target)


def get(name: str) -> Connection:
    connections = load()
    if name not in connections:
        known = ", ".join(connections) or "none yet: `pvc connection add`"
        raise NotFound(f"unknown connection {name!r} (known: {known})")
    return connections[name]


def check(url: str, ca: str) -> str:
    """The URL without a trailing slash; InvalidInput on a bad one."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"bad URL {url!r}: expected http(s)://HOST:PORT")
    if ca:
        if parts.scheme != "https":
            raise InvalidInput("--ca is for https URLs")
        if not os.path.isfile(ca):
            raise InvalidInput(f"no CA certificate at {ca}")
    return url.rstrip("/")
