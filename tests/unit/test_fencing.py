"""Dead-node fencing decisions (pure): when a node is dead, what a power status means, the recovery plan."""

from __future__ import annotations

import pytest

from pvc import fencing
from pvc.placement import Candidate
from pvc.schema import Domain


def cand(name: str, state: str = "run", domain_state: str = "ready", total: int = 4096, allocated: int = 0,
         count: int = 0) -> Candidate:
    return Candidate(name=name, daemon_state=state, domain_state=domain_state, memory_total_mib=total,
                     memory_free_mib=total - allocated, memory_allocated_mib=allocated, vcpus_allocated=0,
                     load=0.0, domains_count=count)


def dom(name: str, node: str = "hv2", state: str = "start", memory: int = 512, **kw) -> Domain:
    return Domain(uuid=f"uuid-{name}", name=name, node=node, state=state, memory_mib=memory, vcpus=1,
                  libvirt_state="running" if state in ("start", "restart", "migrate") else "shutoff", **kw)


# -- is it dead yet? ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["init", "run", "shutdown", "dead"])
def test_fence_due_after_dead_after(state):
    assert not fencing.fence_due(state, False, 100.0, 109.9, 10)
    assert fencing.fence_due(state, False, 100.0, 110.0, 10)


@pytest.mark.parametrize("state", ["stop", "fenced", ""])
def test_never_fence_a_node_that_left_cleanly_or_is_fenced(state):
    assert not fencing.fence_due(state, False, 0.0, 1000.0, 10)


def test_alive_or_unseen_node_is_not_due():
    assert not fencing.fence_due("run", True, 0.0, 1000.0, 10)
    assert not fencing.fence_due("run", False, None, 1000.0, 10)


# -- IPMI ----------------------------------------------------------------------------------------------


def test_power_status_must_say_off():
    assert fencing.power_is_off("Chassis Power is off\n")
    assert not fencing.power_is_off("Chassis Power is on\n")
    assert not fencing.power_is_off("Error: Unable to establish IPMI v2 / RMCP+ session")
    assert not fencing.power_is_off("")


def test_ipmitool_argv_keeps_the_password_out_of_argv():
    argv = fencing.ipmitool_argv("10.0.0.5", 623, "admin", "chassis", "power", "off")
    assert argv[:3] == ["ipmitool", "-I", "lanplus"]
    assert "-E" in argv and "-C" not in argv
    assert argv[-3:] == ["chassis", "power", "off"]
    assert "-C" in fencing.ipmitool_argv("h", 1, "u", "chassis", "power", "status", cipher_suite=3)


# -- recovery ------------------------------------------------------------------------------------------


def test_running_vms_are_recovered_elsewhere_with_previous_node():
    vms = [dom("a"), dom("b", state="restart"), dom("c", state="migrate", target_node="hv3")]
    plan = fencing.recovery_plan("hv2", vms, [cand("hv1"), cand("hv3")])
    assert set(plan) == {"uuid-a", "uuid-b", "uuid-c"}
    for changes in plan.values():
        assert changes["state"] == "start"
        assert changes["node"] in ("hv1", "hv3")
        assert changes["previous_node"] == "hv2"
        assert changes["failed_reason"] == "recovered from fenced node hv2"
        assert changes["target_node"] == "" and changes["libvirt_state"] == "shutoff"
        assert fencing.is_recovery_note(changes["failed_reason"])


def test_placements_spread_by_counting_earlier_ones():
    plan = fencing.recovery_plan("hv2", [dom("a", memory=1024), dom("b", memory=1024)],
                                 [cand("hv1"), cand("hv3")], default_selector="mem")
    assert sorted(c["node"] for c in plan.values()) == ["hv1", "hv3"]


def test_the_fenced_and_unready_nodes_are_never_targets():
    cands = [cand("hv1", domain_state="flushed"), cand("hv2"), cand("hv3", state="dead")]
    plan = fencing.recovery_plan("hv2", [dom("a")], cands)
    assert plan["uuid-a"]["state"] == "fail"
    assert "hv2 was fenced" in plan["uuid-a"]["failed_reason"]
    assert "node" not in plan["uuid-a"]  # the record stays where it was: never lost


def test_node_limit_is_honoured():
    cands = [cand("hv1"), cand("hv3", allocated=3000)]
    plan = fencing.recovery_plan("hv2", [dom("a", node_limit=["hv2", "hv3"])], cands)
    assert plan["uuid-a"]["node"] == "hv3"
    plan = fencing.recovery_plan("hv2", [dom("a", node_limit=["hv2"])], [cand("hv1"), cand("hv3")])
    assert plan["uuid-a"]["state"] == "fail"


def test_no_room_fails_with_a_reason():
    plan = fencing.recovery_plan("hv2", [dom("a", memory=8000)], [cand("hv1"), cand("hv3")])
    assert plan["uuid-a"]["state"] == "fail" and "8000 MiB" in plan["uuid-a"]["failed_reason"]


def test_vm_already_running_elsewhere_follows_libvirt():
    plan = fencing.recovery_plan("hv2", [dom("a", state="migrate", target_node="hv3")], [cand("hv1"), cand("hv3")],
                                 running={"uuid-a": "hv3"})
    assert plan["uuid-a"]["node"] == "hv3" and plan["uuid-a"]["libvirt_state"] == "running"
    assert plan["uuid-a"]["previous_node"] == "hv2"


def test_stopped_vms_stay_and_shutdown_becomes_stop():
    stale = Domain(uuid="uuid-s", name="s", node="hv2", state="stop", libvirt_state="running")
    plan = fencing.recovery_plan("hv2", [dom("x", state="stop"), dom("d", state="disable"), dom("f", state="fail"),
                                         dom("h", state="shutdown"), stale], [cand("hv1")])
    assert plan == {"uuid-h": {"state": "stop", "libvirt_state": "shutoff", "target_node": ""},
                    "uuid-s": {"libvirt_state": "shutoff"}}


def test_other_nodes_vms_are_untouched():
    assert fencing.recovery_plan("hv2", [dom("a", node="hv1")], [cand("hv1"), cand("hv3")]) == {}


def test_selector_of_the_vm_wins_over_the_default():
    cands = [cand("hv1", allocated=100, count=5), cand("hv3", allocated=2000, count=0)]
    assert fencing.recovery_plan("hv2", [dom("a")], cands, default_selector="mem")["uuid-a"]["node"] == "hv1"
    assert fencing.recovery_plan("hv2", [dom("a", selector="vms")], cands)["uuid-a"]["node"] == "hv3"
