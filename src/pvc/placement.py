"""Choosing a node for a VM (pure).

Selectors, as operators of the original system know them:
  mem      most memory left after the VMs assigned to a node are allocated
  memfree  most memory actually free right now
  load     lowest load average
  vcpus    fewest vCPUs allocated
  vms      fewest VMs
Ties are broken by node name, so the same cluster state always gives the same answer.

A VM with RBD disks (``needs_storage``) goes only to nodes whose keepalive says they reach Ceph
(``storage_ok``); other VMs ignore storage.
"""

from __future__ import annotations

import msgspec

from pvc.errors import Conflict, InvalidInput, NotFound
from pvc.schema import SELECTORS


class Candidate(msgspec.Struct, frozen=True):
    name: str
    daemon_state: str
    domain_state: str
    memory_total_mib: int
    memory_free_mib: int
    memory_allocated_mib: int
    vcpus_allocated: int
    load: float
    domains_count: int
    # The node's keepalive says it reaches Ceph (False: no Ceph configured, unreachable, unknown).
    storage_ok: bool = False
    # The VMs its keepalive lists as running (their memory is in memory_allocated_mib already).
    running: frozenset[str] = frozenset()

    @property
    def memory_available_mib(self) -> int:
        return self.memory_total_mib - self.memory_allocated_mib


_SCORE = {
    "mem": lambda c: -c.memory_available_mib,
    "memfree": lambda c: -c.memory_free_mib,
    "load": lambda c: c.load,
    "vcpus": lambda c: c.vcpus_allocated,
    "vms": lambda c: c.domains_count,
}


def check_selector(selector: str) -> str:
    if selector not in SELECTORS:
        raise InvalidInput(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    return selector


def refusal(c: Candidate, memory_mib: int, needs_storage: bool = False) -> str:
    """Why a node cannot take a VM of this size (with RBD disks: ``needs_storage``), or "" if it can."""
    if c.daemon_state != "run":
        return f"node {c.name} is not running (daemon_state {c.daemon_state})"
    if c.domain_state != "ready":
        return f"node {c.name} is not ready (domain_state {c.domain_state})"
    return capacity_refusal(c, memory_mib, needs_storage)


def capacity_refusal(c: Candidate, memory_mib: int, needs_storage: bool = False) -> str:
    """Why a node has no room for a VM of this size (or no Ceph for its RBD disks), or ""."""
    if c.memory_available_mib < memory_mib:
        return (
            f"node {c.name} has not enough free memory ({c.memory_available_mib} MiB available, "
            f"{memory_mib} MiB needed)"
        )
    if needs_storage and not c.storage_ok:
        return f"node {c.name} cannot reach Ceph storage (the VM has RBD disks)"
    return ""


def choose_node(
    nodes: list[Candidate],
    *,
    selector: str,
    memory_mib: int,
    exclude: str = "",
    node_limit: list[str] | None = None,
    target: str = "",
    needs_storage: bool = False,
) -> str:
    """The node a VM should go to; raises a Conflict/NotFound explaining why none can take it."""
    by_name = {c.name: c for c in nodes}
    if target:
        if target not in by_name:
            raise NotFound(f"unknown node {target!r}")
        if target == exclude:
            raise Conflict(f"VM is already on node {target}")
        if node_limit and target not in node_limit:
            raise Conflict(f"node {target} is outside the VM's node limit ({', '.join(node_limit)})")
        why = refusal(by_name[target], memory_mib, needs_storage)
        if why:
            raise Conflict(why)
        return target
    check_selector(selector)
    eligible = [
        c for c in nodes
        if c.name != exclude and (not node_limit or c.name in node_limit)
        and not refusal(c, memory_mib, needs_storage)
    ]
    if not eligible:
        scope = f" among {', '.join(node_limit)}" if node_limit else ""
        storage = ", reaching Ceph storage" if needs_storage else ""
        raise Conflict(f"no eligible target node{scope} (running, ready, with {memory_mib} MiB free{storage})")
    return min(eligible, key=lambda c: (_SCORE[selector](c), c.name)).name
