"""What an operator may ask of a VM (pvc.vm_states): every action from every state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.errors import Conflict, InvalidInput
from pvc.schema import VM_STATES, Domain
from pvc.vm_states import ALLOWED_FROM, TRANSIENT, request, wait_outcome

ACTIONS = ("start", "stop", "shutdown", "restart", "disable")


def dom(state: str, *, node: str = "hv1", libvirt_state: str = "shutoff", failed_reason: str = "") -> Domain:
    return Domain(uuid="00000000-0000-0000-0000-0000000000aa", name="web1", state=state, node=node,
                  previous_node="hv0", libvirt_state=libvirt_state, failed_reason=failed_reason,
                  memory_mib=512, vcpus=2, node_limit=["hv1", "hv2"], selector="vms", autostart=True)


OK, BUSY, ALREADY, CANNOT = "ok", "busy", "already", "cannot"

# (action, state) -> outcome; the full 5 x 7 matrix written out by hand.
MATRIX = {
    "start":    {"start": ALREADY, "restart": BUSY, "shutdown": BUSY, "stop": OK,
                 "disable": OK, "migrate": BUSY, "fail": OK},
    "stop":     {"start": OK, "restart": OK, "shutdown": OK, "stop": ALREADY,
                 "disable": CANNOT, "migrate": BUSY, "fail": OK},
    "shutdown": {"start": OK, "restart": BUSY, "shutdown": BUSY, "stop": CANNOT,
                 "disable": CANNOT, "migrate": BUSY, "fail": CANNOT},
    "restart":  {"start": OK, "restart": BUSY, "shutdown": BUSY, "stop": CANNOT,
                 "disable": CANNOT, "migrate": BUSY, "fail": CANNOT},
    "disable":  {"start": OK, "restart": BUSY, "shutdown": BUSY, "stop": OK,
                 "disable": ALREADY, "migrate": BUSY, "fail": OK},
}


def test_matrix_covers_every_action_and_state():
    assert set(MATRIX) == set(ACTIONS) == set(ALLOWED_FROM)
    for action in ACTIONS:
        assert set(MATRIX[action]) == set(VM_STATES)


@pytest.mark.parametrize("action,state", [(a, s) for a in ACTIONS for s in VM_STATES])
def test_request_matrix(action, state):
    expected = MATRIX[action][state]
    d = dom(state, failed_reason="old reason")
    if expected == OK:
        new = request(d, action)
        assert new.state == action
        assert new.failed_reason == ""
        # everything else is carried over
        for field in ("uuid", "name", "node", "previous_node", "libvirt_state", "memory_mib", "vcpus",
                      "node_limit", "selector", "autostart", "target_node", "migration_method"):
            assert getattr(new, field) == getattr(d, field), field
        # the input record is left alone
        assert d.state == state and d.failed_reason == "old reason"
        return
    with pytest.raises(Conflict) as exc:
        request(d, action)
    msg = str(exc.value)
    assert "web1" in msg and "\n" not in msg
    if expected == BUSY:
        assert f"busy ({state} in progress)" in msg
    elif expected == ALREADY:
        assert f"already in state {state}" in msg
    else:
        assert f"cannot {action} from state {state}" in msg


@pytest.mark.parametrize("state", TRANSIENT)
def test_stop_cuts_short_a_hanging_shutdown_or_restart_but_not_a_migration(state):
    if state == "migrate":
        with pytest.raises(Conflict, match="busy"):
            request(dom(state), "stop")
    else:
        assert request(dom(state), "stop").state == "stop"


@pytest.mark.parametrize("action,state", [(a, s) for a in ACTIONS for s in VM_STATES if MATRIX[a][s] == OK])
def test_allowed_request_needs_an_assigned_node(action, state):
    with pytest.raises(Conflict) as exc:
        request(dom(state, node=""), action)
    assert "web1 has no node assigned" in str(exc.value)


@pytest.mark.parametrize("action,state", [(a, s) for a in ACTIONS for s in VM_STATES if MATRIX[a][s] != OK])
def test_refused_transition_reported_before_missing_node(action, state):
    with pytest.raises(Conflict) as exc:
        request(dom(state, node=""), action)
    assert "no node assigned" not in str(exc.value)


@pytest.mark.parametrize("action", ["migrate", "fail", "", "START", "reboot"])
def test_unknown_action_is_invalid_input(action):
    with pytest.raises(InvalidInput) as exc:
        request(dom("start"), action)
    assert repr(action) in str(exc.value)


def test_request_result_roundtrips_through_schema():
    new = request(dom("stop"), "start")
    assert Domain.decode(new.encode()) == new


@given(state=st.sampled_from(VM_STATES), action=st.sampled_from(ACTIONS), node=st.sampled_from(["", "hv1"]))
def test_property_request_either_sets_state_or_raises_conflict(state, action, node):
    d = dom(state, node=node)
    try:
        new = request(d, action)
    except Conflict:
        assert MATRIX[action][state] != OK or not node
    else:
        assert MATRIX[action][state] == OK and node
        assert new.state == action and new.node == node


# -- wait_outcome ---------------------------------------------------------------------------------

PENDING = (False, "")
DONE = (True, "")

# (action, state, libvirt_state, failed_reason) -> (finished, error substring or "")
WAIT_TABLE = [
    # start-like: done once it runs in state start
    *[(a, "start", "running", "", DONE) for a in ("start", "restart", "migrate")],
    *[(a, "start", "shutoff", "", PENDING) for a in ("start", "restart", "migrate")],
    *[(a, "restart", "running", "", PENDING) for a in ("start", "restart", "migrate")],
    *[(a, "migrate", "running", "", PENDING) for a in ("start", "restart", "migrate")],
    *[(a, "shutdown", "shutoff", "", PENDING) for a in ("start", "restart", "migrate")],
    *[(a, "stop", "shutoff", "", (True, "web1 stopped: stopped before it came up"))
      for a in ("start", "restart", "migrate")],
    *[(a, "disable", "shutoff", "bad image", (True, "web1 stopped: bad image"))
      for a in ("start", "restart", "migrate")],
    # stop-like: done once off in state stop
    *[(a, "stop", "shutoff", "", DONE) for a in ("stop", "shutdown")],
    *[(a, "stop", "running", "", PENDING) for a in ("stop", "shutdown")],
    *[(a, "shutdown", "running", "", PENDING) for a in ("stop", "shutdown")],
    *[(a, "shutdown", "shutoff", "", PENDING) for a in ("stop", "shutdown")],
    *[(a, "start", "running", "", PENDING) for a in ("stop", "shutdown")],
    *[(a, "start", "running", "shutdown timed out", (True, "web1 is still running: shutdown timed out"))
      for a in ("stop", "shutdown")],
    *[(a, "disable", "shutoff", "", PENDING) for a in ("stop", "shutdown")],
    # disable: done once off in state disable
    ("disable", "disable", "shutoff", "", DONE),
    ("disable", "disable", "running", "", PENDING),
    ("disable", "stop", "shutoff", "", PENDING),
    ("disable", "start", "running", "", PENDING),
    ("disable", "start", "running", "shutdown timed out", (True, "web1 is still running: shutdown timed out")),
    # fail ends every wait with the reason
    *[(a, "fail", lv, "no memory", (True, "web1 failed: no memory"))
      for a in ("start", "restart", "migrate", "stop", "shutdown", "disable") for lv in ("running", "shutoff")],
    *[(a, "fail", "shutoff", "", (True, "web1 failed: unknown reason"))
      for a in ("start", "restart", "migrate", "stop", "shutdown", "disable")],
]


@pytest.mark.parametrize("action,state,libvirt_state,failed_reason,expected", WAIT_TABLE)
def test_wait_outcome(action, state, libvirt_state, failed_reason, expected):
    finished, error = wait_outcome(action, dom(state, libvirt_state=libvirt_state, failed_reason=failed_reason))
    assert finished is expected[0]
    if expected[1]:
        assert expected[1] in error
        assert "\n" not in error
    else:
        assert error == ""


def test_wait_table_covers_every_action():
    assert {row[0] for row in WAIT_TABLE} == {"start", "restart", "migrate", "stop", "shutdown", "disable"}


@pytest.mark.parametrize("action", ["bogus", "", "fail"])
def test_wait_outcome_unknown_action(action):
    with pytest.raises(InvalidInput):
        wait_outcome(action, dom("start", libvirt_state="running"))


@given(action=st.sampled_from(["start", "restart", "migrate", "stop", "shutdown", "disable"]),
       state=st.sampled_from(VM_STATES),
       libvirt_state=st.sampled_from(["running", "shutoff", "paused", ""]),
       failed_reason=st.sampled_from(["", "why"]))
def test_property_wait_outcome_shape(action, state, libvirt_state, failed_reason):
    finished, error = wait_outcome(action, dom(state, libvirt_state=libvirt_state, failed_reason=failed_reason))
    # an error always finishes the wait; success is only reported in the action's goal state
    if error:
        assert finished
    if finished and not error:
        goal = {"stop": "stop", "shutdown": "stop", "disable": "disable"}.get(action, "start")
        assert state == goal
        assert (libvirt_state == "running") == (goal == "start")
    # a transient state never finishes a wait successfully
    if state in TRANSIENT:
        assert not (finished and not error)
