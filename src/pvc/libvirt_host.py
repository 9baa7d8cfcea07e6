"""The local libvirt, as the daemon sees it: the source of truth for what runs on this node.

Thin: every call maps 1:1 to libvirt. Quick calls run on the loop (sub-millisecond on a local
socket); migration, which blocks for seconds, runs in a thread. Lifecycle events arrive on the
loop through libvirtaio. VMs are started as transient domains (ZooKeeper holds the definition),
so "defined in libvirt" means "running or paused on this node".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass

import libvirt
import libvirtaio

from pvc.errors import Unavailable

libvirt.registerErrorHandler(lambda *_: None, None)

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",  # shutting down, still running
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}

EVENT_STOPPED = libvirt.VIR_DOMAIN_EVENT_STOPPED
EVENT_CRASHED = libvirt.VIR_DOMAIN_EVENT_CRASHED
STOPPED_MIGRATED = libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED

# (uuid, event, detail)
EventCallback = Callable[[str, int, int], None]

_event_impl_loop: asyncio.AbstractEventLoop | None = None


class LibvirtError(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code

    @property
    def unsupported(self) -> bool:
        """The driver cannot do this at all (e.g. the test driver and migration)."""
        return self.code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED)


@dataclass(frozen=True)
class HostStats:
    memory_total_mib: int
    memory_free_mib: int
    cpus: int


@dataclass(frozen=True)
class DomainStats:
    uuid: str
    name: str
    state: str  # running | paused | ...
    vcpus: int
    cpu_seconds: float  # CPU time used by all its vCPUs since it started
    memory_bytes: int  # current (balloon) memory


class LibvirtHost:
    def __init__(self, uri: str, on_event: EventCallback, log: Callable[..., None] | None = None,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.uri = uri
        self._on_event = on_event
        self._log = log or (lambda event, **kw: None)
        self._conn: libvirt.virConnect | None = None
        # Events were missed while the connection was down: whoever keeps state must look again.
        self._on_reconnect = on_reconnect or (lambda: None)

    def open(self) -> None:
        global _event_impl_loop
        loop = asyncio.get_running_loop()
        if _event_impl_loop is not loop:
            libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
            _event_impl_loop = loop
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise Unavailable(f"libvirt at {self.uri} is unreachable: {exc.get_error_message()}") from None
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None)
        try:
            conn.setKeepAlive(5, 3)
        except libvirt.libvirtError:
            pass  # local drivers have no keepalive
        conn.registerCloseCallback(self._closed, None)
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.unregisterCloseCallback()
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def _event(self, _conn, dom, event: int, detail: int, _opaque) -> None:
        self._on_event(dom.UUIDString(), event, detail)

    def _closed(self, _conn, reason: int, _opaque) -> None:
        self._log("libvirt_connection_closed", uri=self.uri, reason=reason)
        self._conn = None

    async def keep_connected(self) -> None:
        """Reopen the connection whenever libvirtd goes away (restart, crash)."""
        while True:
            if self._conn is None:
                try:
                    self.open()
                    self._log("libvirt_reconnected", uri=self.uri)
                    self._on_reconnect()
                except Unavailable:
                    await asyncio.sleep(1)
                    continue
            await asyncio.sleep(1)

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise Unavailable(f"libvirt at {self.uri} is not connected")
        return self._conn

    # -- queries -------------------------------------------------------------------------------

    def running_uuids(self) -> list[str]:
        """UUIDs of every domain running (or paused) here: one libvirt call, whatever their number."""
        try:
            return [d.UUIDString() for d in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
        except libvirt.libvirtError as exc:
            raise LibvirtError(exc.get_error_message()) from None

    def state(self, uuid: str) -> str:
        """running | paused | shutoff | crashed; shutoff when libvirt does not know the domain."""
        try:
            dom = self.conn.lookupByUUIDString(uuid)
            return _STATE_NAMES.get(dom.state()[0], "running")
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "shutoff"
            raise LibvirtError(exc.get_error_message()) from None

    def is_running(self, uuid: str) -> bool:
        return self.state(uuid) in ("running", "paused")

    def domain_stats(self) -> list[DomainStats]:
        """What each running (or paused) domain uses, for metrics: one libvirt call per domain
        (blocking: called from a thread)."""
        out = []
        try:
            domains = self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as exc:
            raise LibvirtError(exc.get_error_message()) from None
        for dom in domains:
            try:
                state, _max_kib, memory_kib, vcpus, cpu_ns = dom.info()
                out.append(DomainStats(dom.UUIDString(), dom.name(), _STATE_NAMES.get(state, "running"),
                                       vcpus, cpu_ns / 1e9, memory_kib * 1024))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # gone meanwhile: not running
                    raise LibvirtError(exc.get_error_message()) from None
        return out

    def stats(self) -> HostStats:
        info = self.conn.getInfo()
        return HostStats(
            memory_total_mib=int(info[1]),
            memory_free_mib=int(self.conn.getFreeMemory() // 2**20),
            cpus=int(info[2]),
        )

    # -- actions -------------------------------------------------------------------------------

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise LibvirtError(exc.get_error_message()) from None

    def start(self, xml: str) -> None:
        self._prepare_serial_log(xml)
        self._call(self.conn.createXML, xml, 0)

    def destroy(self, uuid: str) -> None:
        try:
            self.conn.lookupByUUIDString(uuid).destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                return  # already gone
            raise LibvirtError(exc.get_error_message()) from None

    def shutdown(self, uuid: str) -> None:
        try:
            self.conn.lookupByUUIDString(uuid).shutdown()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                return
            raise LibvirtError(exc.get_error_message()) from None

    def follow_rename(self, uuid: str, name: str) -> bool:
        """A persistent (inactive) definition of this VM here takes its new ``name``; pvc itself
        starts transient domains, so usually there is none (False). Blocking: call from a thread."""
        try:
            dom = self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise LibvirtError(exc.get_error_message()) from None
        if dom.name() == name:
            return False
        self._call(dom.rename, name, 0)  # libvirt refuses a running domain: the caller checked it is off
        return True

    async def migrate_live(self, uuid: str, dest_uri: str, migration_address: str) -> None:
        """Live-migrate to another libvirt; blocks for seconds, so it runs in a thread."""

        def run() -> None:
            dest = libvirt.open(dest_uri)
            try:
                dom = self.conn.lookupByUUIDString(uuid)
                flags = libvirt.VIR_MIGRATE_LIVE
                dom.migrate(dest, flags, None, migration_address or None, 0)
            finally:
                dest.close()

        try:
            await asyncio.to_thread(run)
        except libvirt.libvirtError as exc:
            raise LibvirtError(exc.get_error_message(), exc.get_error_code()) from None

    @staticmethod
    def _prepare_serial_log(xml: str) -> None:
        # libvirt (QEMU) will not create the log's directory.
        from pvc.domain_xml import parse_domain_xml

        path = parse_domain_xml(xml).console_log_file
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    @staticmethod
    def remote_active_uuids(uri: str) -> set[str]:
        """Every domain another node's libvirt runs (blocking: call through pvc.daemon.libvirt_peers)."""
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"cannot reach {uri}: {exc.get_error_message()}") from None
        try:
            return {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"{uri}: {exc.get_error_message()}") from None
        finally:
            conn.close()
