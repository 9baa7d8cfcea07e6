"""RemoteBackend: the operations layer through the REST API, for the CLI (`pvc -c NAME`).

The same interface as the local backend (``await call(name, params)``, ``async for x in
stream(name, params)``), so a command cannot tell them apart: results are decoded into the
operation's own result type, and an error answer is raised as the same PvcError class with the same
message (so the same exit code). aiohttp is imported only when a connection is used.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from pvc.api import wire
from pvc.api.connections import Connection
from pvc.errors import PvcError, Unavailable
from pvc.ops import registry


class RemoteBackend:
    def __init__(self, connection: Connection, timeout: float = 30.0) -> None:
        import aiohttp

        self.url = connection.url.rstrip("/") + wire.PREFIX
        self.headers = {"Authorization": f"Bearer {connection.token}"}
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=connection.ca) if connection.ca else True
        self.timeout = timeout
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))

    async def close(self) -> None:
        await self.session.close()

    def _request(self, op, params: Any, stream: bool):
        import aiohttp

        path, query, body = wire.encode_params(op, params)
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = wire.SSE_TYPE
            timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout)  # a follow lasts
        elif hasattr(params, "timeout") and getattr(params, "wait", True):
            # A waiting operation (vm.wait, ?wait=true) holds the answer for its own timeout (0: as long
            # as it takes).
            waits = float(getattr(params, "timeout", 0) or 0)
            timeout = aiohttp.ClientTimeout(total=self.timeout + waits if waits else None, connect=self.timeout)
        else:
            timeout = aiohttp.ClientTimeout(total=self.timeout, connect=self.timeout)
        return self.session.request(op.method, self.url + path, params=query, data=body, headers=headers,
                                    timeout=timeout)

    async def call(self, name: str, params: Any) -> Any:
        op = registry.find(name)
        async with self._guard():
            async with self._request(op, params, stream=False) as response:
                body = await response.read()
        if response.status >= 400:
            raise wire.error_from(response.status, body)
        try:
            return msgspec.json.decode(body, type=op.result)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PvcError(f"the API answered {name} with something unexpected: {exc}") from None

    async def stream(self, name: str, params: Any) -> AsyncIterator[Any]:
        op = registry.find(name)
        parser = wire.SseParser()
        async with self._guard():
            async with self._request(op, params, stream=True) as response:
                if response.status >= 400:
                    raise wire.error_from(response.status, await response.read())
                async for chunk in response.content.iter_any():
                    for event, data in parser.feed(chunk):
                        if event == "error":
                            raise wire.error_from(500, data)
                        yield msgspec.json.decode(data, type=op.result)

    def _guard(self):
        return _Unreachable(self.url)


class _Unreachable:
    """Connection failures and timeouts as Unavailable (exit code 3), like an unreachable ZooKeeper."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind, exc, tb) -> bool:
        import asyncio

        import aiohttp

        if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            raise Unavailable(f"cannot reach the API at {self.url}: {exc or type(exc).__name__}") from None
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            raise Unavailable(f"the API at {self.url} did not answer in time") from None
        return False
