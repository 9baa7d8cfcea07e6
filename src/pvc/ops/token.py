"""REST API tokens (``token.*``): ``/tokens/<SHA-256 of the token>`` holds its name and rights; the
token itself is never stored.

A token is a random secret (``secrets.token_urlsafe(32)``: 256 bits), so a plain SHA-256 suffices
to store it (no salt or slow hash is needed against guessing a 256-bit value); it is shown once,
when made. A read-write token may manage tokens over the API as it may change anything else; a
read-only one gets 403 on ``token.add``/``token.remove`` like on any change (docs/api.md).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import msgspec

from pvc.errors import Conflict, InvalidInput, NotFound
from pvc.ops.common import NoParams
from pvc.ops.registry import Context, operation
from pvc.schema import ApiToken, Paths
from pvc.zk import BadVersion, NoNode

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SECRET_PREFIX = "pvc_"
ADD_ATTEMPTS = 10


class TokenAdd(msgspec.Struct, kw_only=True):
    name: str
    read_only: bool = False


class TokenRef(msgspec.Struct, kw_only=True):
    name: str


class TokenInfo(msgspec.Struct, kw_only=True):
    name: str
    read_only: bool
    created: float


class NewToken(TokenInfo, kw_only=True):
    token: str  # shown once; only its SHA-256 is stored


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _path(secret_digest: str) -> str:
    return f"{Paths.tokens}/{secret_digest}"


async def authenticate(zk, secret: str) -> ApiToken | None:
    """The token ``secret`` is, or None: one read, keyed by its hash (a removal applies at once)."""
    data = await zk.get_data(_path(digest(secret))) if secret else None
    return ApiToken.decode(data) if data else None


def _info(token: ApiToken) -> TokenInfo:
    return TokenInfo(name=token.name, read_only=token.read_only, created=token.created)


async def _read_all(zk) -> dict[str, ApiToken]:
    """hash -> token, every token."""
    try:
        keys = await zk.children(Paths.tokens)
    except NoNode:  # a cluster initialised before tokens existed
        return {}
    values = await zk.get_many(_path(k) for k in keys)
    return {k: ApiToken.decode(v) for k, v in zip(keys, values) if v}


@operation("token.add", "POST", "/token")
async def add(ctx: Context, params: TokenAdd) -> NewToken:
    """Make an API token; the answer carries it, once."""
    if not NAME.fullmatch(params.name):
        raise InvalidInput(f"bad token name {params.name!r}: letters, digits, '_', '.', '-' (up to 64, "
                           "starting with a letter or digit)")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(name=params.name, read_only=params.read_only, created=time.time())
    # Names are unique: each add sets /tokens (its version as read with the names) in the transaction
    # that creates the token, so of two adds of one name at the same moment one finds it taken.
    for _ in range(ADD_ATTEMPTS):
        version = await _folder_version(ctx.zk)
        if any(t.name == params.name for t in (await _read_all(ctx.zk)).values()):
            raise Conflict(f"a token named {params.name!r} exists already; remove it first")
        try:
            await ctx.zk.multi([("set", Paths.tokens, b"", version),
                                ("create", _path(digest(secret)), record.encode())])
        except BadVersion:
            continue  # another token was added meanwhile: look again
        return NewToken(name=record.name, read_only=record.read_only, created=record.created, token=secret)
    raise Conflict("tokens kept changing while this one was being added; try again")


async def _folder_version(zk) -> int:
    try:
        return (await zk.get(Paths.tokens))[1]
    except NoNode:  # a cluster initialised before tokens existed
        await zk.ensure_path(Paths.tokens)
        return (await zk.get(Paths.tokens))[1]


@operation("token.list", "GET", "/token")
async def list_tokens(ctx: Context, params: NoParams) -> list[TokenInfo]:
    """List API tokens (names and rights, never the tokens)."""
    return sorted((_info(t) for t in (await _read_all(ctx.zk)).values()), key=lambda t: (t.name, t.created))


@operation("token.remove", "DELETE", "/token/{name}")
async def remove(ctx: Context, params: TokenRef) -> TokenInfo:
    """Remove an API token: requests carrying it are refused (401) from then on."""
    found = {k: t for k, t in (await _read_all(ctx.zk)).items() if t.name == params.name}
    if not found:
        raise NotFound(f"unknown token {params.name!r}")
    for key in found:
        try:
            await ctx.zk.delete(_path(key))
        except NoNode:
            pass  # removed meanwhile: gone all the same
    return _info(next(iter(found.values())))
