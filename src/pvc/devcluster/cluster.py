"""A local pvc cluster on one machine: a real ZooKeeper ensemble (one server per coordinator, or a
single server), one libvirtd and one pvcd per node.

Shared by the README demo, the tests and the benchmarks. Everything it starts is recorded in
``<workdir>/cluster.json`` (by pid), so ``down`` and the fault verbs (kill, freeze, ...) can act on
it from another process. The fault verbs are the one way tests, benchmarks and operators inject
faults, so all of them see the same behaviour.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pvc.devcluster.libvirtd import Libvirtd
from pvc.devcluster.proc import free_port, free_port_range, free_udp_port, is_running, is_stopped, log_tail, terminate
from pvc.devcluster.zookeeper_server import ZookeeperServer, ensemble_peers
from pvc.zk import split_credential

# libvirtd (test driver) instances `up` starts at once, and pvcds starting (not yet running) at once.
LIBVIRTD_STARTS_AT_ONCE = 8
PVCD_STARTS_AT_ONCE = 8


@dataclass
class NodeSpec:
    name: str
    config: str
    libvirt_uri: str
    migration_uri: str
    console_log_directory: str
    pvcd_log: str
    coordinator: bool
    libvirtd_port: int
    migration_ports: tuple[int, int]
    pvcd_pid: int | None = None
    libvirtd_pid: int | None = None
    # With fencing: the node's simulated BMC (ipmi_sim) on 127.0.0.1, UDP (pvc.devcluster.bmc).
    ipmi_port: int = 0
    bmc_serial_port: int = 0
    # Its pvcd's Prometheus metrics on 127.0.0.1 (0: a state file from before metrics).
    metrics_port: int = 0
    # A coordinator's pvcd serves the REST API on 127.0.0.1 (0: not a coordinator, or an older state file).
    api_port: int = 0


@dataclass
class ZookeeperSpec:
    """One ZooKeeper server; server N runs "on" the N-th coordinator (all on 127.0.0.1)."""

    index: int
    client_port: int
    quorum_port: int
    election_port: int
    node: str
    pid: int | None = None


@dataclass
class ClusterState:
    workdir: str
    hypervisor: str
    zookeeper: str  # the connection string: USER:PASSWORD@host:port,host:port,... (credential made by `up`)
    zookeeper_servers: list[ZookeeperSpec] = field(default_factory=list)
    nodes: list[NodeSpec] = field(default_factory=list)
    # Each node's networking in a network namespace of its own (pvc.devcluster.netns).
    networking: bool = False
    # Each node has a simulated BMC and publishes it for the primary's fencing duty.
    fencing: bool = False
    # "ceph": a real Ceph cluster in <workdir>/ceph (pvc.devcluster.ceph) backs the nodes' storage.
    storage: str = "none"


class DevCluster:
    def __init__(self, workdir: str | Path) -> None:
        self.workdir = Path(workdir).absolute()
        self.state_file = self.workdir / "cluster.json"
        self.state: ClusterState | None = None
        if self.state_file.exists():
            raw = json.loads(self.state_file.read_text())
            raw["nodes"] = [NodeSpec(**{**n, "migration_ports": tuple(n["migration_ports"])}) for n in raw["nodes"]]
            if "zookeeper_port" in raw:  # a state file from before ensembles: one server in <workdir>/zookeeper
                raw["zookeeper_servers"] = [{"index": 0, "client_port": raw.pop("zookeeper_port"), "quorum_port": 0,
                                             "election_port": 0, "node": "", "pid": raw.pop("zookeeper_pid", None)}]
            raw["zookeeper_servers"] = [ZookeeperSpec(**z) for z in raw.get("zookeeper_servers", [])]
            self.state = ClusterState(**raw)

    # -- pieces ------------------------------------------------------------------------------------

    def _save(self) -> None:
        # Atomically: a BMC's power holder reads this file while we write it.
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        os.replace(tmp, self.state_file)

    def zookeeper(self, index: int) -> ZookeeperServer:
        """Server ``index`` (1-based, as in ``server.N``) of the cluster's ensemble."""
        spec = self.zookeeper_spec(index)
        peers = [(z.index, z.client_port, z.quorum_port, z.election_port) for z in self.state.zookeeper_servers]
        datadir = self.workdir / "zookeeper" / (str(index) if index else "")
        return ZookeeperServer(datadir, spec.client_port, myid=index, peers=peers)

    def zookeeper_spec(self, index: int) -> ZookeeperSpec:
        for z in self.state.zookeeper_servers:
            if z.index == index:
                return z
        known = ", ".join(str(z.index) for z in self.state.zookeeper_servers)
        raise ValueError(f"no ZooKeeper server {index} in {self.workdir} (servers: {known})")

    @property
    def zookeeper_indexes(self) -> list[int]:
        return [z.index for z in self.state.zookeeper_servers]

    def libvirtd(self, node: NodeSpec) -> Libvirtd:
        return Libvirtd(self.workdir / node.name / "libvirt", self.state.hypervisor,
                        tcp_port=node.libvirtd_port, migration_ports=node.migration_ports)

    def console_directory(self, node: str) -> Path:
        """Where a node's libvirt writes serial logs and its pvcd tails them.

        A guest's ``<log file=…>`` is one absolute path that travels with it on live migration, and
        the target's pvcd tails ``<its console dir>/<vm>.log``. Real hosts each have their own
        /var/log/libvirt with the same path; nodes sharing one machine get that by sharing one
        directory, so a migrated guest's log is one file that both sides append to. The test
        driver writes no logs, so its nodes keep a directory each.
        """
        if self.state and self.state.hypervisor == "qemu":
            return self.workdir / "console"
        return self.workdir / node / "console"

    def ceph(self):
        from pvc.devcluster.ceph import CephCluster

        return CephCluster(self.workdir / "ceph")

    def bmc(self, node: NodeSpec):
        from pvc.devcluster.bmc import Bmc

        return Bmc(self.workdir / node.name / "bmc", self.workdir, node.name, node.ipmi_port, node.bmc_serial_port)

    def fencing_config(self, node: NodeSpec) -> dict:
        # Short enough for tests to see a fence within seconds; no ipmi section without BMCs.
        config: dict = {"dead_after": 3, "retry_interval": 3, "ipmi_timeout": 5}
        if self.state.fencing:
            from pvc.devcluster.bmc import PASSWORD, USERNAME

            config["ipmi"] = {"hostname": "127.0.0.1", "port": node.ipmi_port, "username": USERNAME,
                              "password": PASSWORD, "cipher_suite": 3}
        return config

    def netns(self):
        from pvc.devcluster.netns import NetnsLab, tag_for

        return NetnsLab(tag_for(self.workdir))

    def networking_config(self, node: NodeSpec) -> dict:
        if not self.state.networking:
            return {"enabled": False}
        base = Path(node.config).parent
        return self.netns().networking_config(node.name, str(base / "run"), str(base / "frr" / "frr.conf"))

    def node(self, name: str) -> NodeSpec:
        for n in self.state.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in {self.workdir}")

    def _write_config(self, node: NodeSpec, coordinators: list[str]) -> None:
        libvirtd = self.libvirtd(node)
        import yaml

        config = {
            "node": {"name": node.name, "coordinators": coordinators},
            "zookeeper": dict(zip(("auth", "hosts"), split_credential(self.state.zookeeper)),
                              session_timeout=3, request_timeout=5),
            "libvirt": {"uri": libvirtd.uri, "migration_uri": libvirtd.tcp_uri,
                        "migration_address": "tcp://127.0.0.1"},
            "console_log": {"directory": node.console_log_directory},
            "vm": {"shutdown_timeout": 30},
            "keepalive_interval": 2,
            "networking": self.networking_config(node),
            "fencing": self.fencing_config(node),
            **({"storage": {"ceph": self.ceph().storage_config()}} if self.state.storage == "ceph" else {}),
            **({"metrics": {"listen": f"127.0.0.1:{node.metrics_port}"}} if node.metrics_port else {}),
            **({"api": {"listen": f"127.0.0.1:{node.api_port}"}} if node.api_port else {}),
        }
        Path(node.config).write_text(yaml.safe_dump(config, sort_keys=False))
        Path(node.config).chmod(0o600)  # it holds the ZooKeeper credential

    # -- lifecycle ---------------------------------------------------------------------------------

    def up(self, nodes: int = 3, hypervisor: str = "test", coordinators: int | None = None,
           timeout: float = 60, networking: bool = False, fencing: bool = False,
           zookeeper_servers: int | None = None, storage: str = "none") -> ClusterState:
        if self.state and self.is_up():
            raise RuntimeError(f"a cluster is already running in {self.workdir}; run `down` first")
        if self.state:
            self.down()  # whatever an earlier run left (it may have died half-way)
            self._remove_old_state()
        if hypervisor == "qemu":
            from pvc.devcluster.guest import qemu_missing

            if reason := qemu_missing():
                raise RuntimeError(f"--hypervisor qemu: {reason}")
        names = [f"hv{i}" for i in range(1, nodes + 1)]
        coordinator_names = names[: min(3, nodes) if coordinators is None else coordinators]
        # As in production: the coordinators run the ensemble, one server each.
        servers = zookeeper_servers or (3 if len(coordinator_names) >= 3 else 1)
        if servers not in (1, 3):
            raise ValueError(f"--zookeeper-servers must be 1 or 3, got {servers}")
        if servers > max(len(coordinator_names), 1):
            raise ValueError(f"--zookeeper-servers {servers} needs at least {servers} coordinators "
                             f"(one server each); this cluster has {len(coordinator_names)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        zookeepers = [ZookeeperSpec(index=i, client_port=client, quorum_port=quorum, election_port=election,
                                    node=(coordinator_names or names)[i - 1])
                      for i, client, quorum, election in ensemble_peers(servers)]
        import secrets

        # A fresh credential per cluster (ZooKeeper digest ACLs, docs/operations.md): `pvc init` below
        # protects every node with it; the pvcd configs and PVC_ZOOKEEPER carry it.
        credential = f"pvc:{secrets.token_urlsafe(18)}"
        self.state = ClusterState(workdir=str(self.workdir), hypervisor=hypervisor,
                                  zookeeper=credential + "@" + ",".join(f"127.0.0.1:{z.client_port}" for z in zookeepers),
                                  zookeeper_servers=zookeepers, networking=networking, fencing=fencing)
        if storage not in ("none", "ceph"):
            raise ValueError(f"--storage must be none or ceph, got {storage!r}")
        self.state.storage = storage
        if storage == "ceph":
            from pvc.devcluster.ceph import ceph_missing

            if reason := ceph_missing():
                raise RuntimeError(f"--storage ceph: {reason}")
        for name in names:
            base = self.workdir / name
            base.mkdir(parents=True, exist_ok=True)
            lo = free_port_range(16)
            spec = NodeSpec(
                name=name, config=str(base / "pvcd.yaml"), libvirt_uri="", migration_uri="",
                console_log_directory=str(self.console_directory(name)), pvcd_log=str(base / "pvcd.log"),
                coordinator=name in coordinator_names, libvirtd_port=free_port(), migration_ports=(lo, lo + 15),
                ipmi_port=free_udp_port() if fencing else 0, bmc_serial_port=free_port() if fencing else 0,
                metrics_port=free_port(),
                api_port=free_port() if name in coordinator_names else 0,
            )
            Path(spec.console_log_directory).mkdir(parents=True, exist_ok=True)
            self.state.nodes.append(spec)
        self._save()
        try:
            started = []
            for z in zookeepers:  # all first: a member serves only once a quorum runs
                started.append(self.zookeeper(z.index))
                started[-1].start(wait=False)
                z.pid = started[-1].pid
                self._save()
            for server in started:
                server.wait_ready()
            subprocess.run([sys.executable, "-m", "pvc.cli.app", "init"], check=True, capture_output=True,
                           env={**os.environ, "PVC_ZOOKEEPER": self.state.zookeeper})
            self._make_api_token()
            if storage == "ceph":  # before the libvirtds: each gets the client's key as a secret
                self.ceph().start()
            if networking:
                self.netns().create(names)
            def start_libvirtd(node: NodeSpec) -> None:
                libvirtd = self.libvirtd(node)
                libvirtd.start()
                node.libvirtd_pid = libvirtd.pid
                node.libvirt_uri = libvirtd.uri
                node.migration_uri = libvirtd.tcp_uri
                self._write_config(node, coordinator_names)
                if storage == "ceph":  # the same secret (UUID and key) on every node's libvirt
                    self.ceph().define_libvirt_secret(node.libvirt_uri)

            # Test-driver daemons start a few at a time (a start mostly waits for the daemon to
            # answer: 64 nodes take 4 s instead of 15); QEMU ones one by one, as the first one probes
            # QEMU and seeds the next ones with the result.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(LIBVIRTD_STARTS_AT_ONCE if hypervisor == "test" else 1) as pool:
                for _ in pool.map(start_libvirtd, self.state.nodes):
                    pass
            self._save()
            if fencing:  # after the libvirtds: a BMC's power-on finds its node's libvirtd up already
                for node in self.state.nodes:
                    self.bmc(node).start()
            # A few daemons at a time: 64 starting at once on 2 cores starve ZooKeeper until their
            # requests time out. ``timeout`` is how long no further node may come up.
            self.wait_running(names, timeout, progress=True, start_at_once=PVCD_STARTS_AT_ONCE)
        except BaseException:
            self.down()
            raise
        return self.state

    def _make_api_token(self) -> None:
        """A read-write REST API token for the cluster's user, tests and benchmarks (docs/api.md):
        ``<workdir>/api_token`` (mode 0600), and ``api_token`` in ``info``."""
        env = {k: v for k, v in os.environ.items() if k != "PVC_CONNECTION"}
        out = subprocess.run([sys.executable, "-m", "pvc.cli.app", "token", "add", "devcluster", "-o", "json"],
                             check=True, capture_output=True, env={**env, "PVC_ZOOKEEPER": self.state.zookeeper})
        fd = os.open(self.workdir / "api_token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.loads(out.stdout)["token"] + "\n")

    def api_token(self) -> str | None:
        try:
            return (self.workdir / "api_token").read_text().strip()
        except FileNotFoundError:
            return None

    def _remove_old_state(self) -> None:
        """`up` means a new cluster: drop what an earlier one left here (only what we created)."""
        import shutil

        for name in ["zookeeper", "console", *(n.name for n in self.state.nodes)]:
            shutil.rmtree(self.workdir / name, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        self.state = None

    # -- faults and repairs (python -m pvc.devcluster kill|start|stop|freeze|thaw|zookeeper|libvirtd) ----

    def running_pvcd_pid(self, name: str) -> int:
        pid = self.node(name).pvcd_pid
        if not is_running(pid):
            raise RuntimeError(f"pvcd on {name} is not running")
        return pid

    def start_node(self, name: str, wait: bool = True, timeout: float = 30) -> None:
        """Start a node's pvcd (again); with ``wait``, until its daemon_state is run."""
        node = self.node(name)
        if is_running(node.pvcd_pid):
            raise RuntimeError(f"pvcd on {name} is already running (pid {node.pvcd_pid})")
        with open(node.pvcd_log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pvc.daemon.start", "--config", node.config],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        node.pvcd_pid = proc.pid
        self._save()
        if wait:
            self.wait_running([name], timeout)

    def restart_node_with(self, name: str, section: str, **values) -> None:
        """Set ``values`` in the ``section`` of a node's pvcd config and restart that pvcd (its VMs keep
        running), e.g. ``restart_node_with("hv1", "vm", flush_concurrency=4)``."""
        import yaml

        path = Path(self.node(name).config)
        config = yaml.safe_load(path.read_text())
        config.setdefault(section, {}).update(values)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.stop_node(name)
        self.start_node(name)

    def stop_node(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> bool:
        """Stop one node's pvcd: SIGTERM (a clean stop, waited for; SIGKILL after ``timeout``) or
        SIGKILL (a crash). Its libvirtd and VMs stay. False when SIGTERM was not enough."""
        node = self.node(name)
        pid, clean = node.pvcd_pid, True
        if is_running(pid):
            os.kill(pid, sig)
            if sig != signal.SIGKILL:
                os.kill(pid, signal.SIGCONT)  # a frozen daemon must run to act on SIGTERM
            clean = terminate(pid, timeout)
        node.pvcd_pid = None
        self._save()
        return clean

    def kill_node(self, name: str) -> None:
        """kill -9 a node's pvcd (a crash); its libvirtd and VMs stay."""
        self.running_pvcd_pid(name)
        self.stop_node(name, signal.SIGKILL)

    def freeze_node(self, name: str) -> None:
        """SIGSTOP a node's pvcd: alive but silent (a stalled host), until ``thaw_node``."""
        os.kill(self.running_pvcd_pid(name), signal.SIGSTOP)

    def thaw_node(self, name: str) -> None:
        os.kill(self.running_pvcd_pid(name), signal.SIGCONT)

    def kill_zookeeper(self, index: int) -> None:
        """kill -9 one ZooKeeper server (its clients see their connection drop)."""
        spec = self.zookeeper_spec(index)
        if not is_running(spec.pid):
            raise RuntimeError(f"ZooKeeper server {index} is not running")
        self.zookeeper(index).kill()
        spec.pid = None
        self._save()

    def stop_zookeeper(self, index: int | None = None) -> None:
        """SIGTERM one server, or (``None``) the whole ensemble."""
        for i in [index] if index is not None else self.zookeeper_indexes:
            self.zookeeper(i).stop()
            self.zookeeper_spec(i).pid = None
            self._save()

    def start_zookeeper(self, index: int | None = None, timeout: float = 30) -> None:
        """Start one server (or, with ``None``, every stopped one). Waits until it serves when a
        quorum of the ensemble runs with it, else until it listens (it serves once a quorum is back)."""
        indexes = [index] if index is not None else self.zookeeper_indexes
        for i in indexes:
            spec = self.zookeeper_spec(i)
            if index is not None and is_running(spec.pid):
                raise RuntimeError(f"ZooKeeper server {i} is already running (pid {spec.pid})")
            server = self.zookeeper(i)
            server.start(timeout, wait=False)
            spec.pid = server.pid
            self._save()
        running = sum(is_running(z.pid) for z in self.state.zookeeper_servers)
        if running > len(self.state.zookeeper_servers) // 2:
            for i in indexes:
                self.zookeeper(i).wait_ready(timeout)

    def restart_zookeeper(self, timeout: float = 30) -> None:
        """Stop the whole ensemble and start it again (same ports, same data)."""
        self.stop_zookeeper()
        self.start_zookeeper(timeout=timeout)

    def zookeeper_server_of(self, name: str) -> int | None:
        """The index of the ZooKeeper server a node's pvcd is connected to (None: none)."""
        from pvc.devcluster.proc import tcp_peer_ports

        ports = tcp_peer_ports(self.running_pvcd_pid(name))
        return next((z.index for z in self.state.zookeeper_servers if z.client_port in ports), None)

    def kill_libvirtd(self, name: str) -> None:
        """kill -9 a node's libvirtd (its guests outlive it, as on a real host)."""
        node = self.node(name)
        libvirtd = self.libvirtd(node)
        if not libvirtd.pid:
            raise RuntimeError(f"libvirtd on {name} is not running")
        libvirtd.kill()
        node.libvirtd_pid = None
        self._save()

    def start_libvirtd(self, name: str) -> None:
        node = self.node(name)
        libvirtd = self.libvirtd(node)
        if libvirtd.pid:
            raise RuntimeError(f"libvirtd on {name} is already running (pid {libvirtd.pid})")
        libvirtd.start()
        node.libvirtd_pid = libvirtd.pid
        self._save()

    def wait_running(self, names: list[str], timeout: float = 30, progress: bool = False,
                     start_at_once: int = 0) -> None:
        """Until every named node's daemon_state is run. With ``progress``, the timeout counts from
        the last node that came up. With ``start_at_once``, the named pvcds are started here, that
        many at most starting (not yet run) at any time."""
        unstarted = list(names) if start_at_once else []
        from pvc import store
        from pvc.zk import ZK

        async def wait() -> None:
            deadline = time.monotonic() + timeout
            states: dict[str, str] = {}
            up = 0
            zk = None
            try:
                while time.monotonic() < deadline:
                    try:
                        if zk is None:
                            zk = ZK(self.state.zookeeper, request_timeout=2)
                            await zk.start(timeout=2)
                        states = {n.name: n.daemon_state for n in await store.list_nodes(zk, names)}
                    except Exception:  # ZooKeeper still coming up
                        if zk is not None:
                            await zk.close()
                        zk, states = None, {}
                    running = sum(states.get(n) == "run" for n in names)
                    if running == len(names):
                        return
                    starting = len(names) - len(unstarted) - running
                    while unstarted and starting < start_at_once:
                        self.start_node(unstarted.pop(0), wait=False)
                        starting += 1
                    if progress and running > up:
                        up, deadline = running, time.monotonic() + timeout
                    for n in names:
                        pid = self.node(n).pvcd_pid
                        if pid and not is_running(pid):
                            raise RuntimeError(f"pvcd on {n} exited; tail of its log:\n"
                                               f"{log_tail(Path(self.node(n).pvcd_log))}")
                    await asyncio.sleep(0.1 if len(names) < 8 else 0.5)  # one listing reads every node
            finally:
                if zk is not None:
                    await zk.close()
            waiting = {n: states.get(n, "unknown") for n in names if states.get(n) != "run"}
            raise RuntimeError(f"nodes not running after {timeout:g} s{' without progress' if progress else ''}: "
                               f"{waiting}")

        asyncio.run(wait())

    def is_up(self) -> bool:
        return bool(self.state) and any(is_running(z.pid) for z in self.state.zookeeper_servers)

    def down(self) -> None:
        if not self.state:
            return
        for node in self.state.nodes:
            terminate(node.pvcd_pid)
            node.pvcd_pid = None
        for node in self.state.nodes:
            self.libvirtd(node).stop()
            node.libvirtd_pid = None
        if self.state.fencing:  # last: a BMC's exit "powers off" its node (what is left of it)
            for node in self.state.nodes:
                self.bmc(node).stop()
        for z in self.state.zookeeper_servers:
            self.zookeeper(z.index).stop()
            z.pid = None
        if self.state.networking:
            self.netns().destroy()
        if self.state.storage == "ceph":  # SIGKILL (throwaway data) and remove <workdir>/ceph
            self.ceph().stop()
        self._save()

    def info(self) -> list[dict]:
        """One entry per node; a coordinator that runs a ZooKeeper server carries it (index,
        client_port, pid) under ``zookeeper_server``, every node the connection string."""
        servers = {z.node: z for z in self.state.zookeeper_servers}
        return [
            {
                "name": n.name,
                "config": n.config,
                "libvirt_uri": n.libvirt_uri,
                "migration_uri": n.migration_uri,
                "console_log_directory": n.console_log_directory,
                "pvcd_pid": n.pvcd_pid if is_running(n.pvcd_pid) else None,
                "pvcd_frozen": is_stopped(n.pvcd_pid),
                "libvirtd_pid": self.libvirtd(n).pid,
                "coordinator": n.coordinator,
                "pvcd_log": n.pvcd_log,
                "metrics_url": f"http://127.0.0.1:{n.metrics_port}/metrics" if n.metrics_port else None,
                "api_url": f"http://127.0.0.1:{n.api_port}" if n.api_port else None,
                "api_token": self.api_token(),
                "zookeeper": self.state.zookeeper,
                "ceph_conf": str(self.ceph().conf) if self.state.storage == "ceph" else None,
                "ceph_keyring": str(self.ceph().keyring) if self.state.storage == "ceph" else None,
                "zookeeper_server": {"index": z.index, "client_port": z.client_port,
                                     "pid": z.pid if is_running(z.pid) else None}
                if (z := servers.get(n.name)) else None,
            }
            for n in self.state.nodes
        ]
