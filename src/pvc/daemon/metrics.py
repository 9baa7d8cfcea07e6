"""Prometheus metrics of one pvcd at ``http://<metrics.listen>/metrics`` (names in docs/metrics.md).

Nearly everything is read when Prometheus asks, so an idle daemon does no work for metrics:
- counters and the ZooKeeper latency histogram are updated where things happen (a hook in
  ``pvc.zk``, an observer of ``pvc.ops.registry``); prometheus-client keeps them;
- at a scrape: the daemon's in-memory state (the hypervisor role's cache of its node's VM records,
  the presence and coordinator state), libvirt and the console-log files (in a thread: those calls
  block; at most one such thread at a time, so a hung libvirtd holds one thread, not the pool),
  and on the primary coordinator ZooKeeper reads for the cluster-wide figures, bounded in time.
  Those read every VM record's state (no daemon caches them all), so one reading serves the scrapes
  of a while that grows with the cluster's size and the reading's duration (``CLUSTER_REUSE_*``):
  its cost does not follow the scrape rate. The reading runs as a task of its own (one at a time):
  a scrape waits for it a few seconds at most, else answers with the previous reading and its age;
  after a failed reading the next waits, longer after each further failure.
The figures become metric families in pure functions (``node_families``, ``vm_families``,
``cluster_families``); aiohttp serves them on the daemon's own loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import libvirt
import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from pvc.daemon.context import DaemonContext
from pvc.errors import Unavailable
from pvc.libvirt_host import DomainStats, HostStats, LibvirtError
from pvc.schema import (
    NODE_DAEMON_STATES,
    NODE_DOMAIN_STATES,
    VM_STATES,
    Domain,
    FenceState,
)

MIB = 2**20
# The classic text format, which every Prometheus reads (pvc's names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# How long a scrape waits for libvirt (then ``pvc_node_libvirt_up`` says 0) and for the primary's
# cluster reading (then the previous one is given, with its age).
READ_TIMEOUT = 3.0
# A cluster reading serves the scrapes of the next max(CLUSTER_REUSE_MIN, CLUSTER_REUSE_PER_VM x VMs,
# CLUSTER_REUSE_SLOW x its wall time) seconds: the cost follows the cluster's size, and a host too busy
# to read it quickly is asked less often.
CLUSTER_REUSE_MIN, CLUSTER_REUSE_PER_VM, CLUSTER_REUSE_SLOW = 1.0, 0.005, 10
# A reading's own bound (10,000 VMs take seconds on a busy host); after a failed one the next waits
# CLUSTER_RETRY seconds, doubling after each further failure up to CLUSTER_RETRY_MAX.
CLUSTER_READ_TIMEOUT, CLUSTER_RETRY, CLUSTER_RETRY_MAX = 30.0, 5.0, 300.0
# VM records read per request: each request has the ZooKeeper request timeout to itself, and the
# daemon's other work gets the loop between them.
CLUSTER_READ_CHUNK = 500
FENCE_STATUSES = ("dead", "failed", "fenced", "recovered", "returned")
# ZooKeeper requests take about a millisecond on a healthy ensemble; the top bucket is the request timeout's order.
ZK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# -- what a scrape reads ---------------------------------------------------------------------------


@dataclass
class HostReading:
    """libvirt's and the file system's view of this host (read in a thread)."""

    host: HostStats
    domains: list[DomainStats]
    console_bytes: dict[str, int]  # uuid -> size of its console log file (only where there is one)


@dataclass
class NodeView:
    node: str
    daemon_state: str
    primary: bool
    load1: float
    records: dict[str, Domain] | None  # the VM records this daemon keeps (None: not all read yet)
    reading: HostReading | None  # None: libvirt did not answer


@dataclass
class ClusterView:
    vm_states: list[str] = field(default_factory=list)
    node_daemon_states: list[str] = field(default_factory=list)
    node_domain_states: list[str] = field(default_factory=list)
    fences: list[FenceState] = field(default_factory=list)
    flush_queue: int = 0
    ok: bool = True  # False: the ZooKeeper reads failed (no figures)
    age: float = 0.0  # seconds since it was read


# -- pure: figures -> metric families --------------------------------------------------------------


def _gauge(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _by_state(name: str, doc: str, base: list[str], label: str, states: Iterable[str], values: Iterable[str]) -> Metric:
    """A count per state, every known state present (0 included) so that queries need no ``or``."""
    tally = Tally(values)
    known = list(states)
    extra = sorted(set(tally) - set(known))  # a state this version does not know still shows
    return _gauge(name, doc, [*(["node"] if base else []), label],
                  ((base + [s], tally.get(s, 0)) for s in known + extra))


def node_families(view: NodeView) -> list[Metric]:
    node = [view.node]
    out = [
        _gauge("pvc_node_daemon_state", "The daemon's state (1 for the current one).", ["node", "state"],
               ((node + [s], float(s == view.daemon_state)) for s in NODE_DAEMON_STATES)),
        _gauge("pvc_node_primary", "1 if this node is the primary coordinator.", ["node"], [(node, float(view.primary))]),
        _gauge("pvc_node_load1", "The host's 1-minute load average.", ["node"], [(node, view.load1)]),
        _gauge("pvc_node_libvirt_up", "1 if libvirt answered this scrape.", ["node"],
               [(node, float(view.reading is not None))]),
    ]
    if view.records is not None:
        mine = [d.state for d in view.records.values() if d.node == view.node]
        out.append(_by_state("pvc_node_vms", "VMs assigned to this node, by pvc state.", node, "state", VM_STATES, mine))
    if view.reading is not None:
        hs, running = view.reading.host, view.reading.domains
        known = view.records or {}
        here = [known[d.uuid] for d in running if d.uuid in known]
        out += [
            _gauge("pvc_node_memory_total_bytes", "The host's memory.", ["node"], [(node, hs.memory_total_mib * MIB)]),
            _gauge("pvc_node_memory_free_bytes", "The host's free memory.", ["node"], [(node, hs.memory_free_mib * MIB)]),
            _gauge("pvc_node_memory_allocated_bytes", "Memory of the VMs running here, as defined.", ["node"],
                   [(node, sum(d.memory_mib for d in here) * MIB)]),
            _gauge("pvc_node_vcpus", "The host's CPUs.", ["node"], [(node, hs.cpus)]),
            _gauge("pvc_node_vcpus_allocated", "vCPUs of the VMs running here, as defined.", ["node"],
                   [(node, sum(d.vcpus for d in here))]),
            _gauge("pvc_node_domains_running", "Domains libvirt runs (or has paused) here.", ["node"],
                   [(node, len(running))]),
        ]
    return out


def vm_families(view: NodeView) -> list[Metric]:
    """One series per VM libvirt runs here, labelled with its name."""
    if view.reading is None:
        return []
    records = view.records or {}
    info = GaugeMetricFamily("pvc_vm_info", "A VM running here: its pvc state and libvirt state (value 1).",
                             labels=["node", "vm", "uuid", "state", "libvirt_state"])
    vcpus = GaugeMetricFamily("pvc_vm_vcpus", "The VM's vCPUs.", labels=["node", "vm"])
    cpu = CounterMetricFamily("pvc_vm_cpu_seconds", "CPU time its vCPUs used since it started here.",
                              labels=["node", "vm"])
    memory = GaugeMetricFamily("pvc_vm_memory_bytes", "The VM's current memory (libvirt).", labels=["node", "vm"])
    console = GaugeMetricFamily("pvc_vm_console_log_bytes", "Size of the VM's console log file on this node.",
                                labels=["node", "vm"])
    for d in view.reading.domains:
        record = records.get(d.uuid)
        labels = [view.node, d.name]
        info.add_metric([*labels, d.uuid, record.state if record else "", d.state], 1)
        vcpus.add_metric(labels, d.vcpus)
        cpu.add_metric(labels, d.cpu_seconds)
        memory.add_metric(labels, d.memory_bytes)
        if d.uuid in view.reading.console_bytes:
            console.add_metric(labels, view.reading.console_bytes[d.uuid])
    return [info, vcpus, cpu, memory, console]


def cluster_families(cluster: ClusterView) -> list[Metric]:
    """The primary coordinator's cluster-wide figures."""
    out = [_gauge("pvc_cluster_figures_ok", "1 if the cluster's state could be read from ZooKeeper.", [],
                  [([], float(cluster.ok))])]
    if not cluster.ok:
        return out
    out += [
        _gauge("pvc_cluster_figures_age_seconds", "How old the cluster-wide figures are.", [], [([], cluster.age)]),
        _by_state("pvc_cluster_vms", "VMs in the cluster, by pvc state.", [], "state", VM_STATES, cluster.vm_states),
        _by_state("pvc_cluster_nodes", "Nodes by daemon state.", [], "daemon_state", NODE_DAEMON_STATES,
                  cluster.node_daemon_states),
        _by_state("pvc_cluster_nodes_domain_state", "Nodes by domain state (flushes).", [], "domain_state",
                  NODE_DOMAIN_STATES, cluster.node_domain_states),
        _gauge("pvc_cluster_flush_queue_length", "Flushes and readies holding or waiting for the flush lock.", [],
               [([], cluster.flush_queue)]),
        _by_state("pvc_cluster_fence_nodes", "Nodes by the outcome of their latest fencing.", [], "status",
                  FENCE_STATUSES, (f.status for f in cluster.fences if f.status)),
        _gauge("pvc_cluster_fence_failed_attempts", "Failed power-off attempts on nodes not yet fenced.", [],
               [([], sum(f.attempts for f in cluster.fences if f.status in ("dead", "failed")))]),
    ]
    return out


# -- the daemon's side -----------------------------------------------------------------------------


class DaemonMetrics:
    """The metrics of one daemon: live counters, and what each scrape reads."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        disable_created_metrics()  # a "_created" series per counter is noise to Prometheus' text format
        self.registry = CollectorRegistry(auto_describe=False)
        self.zk_latency = Histogram("pvc_zookeeper_request_seconds", "Duration of ZooKeeper requests (the "
                                    "daemon's session), failed ones included.", buckets=ZK_BUCKETS,
                                    registry=self.registry)
        self.operations = Counter("pvc_operations", "Operations this daemon ran (the REST API), by result: "
                                  "ok or the error's class.", ["operation", "result"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)  # collect() below: figures kept by the ZK adapter
        self._host_read: asyncio.Future | None = None
        self._cluster: tuple[float, ClusterView] | None = None  # the last good reading: (started at, view)
        self._cluster_failing = False  # the last reading failed
        self._cluster_read: asyncio.Task | None = None
        self._next_cluster_read = 0.0  # monotonic time before which no new reading starts
        self._cluster_retry = CLUSTER_RETRY

    def attach(self) -> None:
        from pvc.ops import registry

        self.ctx.zk.observe_request = self.zk_latency.observe
        registry.observers.append(self.on_operation)

    def detach(self) -> None:
        from pvc.ops import registry

        self.ctx.zk.observe_request = None
        if self.on_operation in registry.observers:
            registry.observers.remove(self.on_operation)

    def on_operation(self, name: str, outcome: str) -> None:
        self.operations.labels(name, outcome).inc()

    def collect(self) -> Iterable[Metric]:
        zk = self.ctx.zk
        reconnects = CounterMetricFamily("pvc_zookeeper_reconnects", "Reconnections to ZooKeeper: session "
                                         "kept, or lost and replaced by a new one.", labels=["session"])
        for kind, count in zk.reconnects.items():
            reconnects.add_metric([kind], count)
        yield reconnects
        yield _gauge("pvc_zookeeper_connected", "1 while the daemon's ZooKeeper session is connected.", [],
                     [([], float(zk.connected.is_set()))])

    # -- a scrape ----------------------------------------------------------------------------------

    async def render(self) -> bytes:
        view = await self._node_view()
        families = node_families(view) + vm_families(view)
        if view.primary:
            families += cluster_families(await self._cluster_view())
        return generate_latest(_Scrape(self.registry, families))

    async def _node_view(self) -> NodeView:
        services = self.ctx.services
        hv, coordinator = services.hypervisor, services.coordinator
        records = hv.records if hv is not None and hv.synced.is_set() else None
        return NodeView(
            node=self.ctx.node,
            daemon_state=services.presence.daemon_state if services.presence else "init",
            primary=coordinator is not None and coordinator.state == "primary",
            load1=os.getloadavg()[0],
            records=records,
            reading=await self._host_reading(),
        )

    async def _host_reading(self) -> HostReading | None:
        if self._host_read is None or self._host_read.done():
            directory = Path(self.ctx.config.console_log.directory)
            self._host_read = asyncio.ensure_future(asyncio.to_thread(_read_host, self.ctx.host, directory))
            # Its error is read by whoever awaits it; one that finishes after they gave up is dropped here.
            self._host_read.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self._host_read), READ_TIMEOUT)
        except (TimeoutError, Unavailable, LibvirtError, libvirt.libvirtError, OSError):
            return None

    async def _cluster_view(self) -> ClusterView:
        reading = self._cluster_read
        if time.monotonic() >= self._next_cluster_read and (reading is None or reading.done()):
            reading = self._cluster_read = asyncio.create_task(self._read_cluster(), name="metrics-cluster")
        if reading is not None and not reading.done():
            await asyncio.wait({reading}, timeout=READ_TIMEOUT)  # not done by then: the previous figures
        if self._cluster_failing or self._cluster is None:
            return ClusterView(ok=False)
        started, view = self._cluster
        return replace(view, age=round(time.monotonic() - started, 3))

    async def _read_cluster(self) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(CLUSTER_READ_TIMEOUT):
                view = await _read_cluster_from(self.ctx.zk)
        except Exception as exc:  # ZooKeeper away (or a record it cannot decode): figures_ok says 0
            if not self._cluster_failing:  # once per outage, not once per scrape
                self.ctx.log.warning("metrics_cluster_figures_failed", error=str(exc) or type(exc).__name__)
            self._cluster_failing, self._next_cluster_read = True, time.monotonic() + self._cluster_retry
            self._cluster_retry = min(2 * self._cluster_retry, CLUSTER_RETRY_MAX)
            return
        took = time.monotonic() - started
        self._cluster, self._cluster_failing, self._cluster_retry = (started, view), False, CLUSTER_RETRY
        self._next_cluster_read = started + max(CLUSTER_REUSE_MIN, CLUSTER_REUSE_PER_VM * len(view.vm_states),
                                                CLUSTER_REUSE_SLOW * took)

    def close(self) -> None:
        if self._cluster_read is not None:
            self._cluster_read.cancel()


class _VmState(msgspec.Struct):
    """The one field of a VM record the figures need (decoding skips the rest)."""

    state: str = "stop"


async def _read_cluster_from(zk) -> ClusterView:
    from pvc import fence_store, store
    from pvc.schema import Paths

    names = await store.node_names(zk)
    nodes, fences, queue = await asyncio.gather(
        store.list_nodes(zk, names), fence_store.read_many(zk, names), zk.children(Paths.flush_lock))
    uuids, vm_states = await zk.children(Paths.domains), []
    for i in range(0, len(uuids), CLUSTER_READ_CHUNK):
        records = await zk.get_many(Paths.domain(u) for u in uuids[i:i + CLUSTER_READ_CHUNK])
        vm_states += [msgspec.json.decode(r, type=_VmState).state for r in records if r]
    return ClusterView(vm_states=vm_states, node_daemon_states=[n.daemon_state for n in nodes],
                       node_domain_states=[n.domain_state for n in nodes], fences=list(fences.values()),
                       flush_queue=len(queue))


def _read_host(host, console_directory: Path) -> HostReading:
    """Blocking: libvirt calls and file sizes (the console tailer reads ``<directory>/<vm>.log``)."""
    stats = host.stats()
    domains = host.domain_stats()
    sizes = {}
    for d in domains:
        try:
            sizes[d.uuid] = (console_directory / f"{d.name}.log").stat().st_size
        except OSError:
            pass  # no console log for this VM
    return HostReading(stats, domains, sizes)


class _Scrape:
    """The registry's metrics and this scrape's families, for ``generate_latest``."""

    def __init__(self, registry: CollectorRegistry, families: list[Metric]) -> None:
        self.registry, self.families = registry, families

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()
        yield from self.families


class MetricsServer:
    """``GET /metrics`` on ``metrics.listen``, on the daemon's loop (aiohttp)."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.metrics: DaemonMetrics | None = None  # only when serving
        self._runner = None

    async def start(self) -> None:
        listen = self.ctx.config.metrics.listen
        if not listen:
            return
        from aiohttp import web

        from pvc.api.address import parse_listen

        host, port = parse_listen(listen)
        self.metrics = DaemonMetrics(self.ctx)
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:  # the daemon's work matters more than its metrics: it runs on without
            await runner.cleanup()
            self.ctx.log.error("metrics_unavailable", listen=listen, error=exc.strerror or str(exc))
            return
        self._runner = runner
        self.metrics.attach()
        self.ctx.log.info("metrics_listening", listen=listen)

    async def stop(self) -> None:
        if self._runner is not None:
            self.metrics.detach()
            self.metrics.close()
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, _request):
        from aiohttp import web

        return web.Response(body=await self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
