"""How a VM record changes when a node's daemon has done or seen something (pure).

Each function takes the current record (read with its version) and what the node knows from its
own libvirt, and returns the new record, or None when the change no longer applies (the record
moved on meanwhile: another node owns it, the operator asked something else). The daemons only
apply these with versioned writes; what a record may become is decided here and in
``vm_states`` (what an operator may ask), nowhere else.
"""

from __future__ import annotations

import msgspec

from pvc.fencing import is_recovery_note
from pvc.schema import WANTS_RUNNING, Domain, Migration
from pvc.vm_states import CLEARED


def _with(dom: Domain, **changes) -> Domain:
    return msgspec.structs.replace(dom, **changes)


def _mine(d: Domain, me: str) -> bool:
    return d.node == me


def started(d: Domain, me: str, libvirt_state: str) -> Domain | None:
    """Libvirt here runs it now."""
    if not _mine(d, me) or d.state not in WANTS_RUNNING:
        return None
    # A recovery note stays visible after the start; any other reason is cleared.
    reason = d.failed_reason if is_recovery_note(d.failed_reason) else ""
    return _with(d, state="start", libvirt_state=libvirt_state, failed_reason=reason, target_node="")


def start_failed(d: Domain, me: str, reason: str) -> Domain | None:
    if not _mine(d, me) or d.state not in WANTS_RUNNING:
        return None
    return _with(d, state="fail", failed_reason=reason, libvirt_state="shutoff", target_node="")


def stopped(d: Domain, me: str, note: str = "") -> Domain | None:
    """Libvirt here confirmed it off after pvc stopped it (or it was already off)."""
    if not _mine(d, me):
        return None
    return _with(d, state="stop" if d.state == "shutdown" else d.state, libvirt_state="shutoff",
                 note=note or d.note)


def stopped_outside(d: Domain, me: str, state: str, reason: str) -> Domain | None:
    """It stopped here without pvc asking (virsh destroy, a guest power-off, a crash)."""
    if not _mine(d, me) or d.state not in ("start", "migrate"):
        return None
    return _with(d, state=state, failed_reason=reason, libvirt_state="shutoff", target_node="")


def followed(d: Domain, me: str, found: str, reason: str) -> Domain | None:
    """It was migrated behind pvc's back and runs on ``found`` now (asked of that node's libvirt)."""
    if not _mine(d, me):
        return None
    return _with(d, node=found, failed_reason=reason, target_node="", libvirt_state="running")


def shutdown_left_running(d: Domain, me: str, reason: str) -> Domain | None:
    if not _mine(d, me):
        return None
    return _with(d, state="start", failed_reason=reason, target_node="")


def handed_over(d: Domain, me: str, now: float, seconds: float = 0.0, note: str = "") -> Domain | None:
    """Libvirt here confirmed it off: give it to its target (which starts it if it is wanted running)."""
    if not _mine(d, me) or not d.target_node or d.target_node == me:
        return None
    if d.state not in ("migrate", "stop", "disable", "fail"):
        return None
    method = "shutdown" if d.state == "migrate" else "off"
    return _with(d, node=d.target_node, target_node="", state="start" if d.state == "migrate" else d.state,
                 libvirt_state="shutoff", note=note or d.note,
                 last_migration=Migration(source=me, target=d.target_node, method=method, seconds=seconds,
                                          time=now, note=note))


def migrated_live(d: Domain, me: str, target: str, now: float, seconds: float) -> Domain | None:
    """Libvirt on ``target`` runs it and libvirt here no longer does."""
    if not _mine(d, me):
        return None
    return _with(d, node=target, target_node="", state="start", libvirt_state="running", failed_reason="",
                 last_migration=Migration(source=me, target=target, method="live", seconds=seconds, time=now))


def migration_failed(d: Domain, me: str, reason: str) -> Domain | None:
    """It stays running here (a ``live`` VM never falls back): the request ends with the reason."""
    if not _mine(d, me) or d.state != "migrate":
        return None
    # A plain migrate recorded this node as previous_node; it never left, so it has none now.
    previous = "" if d.previous_node == me else d.previous_node
    return _with(d, state="start", target_node="", failed_reason=reason, previous_node=previous)


def lost_in_migration(d: Domain, me: str, target: str) -> Domain | None:
    if not _mine(d, me):
        return None
    return _with(d, state="fail", target_node="", libvirt_state="shutoff",
                 failed_reason=f"lost during migration to {target}: running on neither node")


def duplicate_seen(d: Domain, me: str) -> Domain | None:
    """Libvirt here runs a VM assigned elsewhere: say so in the record (never kill it: which copy
    is the right one is the operator's call)."""
    if _mine(d, me) or me in d.duplicate_on:
        return None
    return _with(d, duplicate_on=sorted([*d.duplicate_on, me]))


def duplicate_gone(d: Domain, me: str) -> Domain | None:
    if me not in d.duplicate_on:
        return None
    return _with(d, duplicate_on=[n for n in d.duplicate_on if n != me])


def rename_followed(d: Domain, me: str, name: str) -> Domain | None:
    """Its console log file and libvirt definition here carry ``name`` now (a later rename: not done)."""
    if not _mine(d, me) or not d.renamed_from or d.name != name:
        return None
    return _with(d, renamed_from="")


def disks_updated(d: Domain, me: str, seen: int, note: str = "") -> Domain | None:
    """The running domain's RBD disks were brought in line with the stored XML (``note``: what
    could not be applied live); ``seen`` is the change counter that was looked at."""
    if not _mine(d, me) or d.disk_changes != seen:
        return None  # moved on meanwhile (another change: looked at again)
    return _with(d, disk_changes=0, note=note or d.note)


# -- flush and ready (written by the flushing node; carried out by the VM's node) --------------

def flush_away(d: Domain, me: str, target: str) -> Domain | None:
    """Flush of ``me``: a running VM migrates; one that is not running gets a pending hand-over."""
    if not _mine(d, me) or d.state == "disable":
        return None
    if d.state in ("start", "restart"):
        return _with(d, state="migrate", target_node=target, previous_node=me, failed_reason="", note="")
    if d.state in ("stop", "fail", "shutdown"):
        return _with(d, target_node=target, previous_node=me, note="")
    return None


def come_home(d: Domain, me: str) -> Domain | None:
    """Ready of ``me``: a VM whose previous_node is ``me`` returns (by its current node's daemon)."""
    if d.previous_node != me or d.node == me or d.state == "disable":
        return None
    if d.state == "start":
        return _with(d, state="migrate", target_node=me, previous_node="", failed_reason="", note="")
    if d.state in ("stop", "fail", "shutdown"):
        return _with(d, target_node=me, previous_node="", note="")
    return None


def autostarted(d: Domain, me: str) -> Domain | None:
    """Ready of ``me``: its stopped autostart VM starts (one pvc left ``fail`` for lack of a node too)."""
    if not _mine(d, me) or not d.autostart or d.target_node:
        return None
    if d.state != "stop" and not (d.state == "fail" and d.displaced):
        return None
    return _with(d, state="start", **CLEARED)


def displaced_to(d: Domain, me: str, source_fenced: bool) -> Domain | None:
    """Ready of ``me``: an autostart VM pvc stopped for lack of a node elsewhere is started here: handed
    over by its node once libvirt there confirms it off (state migrate), or, its node being fenced
    (confirmed powered off), reassigned at once."""
    if _mine(d, me) or not d.autostart or not d.displaced or d.state not in ("stop", "fail") or d.target_node:
        return None
    previous = d.previous_node or d.node  # its home: `pvc node ready` there brings it back
    if source_fenced:
        return _with(d, node=me, state="start", libvirt_state="shutoff", previous_node=previous, **CLEARED)
    return _with(d, state="migrate", target_node=me, previous_node=previous, **CLEARED)


def shut_down_unmovable(d: Domain, me: str, why: str = "") -> Domain | None:
    """A flush of ``me`` found nowhere for it (policy shutdown): shut down, marked ``displaced``."""
    if not _mine(d, me) or d.state != "start":
        return None
    return _with(d, state="shutdown", displaced=why or f"node {me} was flushed and no node had room for it")
