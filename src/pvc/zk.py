"""The one ZooKeeper adapter every part of pvc goes through.

It owns what aiozk leaves to its callers (see docs/schema.md and the notes on aiozk):
- every request is bounded in time (aiozk hangs while the server is unreachable);
- session loss is detected by comparing session ids, and what the session owned (ephemeral nodes
  registered here, plus whatever owners register through ``on_session_renewed``) is re-created;
- watches are re-armed one-shot watches of our own (aiozk's DataWatcher mutates class state and
  hands the NoNode class to callbacks);
- failed transactions raise instead of returning a falsy result;
- a connection the server closed (a server killed) is noticed at once and the requests pending on
  it are resent to another server of the ensemble, within the same bound (a sequential create only
  if it was not applied); the session is kept unless a server says it expired (aiozk drops it when a
  server merely closes the connection, e.g. while the ensemble elects a leader); a server that
  accepts but does not answer is given up after a second;
- what ZooKeeper cannot hold (a request over jute.maxbuffer) is refused before it is sent;
- a connection string that cannot be parsed, or servers that all refuse the connection, fail at once;
- aiozk's noisy disconnect tracebacks are silenced; we log session changes ourselves;
- a credential (``USER:PASSWORD@HOST:PORT``, ZooKeeper's digest scheme) is sent on every connection
  before any request (aiozk has no auth support; ZooKeeper forgets it with the connection), and every
  create carries the cluster's digest ACL (see ``cluster_acl``) unless the caller names another.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiozk
import aiozk.client
import aiozk.connection
import aiozk.session
from aiozk import exc, protocol
from aiozk.protocol.stat import Stat
from aiozk.states import States

from pvc.errors import InvalidInput, Unauthorized, Unavailable

# Exceptions callers may catch without importing aiozk.
NoNode = exc.NoNode
NodeExists = exc.NodeExists
BadVersion = exc.BadVersion
NotEmpty = exc.NotEmpty

# aiozk backs off up to 60 s between reconnect rounds; a cluster daemon wants to be back within its
# session timeout, and an ensemble electing a new leader (about a second) refuses every client meanwhile:
# try again every half second (a round is one short connection per server).
aiozk.session.MAX_FIND_WAIT = 0.5
logging.getLogger("aiozk").setLevel(logging.CRITICAL)
# aiozk's client imports all twelve of its recipe modules (locks, barriers, ... and json) when it is
# made; pvc uses none (its watches are its own, below), and each CLI start paid ~4 ms of CPU for them.
aiozk.client.RecipeProxy = lambda client: None

_PIPELINE_BATCH = 2000
_MULTI_READ_BATCH = 500

# The server drops the connection of any request larger than jute.maxbuffer (default 0xfffff bytes,
# 1 MB - 1), so a larger write would only be retried until the timeout. Requests are checked here.
MAX_REQUEST_BYTES = 0xFFFFF
# Below this much payload a request cannot reach the limit (a path and an ACL are far smaller).
_SIZE_CHECK_FROM = MAX_REQUEST_BYTES - 64 * 1024

# The connection dropped under a request (server killed or restarted): resend it once connected again.
_DROPPED = (exc.ConnectError, exc.ConnectionLoss, exc.TimeoutError, exc.UnfinishedRead, ConnectionError)


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    """``host:port,host:port,...`` (an IPv6 address in brackets; port 2181 when left out) as pairs;
    InvalidInput naming the part that cannot be parsed."""
    expected = "expected HOST:PORT[,HOST:PORT...] (an IPv6 address in brackets: [::1]:2181)"
    if not hosts.strip():
        raise InvalidInput(f"no ZooKeeper address given: {expected}")
    servers = []
    for item in hosts.split(","):
        part = item.strip()
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\w*))?|([A-Za-z0-9._-]+)(?::(\w*))?", part)
        if not m:
            raise InvalidInput(f"invalid ZooKeeper address {part!r}: {expected}")
        host, port = (m[1], m[2]) if m[1] else (m[3], m[4])
        if port is None:
            port = "2181"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInput(f"invalid ZooKeeper address {part!r}: port {port!r} is not a number from 1 to 65535")
        servers.append((host, int(port)))
    return servers


def parse_connection(connection: str) -> tuple[str, list[tuple[str, int]]]:
    """``[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`` as (credential or "", servers). The one place a
    connection string is taken apart; errors never repeat the password."""
    credential, hosts = split_credential(connection)
    return credential, parse_hosts(hosts)


def split_credential(connection: str) -> tuple[str, str]:
    """``[USER:PASSWORD@]HOSTS`` as (credential or "", HOSTS), the credential checked."""
    credential, at, hosts = connection.rpartition("@")  # a password may hold "@", a host never
    if at:
        check_credential(credential)
    return credential, hosts


def check_credential(credential: str) -> str:
    """A digest credential is ``USER:PASSWORD``, the user without a colon (ZooKeeper splits at the
    first one); InvalidInput (without the password) otherwise."""
    user, colon, password = credential.partition(":")
    if not (user and colon and password) or any(c.isspace() for c in user):
        raise InvalidInput("invalid ZooKeeper credential: expected USER:PASSWORD (as in "
                           "USER:PASSWORD@HOST:PORT[,HOST:PORT...]), a user without ':' or spaces and a password")
    return credential


def digest_id(credential: str) -> str:
    """ZooKeeper's digest-scheme id of ``USER:PASSWORD``: ``USER:base64(sha1(USER:PASSWORD))``."""
    user = credential.partition(":")[0]
    return f"{user}:{base64.b64encode(hashlib.sha1(credential.encode()).digest()).decode()}"


def digest_acl(ids: Iterable[str]) -> list[aiozk.ACL]:
    """Full rights for each digest id (what pvcd and the admin credential need)."""
    return [aiozk.ACL.make("digest", i, read=True, write=True, create=True, delete=True, admin=True)
            for i in sorted(set(ids))]


def connection_string(hosts: str, credential: str = "") -> str:
    """``hosts`` with ``credential`` in front (for a child process that connects on its own)."""
    return f"{credential}@{hosts}" if credential else hosts


def _format_hosts(servers: list[tuple[str, int]]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)


def _connect_error(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    return (error.strerror or str(error) or type(error).__name__).lower()


_aiozk_read_loop = aiozk.connection.Connection.read_loop


async def _read_loop(self: aiozk.connection.Connection) -> None:
    await _aiozk_read_loop(self)
    if self.closing:
        return
    # aiozk's read loop ends quietly when the server closes the connection (a killed server): its
    # pending requests then wait, and the session stays "connected" until a heartbeat times out
    # (2/3 of the session timeout, enough to lose the session). Fail them now as a dropped
    # connection (aiozk's Session.send resends those once connected again) and look for another
    # server at once.
    self.abort(exc.ConnectError)
    session = getattr(self.watch_handler, "__self__", None)
    if session is not None and session.conn is self and session.state == States.CONNECTED:
        session.state.transition_to(States.SUSPENDED)


aiozk.connection.Connection.read_loop = _read_loop

# A healthy server answers aiozk's "srvr" handshake in milliseconds; a loaded one in well under a second.
_HANDSHAKE_TIMEOUT = 1.0
_aiozk_connect = aiozk.connection.Connection.connect


async def _connect(self: aiozk.connection.Connection) -> None:
    # A server that accepts connections but never answers (frozen, half dead: the kernel still
    # accepts) would hold aiozk's handshake, which has no bound, and every reconnection with it.
    # Give up on it and try the next server.
    await asyncio.wait_for(_aiozk_connect(self), _HANDSHAKE_TIMEOUT)


aiozk.connection.Connection.connect = _connect


class _ConnectFailed(Exception):
    """A server closed the connection or did not answer while we asked to (re)join our session."""


async def _establish_session(self: aiozk.session.Session) -> None:
    # aiozk's version gives the session up (and takes a new one, losing every ephemeral node) when a
    # server merely closes the connection: one electing a new leader after the old leader died, or
    # one behind the zxid we saw. Only a server's answer that the session expired ends it here.
    reply = await self.conn.send_connect(protocol.ConnectRequest(
        protocol_version=0, last_seen_zxid=self.last_zxid or 0, timeout=int((self.timeout or 0) * 1000),
        session_id=self.session_id or 0, password=self.password, read_only=self.allow_read_only,
    ))
    if reply is None:
        raise _ConnectFailed
    zxid, response = reply
    if response.session_id == 0:  # expired
        if self.state.current_state != States.LOST:
            self.state.transition_to(States.LOST)
        raise exc.SessionLost()
    self.session_id, self.password, self.timeout = response.session_id, response.password, response.timeout / 1000
    self.last_zxid = zxid
    # ZooKeeper keeps credentials per connection: send them again on every one, before the read
    # loop starts and before any request can be sent (the state is not CONNECTED yet).
    for scheme, secret in getattr(self, "pvc_auth", ()):
        await _send_auth(self.conn, scheme, secret)


async def _send_auth(conn: aiozk.connection.Connection, scheme: str, secret: bytes) -> None:
    request = protocol.AuthRequest(type=0, scheme=scheme, auth=secret)
    payload = request.serialize(protocol.AUTH_XID)
    conn.opcode_xref[protocol.AUTH_XID] = request.opcode
    conn.writer.write(aiozk.connection.size_struct.pack(len(payload)) + payload)
    while True:
        try:
            xid, _, response = await conn.read_response()
        except (OSError, exc.UnfinishedRead, asyncio.IncompleteReadError):  # dropped: look for a server again
            raise _ConnectFailed from None
        if xid != protocol.WATCH_XID:
            break
        conn.watch_handler(response)
    if isinstance(response, Exception):  # AUTH_FAILED (a malformed credential: checked before)
        raise _ConnectFailed


async def _repair_loop(self: aiozk.session.Session) -> None:
    refused_since = None  # serving servers keep refusing to re-join the session since then
    while not self.closing:
        await self.state.wait_for(States.SUSPENDED, States.LOST)
        if self.closing:
            break
        await self.find_server(allow_read_only=self.allow_read_only)
        try:
            await asyncio.wait_for(self.establish_session(), self.timeout)
        except (exc.SessionLost, _ConnectFailed, asyncio.TimeoutError) as error:
            self.conn.abort(exc.SessionLost)
            await self.conn.close(self.timeout)
            now = asyncio.get_running_loop().time()
            refused_since = refused_since or now
            # Refused for longer than the session timeout by servers that serve: it is gone.
            if isinstance(error, exc.SessionLost) or now - refused_since > (self.timeout or 0):
                self.session_id, self.password, refused_since = None, b"\x00", None
            else:
                await asyncio.sleep(0.1)  # the servers may be electing a leader: try again soon
            continue
        refused_since = None
        self.state.transition_to(States.READ_ONLY if self.conn.start_read_only else States.CONNECTED)
        self.conn.start_read_loop()
        try:
            await _rearm_server_watches(self)
        except Exception:  # the server went away again meanwhile: look for another one
            self.conn.abort(exc.ConnectError)
            if self.state.current_state not in (States.SUSPENDED, States.LOST):
                self.state.transition_to(States.SUSPENDED)


async def _rearm_server_watches(self: aiozk.session.Session) -> None:
    """aiozk's set_existing_watches, sent on this connection and bounded. Through Session.send, a
    server dropping right now would make it wait for a reconnection that only the repair loop
    running it can make: a client stuck suspended for good (seen after a whole-ensemble restart)."""
    if not self.watch_callbacks:
        return
    request = protocol.SetWatchesRequest(relative_zxid=self.last_zxid or 0, data_watches=[], exist_watches=[],
                                         child_watches=[])
    for event_type, path in self.watch_callbacks.keys():
        if event_type == protocol.WatchEvent.CREATED:
            request.exist_watches.append(path)
        elif event_type == protocol.WatchEvent.DATA_CHANGED:
            request.data_watches.append(path)
        elif event_type == protocol.WatchEvent.CHILDREN_CHANGED:
            request.child_watches.append(path)
    self.xid = self.xid + 1 if self.xid < 0x7FFFFFFF else 1
    await asyncio.wait_for(self.conn.send(request, xid=self.xid), self.timeout)


aiozk.session.Session.establish_session = _establish_session
aiozk.session.Session.repair_loop = _repair_loop


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


_HEADER = struct.Struct("!i?i")  # a multi's per-operation header: type, done, error
_INT = struct.Struct("!i")
_GET_DATA = 4
_STAT_SIZE = 68  # a znode Stat: 6 longs and 5 ints


class _MultiReadRequest(protocol.TransactionRequest):
    """ZooKeeper 3.6+ multiRead of getData operations: many reads in one request, framed like a
    transaction. One round trip instead of hundreds; and encoded (and its answer decoded) here in a
    few struct calls, not through aiozk's generic per-field parts, whose per-record cost bounded
    listing 10,000 VMs (~60 % of `pvc vm list`'s CPU)."""

    opcode = 22

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.paths = paths

    def serialize(self, xid: int | None = None) -> bytes:
        out = [_INT.pack(xid), _INT.pack(self.opcode)] if xid is not None else [_INT.pack(self.opcode)]
        for path in self.paths:
            encoded = path.encode()
            out += [_HEADER.pack(_GET_DATA, False, -1), _INT.pack(len(encoded)), encoded, b"\0"]  # watch: no
        out.append(_HEADER.pack(-1, True, -1))
        return b"".join(out)


class _MultiReadResponse(protocol.TransactionResponse):
    """Each read's data (b"" for an empty znode), or the aiozk error for it (NoNode, NoAuth, ...)."""

    opcode = 22

    @classmethod
    def deserialize(cls, raw: bytes) -> _MultiReadResponse | exc.ZKError:
        instance = cls()
        results = instance.responses
        kind, done, _ = _HEADER.unpack_from(raw, 0)
        offset = _HEADER.size
        while not done:
            if kind == -1:
                results.append(exc.get_response_error(_INT.unpack_from(raw, offset)[0]))
                offset += _INT.size
            elif kind == _GET_DATA:
                size = _INT.unpack_from(raw, offset)[0]
                offset += _INT.size
                results.append(raw[offset:offset + size] if size > 0 else b"")
                offset += max(size, 0) + _STAT_SIZE
            else:  # not an answer to a getData: the read fails (the connection's reader hands the error on)
                return exc.MarshallingError()
            kind, done, _ = _HEADER.unpack_from(raw, offset)
            offset += _HEADER.size
        return instance


def _children_response(cls, raw: bytes):
    """GetChildren(2) answers decoded in a few slicing steps: aiozk's generic parts spent ~6 us a name,
    which a 10,000-VM listing (and every daemon's children watch on /domains) paid."""
    count = _INT.unpack_from(raw, 0)[0]
    names, offset = [], _INT.size
    for _ in range(max(count, 0)):
        size = _INT.unpack_from(raw, offset)[0]
        offset += _INT.size
        names.append(raw[offset:offset + size].decode())
        offset += size
    if cls is protocol.GetChildren2Response:
        return cls(children=names, stat=Stat.parse(raw, offset)[0])
    return cls(children=names)


protocol.GetChildrenResponse.deserialize = classmethod(_children_response)
protocol.GetChildren2Response.deserialize = classmethod(_children_response)


DataCallback = Callable[[bytes | None, int], Any]
ChildrenCallback = Callable[[list[str] | None], Any]


# The cluster's ACL: a JSON list of the digest ids (``USER:HASH``) every znode of the cluster grants
# full rights to (docs/schema.md). Every client with a credential follows it and gives each node it
# creates that ACL, so a credential added for rotation is on new nodes at once (pvc.cluster_acl).
# Under /config, which is never empty: the root "/" is ZooKeeper's and stays open, so an anonymous
# client could delete an empty top-level node (and re-create it with a list of its own).
ACL_PATH = "/config/acl"


class ZK:
    def __init__(
        self,
        hosts: str,
        *,
        auth: str = "",
        session_timeout: float = 5.0,
        request_timeout: float = 5.0,
        log: Callable[..., Any] | None = None,
    ) -> None:
        """``hosts``: ``[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]``; ``auth`` (``USER:PASSWORD``), if
        given, is the credential instead of the one in ``hosts``."""
        credential, self.servers = parse_connection(hosts)
        self.credential = check_credential(auth) if auth else credential
        self.hosts = _format_hosts(self.servers)
        self.request_timeout = request_timeout
        self._client = aiozk.ZKClient(self.hosts, session_timeout=session_timeout, read_timeout=request_timeout)
        self._client.session.pvc_auth = []  # (scheme, secret) sent on every connection (_establish_session)
        self._own_ids: list[str] = []  # digest ids of the credentials this client holds
        self._cluster_ids: list[str] = []  # the cluster's ACL as last read from ACL_PATH
        if self.credential:
            self._hold(self.credential)
        self._log = log or (lambda event, **kw: None)
        self._ephemerals: dict[str, bytes] = {}
        self._renew_callbacks: list[Callable[[], Awaitable[None]]] = []
        self._lost_callbacks: list[Callable[[], Any]] = []
        self._session_id: int | None = None
        self._monitor: asyncio.Task | None = None
        self._watches: set[asyncio.Task] = set()
        self.connected = asyncio.Event()
        # For metrics (pvc.daemon.metrics): called with every request's seconds, and counts of
        # reconnections that kept the session and of sessions lost and replaced.
        self.observe_request: Callable[[float], None] | None = None
        self.reconnects = {"kept": 0, "new": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        timeout = timeout or self.request_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._any_server_listens()
                await self._client.start()
        except Unavailable:
            raise
        except (TimeoutError, OSError, exc.ZKError):
            self._abort()
            hint = " (servers answer but none serves requests: is a majority of the ensemble running?)" \
                if await self._only_idle_servers() else ""
            raise Unavailable(f"ZooKeeper at {self.hosts} is unreachable (no answer within {timeout:g} s){hint}") from None
        self._session_id = self._client.session.session_id
        self.connected.set()
        self._monitor = asyncio.create_task(self._watch_session(), name="zk-session")
        if self.credential:
            try:
                self.use_cluster_acl(await self.get_data(ACL_PATH))
            except BaseException:
                await self.close()
                raise
            self.watch_data(ACL_PATH, lambda data, _version: self.use_cluster_acl(data))

    async def close(self) -> None:
        for task in [*self._watches, self._monitor]:
            if task:
                task.cancel()
        self._ephemerals.clear()
        if self._monitor and not self.connected.is_set():
            self._abort()  # no server to tell: aiozk would wait for one until the timeout
            return
        try:
            await asyncio.wait_for(self._client.close(), self.request_timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError, exc.ZKError, OSError) as error:
            self._abort()  # aiozk's tasks would otherwise go on (and hold a process's exit)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def _any_server_listens(self) -> None:
        """Return once one server accepts a TCP connection; fail at once when every one refuses
        (aiozk would try them again and again until the timeout)."""
        errors: dict[tuple[str, int], str] = {}

        async def probe(host: str, port: int) -> None:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as error:
                errors[host, port] = _connect_error(error)
                raise
            writer.close()

        probes = [asyncio.create_task(probe(h, p)) for h, p in self.servers]
        try:
            for done in asyncio.as_completed(probes):
                try:
                    return await done
                except OSError:
                    pass
        finally:
            for task in probes:
                task.cancel()
        raise Unavailable("cannot connect to ZooKeeper at "
                          + ", ".join(f"{_format_hosts([s])}: {errors[s]}" for s in self.servers))

    async def _only_idle_servers(self) -> bool:
        """True when some server answers but says it does not serve (no quorum), for the error."""
        async def srvr(host: str, port: int) -> str:
            try:
                async with asyncio.timeout(0.5):
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(b"srvr")
                    answer = await reader.read()
                    writer.close()
                    return answer.decode(errors="replace")
            except (OSError, TimeoutError):
                return ""

        answers = await asyncio.gather(*(srvr(h, p) for h, p in self.servers))
        return any("not currently serving" in a for a in answers)

    def _abort(self) -> None:
        """Stop aiozk's background tasks when a clean close is impossible (server gone)."""
        session = self._client.session
        session.closing = True
        for task in (session.repair_loop_task, session.heartbeat_task):
            if task and not task.done():
                task.cancel()
        if session.heartbeat_handle:
            session.heartbeat_handle.cancel()
        if session.conn:
            session.conn.abort(exc.SessionLost)

    def on_session_renewed(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine run after the session was lost and a new one established."""
        self._renew_callbacks.append(callback)

    def on_session_lost(self, callback: Callable[[], Any]) -> None:
        """Register a plain callable run as soon as the session is known to be gone."""
        self._lost_callbacks.append(callback)

    async def _watch_session(self) -> None:
        state = self._client.session.state
        while True:
            await state.wait_for(States.SUSPENDED, States.LOST)
            self.connected.clear()
            self._log("zookeeper_suspended", state=state.current_state)
            await state.wait_for(States.CONNECTED)
            new_id = self._client.session.session_id
            if new_id != self._session_id:
                self._log("zookeeper_session_renewed", old=hex(self._session_id or 0), new=hex(new_id or 0))
                self._session_id = new_id
                self.reconnects["new"] += 1
                for cb in self._lost_callbacks:
                    cb()
                await self._reestablish()
            else:
                self._log("zookeeper_reconnected")
                self.reconnects["kept"] += 1
            self.connected.set()

    async def _reestablish(self) -> None:
        for path, data in list(self._ephemerals.items()):
            await self._retry(lambda p=path, d=data: self._recreate_ephemeral(p, d))
        for cb in self._renew_callbacks:
            await self._retry(cb)

    async def _recreate_ephemeral(self, path: str, data: bytes) -> None:
        try:
            await self.create(path, data, ephemeral=True)
        except NodeExists:
            # The old session's node may still be there for a moment; replace it with ours.
            await self.delete(path)
            await self.create(path, data, ephemeral=True)

    async def _retry(self, fn: Callable[[], Awaitable[Any]]) -> None:
        delay = 0.1
        while True:
            try:
                await fn()
                return
            except (Unavailable, exc.ZKError) as error:
                self._log("zookeeper_retry", error=str(error) or type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @property
    def session_id(self) -> int | None:
        return self._session_id

    # -- credentials and ACLs --------------------------------------------------------------------

    def _hold(self, credential: str) -> None:
        self._client.session.pvc_auth.append(("digest", credential.encode()))
        self._own_ids.append(digest_id(credential))
        self._client.default_acl = digest_acl([*self._cluster_ids, *self._own_ids])

    def use_cluster_acl(self, data: bytes | None) -> None:
        """Follow the cluster's ACL list; until it exists, our own credential is the ACL."""
        import msgspec

        try:
            self._cluster_ids = msgspec.json.decode(data, type=list[str]) if data else []
        except msgspec.ValidationError:
            self._log("zookeeper_acl_unreadable", path=ACL_PATH)
            return
        self._client.default_acl = digest_acl([*self._cluster_ids, *self._own_ids])

    @property
    def acl(self) -> list[aiozk.ACL]:
        """The ACL this client's creates carry."""
        return list(self._client.default_acl)

    async def add_credential(self, credential: str) -> None:
        """Authenticate with one more credential, now and on every later connection."""
        self._hold(check_credential(credential))
        request = protocol.AuthRequest(type=0, scheme="digest", auth=credential.encode())

        async def send() -> None:
            await self._client.session.ensure_safe_state()
            await self._client.session.conn.send(request)

        await self._bounded(send)

    async def get_acl(self, path: str) -> list[aiozk.ACL]:
        return await self._bounded(lambda: self._client.get_acl(path))

    async def set_acl_tree(self, roots: Iterable[str], acl: list[aiozk.ACL]) -> int:
        """Give every node under (and including) ``roots`` the ACL ``acl``, level by level with
        pipelined requests; returns how many nodes. A node deleted meanwhile is skipped."""

        async def one(path: str) -> list[str]:
            try:
                await self._client.send(protocol.SetACLRequest(path=path, acl=acl, version=-1))
                return [f"{path.rstrip('/')}/{c}" for c in await self._client.get_children(path)]
            except NoNode:
                return []

        level, count = list(roots), 0
        while level:
            count += len(level)
            below: list[str] = []
            for i in range(0, len(level), _PIPELINE_BATCH):
                batch = level[i : i + _PIPELINE_BATCH]
                for children in await self._bounded(lambda b=batch: asyncio.gather(*(one(p) for p in b))):
                    below.extend(children)
            level = below
        return count

    def _refused(self) -> Unauthorized:
        if not self._own_ids:
            return Unauthorized(
                f"ZooKeeper at {self.hosts} refused access (NoAuth): the cluster needs its credential, "
                "give USER:PASSWORD@HOST:PORT[,HOST:PORT...] (--zookeeper or PVC_ZOOKEEPER; pvcd: zookeeper.auth)")
        users = ", ".join(sorted({i.partition(":")[0] for i in self._own_ids}))
        return Unauthorized(f"ZooKeeper at {self.hosts} refused access (NoAuth) to user {users}: a wrong "
                            "password, or a credential the cluster's ACL does not list (see `pvc cluster acl`)")

    # -- bounded requests ------------------------------------------------------------------------

    async def _bounded(self, request: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``request()`` within the request timeout; a request whose connection dropped under it
        is sent again (aiozk waits until it is connected to a server again)."""
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.request_timeout):
                while True:
                    try:
                        return await request()
                    except _DROPPED as error:
                        self._log("zookeeper_request_resent", error=type(error).__name__)
                        await asyncio.sleep(0.01)  # let the session notice and move first
                    except exc.NoAuth:
                        raise self._refused() from None
        except TimeoutError:
            raise Unavailable(
                f"ZooKeeper at {self.hosts} did not answer within {self.request_timeout:g} s"
            ) from None
        finally:
            if self.observe_request is not None:
                self.observe_request(asyncio.get_running_loop().time() - started)

    @staticmethod
    def _check_size(request: Any, what: str, unit: str = "record") -> None:
        """Refuse a request ZooKeeper cannot take (over jute.maxbuffer), before anything is sent.
        Callers skip this for small payloads (serialising costs as much as sending)."""
        size = len(request.serialize(0))
        if size > MAX_REQUEST_BYTES:
            raise InvalidInput(f"{what} is {_mb(size)}; ZooKeeper holds at most 1 MB per {unit}")

    async def stat(self, path: str) -> Any:
        """The node's ZooKeeper stat (versions, creating transaction, ephemeral owner); NoNode if missing."""
        _, stat = await self._bounded(lambda: self._client.get(path))
        return stat

    async def get(self, path: str) -> tuple[bytes, int]:
        data, stat = await self._bounded(lambda: self._client.get(path))
        return data or b"", stat.version

    async def get_data(self, path: str, default: bytes | None = None) -> bytes | None:
        try:
            return (await self.get(path))[0]
        except NoNode:
            return default

    async def exists(self, path: str) -> bool:
        return await self._bounded(lambda: self._client.exists(path))

    async def children(self, path: str) -> list[str]:
        return await self._bounded(lambda: self._client.get_children(path))

    async def create(
        self, path: str, data: bytes = b"", *, ephemeral: bool = False, sequential: bool = False
    ) -> str:
        if len(data) >= _SIZE_CHECK_FROM:
            self._check_size(protocol.CreateRequest(path=path, data=data, acl=self._client.default_acl, flags=0), path)
        if sequential:
            return await self._create_sequential(path, data, ephemeral)
        return await self._bounded(lambda: self._client.create(path, data, ephemeral=ephemeral))

    async def _create_sequential(self, path: str, data: bytes, ephemeral: bool) -> str:
        """A sequential create whose connection dropped may have been applied all the same: sent
        again blindly it would leave a second node (for a lock, a ghost entry ahead of its own owner
        for as long as the session lives). So after a drop, look for it before sending it again."""
        parent, prefix = path.rsplit("/", 1)
        parent = parent or "/"
        before = set(await self.children(parent))
        dropped = False

        async def attempt() -> str:
            nonlocal dropped
            if dropped:
                session = self._client.session.session_id
                for child in sorted(set(await self._client.get_children(parent)) - before):
                    if not child.startswith(prefix):
                        continue
                    try:
                        found, stat = await self._client.get(f"{parent.rstrip('/')}/{child}")
                    except NoNode:
                        continue
                    if (found or b"") == data and (not ephemeral or stat.ephemeral_owner == session):
                        return f"{parent.rstrip('/')}/{child}"
            try:
                return await self._client.create(path, data, ephemeral=ephemeral, sequential=True)
            except _DROPPED:
                dropped = True
                raise

        return await self._bounded(attempt)

    async def create_owned(self, path: str, data: bytes = b"") -> None:
        """Create an ephemeral node that is re-created whenever the session is renewed."""
        await self._recreate_ephemeral(path, data)
        self._ephemerals[path] = data

    async def set_owned(self, path: str, data: bytes) -> None:
        await self.set(path, data)
        self._ephemerals[path] = data

    async def release_owned(self, path: str) -> None:
        self._ephemerals.pop(path, None)
        try:
            await self.delete(path)
        except NoNode:
            pass

    async def set(self, path: str, data: bytes, version: int = -1) -> int:
        if len(data) >= _SIZE_CHECK_FROM:
            self._check_size(protocol.SetDataRequest(path=path, data=data, version=version), path)
        stat = await self._bounded(lambda: self._client.set(path, data, version))
        return stat.version

    async def put(self, path: str, data: bytes) -> None:
        """Set a node's data, creating it (not its parents) when missing."""
        try:
            await self.set(path, data)
        except NoNode:
            try:
                await self.create(path, data)
            except NodeExists:
                await self.set(path, data)

    async def delete(self, path: str, version: int = -1) -> None:
        request = protocol.DeleteRequest(path=self._client.normalize_path(path), version=version)
        await self._bounded(lambda: self._client.send(request))

    async def delete_tree(self, path: str) -> None:
        try:
            for child in await self.children(path):
                await self.delete_tree(f"{path}/{child}")
            await self.delete(path)
        except NoNode:
            pass

    async def ensure_path(self, path: str) -> None:
        await self._bounded(lambda: self._client.ensure_path(path))

    async def get_many(self, paths: Iterable[str]) -> list[bytes | None]:
        """Many reads in few round trips (multiRead); None where a node is missing."""
        paths = list(paths)
        out: list[bytes | None] = []
        batches = [paths[i : i + _MULTI_READ_BATCH] for i in range(0, len(paths), _MULTI_READ_BATCH)]

        async def one(batch: list[str]) -> list[bytes | None]:
            paths = [self._client.normalize_path(p) for p in batch] if self._client.chroot else batch
            response = await self._client.send(_MultiReadRequest(paths))
            if any(isinstance(r, exc.NoAuth) for r in response.responses):
                raise self._refused()  # not "missing"
            return [None if isinstance(r, exc.ResponseError) else r for r in response.responses]

        try:
            for result in await self._bounded(lambda: asyncio.gather(*(one(b) for b in batches))):
                out.extend(result)
        except (exc.Unimplemented, exc.MarshallingError):
            return await self.get_many_pipelined(paths)  # a server older than 3.6
        return out

    async def get_many_pipelined(self, paths: Iterable[str]) -> list[bytes | None]:
        """Pipelined single reads (servers older than 3.6 have no multiRead)."""

        async def one(path: str) -> bytes | None:
            try:
                data, _ = await self._client.get(path)
                return data or b""
            except NoNode:
                return None

        paths = list(paths)
        out: list[bytes | None] = []
        for i in range(0, len(paths), _PIPELINE_BATCH):
            batch = paths[i : i + _PIPELINE_BATCH]
            out.extend(await self._bounded(lambda batch=batch: asyncio.gather(*(one(p) for p in batch))))
        return out

    async def multi(self, ops: Iterable[tuple]) -> None:
        """Run ("create", path, data) / ("set", path, data, version) / ("delete", path, version) /
        ("check", path, version) atomically; raise the failing operation's error."""
        txn = self._client.begin_transaction()
        payload, largest = 0, ("", 0)
        for op, path, *args in ops:
            if op in ("create", "set") and args:
                payload += len(args[0])
                largest = max(largest, (path, len(args[0])), key=lambda p: p[1])
            if op == "create":
                txn.create(path, args[0] if args else b"")
            elif op == "set":
                txn.set_data(path, args[0], args[1] if len(args) > 1 else -1)
            elif op == "delete":
                txn.delete(path, args[0] if args else -1)
            elif op == "check":
                txn.check_version(path, args[0])
            else:
                raise ValueError(f"unknown transaction op {op!r}")
        if largest[1] >= _SIZE_CHECK_FROM:  # one record too large on its own: name it
            self._check_size(protocol.SetDataRequest(path=largest[0], data=bytes(largest[1]), version=-1), largest[0])
        if payload >= _SIZE_CHECK_FROM:  # the whole transaction is one request
            self._check_size(txn.request, f"a transaction of {len(txn.request.requests)} operations", "request")
        response = await self._bounded(lambda: self._client.send(txn.request))
        for reply in response.responses:
            if isinstance(reply, exc.NoAuth):
                raise self._refused()
            if isinstance(reply, exc.ResponseError) and not isinstance(reply, (exc.RolledBack, exc.RuntimeInconsistency)):
                raise reply

    # -- watches ---------------------------------------------------------------------------------

    def watch_data(self, path: str, callback: DataCallback) -> asyncio.Task:
        """Call ``callback(data, version)`` now and on every change; (None, -1) while the node is missing.

        Cancel the returned task to stop watching."""
        return self._spawn_watch(self._data_watch(path, callback), f"watch:{path}")

    def watch_children(self, path: str, callback: ChildrenCallback) -> asyncio.Task:
        """Call ``callback(children)`` now and on every change of the child list (None: node missing)."""
        return self._spawn_watch(self._children_watch(path, callback), f"watch-children:{path}")

    def _spawn_watch(self, coro: Awaitable[None], name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)
        return task

    def _one_shot(self, events: list[int], path: str) -> tuple[asyncio.Future, Callable[[], None]]:
        """A future set by the next of ``events`` on ``path``, and its clean-up."""
        session = self._client.session
        npath = self._client.normalize_path(path)
        fired = asyncio.get_running_loop().create_future()

        def fire(_path: str) -> None:
            if not fired.done():
                fired.set_result(None)

        for event in events:
            session.add_watch_callback(event, npath, fire)

        def cleanup() -> None:
            for event in events:
                if fire in session.watch_callbacks.get((event, npath), ()):
                    session.remove_watch_callback(event, npath, fire)

        return fired, cleanup

    async def _rearm(
        self, path: str, events: list[int], read: Callable[[], Awaitable[Any]], deliver: Callable[[Any], Any]
    ) -> None:
        last: Any = object()
        while True:
            # Register for the event before the read that arms it, so no change slips between them.
            fired, cleanup = self._one_shot(events, path)
            try:
                try:
                    value = await read()
                except (Unavailable, exc.ConnectError, exc.ConnectionLoss, exc.SessionExpired):
                    await self.connected.wait()
                    await asyncio.sleep(0.05)
                    continue
                if value != last:
                    last = value
                    result = deliver(value)
                    if asyncio.iscoroutine(result):
                        await result
                await fired
            finally:
                cleanup()

    async def _data_watch(self, path: str, callback: DataCallback) -> None:
        async def read() -> tuple[bytes | None, int]:
            try:
                data, stat = await self._bounded(lambda: self._client.get(path, watch=True))
                return data or b"", stat.version
            except NoNode:
                if await self._bounded(lambda: self._client.exists(path, watch=True)):
                    return await read()
                return None, -1

        events = [protocol.WatchEvent.DATA_CHANGED, protocol.WatchEvent.DELETED, protocol.WatchEvent.CREATED]
        await self._rearm(path, events, read, lambda v: callback(*v))

    async def _children_watch(self, path: str, callback: ChildrenCallback) -> None:
        async def read() -> list[str] | None:
            try:
                return sorted(await self._bounded(lambda: self._client.get_children(path, watch=True)))
            except NoNode:
                if await self._bounded(lambda: self._client.exists(path, watch=True)):
                    return await read()
                return None

        events = [protocol.WatchEvent.CHILDREN_CHANGED, protocol.WatchEvent.DELETED, protocol.WatchEvent.CREATED]
        await self._rearm(path, events, read, callback)
