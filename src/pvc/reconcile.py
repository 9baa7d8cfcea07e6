"""What a node's daemon should do about one VM (pure).

Given the VM's record and what libvirt on this node says, decide the single next step. The
daemon executes it and records the outcome (``vm_outcomes``), which triggers the next decision.

Only libvirt's truth moves a VM: a VM is handed to another node by its own node's daemon, once its
libvirt here says it is off; a VM this daemon saw running that vanished without pvc asking is
recorded as stopped outside pvc, never started again on what the record believes.
"""

from __future__ import annotations

from enum import Enum

from pvc.schema import Domain


class Step(Enum):
    NOTHING = "nothing"
    START = "start"                  # not running here, should be
    DESTROY = "destroy"              # stop: force off
    SHUTDOWN = "shutdown"            # graceful, then the timeout policy; then state stop
    DISABLE = "disable"              # graceful like shutdown, state stays disable
    RESTART = "restart"              # shutdown then start
    MIGRATE = "migrate"              # move to target_node (live, else by shutdown)
    HAND_OVER = "hand_over"          # to target_node, now that libvirt here confirms it off
    RECORD_LOST = "record_lost"      # seen running here, gone without pvc asking: stopped outside pvc
    RECORD_RUNNING = "record_running"    # libvirt_state in the record says otherwise
    RECORD_STOPPED = "record_stopped"    # state=shutdown already off -> stop; libvirt_state shutoff
    FOREIGN = "foreign"              # runs here but is assigned elsewhere: report, never kill
    CLEAR_DUPLICATE = "clear_duplicate"  # the record lists this node as running a copy; it does not
    UPDATE_DISKS = "update_disks"    # runs here; its stored XML's RBD disks changed: attach/detach live
    FOLLOW_RENAME = "follow_rename"  # renamed while off: rename its console log file and libvirt definition


def decide(dom: Domain, me: str, running_here: bool, seen_running_here: bool = False) -> Step:
    """``seen_running_here``: this daemon saw libvirt run the VM and has not stopped it since."""
    if dom.node != me:
        if running_here and not (dom.state == "migrate" and dom.target_node == me):
            return Step.FOREIGN
        return Step.CLEAR_DUPLICATE if me in dom.duplicate_on else Step.NOTHING
    if me in dom.duplicate_on:
        return Step.CLEAR_DUPLICATE
    if dom.renamed_from and not running_here:  # before a start, so the guest logs to the followed file
        return Step.FOLLOW_RENAME
    state = dom.state
    if state == "start":
        if not running_here:
            return Step.RECORD_LOST if seen_running_here else Step.START
        if dom.libvirt_state != "running":
            return Step.RECORD_RUNNING
        return Step.UPDATE_DISKS if dom.disk_changes else Step.NOTHING
    if state == "restart":
        return Step.RESTART if running_here else Step.START
    if state == "migrate":
        if dom.target_node and dom.target_node != me:
            return Step.MIGRATE if running_here else Step.HAND_OVER
        return Step.START if not running_here else Step.RECORD_RUNNING
    if state in ("stop", "shutdown", "disable", "fail"):
        if running_here:
            return {"stop": Step.DESTROY, "shutdown": Step.SHUTDOWN, "disable": Step.DISABLE, "fail": Step.DESTROY}[state]
        if state == "shutdown" or dom.libvirt_state != "shutoff":
            return Step.RECORD_STOPPED
        if dom.target_node and dom.target_node != me:
            return Step.HAND_OVER
    return Step.NOTHING


# libvirt STOPPED/CRASHED event details -> (new state, reason) for a VM that stopped by itself.
STOP_REASONS = {
    0: ("stop", "guest shut down by itself"),
    1: ("stop", "destroyed outside pvc"),
    2: ("fail", "crashed"),
    4: ("stop", "saved outside pvc"),
    5: ("fail", "failed (hypervisor error)"),
    6: ("stop", "stopped from a snapshot outside pvc"),
}


def unexpected_stop(detail: int) -> tuple[str, str]:
    return STOP_REASONS.get(detail, ("stop", f"stopped outside pvc (libvirt detail {detail})"))
