"""The coordinator role (the nodes named in ``node.coordinators``): the primary election, the primary
duties, and FRR's configuration.

The election runs on a ZooKeeper session of its own with a short timeout
(``coordinator.election_session_timeout``), so a dead primary is replaced within seconds while the
node's presence keeps the longer, more forgiving session. ``pvc.election.decide`` (pure) picks the
next step after every change (candidates, handover request, session health); this module carries
it out, one step at a time, and publishes ``/nodes/<name>/coordinator_state`` and
``/config/primary_node``.

Never two holders: the duties start only while this node's candidate is the lowest, and stop
before the candidate is deleted on a graceful hand-over. If the election session stops answering
(a check every T/6 with a deadline of T/3, T the session timeout), the duties are stopped at once,
well before ZooKeeper can expire the session and let another node take over.
"""

from __future__ import annotations

import asyncio
import time

from pvc import election, events
from pvc.daemon.context import DaemonContext
from pvc.daemon.duties import PrimaryDuties
from pvc.election import Action
from pvc.errors import PvcError, Unavailable
from pvc.schema import Paths
from pvc.zk import ZK, BadVersion, NoNode

LEAVE_TIMEOUT = 30.0


class CoordinatorRole:
    name = "coordinator"

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.zk = ctx.zk
        self.me = ctx.node
        self.cfg = ctx.config
        self.log = ctx.log.bind(role="coordinator")
        self.duties = PrimaryDuties(ctx)
        self.state = "secondary"
        self.published = ""
        self.candidate: str | None = None
        self.children: tuple[str, ...] | None = None
        self.handover = ""
        self.healthy = False
        self.stopping = False
        self.ezk: ZK | None = None
        self._wake = asyncio.Event()
        self._watches: list[asyncio.Task] = []
        self._action: asyncio.Task | None = None
        self._recording: set[asyncio.Task] = set()  # event-log writes in flight
        ctx.services.coordinator = self

    # -- wiring ------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self._until_done(lambda: self._publish("secondary"), "publish_state")
        await self.duties.cleanup()
        await self._until_done(lambda: self.zk.ensure_path(Paths.primary_election), "election_path")
        self.ezk = await self._connect()
        self.ezk.on_session_lost(self._on_session_lost)
        try:
            async with asyncio.TaskGroup() as tg:
                self._watches = [
                    self.ezk.watch_children(Paths.primary_election, self._on_children),
                    self.zk.watch_data(Paths.primary_handover, self._on_handover),
                ]
                tg.create_task(self._health_loop(), name="election-health")
                if self.cfg.networking.enabled and self.cfg.networking.frr.enabled:
                    from pvc.daemon.frr import FrrRenderer

                    tg.create_task(FrrRenderer(self.ctx).run(), name="frr")
                await self._loop()
        finally:
            try:
                await asyncio.wait_for(self._leave(), LEAVE_TIMEOUT)
            except (asyncio.TimeoutError, PvcError) as exc:
                self.log.error("coordinator_leave_incomplete", error=str(exc) or type(exc).__name__)

    async def _until_done(self, step, what: str) -> None:
        """Retry a ZooKeeper step until it succeeds (ZooKeeper may be away for a while)."""
        delay = 0.2
        while True:
            try:
                await step()
                return
            except PvcError as exc:
                self.log.warning("coordinator_retry", step=what, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _connect(self) -> ZK:
        delay = 0.2
        while True:
            ezk = ZK(self.cfg.zookeeper.hosts, auth=self.cfg.zookeeper.auth, session_timeout=self.cfg.coordinator.election_session_timeout,
                     request_timeout=self.cfg.zookeeper.request_timeout, log=self.log.info)
            try:
                await ezk.start()
                return ezk
            except Unavailable as exc:
                self.log.warning("election_session_unavailable", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    def _poke(self) -> None:
        self._wake.set()

    def _on_children(self, children: list[str] | None) -> None:
        self.children = tuple(children) if children is not None else None
        self._poke()

    def _on_handover(self, data: bytes | None, _version: int) -> None:
        self.handover = (data or b"").decode()
        self._poke()

    def _on_session_lost(self) -> None:
        # The new session does not own our candidate any more.
        self.log.warning("election_session_lost")
        self.candidate = None
        self._poke()

    # -- the loop ----------------------------------------------------------------------------------

    def view(self) -> election.View:
        return election.View(me=self.me, state=self.state, candidate=self.candidate, children=self.children,
                             handover=self.handover, healthy=self.healthy, stopping=self.stopping)

    async def _loop(self) -> None:
        recent: list[float] = []
        while True:
            self._wake.clear()
            action = election.decide(self.view())
            if action is Action.NOTHING:
                await self._wake.wait()
                continue
            # A step that does not change what decide sees would spin: never more than 20 a second.
            now = time.monotonic()
            recent = [t for t in recent if now - t < 1.0] + [now]
            if len(recent) > 20:
                await asyncio.sleep(0.5)
            # Run as a task of its own: the health check cancels a takeover in progress when the
            # session stops answering (a takeover must never outlast the session's deadline).
            self._action = asyncio.create_task(self._act(action), name=f"election:{action.value}")
            await asyncio.wait([self._action])
            task, self._action = self._action, None
            if task.cancelled():
                self.log.warning("election_step_interrupted", action=action.value)
                continue
            if task.exception() is not None:  # ZooKeeper trouble (PvcError or aiozk's own): again shortly
                exc = task.exception()
                self.log.warning("election_step_retry", action=action.value, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.2)

    async def _act(self, action: Action) -> None:
        if action is Action.ENQUEUE:
            created = await self.ezk.create(f"{Paths.primary_election}/{self.me}-", self.me.encode(),
                                            ephemeral=True, sequential=True)
            self.candidate = created.rsplit("/", 1)[1]
            self.log.info("election_enqueued", candidate=self.candidate)
            await self._refresh()
        elif action is Action.DROP_GHOSTS:
            for c in election.order(list(self.children or ())):
                if c.node == self.me and c.name != self.candidate:
                    await self._delete_candidate(c.name)
            await self._refresh()
        elif action is Action.TAKEOVER:
            await self._takeover()
        elif action is Action.RELINQUISH:
            await self._relinquish()
        elif action is Action.STEP_BACK:
            name, self.candidate = self.candidate, None
            if name:
                await self._delete_candidate(name)
            self.log.info("election_stepped_back", handover=self.handover)
            if not self.stopping:
                await self._refresh()
        elif action is Action.CLEAR_HANDOVER:
            await self._clear_handover()

    async def _refresh(self) -> None:
        self.children = tuple(await self.ezk.children(Paths.primary_election))

    async def _delete_candidate(self, name: str) -> None:
        try:
            await self.ezk.delete(f"{Paths.primary_election}/{name}")
        except NoNode:
            pass

    async def _clear_handover(self) -> None:
        data, version = await self.zk.get(Paths.primary_handover)
        if data.decode() == self.handover:
            try:
                await self.zk.set(Paths.primary_handover, b"", version)
            except BadVersion:
                pass
        self.handover = ""

    # -- transitions -------------------------------------------------------------------------------

    async def _takeover(self) -> None:
        started = time.monotonic()
        self.state = "takeover"
        ops: list[tuple] = [("set", Paths.node_key(self.me, "coordinator_state"), b"takeover"),
                            ("set", Paths.primary_node, self.me.encode())]
        if self.handover:
            ops.append(("set", Paths.primary_handover, b""))
        # A holder whose daemon died cannot correct its own state: it has no candidate any more,
        # so it holds nothing, and we say so first (a watcher then never sees two holders).
        holders = {c.node for c in election.order(list(self.children or ()))}
        others = [n for n in self.cfg.node.coordinators if n != self.me and n not in holders]
        states = await self.zk.get_many(Paths.node_key(n, "coordinator_state") for n in others)
        stale = [("set", Paths.node_key(name, "coordinator_state"), b"secondary")
                 for name, value in zip(others, states)
                 if value is not None and value.decode() in ("primary", "takeover", "relinquish")]
        if stale:
            await self.zk.multi(stale)
        try:
            await self.zk.multi(ops)
        except NoNode:
            await self.zk.put(Paths.node_key(self.me, "coordinator_state"), b"takeover")
            await self.zk.put(Paths.primary_node, self.me.encode())
        self.published = "takeover"
        self.handover = ""
        self.log.info("primary_takeover_started")
        await self.duties.start()
        self.state = "primary"
        await self._publish("primary")
        self.log.info("primary_takeover_done", seconds=round(time.monotonic() - started, 3))
        # On the side: the election step must not wait for it (with ZooKeeper frozen, the relinquish
        # the health check asks for would wait behind this write).
        record = asyncio.create_task(events.try_record(self.zk, self.log, "primary_changed",
                                                       f"{self.me} is the primary coordinator", node=self.me))
        self._recording.add(record)
        record.add_done_callback(self._recording.discard)

    async def _relinquish(self) -> None:
        started = time.monotonic()
        healthy = self.healthy
        self.state = "relinquish"
        if healthy:
            try:
                await asyncio.wait_for(self._publish("relinquish"), self.cfg.coordinator.election_session_timeout / 3)
            except (asyncio.TimeoutError, Exception):  # stopping the duties comes first
                healthy = False
        self.log.info("primary_relinquish_started", healthy=healthy)
        await self.duties.stop()
        self.state = "secondary"
        if healthy:
            await self._publish("secondary")
            await self._clear_primary_node()
        # Unhealthy: the health loop publishes once the session answers again.
        self.log.info("primary_relinquish_done", seconds=round(time.monotonic() - started, 3))

    async def _clear_primary_node(self) -> None:
        try:
            data, version = await self.zk.get(Paths.primary_node)
            if data.decode() == self.me:
                await self.zk.set(Paths.primary_node, b"", version)
        except (NoNode, BadVersion):
            pass

    async def _publish(self, state: str) -> None:
        await self.zk.put(Paths.node_key(self.me, "coordinator_state"), state.encode())
        self.published = state

    async def _leave(self) -> None:
        """Daemon shutdown: hand the role over (relinquish, then withdraw the candidate)."""
        self.stopping = True
        for w in self._watches:
            w.cancel()
        if self._action is not None:  # a step in progress finishes (or is cut short) first
            self._action.cancel()
            await asyncio.wait([self._action])
        if self.state in election.PRIMARY_HOLDING or self.state == "relinquish":
            await self._relinquish()
        if self.candidate and self.ezk:
            try:
                await self._delete_candidate(self.candidate)
            except PvcError:
                pass
            self.candidate = None
        if self.published != "secondary":
            try:
                await self._publish("secondary")
                await self._clear_primary_node()
            except PvcError:
                pass
        if self.ezk:
            await self.ezk.close()

    # -- session health ----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        timeout = self.cfg.coordinator.election_session_timeout
        period, deadline = timeout / 6, timeout / 3
        while True:
            name = self.candidate
            path = f"{Paths.primary_election}/{name}" if name else Paths.primary_election
            try:
                exists = await asyncio.wait_for(self.ezk.exists(path), deadline)
                ok = True
            except (asyncio.TimeoutError, PvcError, Exception):  # any failure: we cannot vouch for the role
                exists, ok = False, False
            if ok and name and not exists and self.candidate == name:
                self.log.warning("election_candidate_gone", candidate=name)
                self.candidate = None
                self._poke()
            if ok != self.healthy:
                self.healthy = ok
                self.log.info("election_session_health", healthy=ok)
                if not ok and self.state == "takeover" and self._action is not None:
                    self._action.cancel()  # the loop then relinquishes what was started
                self._poke()
            if ok and self.published != self.state and self.state in ("secondary", "primary"):
                try:
                    await asyncio.wait_for(self._publish(self.state), deadline)
                    if self.state == "secondary":
                        await asyncio.wait_for(self._clear_primary_node(), deadline)
                except (asyncio.TimeoutError, PvcError):
                    pass
            await asyncio.sleep(period)
