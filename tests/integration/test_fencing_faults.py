"""Fencing's hard cases on a real cluster (3 nodes, real pvcd, each node with an ipmi_sim BMC whose
power-off kills the node's pvcd and stops its libvirtd): a BMC that does not answer, a power-off
that does not take effect, a node without IPMI fenced by an operator, maintenance, a slow node,
a daemon fenced while cut off from ZooKeeper, and the primary dying together with its victim.

Invariant checked throughout: a VM never runs on two nodes (except where a test makes an operator
lie on purpose), and nothing is recovered before a confirmed power-off."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pvc.devcluster.bmc import _EMU, _LAN_CONF, PASSWORD, USERNAME
from pvc.devcluster.proc import free_port, free_udp_port, is_running
from pvc.fencing import retry_delay
from tests.conftest import running_cluster, wait_until
from tests.integration.fencing_support import hosts_of, ipmi, others, truth

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 3, fencing=True)


# -- looking -------------------------------------------------------------------------------------------


def node(cluster, name: str) -> dict:
    return cluster.pvc_json("node", "info", name)


def fence(cluster, name: str) -> dict:
    return node(cluster, name)["fence"] or {}


def primary(cluster) -> str:
    return next(n["name"] for n in cluster.pvc_json("node", "list") if n["coordinator_state"] == "primary")


def fencing_config(cluster) -> dict:
    return yaml.safe_load(Path(cluster.dev.node(cluster.nodes[0]).config).read_text())


class NeverTwice:
    """Call ``check()`` while waiting: it notes any moment a VM runs on two nodes."""

    def __init__(self, cluster, vms: list[str]) -> None:
        self.cluster, self.vms, self.seen = cluster, vms, []

    def check(self) -> None:
        where = truth(self.cluster)
        for vm in self.vms:
            hosts = [n for n, names in where.items() if vm in names]
            if len(hosts) > 1:
                self.seen.append((vm, hosts))


def running_elsewhere(cluster, vms: list[str], victim: str, guard: NeverTwice | None = None) -> bool:
    if guard:
        guard.check()
    for vm in vms:
        info = cluster.vm(vm)
        if info["node"] == victim or info["libvirt_state"] != "running" or hosts_of(cluster, vm) != [info["node"]]:
            return False
    return True


# -- repairing (every test leaves the cluster as it found it) ------------------------------------------


def revive(cluster, name: str) -> None:
    """Power the node on if it was powered off and start its pvcd (not yet ready: see cleanup)."""
    spec = cluster.dev.node(name)
    bmc_pid = cluster.dev.bmc(spec).pid
    if bmc_pid:
        os.kill(bmc_pid, signal.SIGCONT)
    if not cluster.dev.libvirtd(spec).pid:
        assert "Up/On" in ipmi(cluster, name, "chassis", "power", "on")
        wait_until(lambda: cluster.dev.libvirtd(spec).pid, timeout=30)
    if spec.pvcd_pid and is_running(spec.pvcd_pid):
        os.kill(spec.pvcd_pid, signal.SIGCONT)
    else:
        cluster.dev.start_node(name)


def cleanup(cluster, vms: list[str], nodes: list[str]) -> None:
    for name in nodes:
        revive(cluster, name)
    wait_until(lambda: all(node(cluster, n)["daemon_state"] == "run" for n in cluster.nodes), timeout=30)
    for vm in vms:
        if cluster.pvc("vm", "info", vm, check=False).returncode != 0:
            continue
        if cluster.vm(vm)["state"] not in ("stop", "fail", "disable"):
            cluster.pvc("vm", "stop", vm, "--wait")
        cluster.pvc("vm", "undefine", vm, "--yes")
    for name in cluster.nodes:
        if node(cluster, name)["domain_state"] != "ready":
            cluster.pvc("node", "ready", name, "--wait")


# -- a BMC that does not answer ------------------------------------------------------------------------


def test_unreachable_bmc_moves_nothing_is_visible_retries_with_backoff_then_recovers(cluster):
    victim = others(cluster)[0]
    vms = ["unreach-a", "unreach-b"]
    for vm in vms:
        cluster.define(vm, node=victim, start=True)
    base = fencing_config(cluster)["fencing"]["retry_interval"]
    bmc_pid = cluster.dev.bmc(cluster.dev.node(victim)).pid
    guard = NeverTwice(cluster, vms)
    os.kill(bmc_pid, signal.SIGSTOP)  # the BMC hangs: no IPMI answer at all
    try:
        cluster.dev.stop_node(victim, signal.SIGKILL)
        wait_until(lambda: guard.check() or fence(cluster, victim).get("attempts", 0) >= 2, timeout=90, interval=0.5)
        f = fence(cluster, victim)
        assert f["status"] == "failed" and f["method"] == ""
        assert f"attempt {f['attempts']} failed" in f["message"]
        # The schedule doubles: retry_interval after the first failure, twice that after the second...
        assert f["next_attempt"] - f["last_attempt"] == pytest.approx(retry_delay(f["attempts"], base, 120))
        assert f["next_attempt"] - f["last_attempt"] >= 2 * base
        # Nothing moved: the VMs may still run there.
        for vm in vms:
            info = cluster.vm(vm)
            assert (info["node"], info["state"]) == (victim, "start")
            assert hosts_of(cluster, vm) == [victim]
        assert node(cluster, victim)["daemon_state"] == "dead"
        # Visible to people and programs.
        human = cluster.pvc("node", "info", victim).stdout
        assert "fence_status: failed" in " ".join(human.split()) and "fence_next_attempt:" in human
        status = cluster.pvc_json("cluster", "status")
        assert [(x["node"], x["status"]) for x in status["fencing"]] == [(victim, "failed")]
        assert f"fencing:       {victim} failed: attempt" in cluster.pvc("cluster", "status").stdout
        assert any(e["kind"] == "fence_failed" and e["node"] == victim and e["severity"] == "error"
                   for e in cluster.pvc_json("event", "list", "-n", "50"))
    finally:
        os.kill(bmc_pid, signal.SIGCONT)  # the BMC answers again: the next attempt fences
    try:
        wait_until(lambda: running_elsewhere(cluster, vms, victim, guard), timeout=180, interval=0.5)
        assert not guard.seen
        f = fence(cluster, victim)
        assert (f["status"], f["method"], f["recovered_vms"]) == ("recovered", "ipmi", 2) and f["attempts"] >= 2
        assert "off" in ipmi(cluster, victim, "chassis", "power", "status")
        assert node(cluster, victim)["daemon_state"] == "fenced"
        assert cluster.pvc_json("cluster", "status")["fencing"] == []  # finished: no longer listed
        kinds = [(e["kind"], e["vm"]) for e in cluster.pvc_json("event", "list", "-n", "50") if e["node"] == victim]
        assert ("node_fenced", "") in kinds and {("vm_recovered", vm) for vm in vms} <= set(kinds)
        for vm in vms:
            assert cluster.vm(vm)["previous_node"] == victim
    finally:
        cleanup(cluster, vms, [victim])


# -- a power-off that does not take effect ------------------------------------------------------------


class StubbornBmc:
    """An ipmi_sim whose chassis accepts "power off" and stays on: its power holder ignores SIGTERM
    and ipmi_sim is told never to escalate (poweroff_wait 0, kill_wait 0)."""

    def __init__(self, base: Path) -> None:
        self.base, self.port = base, free_udp_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "state").mkdir(exist_ok=True)
        holder = self.base / "holder.sh"
        holder.write_text(f"#!/bin/sh\ntrap '' TERM\necho $$ > {self.base}/holder.pid\nexec sleep 86400\n")
        holder.chmod(0o755)
        conf = _LAN_CONF.format(name="stubborn", port=self.port, serial_port=free_port(), holder=holder,
                                guid="5" * 32, user=USERNAME, password=PASSWORD)
        conf = conf.replace("poweroff_wait 1", "poweroff_wait 0").replace("kill_wait 5", "kill_wait 0")
        (self.base / "lan.conf").write_text(conf)
        (self.base / "sim.emu").write_text(_EMU)
        self.proc = subprocess.Popen(["ipmi_sim", "-n", "-c", str(self.base / "lan.conf"), "-f",
                                      str(self.base / "sim.emu"), "-s", str(self.base / "state")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: (self.base / "holder.pid").exists(), timeout=10)

    def stop(self) -> None:
        for pid in (self.proc.pid if self.proc else None, int((self.base / "holder.pid").read_text())):
            if pid and is_running(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)


def test_power_still_on_after_power_off_moves_nothing(cluster, tmp_path):
    victim = others(cluster)[0]
    spec = cluster.dev.node(victim)
    original = Path(spec.config).read_text()
    stubborn = StubbornBmc(tmp_path / "stubborn-bmc")
    stubborn.start()
    try:
        config = yaml.safe_load(original)
        config["fencing"]["ipmi"]["port"] = stubborn.port
        Path(spec.config).write_text(yaml.safe_dump(config))
        cluster.dev.stop_node(victim)
        cluster.dev.start_node(victim)  # it publishes the stubborn BMC
        cluster.define("stubborn-a", node=victim, start=True)

        cluster.dev.stop_node(victim, signal.SIGKILL)
        wait_until(lambda: fence(cluster, victim).get("status") == "failed", timeout=60, interval=0.5)
        f = fence(cluster, victim)
        assert "power still on" in f["message"] and f["method"] == ""
        info = cluster.vm("stubborn-a")
        assert (info["node"], info["state"]) == (victim, "start")
        assert hosts_of(cluster, "stubborn-a") == [victim]
        assert node(cluster, victim)["daemon_state"] == "dead"
        assert "power still on" in cluster.pvc("node", "info", victim).stdout
        assert "power still on" in cluster.pvc("cluster", "status").stdout
    finally:
        Path(spec.config).write_text(original)
        stubborn.stop()
    # The daemon comes back: it adopts its VM, and the fence record says it was never fenced.
    cluster.dev.start_node(victim)
    # (A fence attempt in flight against the stubborn BMC finishes first: up to a minute.)
    wait_until(lambda: fence(cluster, victim).get("status") == "returned", timeout=90, interval=0.5)
    assert hosts_of(cluster, "stubborn-a") == [victim] and cluster.vm("stubborn-a")["node"] == victim
    cleanup(cluster, ["stubborn-a"], [])


# -- a node without IPMI, declared off by an operator ---------------------------------------------------


def test_operator_fences_a_node_without_ipmi_and_its_vms_are_recovered_once(cluster):
    victim = others(cluster)[0]
    spec = cluster.dev.node(victim)
    original = Path(spec.config).read_text()
    config = yaml.safe_load(original)
    del config["fencing"]["ipmi"]
    Path(spec.config).write_text(yaml.safe_dump(config))
    try:
        cluster.dev.stop_node(victim)
        cluster.dev.start_node(victim)
        cluster.define("manual-a", node=victim, start=True)
        cluster.define("manual-off", node=victim)

        history = node(cluster, victim)["fence"]  # what earlier tests left, if anything
        # Without the flag: says what it would do, changes nothing.
        plain = cluster.pvc("node", "fence", victim, check=False)
        assert plain.returncode != 0 and "--confirm-powered-off" in plain.stderr
        assert len(plain.stderr.strip().splitlines()) == 1
        # While its daemon is alive: refused, naming why.
        refused = cluster.pvc("node", "fence", victim, "--confirm-powered-off", check=False)
        assert refused.returncode != 0 and "its daemon is running" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert node(cluster, victim)["daemon_state"] == "run" and node(cluster, victim)["fence"] == history
        unknown = cluster.pvc("node", "fence", "nosuchnode", "--confirm-powered-off", check=False)
        assert unknown.returncode != 0 and "unknown node" in unknown.stderr

        # The host loses power (by hand: no BMC to do it): pvcd dies, libvirtd and its VMs end.
        cluster.dev.stop_node(victim, signal.SIGKILL)
        cluster.dev.libvirtd(spec).stop()
        wait_until(lambda: "no IPMI configured" in fence(cluster, victim).get("message", ""), timeout=30, interval=0.3)
        assert fence(cluster, victim)["status"] == "dead"
        assert cluster.vm("manual-a")["node"] == victim  # nothing moves without a confirmed power-off

        out = cluster.pvc("node", "fence", victim, "--confirm-powered-off").stdout
        assert "declared powered off" in out and "1 VM(s)" in out
        guard = NeverTwice(cluster, ["manual-a"])
        wait_until(lambda: running_elsewhere(cluster, ["manual-a"], victim, guard), timeout=30, interval=0.3)
        wait_until(lambda: fence(cluster, victim).get("status") == "recovered", timeout=10, interval=0.3)
        f = fence(cluster, victim)
        assert (f["method"], f["recovered_vms"], f["by"] != "operator") == ("operator", 1, True)
        assert node(cluster, victim)["daemon_state"] == "fenced"
        first = cluster.vm("manual-a")
        assert first["previous_node"] == victim and first["failed_reason"] == f"recovered from fenced node {victim}"
        stopped = cluster.vm("manual-off")  # a stopped VM stays where it was: nothing runs, nothing is lost
        assert (stopped["node"], stopped["state"]) == (victim, "stop")

        assert any(e["kind"] == "node_fenced" and e["node"] == victim and "operator" in e["message"]
                   for e in cluster.pvc_json("event", "list", "-n", "50"))
        again = cluster.pvc("node", "fence", victim, "--confirm-powered-off")
        assert "already fenced" in again.stdout
        # Once: a hand-over of the primary role (a new primary looks at the fenced node again)
        # changes nothing.
        new_primary = next(n for n in cluster.nodes if n not in (victim, primary(cluster)))
        cluster.pvc("node", "primary", new_primary, "--wait")
        time.sleep(3)
        guard.check()
        later = cluster.vm("manual-a")
        assert (later["node"], later["state"]) == (first["node"], "start")
        assert hosts_of(cluster, "manual-a") == [first["node"]] and not guard.seen
    finally:
        Path(spec.config).write_text(original)
    cluster.dev.libvirtd(spec).start()
    cleanup(cluster, ["manual-a", "manual-off"], [victim])


# -- maintenance ------------------------------------------------------------------------------------------


def test_maintenance_reports_a_dead_node_but_fences_and_recovers_nothing(cluster):
    victim, other = others(cluster)
    cluster.define("maint-a", node=victim, start=True)
    cluster.define("maint-b", node=other, start=True)
    cluster.pvc("cluster", "config", "--maintenance")
    try:
        assert cluster.pvc_json("cluster", "config")["maintenance"] is True
        status = cluster.pvc_json("cluster", "status")
        assert status["maintenance"] is True and status["settings"]["maintenance"] is True
        assert cluster.pvc("cluster", "status").stdout.startswith("MAINTENANCE MODE")

        # Flush and ready still work.
        cluster.pvc("node", "flush", other, "--wait")
        assert cluster.vm("maint-b")["node"] != other
        cluster.pvc("node", "ready", other, "--wait")
        assert cluster.vm("maint-b")["node"] == other

        cluster.dev.stop_node(victim, signal.SIGKILL)
        wait_until(lambda: "maintenance is on" in fence(cluster, victim).get("message", ""), timeout=30, interval=0.3)
        assert node(cluster, victim)["daemon_state"] == "dead"
        time.sleep(fencing_config(cluster)["fencing"]["retry_interval"] + 2)  # past a retry: still nothing
        assert fence(cluster, victim)["status"] == "dead"
        assert "on" in ipmi(cluster, victim, "chassis", "power", "status")
        info = cluster.vm("maint-a")
        assert (info["node"], info["state"]) == (victim, "start") and hosts_of(cluster, "maint-a") == [victim]
        listed = cluster.pvc_json("cluster", "status")["fencing"]
        assert [(x["node"], x["status"]) for x in listed] == [(victim, "dead")]
    finally:
        cluster.pvc("cluster", "config", "--no-maintenance")
    try:
        assert cluster.pvc_json("cluster", "config")["maintenance"] is False
        assert "MAINTENANCE" not in cluster.pvc("cluster", "status").stdout
        # Maintenance over: the dead node is fenced and its VM recovered.
        wait_until(lambda: running_elsewhere(cluster, ["maint-a"], victim), timeout=60, interval=0.5)
        assert fence(cluster, victim)["status"] in ("fenced", "recovered")
    finally:
        cleanup(cluster, ["maint-a", "maint-b"], [victim])


# -- a slow node --------------------------------------------------------------------------------------------


def test_a_slow_but_live_node_is_never_fenced(cluster):
    victim = others(cluster)[0]
    cluster.define("slow-a", node=victim, start=True)
    config = fencing_config(cluster)
    session, dead_after = config["zookeeper"]["session_timeout"], config["fencing"]["dead_after"]
    pid = cluster.dev.node(victim).pvcd_pid
    seen = set()
    # Frozen past its session timeout (its presence vanishes) but back well within dead_after.
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + session + dead_after / 3
        while time.monotonic() < deadline:
            seen.add(fence(cluster, victim).get("status", ""))
            time.sleep(0.25)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: node(cluster, victim)["daemon_state"] == "run", timeout=20, interval=0.2)
    deadline = time.monotonic() + dead_after + 2
    while time.monotonic() < deadline:  # past the time it would have been fenced
        seen.add(fence(cluster, victim).get("status", ""))
        time.sleep(0.25)
    assert seen <= {"", "returned", "recovered"}  # "recovered"/"returned": left by earlier tests
    assert is_running(pid) and node(cluster, victim)["daemon_state"] == "run"
    assert "on" in ipmi(cluster, victim, "chassis", "power", "status")
    assert hosts_of(cluster, "slow-a") == [victim] and cluster.vm("slow-a")["node"] == victim
    cleanup(cluster, ["slow-a"], [])


# -- a daemon cut off from ZooKeeper ---------------------------------------------------------------------


def test_a_daemon_cut_off_and_declared_dead_keeps_its_vms_running_and_carries_on(cluster):
    victim = others(cluster)[0]
    spec = cluster.dev.node(victim)
    cluster.define("cutoff-a", node=victim, start=True)
    pid = spec.pvcd_pid
    cluster.pvc("cluster", "config", "--maintenance")  # declared dead, not fenced: the daemon comes back
    os.kill(pid, signal.SIGSTOP)
    try:
        try:
            wait_until(lambda: fence(cluster, victim).get("status") == "dead", timeout=30, interval=0.3)
            assert cluster.running_on(victim) >= {"cutoff-a"}  # its VMs keep running while it is away
        finally:
            os.kill(pid, signal.SIGCONT)
        # Back with a new session: the same process re-registers, says "run" again, and the primary
        # closes the fence record; nothing was started, stopped or moved.
        wait_until(lambda: fence(cluster, victim).get("status") == "returned", timeout=30, interval=0.3)
    finally:
        cluster.pvc("cluster", "config", "--no-maintenance")
    assert is_running(pid) and node(cluster, victim)["daemon_state"] == "run"
    assert "nothing was moved" in fence(cluster, victim)["message"]
    info = cluster.vm("cutoff-a")
    assert (info["node"], info["state"]) == (victim, "start") and hosts_of(cluster, "cutoff-a") == [victim]
    cleanup(cluster, ["cutoff-a"], [])


# -- a daemon fenced while cut off from ZooKeeper -------------------------------------------------------


def test_a_daemon_fenced_while_cut_off_exits_without_touching_anything(cluster):
    victim = others(cluster)[0]
    spec = cluster.dev.node(victim)
    cluster.define("away-a", node=victim, start=True)
    pid = spec.pvcd_pid
    # Maintenance keeps the primary from fencing it through its BMC first (which would kill it).
    cluster.pvc("cluster", "config", "--maintenance")
    os.kill(pid, signal.SIGSTOP)  # cut off: its session expires, its presence goes
    try:
        wait_until(lambda: node(cluster, victim)["daemon_state"] == "dead", timeout=30, interval=0.3)
        # An operator wrongly declares it off (it still runs): recovery starts the VM elsewhere.
        out = cluster.pvc("node", "fence", victim, "--confirm-powered-off").stdout
        assert "once maintenance is turned off" in out
        time.sleep(2)
        assert cluster.vm("away-a")["node"] == victim  # maintenance: nothing recovered yet
        cluster.pvc("cluster", "config", "--no-maintenance")
        wait_until(lambda: cluster.vm("away-a")["node"] != victim
                   and cluster.vm("away-a")["libvirt_state"] == "running", timeout=30, interval=0.3)
        before = cluster.running_on(victim)
    finally:
        cluster.pvc("cluster", "config", "--no-maintenance")
        os.kill(pid, signal.SIGCONT)
    # Back with a new session, it finds itself fenced: it exits at once and touches nothing.
    wait_until(lambda: not is_running(pid), timeout=30, interval=0.2)
    assert "fenced_while_away" in Path(spec.pvcd_log).read_text()
    assert node(cluster, victim)["daemon_state"] == "fenced"
    assert cluster.running_on(victim) == before
    # The operator's mistake made a second copy: remove it, then bring the node back.
    cluster.virsh(victim, "destroy", "away-a")
    cleanup(cluster, ["away-a"], [victim])


# -- the primary dies together with its victim ----------------------------------------------------------


def test_primary_dying_with_the_victim_the_next_primary_finishes_exactly_once(cluster):
    old_primary = primary(cluster)
    victim = others(cluster)[0]
    vms = ["pd-v1", "pd-v2"]
    for vm in vms:
        cluster.define(vm, node=victim, start=True)
    cluster.define("pd-p1", node=old_primary, start=True)
    everything = [*vms, "pd-p1"]
    guard = NeverTwice(cluster, everything)
    bmc_pid = cluster.dev.bmc(cluster.dev.node(victim)).pid
    os.kill(bmc_pid, signal.SIGSTOP)
    try:
        cluster.dev.stop_node(victim, signal.SIGKILL)
        wait_until(lambda: guard.check() or fence(cluster, victim).get("attempts", 0) >= 1, timeout=60, interval=0.5)
        first = fence(cluster, victim)
        assert first["by"] == old_primary and first["status"] == "failed"
        cluster.dev.stop_node(old_primary, signal.SIGKILL)  # the primary dies too (its host lives on)
    finally:
        os.kill(bmc_pid, signal.SIGCONT)
    try:
        wait_until(lambda: running_elsewhere(cluster, vms, victim, guard)
                   and running_elsewhere(cluster, ["pd-p1"], old_primary, guard), timeout=180, interval=0.5)
        assert not guard.seen
        survivor = primary(cluster)
        assert survivor not in (old_primary, victim)
        f = fence(cluster, victim)
        # The new primary carried on from the record: same death, the attempts counted on.
        assert (f["status"], f["by"], f["dead_since"]) == ("recovered", survivor, first["dead_since"])
        assert f["attempts"] >= first["attempts"]
        assert fence(cluster, old_primary)["status"] == "recovered"
        for vm in everything:
            assert hosts_of(cluster, vm) == [survivor] and cluster.vm(vm)["node"] == survivor
        time.sleep(2)  # nothing more happens: each VM was recovered once
        guard.check()
        assert not guard.seen and all(hosts_of(cluster, vm) == [survivor] for vm in everything)
    finally:
        cleanup(cluster, everything, [victim, old_primary])
