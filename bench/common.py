"""Shared by the benchmarks: a local cluster, bulk VM definition, libvirt event timing, statistics."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import libvirt
import msgspec

from pvc import store
from pvc.devcluster.cluster import DevCluster
from pvc.domain_xml import parse_domain_xml
from pvc.zk import ZK


def xml(name: str, memory_mib: int = 1) -> str:
    import uuid

    return (f"<domain type='test'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")


async def define_bulk(zookeeper: str, names: list[str], nodes: list[str], start: bool = False, batch: int = 200) -> None:
    """Define VMs through the same store code as `pvc vm define`, concurrently in batches."""
    zk = ZK(zookeeper, request_timeout=30)
    await zk.start()
    try:
        async def one(i: int, name: str) -> None:
            text = xml(name)
            dom = await store.define_domain(zk, parse_domain_xml(text), text, target=nodes[i % len(nodes)],
                                            selector="", node_limit=[], autostart=False, migration_method="")
            if start:
                await store.update_domain(zk, dom.uuid, lambda d: msgspec.structs.replace(d, state="start"))

        for i in range(0, len(names), batch):
            await asyncio.gather(*(one(j, n) for j, n in enumerate(names[i:i + batch], start=i)))
    finally:
        await zk.close()


async def with_zk(zookeeper: str, work):
    """``await work(zk)`` with a client of its own, closed afterwards."""
    zk = ZK(zookeeper, request_timeout=30)
    await zk.start()
    try:
        return await work(zk)
    finally:
        await zk.close()


class LifecycleEvents:
    """Timestamps of libvirt lifecycle events on several nodes, pumped in a thread."""

    def __init__(self, uris: dict[str, str]) -> None:
        libvirt.virEventRegisterDefaultImpl()
        self.events: dict[tuple[str, int], float] = {}
        self.cond = threading.Condition()
        self.conns = []
        for node, uri in uris.items():
            conn = libvirt.open(uri)
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, node)
            self.conns.append(conn)
        self._stop = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _event(self, _conn, dom, event, _detail, _node) -> None:
        with self.cond:
            self.events[(dom.name(), event)] = time.perf_counter()
            self.cond.notify_all()

    def _pump(self) -> None:
        while not self._stop:
            libvirt.virEventRunDefaultImpl()

    def wait(self, name: str, event: int, timeout: float = 10) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: (name, event) in self.events, timeout)
            return self.events.get((name, event))

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            c.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(label: str, values_ms: list[float]) -> str:
    return (f"{label}: n={len(values_ms)} p50={statistics.median(values_ms):.1f} ms "
            f"p99={pct(values_ms, 99):.1f} ms max={max(values_ms):.1f} ms")


def cluster(workdir: str, nodes: int = 3) -> DevCluster:
    dev = DevCluster(workdir)
    dev.up(nodes=nodes)
    return dev
