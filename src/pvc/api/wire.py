"""What the API server and its client agree on, pure (no I/O): how an operation's params travel
(path placeholders, query string, JSON body), how errors and streams (Server-Sent Events) are encoded.

Params: the path placeholders of ``op.path`` name fields of ``op.params``; GET and DELETE carry the
other fields in the query string, POST/PUT/PATCH in a JSON object body (the query string is accepted
too). Strings from the query are converted by msgspec with ``strict=False`` ("true" -> True, "5" -> 5);
a list field takes the parameter repeated (``?node_limit=hv1&node_limit=hv2``).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import msgspec

from pvc import errors
from pvc.errors import InvalidInput, PvcError

PREFIX = "/api/v1"
BODY_METHODS = ("POST", "PUT", "PATCH")
SSE_TYPE = "text/event-stream"
_PLACEHOLDER = re.compile(r"{(\w+)}")


def path_fields(path: str) -> list[str]:
    return _PLACEHOLDER.findall(path)


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, set, frozenset, tuple) or tp in (list, set, frozenset, tuple)


def fields(params_type: type) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.encode_name: f for f in msgspec.structs.fields(params_type)}


# -- server side: request -> params ----------------------------------------------------------------


def decode_params(op, match: dict[str, str], query: Iterable[tuple[str, str]], body: bytes) -> Any:
    """The params Struct of ``op`` from a request's parts; InvalidInput (400) naming what is wrong."""
    known = fields(op.params)
    data: dict[str, Any] = {}
    for key, value in query:
        if key not in known:
            raise InvalidInput(f"unknown parameter {key!r}" + (f"; known: {', '.join(known)}" if known else ""))
        if _is_list(known[key].type):
            data.setdefault(key, []).append(value)
        else:
            data[key] = value
    if body.strip():
        if op.method not in BODY_METHODS:
            raise InvalidInput(f"{op.method} takes no request body; send parameters in the query string")
        try:
            obj = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InvalidInput("the request body must be a JSON object")
        for key in obj:
            if key not in known:
                raise InvalidInput(f"unknown parameter {key!r}" + (f"; known: {', '.join(known)}" if known else ""))
        data.update(obj)
    data.update(match)
    try:
        return msgspec.convert(data, op.params, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"bad parameter: {_readable(str(exc))}") from None


def _readable(message: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.lines``` as ``lines: Expected `int`, got `str```."""
    m = re.fullmatch(r"(.*) - at `\$\.?(.*)`", message)
    return f"{m.group(2)}: {m.group(1)}" if m and m.group(2) else message


def follow_twins(ops: dict[str, Any]) -> dict[str, Any]:
    """A read and its follow (``event.list`` at ``/events``, ``event.follow`` at ``/events/follow``):
    the read's path also takes ``?follow=true`` and then streams as its twin. read name -> twin."""
    streams = {o.path.removesuffix("/follow"): o for o in ops.values()
               if o.stream and o.method == "GET" and o.path.endswith("/follow")}
    return {o.name: streams[o.path] for o in ops.values()
            if o.method == "GET" and not o.stream and o.path in streams}


def follow_requested(query) -> bool:
    return query.get("follow", "").lower() in ("true", "1", "yes")


# -- client side: params -> request ----------------------------------------------------------------


def encode_params(op, params: Any) -> tuple[str, list[tuple[str, str]], bytes | None]:
    """(path under PREFIX, query pairs, JSON body or None) for calling ``op`` with ``params``."""
    values = msgspec.to_builtins(params)
    placeholders = path_fields(op.path)
    path = op.path.format(**{name: quote(str(values.pop(name)), safe="") for name in placeholders})
    if op.method in BODY_METHODS:
        return path, [], msgspec.json.encode(values)
    defaults = {f.encode_name: f.default for f in msgspec.structs.fields(op.params)}
    query: list[tuple[str, str]] = []
    for key, value in values.items():
        if value == defaults.get(key, msgspec.NODEFAULT) or value is None:
            continue  # short URLs: the server applies the same defaults
        for item in value if isinstance(value, list) else [value]:
            query.append((key, _query_value(item)))
    return path, query, None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise InvalidInput(f"a nested value cannot travel in a query string: {value!r}")
    return str(value)


# -- errors ----------------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    """Every error answer: the one-line message, and the error's kind (``pvc.errors`` class name)
    so a client raises the same error, with the same CLI exit code, as direct access would."""

    error: str
    kind: str = "PvcError"


def error_body(exc: PvcError) -> bytes:
    return msgspec.json.encode(ErrorBody(str(exc), getattr(exc, "kind", type(exc).__name__)))


def error_from(status: int, body: bytes) -> PvcError:
    """The PvcError an error answer stands for."""
    try:
        decoded = msgspec.json.decode(body, type=ErrorBody)
        message, kind = decoded.error, decoded.kind
    except (msgspec.DecodeError, msgspec.ValidationError):
        message, kind = f"HTTP {status}: {body[:200].decode(errors='replace').strip()}", ""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, PvcError)):
        cls = next((c for c in _error_classes() if c.http_status == status), PvcError)
    return cls(message)


def _error_classes() -> list[type[PvcError]]:
    found: list[type[PvcError]] = []
    todo = [PvcError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found[1:]  # the most general subclass first for each status


# -- Server-Sent Events ----------------------------------------------------------------------------


def sse_item(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def sse_error(exc: PvcError) -> bytes:
    return b"event: error\ndata: " + error_body(exc) + b"\n\n"


SSE_KEEPALIVE = b": keep-alive\n\n"


class SseParser:
    """Incremental parser of an event stream: feed bytes, get (event, data) pairs (comments dropped)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = "message"
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self._buffer += chunk
        out: list[tuple[str, bytes]] = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.removesuffix(b"\r")
            if not line:
                if self._data:
                    out.append((self._event, b"\n".join(self._data)))
                self._event, self._data = "message", []
            elif line.startswith(b":"):
                continue
            else:
                name, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if name == b"data":
                    self._data.append(value)
                elif name == b"event":
                    self._event = value.decode()
        return out
