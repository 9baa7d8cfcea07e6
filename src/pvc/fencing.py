"""Dead-node fencing and VM recovery: the decisions (pure; the primary's ``fencing`` duty does the I/O).

A node is *dead* when its daemon claimed to be up (daemon_state init/run/shutdown) and its
presence key (``/nodes/<n>/alive``, ephemeral) has been gone for ``dead_after`` seconds. A dead
node is powered off through its BMC (IPMI), or declared off by an operator (`pvc node fence
--confirm-powered-off`); only such a *confirmed* power-off makes it ``fenced`` and lets its VMs be
started elsewhere. Without it nothing moves: the VMs may still run on the node, and a VM must
never run twice. Where fencing stands is a ``FenceState`` record (``/nodes/<n>/fence``): every
change of it, and of a VM record by recovery, is decided here.
"""

from __future__ import annotations

import dataclasses
import enum

import msgspec

from pvc import placement
from pvc.errors import PvcError
from pvc.schema import WANTS_RUNNING, Domain, FenceState

# A daemon in these states said it was up: losing its presence means it died.
UP_STATES = ("init", "run", "shutdown")
# Fence records that describe an unfinished fence: cleared ("returned") when the daemon comes back.
OPEN_STATUSES = ("dead", "failed", "fenced")


def fence_due(daemon_state: str, alive: bool, gone_since: float | None, now: float, dead_after: float) -> bool:
    """Should this node be fenced now? Also true for a node already marked dead whose fence
    failed (the caller paces the retries). A node that stopped cleanly ("stop") is never fenced."""
    if alive or gone_since is None:
        return False
    if daemon_state not in (*UP_STATES, "dead"):
        return False
    return now - gone_since >= dead_after


def ipmitool_argv(hostname: str, port: int, username: str, *command: str, cipher_suite: int = -1) -> list[str]:
    """The ipmitool command line; the password goes in the environment (IPMI_PASSWORD, ``-E``) so it
    never shows in the process list. -N/-R: one short try per call; the duty retries on its own."""
    suite = ["-C", str(cipher_suite)] if cipher_suite >= 0 else []
    return ["ipmitool", "-I", "lanplus", "-H", hostname, "-p", str(port), "-U", username, "-E", *suite,
            "-N", "2", "-R", "1", *command]


def power_is_off(status_output: str) -> bool:
    """``ipmitool chassis power status`` prints "Chassis Power is off" (or "... on")."""
    return "chassis power is off" in status_output.lower()


# -- what to do with one node (the duty asks once a second) -------------------------------------------


class Action(enum.Enum):
    NOTHING = "nothing"
    PAUSE = "pause"  # dead, but not fenced now (maintenance, policy none, no IPMI): mark dead, say why
    FENCE = "fence"  # mark dead (if not yet) and power it off
    RECOVER = "recover"  # power-off confirmed: recover its VMs
    RETURNED = "returned"  # its daemon is back before the fence finished: close the record


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def no_ipmi_reason(node: str) -> str:
    return (f"no IPMI configured (fencing.ipmi on {node}): its VMs are not moved; power it off, then run "
            f"`pvc node fence {node} --confirm-powered-off`")


def decide(node: str, *, alive: bool, daemon_state: str, gone_for: float | None, fence: FenceState, now: float,
           dead_after: float, maintenance: bool, policy: str, has_ipmi: bool) -> Decision:
    """The next step for one node. ``gone_for``: seconds this primary has seen it without presence
    (None: not seen gone); ``now``: epoch seconds, compared with the record's retry schedule (which a
    new primary inherits)."""
    if alive:
        # Back before the fence finished (a recovered node's record stays as history).
        return Decision(Action.RETURNED if fence.status in OPEN_STATUSES else Action.NOTHING)
    fenced = daemon_state == "fenced"
    due = gone_for is not None and fence_due(daemon_state, False, 0.0, gone_for, dead_after)
    if maintenance and (fenced or due):
        # An operator is at work: a dead node is reported; nothing is fenced or recovered automatically.
        return Decision(Action.PAUSE, "maintenance is on: its VMs are recovered once it is turned off" if fenced
                        else "maintenance is on: not fenced, nothing recovered until it is turned off")
    if fenced:
        return Decision(Action.RECOVER if fence.status != "recovered" else Action.NOTHING)
    if not due:
        return Decision(Action.NOTHING)
    if policy == "none":
        return Decision(Action.PAUSE, "fencing.policy is none: its VMs stay assigned to it")
    if not has_ipmi:
        return Decision(Action.PAUSE, no_ipmi_reason(node))
    if fence.status == "failed" and now < fence.next_attempt:
        return Decision(Action.NOTHING)  # waiting for the next attempt of the backoff schedule
    return Decision(Action.FENCE)


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds after the ``attempts``-th failed attempt before the next: base, 2 base, 4 base, ... cap.
    A BMC that does not answer is often busy or rebooting: retry soon, then back off so that a
    broken one is not hammered (and its log not flooded) for hours."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def declared_dead(fence: FenceState, now: float, by: str, reason: str = "") -> FenceState:
    """The record once the node is declared dead (a fresh one unless the old one is still open)."""
    if fence.status in ("dead", "failed"):
        return msgspec.structs.replace(fence, message=reason or fence.message, by=by)
    return FenceState(status="dead", dead_since=now, message=reason, by=by)


def attempt_failed(fence: FenceState, error: str, now: float, base: float, cap: float, by: str) -> FenceState:
    attempts = fence.attempts + 1
    delay = retry_delay(attempts, base, cap)
    return msgspec.structs.replace(fence, status="failed", attempts=attempts, last_attempt=now,
                                   next_attempt=now + delay, by=by,
                                   message=f"attempt {attempts} failed: {error}; next attempt in {delay:g} s")


def confirmed_off(fence: FenceState, method: str, now: float, by: str) -> FenceState:
    """Powered off, confirmed by IPMI's power status or by an operator: recovery may begin."""
    how = "IPMI power status says off" if method == "ipmi" else "declared powered off by an operator"
    return msgspec.structs.replace(fence, status="fenced", method=method, fenced_at=now, last_attempt=now,
                                   next_attempt=0.0, by=by, message=f"{how}; recovering its VMs",
                                   dead_since=fence.dead_since or now)


def recovered(fence: FenceState, count: int, now: float, by: str) -> FenceState:
    return msgspec.structs.replace(fence, status="recovered", recovered_at=now, recovered_vms=count, by=by,
                                   message=f"{count} VM record(s) recovered")


def returned(fence: FenceState, now: float, by: str) -> FenceState:
    if fence.status == "fenced":  # a recovery may have begun: say so rather than "nothing moved"
        message = ("its daemon came back after the power-off was confirmed, before the recovery finished; VMs "
                   "already recovered stay where they are (their previous_node names this node)")
    else:
        message = "its daemon came back before the fence finished; nothing was moved"
    return msgspec.structs.replace(fence, status="returned", next_attempt=0.0, by=by, message=message)


def operator_fence_refusal(node: str, *, alive: bool) -> str:
    """Why `pvc node fence NODE --confirm-powered-off` is refused ("" = allowed). A live daemon
    proves the host is on: declaring it off would start its VMs a second time elsewhere."""
    if alive:
        return (f"node {node} is not powered off: its daemon is running (its presence key is held); "
                f"refusing to declare it off")
    return ""


RECOVERY_NOTE = "recovered from fenced node"


def is_recovery_note(reason: str) -> bool:
    """A failed_reason that records a recovery (kept when the VM starts), not a failure."""
    return reason.startswith(RECOVERY_NOTE)


def _wanted_running(dom: Domain) -> bool:
    return dom.state in WANTS_RUNNING


def recover_one(dom: Domain, fenced: str, candidates: list[placement.Candidate], default_selector: str,
                found_on: str = "", needs_storage: bool = False) -> dict:
    """The changes to one VM record assigned to the fenced (powered-off) node; {} for none.

    ``found_on``: a node whose libvirt already runs the VM (a migration that completed just before
    the node died): the record follows the truth instead of starting a second copy.
    Stopped VMs (stop/disable/fail) stay assigned to the fenced node: nothing runs, nothing is lost,
    and `pvc node ready` or `pvc vm move` decides later; only their libvirt_state is corrected.
    """
    if dom.node != fenced:
        return {}
    reason = f"{RECOVERY_NOTE} {fenced}"
    if found_on:
        return dict(node=found_on, state="start", target_node="", libvirt_state="running",
                    previous_node=fenced, failed_reason=f"{reason} (already running on {found_on})")
    if _wanted_running(dom):
        try:
            target = placement.choose_node(candidates, selector=dom.selector or default_selector,
                                           memory_mib=dom.memory_mib, exclude=fenced, node_limit=dom.node_limit,
                                           needs_storage=needs_storage)
        except PvcError as exc:
            # Never lost: the record stays, with the reason; the operator starts it when a node fits,
            # or (autostart) the next node to become ready with room does (pvc.autostart).
            why = f"node {fenced} was fenced and the VM could not be recovered: {exc}"
            return dict(state="fail", target_node="", libvirt_state="shutoff", failed_reason=why, displaced=why)
        return dict(node=target, state="start", target_node="", libvirt_state="shutoff",
                    previous_node=fenced, failed_reason=reason)
    if dom.state == "shutdown":  # it was being shut down; the power-off finished that
        return dict(state="stop", libvirt_state="shutoff", target_node="")
    if dom.libvirt_state != "shutoff":
        return dict(libvirt_state="shutoff")
    return {}


def recovery_plan(fenced: str, domains: list[Domain], candidates: list[placement.Candidate],
                  default_selector: str = "mem", running: dict[str, str] | None = None,
                  daemon_state: str = "fenced", needs_storage: frozenset[str] = frozenset()) -> dict[str, dict]:
    """uuid -> changes for every VM of the fenced node. Each placement counts against its target's
    memory and VM count before the next one is chosen, so recovered VMs spread out instead of all
    landing on the node that looked emptiest at the start.

    Recovery is the one path that may reassign a VM whose node's libvirt cannot confirm it off, so
    it requires the node's confirmed power-off (``daemon_state`` fenced): anything else plans nothing."""
    if daemon_state != "fenced":
        return {}
    running = running or {}
    pool = {c.name: c for c in candidates}
    plan: dict[str, dict] = {}
    for dom in sorted(domains, key=lambda d: d.name):
        changes = recover_one(dom, fenced, list(pool.values()), default_selector, running.get(dom.uuid, ""),
                              needs_storage=dom.uuid in needs_storage)
        if not changes:
            continue
        plan[dom.uuid] = changes
        target = changes.get("node")
        if target in pool and changes.get("state") == "start":
            c = pool[target]
            pool[target] = msgspec.structs.replace(
                c, memory_allocated_mib=c.memory_allocated_mib + dom.memory_mib,
                vcpus_allocated=c.vcpus_allocated + dom.vcpus, domains_count=c.domains_count + 1)
    return plan


def recovery_change(current: Domain, planned_from: Domain, changes: dict, fenced: str) -> Domain | None:
    """The record to write for one planned recovery, given the record as it is now: None when
    someone changed the VM since the plan was made (it moved, or its state changed): the plan is
    stale for it and the next look decides again. Applying it twice changes nothing the second
    time (the VM is no longer on the fenced node): a new primary may safely re-run a recovery."""
    if not changes or current.node != fenced or current.state != planned_from.state:
        return None
    new = msgspec.structs.replace(current, **changes)
    return None if new == current else new
