"""What an operator may ask of a VM in each state (pure).

``state`` in a domain record is the operator's intent; the daemons move the transient ones on
(shutdown -> stop, restart -> start, migrate -> start). A request against a VM in a transient
state is refused: the earlier request has not been carried out yet.
"""

from __future__ import annotations

from pvc.errors import Conflict, InvalidInput
from pvc.schema import WANTS_RUNNING, Domain

# What a new request clears: the outcome of the one before (why it failed, a note, a displacement).
CLEARED = {"failed_reason": "", "note": "", "displaced": ""}

TRANSIENT = ("restart", "shutdown", "migrate")

# action -> states it may be requested from
ALLOWED_FROM = {
    "start": ("stop", "disable", "fail"),
    # stop also cuts short a shutdown or restart that hangs
    "stop": ("start", "fail", "shutdown", "restart"),
    "shutdown": ("start",),
    "restart": ("start",),
    "disable": ("start", "stop", "fail"),
}

ALREADY = {"start": "start", "stop": "stop", "disable": "disable"}


def request(dom: Domain, action: str) -> Domain:
    """Return the record with the action requested, or raise why it cannot be."""
    if action not in ALLOWED_FROM:
        raise InvalidInput(f"unknown VM action {action!r}")
    if dom.state in TRANSIENT and dom.state not in ALLOWED_FROM[action]:
        raise Conflict(f"VM {dom.name} is busy ({dom.state} in progress); try again when it finishes")
    if ALREADY.get(action) == dom.state:
        raise Conflict(f"VM {dom.name} is already in state {dom.state}")
    if dom.state not in ALLOWED_FROM[action]:
        raise Conflict(f"VM {dom.name} cannot {action} from state {dom.state}")
    if not dom.node:
        raise Conflict(f"VM {dom.name} has no node assigned")
    if action == "start" and pending_hand_over(dom):
        # Started while its node still has to confirm it off: it is started on the new node.
        return _with(dom, state="migrate", **CLEARED)
    return _with(dom, state=action, **CLEARED)


def pending_hand_over(dom: Domain) -> bool:
    """A VM not wanted running with a target: its node hands it over once libvirt confirms it off."""
    return bool(dom.target_node) and dom.target_node != dom.node and dom.state not in WANTS_RUNNING


def _with(dom: Domain, **changes) -> Domain:
    import msgspec

    return msgspec.structs.replace(dom, **changes)


def wait_outcome(action: str, dom: Domain) -> tuple[bool, str]:
    """For ``--wait``: (finished, error). error is "" on success."""
    if action not in ("start", "restart", "migrate", "stop", "shutdown", "disable"):
        raise InvalidInput(f"unknown VM action {action!r}")
    if dom.state == "fail":
        return True, f"VM {dom.name} failed: {dom.failed_reason or 'unknown reason'}"
    running = dom.libvirt_state == "running"
    if action in ("start", "restart", "migrate"):
        if dom.state == "start" and running:
            return True, ""
        if dom.state in ("stop", "disable"):
            return True, f"VM {dom.name} stopped: {dom.failed_reason or 'stopped before it came up'}"
        return False, ""
    if action in ("stop", "shutdown"):
        if dom.state == "stop" and not running:
            return True, ""
        if dom.state == "start" and dom.failed_reason:
            return True, f"VM {dom.name} is still running: {dom.failed_reason}"
        return False, ""
    if action == "disable":
        if dom.state == "disable" and not running:
            return True, ""
        if dom.state == "start" and dom.failed_reason:
            return True, f"VM {dom.name} is still running: {dom.failed_reason}"
        return False, ""
    raise InvalidInput(f"unknown VM action {action!r}")


def migration_outcome(dom: Domain | None, target: str) -> tuple[bool, str]:
    """Following a VM sent to ``target``: (finished, error)."""
    if dom is None:
        return True, "the VM was undefined"
    if dom.state == "fail":
        return True, f"VM {dom.name} failed: {dom.failed_reason or 'unknown reason'}"
    if dom.node == target:
        if dom.state == "start" and dom.libvirt_state == "running":
            return True, ""
        if dom.state in ("stop", "disable"):
            return True, f"VM {dom.name} stopped on {target}: {dom.failed_reason or 'stopped'}"
        return False, ""
    if dom.state in ("stop", "disable"):
        return True, f"VM {dom.name} stopped before it moved: {dom.failed_reason or 'stopped'}"
    if dom.state == "start" and not dom.target_node and dom.failed_reason:
        return True, f"VM {dom.name} did not move: {dom.failed_reason}"
    return False, ""


def migrate_request(dom: Domain, mode: str, target: str, force: bool = False, source_fenced: bool = False) -> Domain:
    """The record after `pvc vm migrate|move|unmigrate`.

    migrate   records the current node as previous_node; refused if the VM already has one,
              unless forced, and a forced migrate keeps the previous_node it had (the VM's home).
    move      a permanent move: previous_node is cleared.
    unmigrate back to previous_node, which is cleared.
    A running VM gets state "migrate" (its node's daemon moves it); one that is not running gets
    a pending hand-over (``target_node``), carried out by its node once libvirt confirms it off.
    """
    if dom.state in TRANSIENT:
        raise Conflict(f"VM {dom.name} is busy ({dom.state} in progress); try again when it finishes")
    if mode == "migrate" and dom.previous_node and not force:
        raise Conflict(
            f"VM {dom.name} was already migrated from {dom.previous_node}; use --force to migrate it again "
            f"(previous_node stays {dom.previous_node}) or `pvc vm unmigrate` to return it"
        )
    if mode == "unmigrate" and not dom.previous_node:
        raise Conflict(f"VM {dom.name} has no previous node to return to")
    if target == dom.node:
        raise Conflict(f"VM {dom.name} is already on node {target}")
    if mode == "migrate":
        previous = dom.previous_node if dom.previous_node else dom.node
    elif mode in ("move", "unmigrate"):
        previous = ""
    else:
        raise InvalidInput(f"unknown migration mode {mode!r}")
    if dom.state == "start":
        return _with(dom, state="migrate", target_node=target, previous_node=previous, **CLEARED)
    if source_fenced:
        # Its node is confirmed powered off: nothing runs there, the VM may be reassigned now.
        return _with(dom, node=target, target_node="", previous_node=previous, **CLEARED,
                     libvirt_state="shutoff")
    # Never reassigned on its desired state alone: its node's daemon hands it over once its
    # libvirt confirms the VM off (a stop just requested may not have been carried out).
    return _with(dom, target_node=target, previous_node=previous, **CLEARED)


def renamed(dom: Domain, new: str) -> Domain:
    """The record of a VM renamed to ``new`` (a valid name, checked by pvc.names), or why it may not be:
    only a VM that is off, with no hand-over pending, is renamed (libvirt cannot rename a running domain)."""
    if new == dom.name:
        raise Conflict(f"VM {dom.name} is already named {new}")
    if dom.state not in ("stop", "disable", "fail") or dom.libvirt_state != "shutoff":
        state = "running" if dom.libvirt_state != "shutoff" else dom.state
        raise Conflict(f"VM {dom.name} is {state}; only a stopped VM can be renamed (libvirt cannot rename a "
                       f"running domain): pvc vm shutdown {dom.name} --wait first")
    if pending_hand_over(dom):
        raise Conflict(f"VM {dom.name} is being handed over to {dom.target_node}; rename it once that is done")
    original = dom.renamed_from or dom.name
    return _with(dom, name=new, renamed_from="" if original == new else original)


def check_hand_over_possible(dom: Domain, source_state: str) -> None:
    """A VM that is not running moves only by its node's daemon (or a fenced node's recovery):
    refuse at once when no daemon there can confirm it is off."""
    if source_state in ("run", "init", "fenced"):
        return
    raise Conflict(
        f"VM {dom.name} cannot move: the daemon on node {dom.node} is {source_state or 'not running'}, so nothing "
        f"can confirm the VM is off there; start that daemon, or if the node is powered off, "
        f"`pvc node fence {dom.node} --confirm-powered-off`"
    )


def hand_over_outcome(dom: Domain | None, target: str) -> tuple[bool, str]:
    """Following a VM that is not running, handed to ``target``: (finished, error)."""
    if dom is None:
        return True, "the VM was undefined"
    if dom.node == target:
        return True, ""
    if dom.state == "migrate":  # started meanwhile: now a migration
        return migration_outcome(dom, target)
    if dom.target_node != target:
        return True, f"VM {dom.name} stays on {dom.node}: the move to {target} was superseded"
    return False, ""
