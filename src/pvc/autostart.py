"""What a node that becomes ready (`pvc node ready`) starts (pure).

Autostart VMs come up when a node becomes ready:
- its own stopped ``autostart`` VMs (assigned to it), as always;
- ``autostart`` VMs that pvc itself had to stop for lack of a node (``Domain.displaced``: shut down by a
  flush with nowhere to go under policy ``shutdown``, or left ``fail`` by a fenced node's recovery), wherever
  they are assigned, when this node has room for them and is within their node limit. One on a node whose
  daemon runs is handed over by that node once its libvirt confirms it off and started here (state
  ``migrate``, as `pvc vm start` of a VM with a pending hand-over); one on a fenced node (confirmed off) is
  reassigned here at once. One on a node whose daemon is away stays: nothing can confirm it off there.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from pvc import placement, vm_outcomes
from pvc.flush_plan import committed
from pvc.schema import Domain

Change = Callable[[Domain], Domain | None]


def plan(me: str, domains: list[Domain], nodes: list[placement.Candidate]) -> tuple[list[tuple[str, Change]], list[str]]:
    """(uuid, the versioned change to write) for each VM to start, in name order, and why others
    displaced with autostart are not started here (one line each)."""
    states = {c.name: c.daemon_state for c in nodes}
    pool = committed(nodes, domains)
    here = pool.get(me)
    starts: list[tuple[str, Change]] = []
    skipped: list[str] = []
    for d in sorted(domains, key=lambda d: d.name):
        if vm_outcomes.autostarted(d, me):
            starts.append((d.uuid, lambda r, me=me: vm_outcomes.autostarted(r, me)))
            continue
        fenced = states.get(d.node) == "fenced"
        if vm_outcomes.displaced_to(d, me, fenced) is None:
            continue
        if d.node_limit and me not in d.node_limit:
            continue  # another node's ready may take it
        why = "" if here is None else placement.capacity_refusal(here, d.memory_mib, bool(d.volumes))
        if here is None or why:
            skipped.append(f"VM {d.name} stays stopped: {why or f'node {me} is unknown'}")
            continue
        if not fenced and states.get(d.node) not in ("run", "init"):
            skipped.append(f"VM {d.name} stays stopped: the daemon on node {d.node} is "
                           f"{states.get(d.node) or 'unknown'}, so nothing can confirm it off there")
            continue
        here = msgspec.structs.replace(here, memory_allocated_mib=here.memory_allocated_mib + d.memory_mib,
                                       vcpus_allocated=here.vcpus_allocated + d.vcpus, domains_count=here.domains_count + 1)
        starts.append((d.uuid, lambda r, me=me, fenced=fenced: vm_outcomes.displaced_to(r, me, fenced)))
    return starts, skipped
