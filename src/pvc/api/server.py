"""The REST API server (aiohttp, on pvcd's own event loop): every registered operation at
``op.method /api/v1 + op.path``, behind a bearer token.

The server only decodes requests and encodes answers (``pvc.api.wire``); what an operation does, and
whether a read-only caller may do it, is the operations layer's (``pvc.ops.registry``). An error is
always ``{"error": ..., "kind": ...}`` with the PvcError's status; anything unexpected is logged and
answered with a plain 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import msgspec
from aiohttp import web

from pvc import __version__
from pvc.api import openapi, wire
from pvc.errors import NotFound, PvcError, Unauthorized, Unavailable
from pvc.ops import registry
from pvc.ops import token as tokens

# How long a stream's first item may take to decide the answer's status (an unknown VM: 404) before
# the 200 and the event-stream headers go out anyway (a follow with nothing to show yet).
FIRST_ITEM_WAIT = 1.0
KEEPALIVE_INTERVAL = 15.0  # an SSE comment this often: proxies keep the stream, a gone client is noticed
SHUTDOWN_TIMEOUT = 0.5  # pvcd must stop within 2 s of SIGTERM; open streams are cut

_ZK = web.AppKey("zk", Any)
_LOG = web.AppKey("log", Any)
_NODE = web.AppKey("node", str)
_EXTRAS = web.AppKey("extras", dict)
_CLOSING = web.AppKey("closing", asyncio.Event)
_OPENAPI = web.AppKey("openapi", bytes)
_JSON = "application/json"


def build_app(zk, log, node: str = "", extras: dict[str, Any] | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth], client_max_size=16 * 1024 * 1024)
    app[_ZK], app[_LOG], app[_NODE], app[_EXTRAS] = zk, log, node, extras or {}
    app[_CLOSING] = asyncio.Event()  # set at shutdown: open streams end with an error event
    ops = registry.load_all()
    app[_OPENAPI] = msgspec.json.encode(openapi.document(ops, __version__))
    app.router.add_get(f"{wire.PREFIX}/health", _health)
    app.router.add_get(f"{wire.PREFIX}/openapi.json", _openapi)
    # Fixed paths before placeholders: /node/{node} must not swallow a /node/something route.
    twins = wire.follow_twins(ops)
    for op in sorted(ops.values(), key=lambda o: (len(wire.path_fields(o.path)), o.path)):
        app.router.add_route(op.method, wire.PREFIX + op.path, _handler(op, twins.get(op.name)))
    app.on_shutdown.append(_end_streams)
    return app


def _answer(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status, content_type=_JSON, headers=headers)


def _error(exc: PvcError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="pvc"'} if isinstance(exc, Unauthorized) else None
    return web.Response(body=wire.error_body(exc), status=exc.http_status, content_type=_JSON, headers=headers)


class _HttpError(PvcError):
    """aiohttp's own refusals (no such route, method not allowed, body too large) in our shape."""

    kind = "PvcError"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PvcError as exc:
        return _error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _error(NotFound(f"no such resource: {request.method} {request.path}"))
        response = _error(_HttpError(f"{exc.reason}: {request.method} {request.path}", exc.status))
        if allow := exc.headers.get("Allow"):
            response.headers["Allow"] = allow
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        request.app[_LOG].exception("api_internal_error", method=request.method, path=request.path)
        return _error(PvcError("internal error (see the daemon's log)"))


PUBLIC = {f"{wire.PREFIX}{p}" for p in openapi.PUBLIC}


@web.middleware
async def _auth(request: web.Request, handler) -> web.StreamResponse:
    if request.path in PUBLIC:
        return await handler(request)
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("a token is needed: send Authorization: Bearer TOKEN (see `pvc token add`)")
    token = await tokens.authenticate(request.app[_ZK], secret.strip())
    if token is None:
        raise Unauthorized("unknown token")
    request["ctx"] = registry.Context(request.app[_ZK], actor=f"token:{token.name}", read_only=token.read_only,
                                      extras=request.app[_EXTRAS])
    return await handler(request)


async def _health(request: web.Request) -> web.Response:
    connected = request.app[_ZK].connected.is_set()
    return _answer(openapi.Health(status="ok" if connected else "degraded", node=request.app[_NODE],
                                  zookeeper_connected=connected))


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type=_JSON)


def _handler(op: registry.Operation, twin: registry.Operation | None = None):
    async def handle(request: web.Request) -> web.StreamResponse:
        if twin is not None and wire.follow_requested(request.query):
            return await _handler(twin)(request)
        body = await request.read() if request.can_read_body else b""
        query = request.query.items()
        if (op.stream or twin is not None) and "follow" not in wire.fields(op.params):
            query = [(k, v) for k, v in query if k != "follow"]  # a stream follows anyway; a read does not
        params = wire.decode_params(op, dict(request.match_info), query, body)
        ctx = request["ctx"]
        if op.stream:  # follows go on until the client leaves: only an event stream fits
            return await _sse(request, registry.stream(ctx, op.name, params))
        return _answer(await registry.call(ctx, op.name, params))

    handle.__name__ = op.name
    return handle


async def _sse(request: web.Request, items) -> web.StreamResponse:
    """Each item as one ``data:`` event; an error ends the stream with an ``error`` event."""
    it = aiter(items)
    nxt = asyncio.ensure_future(anext(it))
    closing = asyncio.ensure_future(request.app[_CLOSING].wait())
    try:
        await asyncio.wait({nxt}, timeout=FIRST_ITEM_WAIT)
        if nxt.done() and isinstance(nxt.exception(), PvcError):
            nxt.result()  # raise it: an answer with its own status, not a stream
        response = web.StreamResponse(headers={"Content-Type": wire.SSE_TYPE, "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        while True:
            done, _ = await asyncio.wait({nxt, closing}, timeout=KEEPALIVE_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
            if closing in done:
                await response.write(wire.sse_error(Unavailable("the API server is stopping")))
                break
            if not done:
                await response.write(wire.SSE_KEEPALIVE)
                continue
            try:
                item = nxt.result()
            except StopAsyncIteration:
                break
            except PvcError as exc:
                await response.write(wire.sse_error(exc))
                break
            except Exception:
                request.app[_LOG].exception("api_stream_error", path=request.path)
                await response.write(wire.sse_error(PvcError("internal error (see the daemon's log)")))
                break
            await response.write(wire.sse_item(msgspec.json.encode(item)))
            nxt = asyncio.ensure_future(anext(it))
        await response.write_eof()
        return response
    except ConnectionResetError:  # the client went away: a normal end of a follow
        return response
    finally:
        closing.cancel()
        nxt.cancel()
        await asyncio.wait({nxt})
        if hasattr(it, "aclose"):
            await it.aclose()


async def _end_streams(app: web.Application) -> None:
    app[_CLOSING].set()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(zk, log, host: str, port: int, *, node: str = "", tls: tuple[str, str] | None = None,
                extras: dict[str, Any] | None = None, started: asyncio.Event | None = None) -> None:
    """Serve until cancelled. A port in use or an unreadable certificate is logged and retried (it
    may be freed or fixed), never the end of the daemon."""
    app = build_app(zk, log, node, extras)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        delay = 1.0
        while True:
            try:
                context = tls_context(*tls) if tls else None
                await web.TCPSite(runner, host, port, ssl_context=context).start()
                break
            except (OSError, ssl.SSLError) as exc:
                log.error("api_not_listening", listen=f"{host}:{port}", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        log.info("api_listening", listen=f"{host}:{port}", tls=bool(tls))
        if started:
            started.set()
        await asyncio.Event().wait()
    finally:
        # pvcd cancels its roles again and again while it stops: the close goes on regardless.
        closed = asyncio.ensure_future(_close(app, runner))
        try:
            await asyncio.shield(closed)
        except asyncio.CancelledError:
            pass


async def _close(app: web.Application, runner: web.AppRunner) -> None:
    app[_CLOSING].set()
    await asyncio.sleep(0.05)  # open streams write their last (error) event and end
    await runner.cleanup()
