"""What a node's daemon does about one VM (pvc.reconcile.decide): table-driven and exhaustive."""

from __future__ import annotations

import itertools

import pytest

from pvc.reconcile import STOP_REASONS, Step, decide, unexpected_stop
from pvc.schema import VM_STATES, Domain

ME = "hv1"
OTHER = "hv2"
THIRD = "hv3"


def dom(state: str, *, node: str = ME, libvirt_state: str = "shutoff", target_node: str = "") -> Domain:
    return Domain(uuid="00000000-0000-0000-0000-000000000001", name="vm1", state=state, node=node,
                  libvirt_state=libvirt_state, target_node=target_node)


# (state, running_here, libvirt_state, target_node) -> step, for a VM assigned to this node.
# "*" in libvirt_state / target_node means "any value; the step must not depend on it".
ASSIGNED_HERE = [
    # start
    ("start", False, "*", "*", Step.START),
    ("start", True, "running", "*", Step.NOTHING),
    ("start", True, "shutoff", "*", Step.RECORD_RUNNING),
    ("start", True, "paused", "*", Step.RECORD_RUNNING),
    ("start", True, "", "*", Step.RECORD_RUNNING),
    # restart
    ("restart", True, "*", "*", Step.RESTART),
    ("restart", False, "*", "*", Step.START),
    # migrate away
    ("migrate", True, "*", OTHER, Step.MIGRATE),
    ("migrate", False, "*", OTHER, Step.HAND_OVER),
    # migrate with no target, or targeting this very node: it should simply run here
    ("migrate", False, "*", "", Step.START),
    ("migrate", True, "*", "", Step.RECORD_RUNNING),
    ("migrate", False, "*", ME, Step.START),
    ("migrate", True, "*", ME, Step.RECORD_RUNNING),
    # stop-like intents while it runs
    ("stop", True, "*", "*", Step.DESTROY),
    ("shutdown", True, "*", "*", Step.SHUTDOWN),
    ("disable", True, "*", "*", Step.DISABLE),
    ("fail", True, "*", "*", Step.DESTROY),
    # shutdown that is already off: record stop
    ("shutdown", False, "*", "*", Step.RECORD_STOPPED),
    # stop/disable/fail already off: first fix a stale libvirt_state, then a pending hand-over
    ("stop", False, "shutoff", "", Step.NOTHING),
    ("stop", False, "shutoff", ME, Step.NOTHING),
    ("stop", False, "shutoff", OTHER, Step.HAND_OVER),
    ("stop", False, "running", "*", Step.RECORD_STOPPED),
    ("stop", False, "paused", "*", Step.RECORD_STOPPED),
    ("stop", False, "", "*", Step.RECORD_STOPPED),
    ("disable", False, "shutoff", "", Step.NOTHING),
    ("disable", False, "shutoff", OTHER, Step.HAND_OVER),
    ("disable", False, "running", "*", Step.RECORD_STOPPED),
    ("disable", False, "crashed", "*", Step.RECORD_STOPPED),
    ("fail", False, "shutoff", "", Step.NOTHING),
    ("fail", False, "shutoff", OTHER, Step.HAND_OVER),
    ("fail", False, "running", "*", Step.RECORD_STOPPED),
    ("fail", False, "crashed", "*", Step.RECORD_STOPPED),
    # an unknown state is left alone, running or not
    ("bogus", True, "*", "*", Step.NOTHING),
    ("bogus", False, "*", "*", Step.NOTHING),
]

LIBVIRT_STATES = ("running", "shutoff", "paused", "crashed", "")
TARGETS = ("", ME, OTHER)


def _expand(rows):
    for state, running, lv, target, step in rows:
        for lv_ in LIBVIRT_STATES if lv == "*" else (lv,):
            for target_ in TARGETS if target == "*" else (target,):
                yield pytest.param(state, running, lv_, target_, step,
                                   id=f"{state}-{'running' if running else 'off'}-{lv_ or 'none'}-{target_ or 'none'}")


@pytest.mark.parametrize("state,running_here,libvirt_state,target_node,expected", list(_expand(ASSIGNED_HERE)))
def test_decide_assigned_here(state, running_here, libvirt_state, target_node, expected):
    d = dom(state, libvirt_state=libvirt_state, target_node=target_node)
    assert decide(d, ME, running_here) is expected


def test_table_covers_every_state_and_running_combination():
    covered = {(s, r) for s, r, *_ in ASSIGNED_HERE}
    for state in VM_STATES:
        for running in (True, False):
            assert (state, running) in covered, (state, running)


# -- assigned to another node ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [*VM_STATES, "bogus"])
@pytest.mark.parametrize("libvirt_state", LIBVIRT_STATES)
@pytest.mark.parametrize("target_node", ("", OTHER, THIRD))
def test_elsewhere_and_running_here_is_foreign(state, libvirt_state, target_node):
    d = dom(state, node=OTHER, libvirt_state=libvirt_state, target_node=target_node)
    assert decide(d, ME, True) is Step.FOREIGN


@pytest.mark.parametrize("state", [*VM_STATES, "bogus"])
@pytest.mark.parametrize("libvirt_state", LIBVIRT_STATES)
@pytest.mark.parametrize("target_node", ("", ME, OTHER, THIRD))
def test_elsewhere_and_not_running_here_is_nothing(state, libvirt_state, target_node):
    d = dom(state, node=OTHER, libvirt_state=libvirt_state, target_node=target_node)
    assert decide(d, ME, False) is Step.NOTHING


@pytest.mark.parametrize("libvirt_state", LIBVIRT_STATES)
def test_incoming_migration_running_here_is_not_foreign(libvirt_state):
    # Mid live-migration the domain already exists on the destination: leave it to the source.
    d = dom("migrate", node=OTHER, libvirt_state=libvirt_state, target_node=ME)
    assert decide(d, ME, True) is Step.NOTHING


@pytest.mark.parametrize("state", [s for s in VM_STATES if s != "migrate"])
def test_target_node_me_only_matters_while_migrating(state):
    d = dom(state, node=OTHER, target_node=ME)
    assert decide(d, ME, True) is Step.FOREIGN


def test_unassigned_vm_running_here_is_foreign():
    assert decide(dom("start", node=""), ME, True) is Step.FOREIGN
    assert decide(dom("start", node=""), ME, False) is Step.NOTHING


# -- safety invariants over the whole input space -------------------------------------------------

KILLING = {Step.DESTROY, Step.SHUTDOWN, Step.DISABLE, Step.RESTART, Step.MIGRATE}
ALL_INPUTS = list(itertools.product(
    [*VM_STATES, "bogus"], (ME, OTHER, ""), (True, False), LIBVIRT_STATES, ("", ME, OTHER, THIRD),
    (True, False), ((), (ME,), (OTHER,)), (0, 1), ("", "old-name"),
))


def _dom(state, node, lv, target, dup, disk_changes=0, renamed_from=""):
    d = dom(state, node=node, libvirt_state=lv, target_node=target)
    d.duplicate_on = list(dup)
    d.disk_changes = disk_changes
    d.renamed_from = renamed_from
    return d


def test_invariants_over_every_input():
    for state, node, running, lv, target, seen, dup, changes, renamed in ALL_INPUTS:
        step = decide(_dom(state, node, lv, target, dup, changes, renamed), ME, running, seen)
        ctx = (state, node, running, lv, target, seen, dup, changes, renamed, step)
        # a rename is followed (files, libvirt definition) only here and only while the VM is off
        if step is Step.FOLLOW_RENAME:
            assert node == ME and not running and renamed, ctx
        # live disk changes only on a VM that runs here as recorded, with changes pending
        if step is Step.UPDATE_DISKS:
            assert node == ME and running and state == "start" and lv == "running" and changes, ctx
        assert isinstance(step, Step), ctx
        # never act on a VM assigned elsewhere, beyond reporting it
        if node != ME:
            assert step in (Step.NOTHING, Step.FOREIGN, Step.CLEAR_DUPLICATE), ctx
        # never start what already runs here (a VM must never run twice)
        if running:
            assert step not in (Step.START, Step.HAND_OVER, Step.RECORD_STOPPED), ctx
        # never try to stop or move what does not run here
        if not running:
            assert step not in KILLING and step is not Step.FOREIGN and step is not Step.RECORD_RUNNING, ctx
        # only a running VM with an intent to run is started; never a stop-like intent
        if step is Step.START:
            assert state in ("start", "restart", "migrate") and node == ME and not running, ctx
        # a VM this daemon saw running and that vanished is never started again on belief
        if seen and not running and state == "start":
            assert step is not Step.START, ctx
        if step is Step.MIGRATE:
            assert state == "migrate" and target not in ("", ME), ctx
        # handed over only from this node, to another, and only once libvirt here says it is off
        if step is Step.HAND_OVER:
            assert node == ME and not running and target not in ("", ME), ctx
            assert state == "migrate" or lv == "shutoff", ctx


def test_every_step_is_reachable():
    seen = {
        decide(_dom(state, node, lv, target, dup, changes, renamed), ME, running, was)
        for state, node, running, lv, target, was, dup, changes, renamed in ALL_INPUTS
    }
    assert seen == set(Step)


def test_decide_does_not_modify_the_record():
    d = dom("migrate", target_node=OTHER, libvirt_state="running")
    before = d.encode()
    decide(d, ME, True)
    assert d.encode() == before


# -- unexpected stops -----------------------------------------------------------------------------


@pytest.mark.parametrize("detail,state,reason_part", [
    (0, "stop", "shut down by itself"),
    (1, "stop", "destroyed outside pvc"),
    (2, "fail", "crashed"),
    (4, "stop", "saved outside pvc"),
    (5, "fail", "hypervisor error"),
    (6, "stop", "snapshot outside pvc"),
])
def test_unexpected_stop_known_details(detail, state, reason_part):
    new_state, reason = unexpected_stop(detail)
    assert new_state == state
    assert reason_part in reason


@pytest.mark.parametrize("detail", [3, 7, 99, -1])
def test_unexpected_stop_unknown_detail_is_stop_with_the_number(detail):
    # 3 is VIR_DOMAIN_EVENT_STOPPED_MIGRATED: not a stop "by itself", handled by the migration code.
    state, reason = unexpected_stop(detail)
    assert state == "stop"
    assert f"libvirt detail {detail}" in reason


def test_unexpected_stop_states_are_valid_vm_states_and_reasons_one_line():
    for detail in [*STOP_REASONS, 3, 42]:
        state, reason = unexpected_stop(detail)
        assert state in VM_STATES
        assert reason and "\n" not in reason


def test_only_crash_and_hypervisor_failure_are_failures():
    assert {d for d, (s, _) in STOP_REASONS.items() if s == "fail"} == {2, 5}


# -- libvirt's truth before belief ------------------------------------------------------------------


def test_a_vm_seen_running_that_vanished_is_recorded_not_restarted():
    # virsh destroy behind pvc's back: the record still says start, libvirt says gone.
    assert decide(dom("start", libvirt_state="running"), ME, False, seen_running_here=True) is Step.RECORD_LOST
    assert decide(dom("start", libvirt_state="running"), ME, False, seen_running_here=False) is Step.START


@pytest.mark.parametrize("state", [s for s in VM_STATES if s != "start"])
def test_seen_running_only_matters_for_start(state):
    d = dom(state, libvirt_state="running", target_node=OTHER)
    assert decide(d, ME, False, seen_running_here=True) is decide(d, ME, False)


def test_a_duplicate_mark_is_cleared_when_this_node_no_longer_runs_it():
    d = Domain(uuid="u", name="vm1", state="start", node=OTHER, duplicate_on=[ME])
    assert decide(d, ME, False) is Step.CLEAR_DUPLICATE
    assert decide(d, ME, True) is Step.FOREIGN
    mine = Domain(uuid="u", name="vm1", state="start", node=ME, libvirt_state="running", duplicate_on=[ME])
    assert decide(mine, ME, True) is Step.CLEAR_DUPLICATE
