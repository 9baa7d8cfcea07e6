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


# -- what to do with a node (decide) -------------------------------------------------------------------

from pvc.fencing import Action  # noqa: E402
from pvc.schema import FenceState  # noqa: E402


def decide(**kw):
    args = dict(alive=False, daemon_state="run", gone_for=20.0, fence=FenceState(), now=1000.0, dead_after=10,
                maintenance=False, policy="fence", has_ipmi=True)
    args.update(kw)
    return fencing.decide("hv2", **args)


def test_a_node_gone_long_enough_is_fenced():
    assert decide().action is Action.FENCE
    assert decide(daemon_state="dead").action is Action.FENCE


def test_late_but_within_dead_after_is_left_alone():
    # A slow node whose presence came back (or has not been gone for dead_after) is never fenced.
    assert decide(gone_for=9.9).action is Action.NOTHING
    assert decide(gone_for=None).action is Action.NOTHING
    assert decide(alive=True).action is Action.NOTHING


def test_a_clean_stop_is_never_fenced():
    assert decide(daemon_state="stop", gone_for=1e6).action is Action.NOTHING


def test_maintenance_reports_but_neither_fences_nor_recovers():
    d = decide(maintenance=True)
    assert d.action is Action.PAUSE and "maintenance" in d.reason
    d = decide(maintenance=True, daemon_state="fenced", fence=FenceState(status="fenced"))
    assert d.action is Action.PAUSE and "recovered once" in d.reason
    assert decide(maintenance=True, gone_for=1.0).action is Action.NOTHING  # not dead yet: nothing to report


def test_no_ipmi_and_policy_none_pause_with_the_reason():
    d = decide(has_ipmi=False)
    assert d.action is Action.PAUSE and "--confirm-powered-off" in d.reason
    assert decide(policy="none").action is Action.PAUSE


def test_failed_fence_waits_for_its_retry_time_even_under_a_new_primary():
    failed = FenceState(status="failed", attempts=2, next_attempt=1005.0)
    assert decide(fence=failed, daemon_state="dead", now=1004.9).action is Action.NOTHING
    assert decide(fence=failed, daemon_state="dead", now=1005.0).action is Action.FENCE


def test_fenced_node_is_recovered_until_the_record_says_recovered():
    assert decide(daemon_state="fenced", fence=FenceState(status="fenced")).action is Action.RECOVER
    assert decide(daemon_state="fenced", fence=FenceState()).action is Action.RECOVER  # fenced before records existed
    assert decide(daemon_state="fenced", fence=FenceState(status="recovered")).action is Action.NOTHING


@pytest.mark.parametrize("status", ["dead", "failed", "fenced"])
def test_a_daemon_back_before_the_fence_finished_closes_the_record(status):
    assert decide(alive=True, fence=FenceState(status=status)).action is Action.RETURNED


@pytest.mark.parametrize("status", ["", "recovered", "returned"])
def test_a_live_node_with_a_closed_record_needs_nothing(status):
    assert decide(alive=True, fence=FenceState(status=status)).action is Action.NOTHING


# -- the fence record's transitions --------------------------------------------------------------------


def test_retry_backoff_doubles_up_to_the_cap():
    assert [fencing.retry_delay(n, 10, 120) for n in range(1, 7)] == [10, 20, 40, 80, 120, 120]
    assert fencing.retry_delay(0, 3, 60) == 3


def test_failed_attempts_count_and_schedule_the_next():
    dead = fencing.declared_dead(FenceState(), 100.0, "hv1")
    assert (dead.status, dead.dead_since, dead.attempts) == ("dead", 100.0, 0)
    one = fencing.attempt_failed(dead, "power off failed: timeout", 110.0, 10, 120, "hv1")
    assert (one.status, one.attempts, one.next_attempt) == ("failed", 1, 120.0)
    two = fencing.attempt_failed(one, "power still on", 125.0, 10, 120, "hv3")  # a new primary carries on
    assert (two.attempts, two.next_attempt, two.by) == (2, 145.0, "hv3")
    assert "attempt 2 failed: power still on" in two.message and two.dead_since == 100.0
    # Declaring dead again (e.g. after a takeover) keeps the count; after a return it starts afresh.
    assert fencing.declared_dead(two, 200.0, "hv3").attempts == 2
    back = fencing.returned(two, 150.0, "hv3")
    assert back.status == "returned" and back.next_attempt == 0.0 and "nothing was moved" in back.message
    late = fencing.returned(fencing.confirmed_off(two, "operator", 160.0, "operator"), 170.0, "hv3")
    assert "nothing was moved" not in late.message and "previous_node" in late.message  # honest: some may have
    assert fencing.declared_dead(back, 300.0, "hv3") == FenceState(status="dead", dead_since=300.0, by="hv3")


def test_confirmed_off_and_recovered():
    off = fencing.confirmed_off(FenceState(status="failed", attempts=3, dead_since=5.0), "ipmi", 50.0, "hv1")
    assert (off.status, off.method, off.fenced_at, off.attempts, off.next_attempt) == ("fenced", "ipmi", 50.0, 3, 0.0)
    by_hand = fencing.confirmed_off(FenceState(), "operator", 60.0, "operator")
    assert by_hand.method == "operator" and "operator" in by_hand.message and by_hand.dead_since == 60.0
    done = fencing.recovered(off, 4, 70.0, "hv1")
    assert (done.status, done.recovered_vms, done.recovered_at) == ("recovered", 4, 70.0)


def test_operator_fence_refused_while_the_daemon_is_alive():
    assert "daemon is running" in fencing.operator_fence_refusal("hv2", alive=True)
    assert fencing.operator_fence_refusal("hv2", alive=False) == ""


# -- recovery applies only after a confirmed power-off, once ------------------------------------------


@pytest.mark.parametrize("state", ["dead", "run", "init", "stop", ""])
def test_no_recovery_without_a_confirmed_power_off(state):
    assert fencing.recovery_plan("hv2", [dom("a")], [cand("hv1")], daemon_state=state) == {}


def test_recovery_change_applies_the_plan_once():
    before = dom("a")
    changes = fencing.recovery_plan("hv2", [before], [cand("hv1")])["uuid-a"]
    after = fencing.recovery_change(before, before, changes, "hv2")
    assert (after.node, after.state, after.previous_node) == ("hv1", "start", "hv2")
    # Applied again (a new primary re-running the recovery): the VM is no longer on the fenced node.
    assert fencing.recovery_change(after, before, changes, "hv2") is None


def test_recovery_change_skips_a_vm_changed_since_the_plan():
    before = dom("a")
    changes = fencing.recovery_plan("hv2", [before], [cand("hv1")])["uuid-a"]
    import msgspec

    stopped = msgspec.structs.replace(before, state="stop")
    assert fencing.recovery_change(stopped, before, changes, "hv2") is None
    assert fencing.recovery_change(before, before, {}, "hv2") is None
