"""Dead-node fencing and VM recovery: the decisions (pure; the primary's ``fencing`` duty does the I/O).

A node is *dead* when its daemon claimed to be up (daemon_state init/run/shutdown) and its
presence key (``/nodes/<n>/alive``, ephemeral) has been gone for ``dead_after`` seconds. A dead
node is powered off through its BMC (IPMI); only a *confirmed* power-off makes it ``fenced`` and
lets its VMs be started elsewhere. Without that confirmation nothing moves: the VMs may still
run on the node, and a VM must never run twice.
"""

from __future__ import annotations

import dataclasses

from pvc import placement
from pvc.errors import PvcError
from pvc.schema import Domain

# A daemon in these states said it was up: losing its presence means it died.
UP_STATES = ("init", "run", "shutdown")
# States whose VMs are wanted running: these are recovered on another node.
RECOVER_STATES = ("start", "restart", "migrate")


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


RECOVERY_NOTE = "recovered from fenced node"


def is_recovery_note(reason: str) -> bool:
    """A failed_reason that records a recovery (kept when the VM starts), not a failure."""
    return reason.startswith(RECOVERY_NOTE)


def _wanted_running(dom: Domain) -> bool:
    return dom.state in RECOVER_STATES


def recover_one(dom: Domain, fenced: str, candidates: list[placement.Candidate], default_selector: str,
                found_on: str = "") -> dict:
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
                                           memory_mib=dom.memory_mib, exclude=fenced, node_limit=dom.node_limit)
        except PvcError as exc:
            # Never lost: the record stays, with the reason; the operator starts it when a node fits.
            return dict(state="fail", target_node="", libvirt_state="shutoff",
                        failed_reason=f"node {fenced} was fenced and the VM could not be recovered: {exc}")
        return dict(node=target, state="start", target_node="", libvirt_state="shutoff",
                    previous_node=fenced, failed_reason=reason)
    if dom.state == "shutdown":  # it was being shut down; the power-off finished that
        return dict(state="stop", libvirt_state="shutoff", target_node="")
    if dom.libvirt_state != "shutoff":
        return dict(libvirt_state="shutoff")
    return {}


def recovery_plan(fenced: str, domains: list[Domain], candidates: list[placement.Candidate],
                  default_selector: str = "mem", running: dict[str, str] | None = None) -> dict[str, dict]:
    """uuid -> changes for every VM of the fenced node. Each placement counts against its target's
    memory and VM count before the next one is chosen, so recovered VMs spread out instead of all
    landing on the node that looked emptiest at the start."""
    running = running or {}
    pool = {c.name: c for c in candidates}
    plan: dict[str, dict] = {}
    for dom in sorted(domains, key=lambda d: d.name):
        changes = recover_one(dom, fenced, list(pool.values()), default_selector, running.get(dom.uuid, ""))
        if not changes:
            continue
        plan[dom.uuid] = changes
        target = changes.get("node")
        if target in pool and changes.get("state") == "start":
            c = pool[target]
            pool[target] = dataclasses.replace(
                c, memory_allocated_mib=c.memory_allocated_mib + dom.memory_mib,
                vcpus_allocated=c.vcpus_allocated + dom.vcpus, domains_count=c.domains_count + 1)
    return plan
