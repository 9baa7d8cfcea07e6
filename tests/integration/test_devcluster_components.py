"""The dev-cluster process managers against the real ZooKeeper and libvirtd."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import aiozk
import libvirt
import pytest

from pvc.devcluster.libvirtd import Libvirtd
from pvc.devcluster.zookeeper_server import ZookeeperServer, four_letter, is_running

libvirt.registerErrorHandler(lambda *_: None, None)

DOMAIN = "<domain type='test'><name>{}</name><memory>131072</memory><os><type>hvm</type></os></domain>"


def _zk(address: str, coro_fn):
    async def run():
        zk = aiozk.ZKClient(address, session_timeout=5)
        await asyncio.wait_for(zk.start(), 10)
        try:
            return await asyncio.wait_for(coro_fn(zk), 10)
        finally:
            await zk.close()

    return asyncio.run(run())


def _virsh_names(uri: str) -> list[str]:
    out = subprocess.run(["virsh", "-q", "-c", uri, "list", "--all", "--name"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.fixture
def zk(tmp_path):
    server = ZookeeperServer(tmp_path / "zk")
    server.start()
    yield server
    server.stop()


def test_zookeeper_restart_keeps_data_and_stop_leaves_nothing(zk):
    assert four_letter(zk.address, "ruok") == "imok"
    _zk(zk.address, lambda c: c.create("/pvc-probe", data=b"kept"))
    old_pid, port = zk.pid, zk.port

    zk.restart()

    assert zk.port == port and zk.pid != old_pid and not is_running(old_pid)
    assert _zk(zk.address, lambda c: c.get_data("/pvc-probe")) == b"kept"
    pid = zk.pid
    zk.stop()
    assert not is_running(pid) and zk.pid is None
    assert four_letter(zk.address, "ruok") == ""


def test_zookeeper_failure_is_reported_with_log(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = ZookeeperServer(tmp_path / "zk", port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="ZooKeeper on 127.0.0.1") as err:
            server.start(timeout=15)
    assert "Address already in use" in str(err.value) or "exited" in str(err.value)
    assert server.pid is None


@pytest.fixture
def two_nodes(tmp_path):
    nodes = [Libvirtd(tmp_path / name) for name in ("a", "b")]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_libvirtd_instances_are_isolated(two_nodes):
    a, b = two_nodes
    # The pid is libvirtd's own (unshare execs it), not a wrapper's.
    for node in (a, b):
        assert open(f"/proc/{node.pid}/comm").read().strip() == "libvirtd"
    assert a.pid != b.pid and a.tcp_port != b.tcp_port
    # The test driver's built-in domain is gone, and stays gone across client connections.
    assert _virsh_names(a.uri) == [] and _virsh_names(b.uri) == []

    conn = libvirt.open(a.uri)
    try:
        conn.defineXML(DOMAIN.format("defined1"))
    finally:
        conn.close()
    # A transient domain created by a client that then exits must survive that client.
    subprocess.run([sys.executable, "-c",
                    f"import libvirt; libvirt.open({a.uri!r}).createXML({DOMAIN.format('transient1')!r}, 0)"],
                   check=True, timeout=30)

    assert sorted(_virsh_names(a.uri)) == ["defined1", "transient1"]
    assert sorted(_virsh_names(a.tcp_uri)) == ["defined1", "transient1"]
    assert _virsh_names(b.uri) == []
    assert _virsh_names(b.tcp_uri) == []


def test_libvirtd_stop_leaves_no_process(tmp_path):
    node = Libvirtd(tmp_path / "n")
    node.start()
    pid = node.pid
    keeper_pid = int(node.keeper_pid_path.read_text())
    assert is_running(pid) and is_running(keeper_pid)
    node.stop()
    assert not is_running(pid) and not is_running(keeper_pid) and node.pid is None
    assert subprocess.run(["virsh", "-c", node.uri, "list"], capture_output=True).returncode != 0
