"""The OpenAPI 3 document of the API, generated from the operations registry (pure): the same
params and result types the server decodes and encodes (msgspec's JSON Schema of each)."""

from __future__ import annotations

from typing import Any

import msgspec

from pvc.api.wire import BODY_METHODS, PREFIX, SSE_TYPE, ErrorBody, follow_twins, path_fields

REF = "#/components/schemas/{name}"
PUBLIC = {"/health", "/openapi.json"}  # served without a token


class Health(msgspec.Struct, kw_only=True):
    status: str  # "ok" while this daemon's ZooKeeper session is connected, else "degraded"
    node: str
    zookeeper_connected: bool


def document(ops: dict[str, Any], version: str) -> dict[str, Any]:
    ops = dict(sorted(ops.items()))
    types: list[Any] = [ErrorBody, Health]
    for op in ops.values():
        types += [op.params, op.result]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(map(id, types), schemas))
    error = {"description": "an error (docs/api.md, Errors)",
             "content": {"application/json": {"schema": by_type[id(ErrorBody)]}}}
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": {"operationId": "health", "summary": "Is this daemon up (no token needed)?",
                            "tags": ["api"], "security": [],
                            "responses": {"200": _json(by_type[id(Health)]), "default": error}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document (no token needed).",
                                  "tags": ["api"], "security": [],
                                  "responses": {"200": _json({"type": "object"})}}},
    }
    twins = follow_twins(ops)
    for op in ops.values():
        params_schema = components[by_type[id(op.params)]["$ref"].rsplit("/", 1)[1]]
        result = by_type[id(op.result)]
        inputs = _inputs(op, params_schema)
        ok = _stream(result) if op.stream else _json(result)
        if twin := twins.get(op.name):
            inputs["parameters"].append({"name": "follow", "in": "query", "required": False,
                                         "schema": {"type": "boolean", "default": False},
                                         "description": f"true: stream as {twin.name} (GET {twin.path}) does"})
            ok["content"][SSE_TYPE] = {"schema": {"type": "string"}}
        paths.setdefault(op.path, {})[op.method.lower()] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": [op.name.split(".", 1)[0]],
            **inputs,
            "responses": {"200": ok, "default": error},
        }
    return {
        "openapi": "3.1.0",  # its schemas are JSON Schema 2020-12, as msgspec writes them
        "info": {"title": "pvc", "version": version,
                 "description": "The pvc cluster's REST API (docs/api.md). Every operation of the CLI."},
        "servers": [{"url": PREFIX}],
        "security": [{"token": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }


def _json(schema: dict) -> dict:
    return {"description": "the result", "content": {"application/json": {"schema": schema}}}


def _stream(item: dict) -> dict:
    return {"description": "Server-Sent Events: each item as the JSON of one `data:` line; an `error` event "
                           "(its data an error body) ends the stream. Item schema: " + msgspec.json.encode(item).decode(),
            "content": {SSE_TYPE: {"schema": {"type": "string"}}}}


def _inputs(op, params_schema: dict) -> dict:
    props: dict[str, Any] = params_schema.get("properties", {})
    required = set(params_schema.get("required", []))
    placeholders = path_fields(op.path)
    parameters = [{"name": name, "in": "path", "required": True, "schema": props.get(name, {"type": "string"})}
                  for name in placeholders]
    rest = {k: v for k, v in props.items() if k not in placeholders}
    if op.method in BODY_METHODS:
        out: dict[str, Any] = {"parameters": parameters}
        if rest:
            body = {"type": "object", "properties": rest, "additionalProperties": False}
            if need := sorted(required & rest.keys()):
                body["required"] = need
            out["requestBody"] = {"required": bool(need), "content": {"application/json": {"schema": body}}}
        return out
    parameters += [{"name": k, "in": "query", "required": k in required, "schema": v, "style": "form",
                    "explode": True} for k, v in rest.items()]
    return {"parameters": parameters}

