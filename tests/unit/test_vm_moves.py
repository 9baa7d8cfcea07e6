"""Moving VMs between nodes (pure): requests (vm_states) and what nodes record (vm_outcomes).

The rule under test: a VM's node changes only where libvirt's truth backs it (its own node hands
it over after libvirt says it is off, a live migration's confirmed outcome, a fenced node).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc import vm_outcomes, vm_states
from pvc.errors import Conflict
from pvc.schema import VM_STATES, WANTS_RUNNING, Domain

ME, OTHER, THIRD = "hv1", "hv2", "hv3"


def dom(state="stop", node=ME, **kw) -> Domain:
    return Domain(uuid="u1", name="web1", state=state, node=node, **kw)


# -- requests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["stop", "disable", "fail"])
@pytest.mark.parametrize("mode", ["migrate", "move"])
def test_a_vm_that_is_not_running_is_never_reassigned_by_a_request(state, mode):
    new = vm_states.migrate_request(dom(state, libvirt_state="running"), mode, OTHER)
    assert new.node == ME  # its node hands it over once libvirt there says it is off
    assert new.target_node == OTHER and new.state == state
    assert vm_states.pending_hand_over(new)


def test_a_fenced_source_is_reassigned_at_once():
    new = vm_states.migrate_request(dom("stop"), "move", OTHER, source_fenced=True)
    assert (new.node, new.target_node, new.libvirt_state) == (OTHER, "", "shutoff")


def test_a_running_vm_is_migrated_by_its_node():
    new = vm_states.migrate_request(dom("start", libvirt_state="running"), "migrate", OTHER)
    assert (new.state, new.node, new.target_node, new.previous_node) == ("migrate", ME, OTHER, ME)


def test_forced_migrate_keeps_the_home_and_move_clears_it():
    d = dom("start", previous_node=THIRD)
    with pytest.raises(Conflict):
        vm_states.migrate_request(d, "migrate", OTHER)
    assert vm_states.migrate_request(d, "migrate", OTHER, force=True).previous_node == THIRD
    assert vm_states.migrate_request(d, "move", OTHER).previous_node == ""


def test_start_during_a_pending_hand_over_starts_it_on_the_target():
    pending = vm_states.migrate_request(dom("stop"), "move", OTHER)
    started = vm_states.request(pending, "start")
    assert (started.state, started.node, started.target_node) == ("migrate", ME, OTHER)


def test_stop_during_a_pending_hand_over_keeps_the_hand_over():
    pending = vm_states.migrate_request(dom("fail"), "move", OTHER)
    assert vm_states.request(pending, "disable").target_node == OTHER


@pytest.mark.parametrize("daemon_state", ["dead", "stop", "shutdown", ""])
def test_a_hand_over_is_refused_when_no_daemon_can_confirm_the_vm_off(daemon_state):
    with pytest.raises(Conflict) as exc:
        vm_states.check_hand_over_possible(dom("stop"), daemon_state)
    assert "confirm" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("daemon_state", ["run", "init", "fenced"])
def test_a_hand_over_is_possible_with_a_daemon_or_a_fenced_node(daemon_state):
    vm_states.check_hand_over_possible(dom("stop"), daemon_state)


def test_hand_over_outcome():
    pending = vm_states.migrate_request(dom("stop"), "move", OTHER)
    assert vm_states.hand_over_outcome(pending, OTHER) == (False, "")
    assert vm_states.hand_over_outcome(vm_outcomes.handed_over(pending, ME, 0.0), OTHER) == (True, "")
    assert vm_states.hand_over_outcome(None, OTHER)[0]
    superseded = vm_states.migrate_request(pending, "move", THIRD)
    assert vm_states.hand_over_outcome(superseded, OTHER)[1].startswith("VM web1 stays on hv1")


# -- outcomes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["stop", "disable", "fail"])
def test_hand_over_keeps_a_stopped_vm_stopped(state):
    pending = vm_states.migrate_request(dom(state), "move", OTHER)
    new = vm_outcomes.handed_over(pending, ME, 10.0)
    assert (new.node, new.state, new.target_node) == (OTHER, state, "")
    assert new.last_migration.method == "off"


def test_hand_over_of_a_migrating_vm_starts_it_there_and_says_how():
    d = dom("migrate", target_node=OTHER)
    new = vm_outcomes.handed_over(d, ME, 10.0, seconds=3.5, note="live migration failed (x); shut down and restarted")
    assert (new.node, new.state) == (OTHER, "start")
    assert new.last_migration.method == "shutdown" and new.last_migration.seconds == 3.5
    assert "live migration failed" in new.note


@given(state=st.sampled_from(VM_STATES), node=st.sampled_from([ME, OTHER, ""]),
       target=st.sampled_from(["", ME, OTHER]))
def test_only_the_vms_own_node_hands_it_over_and_only_to_another(state, node, target):
    new = vm_outcomes.handed_over(dom(state, node=node, target_node=target), ME, 0.0)
    if new is not None:
        assert node == ME and target not in ("", ME) and new.node == target
        assert state in ("migrate", "stop", "disable", "fail")


def test_live_method_failure_keeps_it_running_here():
    d = vm_states.migrate_request(dom("start", libvirt_state="running"), "migrate", OTHER)
    new = vm_outcomes.migration_failed(d, ME, "live migration to hv2 failed: nope")
    assert (new.state, new.node, new.target_node, new.previous_node) == ("start", ME, "", "")
    assert vm_states.migration_outcome(new, OTHER) == (True, "VM web1 did not move: live migration to hv2 failed: nope")


def test_live_migration_records_method_and_time():
    d = dom("migrate", target_node=OTHER, previous_node=ME)
    new = vm_outcomes.migrated_live(d, ME, OTHER, now=5.0, seconds=1.25)
    assert (new.node, new.state, new.libvirt_state) == (OTHER, "start", "running")
    assert (new.last_migration.method, new.last_migration.seconds) == ("live", 1.25)


def test_stopped_outside_only_for_wanted_running_vms_of_this_node():
    assert vm_outcomes.stopped_outside(dom("start"), ME, "stop", "destroyed outside pvc").failed_reason
    assert vm_outcomes.stopped_outside(dom("stop"), ME, "stop", "x") is None
    assert vm_outcomes.stopped_outside(dom("start", node=OTHER), ME, "stop", "x") is None


def test_forced_shutdown_note_is_kept_and_cleared_by_the_next_request():
    stopped = vm_outcomes.stopped(dom("shutdown"), ME, note="forced off")
    assert (stopped.state, stopped.note) == ("stop", "forced off")
    assert vm_states.request(stopped, "start").note == ""


def test_duplicates_are_marked_and_cleared_per_node():
    d = dom("start", node=OTHER)
    marked = vm_outcomes.duplicate_seen(d, ME)
    assert marked.duplicate_on == [ME]
    assert vm_outcomes.duplicate_seen(marked, ME) is None
    assert vm_outcomes.duplicate_gone(marked, ME).duplicate_on == []
    assert vm_outcomes.duplicate_seen(dom("start"), ME) is None  # its own node is no duplicate


# -- flush and ready requests ---------------------------------------------------------------------

@pytest.mark.parametrize("state", VM_STATES)
def test_flush_away_never_reassigns(state):
    new = vm_outcomes.flush_away(dom(state), ME, OTHER)
    if new is not None:
        assert new.node == ME and new.target_node == OTHER and new.previous_node == ME
        assert new.state == ("migrate" if state in ("start", "restart") else state)
    assert (new is None) == (state in ("disable", "migrate"))


@pytest.mark.parametrize("state", VM_STATES)
def test_come_home_is_asked_of_the_current_node(state):
    d = dom(state, node=OTHER, previous_node=ME)
    new = vm_outcomes.come_home(d, ME)
    if new is not None:
        assert new.node == OTHER and new.target_node == ME and new.previous_node == ""
    assert (new is None) == (state not in ("start", "stop", "fail", "shutdown"))


def test_autostart_waits_for_a_pending_hand_over():
    assert vm_outcomes.autostarted(dom("stop", autostart=True), ME).state == "start"
    assert vm_outcomes.autostarted(dom("stop", autostart=True, target_node=OTHER), ME) is None


def test_wanting_to_run_is_named_once():
    assert set(WANTS_RUNNING) == {"start", "restart", "migrate"}


def test_disk_changes_are_cleared_only_for_the_change_that_was_looked_at():
    d = dom("start", disk_changes=2)
    assert vm_outcomes.disks_updated(d, ME, seen=2).disk_changes == 0
    assert vm_outcomes.disks_updated(d, ME, seen=1) is None  # another change came meanwhile
    assert vm_outcomes.disks_updated(d, ME, seen=2, note="not live").note == "not live"
    assert vm_outcomes.disks_updated(dom("start", node=OTHER, disk_changes=2), ME, seen=2) is None
