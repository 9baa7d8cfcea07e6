"""The REST API's pure parts: params on the wire both ways, errors, Server-Sent Events, the listen
address, the OpenAPI document, the CLI's connections file."""

from __future__ import annotations

import os

import msgspec
import pytest

from pvc import errors
from pvc.api import connections, openapi, wire
from pvc.api.address import parse_listen
from pvc.errors import InvalidInput
from pvc.ops import registry


class Params(msgspec.Struct, kw_only=True):
    vm: str
    node_limit: list[str] = []
    wait: bool = False
    timeout: float = 0.0
    lines: int = 20


def op(method: str, path: str = "/vm/{vm}/thing"):
    return registry.Operation("vm.thing", method, path, None, Params, None, "", False)


def test_params_travel_through_path_query_and_body_and_come_back_equal():
    params = Params(vm="web 1/2", node_limit=["hv1", "hv2"], wait=True, timeout=2.5)
    path, query, body = wire.encode_params(op("GET"), params)
    assert path == "/vm/web%201%2F2/thing" and body is None
    assert query == [("node_limit", "hv1"), ("node_limit", "hv2"), ("wait", "true"), ("timeout", "2.5")]
    assert wire.decode_params(op("GET"), {"vm": "web 1/2"}, query, b"") == params
    path, query, body = wire.encode_params(op("POST"), params)
    assert query == [] and msgspec.json.decode(body) == {"node_limit": ["hv1", "hv2"], "wait": True,
                                                         "timeout": 2.5, "lines": 20}
    assert wire.decode_params(op("POST"), {"vm": "web 1/2"}, [], body) == params
    # A single value of a list field is a list of one; the path wins over the body.
    assert wire.decode_params(op("POST"), {"vm": "a"}, [("node_limit", "hv3")], b'{"vm": "b"}') == \
        Params(vm="a", node_limit=["hv3"])


@pytest.mark.parametrize("method, query, body, message", [
    ("GET", [("bogus", "1")], b"", "unknown parameter 'bogus'; known: vm, node_limit, wait, timeout, lines"),
    ("GET", [("lines", "many")], b"", "bad parameter: lines: Expected `int`, got `str`"),
    ("GET", [("wait", "perhaps")], b"", "bad parameter: wait: Expected `bool`, got `str`"),
    ("GET", [], b"{}", "GET takes no request body"),
    ("POST", [], b"{oops", "the request body is not valid JSON"),
    ("POST", [], b"[]", "the request body must be a JSON object"),
    ("POST", [], b'{"extra": 1}', "unknown parameter 'extra'"),
])
def test_bad_params_are_one_clear_line(method, query, body, message):
    with pytest.raises(InvalidInput) as exc:
        wire.decode_params(op(method), {"vm": "web"}, query, body)
    assert str(exc.value).startswith(message)


def test_errors_come_back_as_the_same_class_and_exit_code():
    for exc in [errors.NotFound("unknown VM 'x'"), errors.UsageError("add --yes"), errors.Forbidden("no"),
                errors.Unavailable("zk down"), errors.Conflict("busy"), errors.TimedOut("late")]:
        back = wire.error_from(exc.http_status, wire.error_body(exc))
        assert (type(back), str(back), back.exit_code) == (type(exc), str(exc), exc.exit_code)
    # Not our shape (a proxy's page): the class from the status, the body's start as the message.
    back = wire.error_from(404, b"<html>nope</html>")
    assert type(back) is errors.NotFound and str(back) == "HTTP 404: <html>nope</html>"
    assert type(wire.error_from(502, b"")) is errors.PvcError
    assert type(wire.error_from(400, b'{"error": "x", "kind": "NoSuchClass"}')) is errors.InvalidInput


def test_sse_parser_takes_events_split_anywhere():
    stream = (wire.SSE_KEEPALIVE + wire.sse_item(b'{"a": 1}') + wire.sse_item(b'{"a": 2}')
              + wire.sse_error(errors.NotFound("gone")))
    for size in (1, 3, 7, len(stream)):
        parser, got = wire.SseParser(), []
        for i in range(0, len(stream), size):
            got += parser.feed(stream[i:i + size])
        assert got == [("message", b'{"a": 1}'), ("message", b'{"a": 2}'),
                       ("error", b'{"error":"gone","kind":"NotFound"}')]
    assert wire.SseParser().feed(b"event: x\r\ndata: 1\r\ndata: 2\r\n\r\n") == [("x", b"1\n2")]


def test_listen_address():
    assert parse_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("api.example:1") == ("api.example", 1)
    for bad in ["8443", ":8443", "host:", "host:0", "host:70000", "::1:80", "host:x"]:
        with pytest.raises(InvalidInput):
            parse_listen(bad)


def test_openapi_document_covers_every_operation_once():
    ops = registry.load_all()
    doc = openapi.document(ops, "1.0")
    ids = [o["operationId"] for path in doc["paths"].values() for o in path.values()]
    assert sorted(ids) == sorted([*ops, "health", "openapi"]) and len(ids) == len(set(ids))
    for name, o in ops.items():
        entry = doc["paths"][o.path][o.method.lower()]
        assert {p["name"] for p in entry["parameters"] if p["in"] == "path"} == set(wire.path_fields(o.path))
        assert entry["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        if o.stream:
            assert list(entry["responses"]["200"]["content"]) == [wire.SSE_TYPE]
    assert doc["paths"]["/health"]["get"]["security"] == [] and doc["security"] == [{"token": []}]
    start = doc["paths"]["/vm/{vm}/start"]["post"]
    assert set(start["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"wait", "timeout"}
    # event.list at /events also follows (?follow=true) as event.follow does.
    events = doc["paths"]["/events"]["get"]
    assert "follow" in [p["name"] for p in events["parameters"]] and wire.SSE_TYPE in events["responses"]["200"]["content"]
    msgspec.json.encode(doc)  # all of it is JSON


def test_connections_file_is_private_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert connections.load() == {}
    connections.save({"a": connections.Connection(url="http://h:1", token="t")})
    assert os.stat(connections.path()).st_mode & 0o777 == 0o600
    assert connections.get("a").token == "t"
    with pytest.raises(errors.NotFound, match="unknown connection 'b' \\(known: a\\)"):
        connections.get("b")
    assert connections.check("https://h:1/", "") == "https://h:1"
    for url, ca in [("ftp://h", ""), ("h:1", ""), ("http://h:1", str(tmp_path)), ("https://h:1", "/nope.pem")]:
        with pytest.raises(InvalidInput):
            connections.check(url, ca)
    connections.path().write_text("{not json")
    with pytest.raises(InvalidInput, match="not a valid connections file"):
        connections.load()


def test_api_config_is_checked():
    from pvc.config import parse_config

    assert parse_config("api: {listen: '127.0.0.1:8443'}").api.listen == "127.0.0.1:8443"
    assert parse_config("").api.listen == ""  # off by default
    with pytest.raises(InvalidInput, match="api.listen: expected HOST:PORT"):
        parse_config("api: {listen: '8443'}")
    with pytest.raises(InvalidInput, match="api.tls_cert and api.tls_key go together"):
        parse_config("api: {listen: '127.0.0.1:8443', tls_cert: /etc/pvc/api.crt}")


def test_console_follow_events_travel_as_one_record_and_come_back():
    from pvc import console_log
    from pvc.ops.vm_log import ConsoleItem, item

    for event in [console_log.Lines(7, ["a", "b"]), console_log.Partial("login: "), console_log.Missed(3),
                  console_log.Notice("moved", "VM web moved to node hv2")]:
        wire_bytes = msgspec.json.encode(item(event))
        assert msgspec.json.decode(wire_bytes, type=ConsoleItem).event() == event
