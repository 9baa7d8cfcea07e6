"""Shared helpers: a real local cluster (ZooKeeper + libvirtd + pvcd per node), the CLI as users run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid as uuidlib
from pathlib import Path

import pytest

from pvc.devcluster.cluster import DevCluster


def domain_xml(name: str, uuid: str | None = None, memory_mib: int = 64, vcpus: int = 1,
               log_dir: str | None = None) -> str:
    uuid = uuid or str(uuidlib.uuid4())
    serial = f"<serial type='pty'><log file='{log_dir}/{name}.log' append='on'/></serial>" if log_dir else ""
    return (
        f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{serial}</devices></domain>"
    )


class Cluster:
    """A running DevCluster plus the ways a user or operator touches it."""

    def __init__(self, dev: DevCluster, tmp: Path) -> None:
        self.dev = dev
        self.tmp = tmp
        self.zookeeper = dev.state.zookeeper
        self.env = {**os.environ, "PVC_ZOOKEEPER": self.zookeeper}

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.dev.state.nodes]

    def pvc(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([shutil.which("pvc") or "pvc", *args], env=self.env, capture_output=True,
                              text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"pvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def pvc_json(self, *args: str):
        return json.loads(self.pvc(*args, "-o", "json").stdout)

    def vm(self, name: str) -> dict:
        return self.pvc_json("vm", "info", name)

    def define(self, name: str, node: str | None = None, memory_mib: int = 64, start: bool = False,
               extra: tuple[str, ...] = (), **kw) -> dict:
        path = self.tmp / f"{name}.xml"
        log_dir = self.dev.node(node).console_log_directory if node else None
        path.write_text(domain_xml(name, memory_mib=memory_mib, log_dir=log_dir, **kw))
        args = ["vm", "define", str(path), *extra] + (["--target", node] if node else [])
        self.pvc(*args)
        if start:
            self.pvc("vm", "start", name, "--wait")
        return self.vm(name)

    def define_many(self, prefix: str, count: int, node: str, memory_mib: int = 16) -> list[str]:
        """Define and start ``count`` small VMs on ``node`` quickly (a few CLI calls each is slow)."""
        import asyncio

        from pvc import store
        from pvc.domain_xml import parse_domain_xml
        from pvc.zk import ZK

        names = [f"{prefix}{i:03d}" for i in range(count)]

        async def work():
            zk = ZK(self.zookeeper)
            await zk.start()
            try:
                for name in names:
                    xml = domain_xml(name, memory_mib=memory_mib)
                    dom = await store.define_domain(zk, parse_domain_xml(xml), xml, target=node, selector="",
                                                    node_limit=[], autostart=False, migration_method="")
                    await store.update_domain(zk, dom.uuid, lambda d: __import__("msgspec").structs.replace(d, state="start"))
            finally:
                await zk.close()

        asyncio.run(work())
        wait_until(lambda: set(names) <= self.running_on(node), timeout=60)
        return names

    def virsh(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["virsh", "-c", self.dev.node(node).libvirt_uri, *args], capture_output=True,
                              text=True, timeout=30)
        if check and proc.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} on {node}: {proc.stderr.strip()}")
        return proc

    def running_on(self, node: str) -> set[str]:
        out = self.virsh(node, "list", "--name").stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def where_running(self, name: str) -> list[str]:
        """libvirt's truth: every node whose libvirt runs the VM."""
        return [n for n in self.nodes if name in self.running_on(n)]


def running_cluster(tmp_path_factory, nodes: int = 3, **kw):
    workdir = tmp_path_factory.mktemp("cluster")
    dev = DevCluster(workdir)
    dev.up(nodes=nodes, **kw)
    try:
        yield Cluster(dev, workdir)
    finally:
        dev.down()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    yield from running_cluster(tmp_path_factory, 3)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll a condition in a test (the product itself waits on watches, never polls)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


