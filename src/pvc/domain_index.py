"""The per-node VM index: which VMs concern which node (docs/schema.md, "Per-node VM index").

A node's daemon acts on a VM only when the VM is assigned to it (``node``), is moving or being
handed over to it (``target_node``), or lists it as running a second copy (``duplicate_on``). So
``/node_domains/<node>/<uuid>`` exists exactly for those nodes, and each daemon watches its own
folder and the records named in it: a VM's change costs the nodes it does not concern nothing.

The index is kept exact by writing its entries in the same transaction as the record change
that moves them (``ops``): every write of a VM record goes through ``pvc.store`` (``write_domain``,
``domain_write_ops``), which adds them. Pure: paths and operations only.
"""

from __future__ import annotations

from collections.abc import Iterable

from pvc.schema import Domain, Paths


def nodes_of(dom: Domain | None) -> frozenset[str]:
    """The nodes whose daemon has something to do with this VM record."""
    if dom is None:
        return frozenset()
    return frozenset(n for n in (dom.node, dom.target_node, *dom.duplicate_on) if n)


def ops(uuid: str, before: Domain | None, after: Domain | None) -> list[tuple]:
    """The index changes that go with a record changing from ``before`` to ``after`` (None: absent)."""
    old, new = nodes_of(before), nodes_of(after)
    return [*(("delete", Paths.node_domain(n, uuid)) for n in sorted(old - new)),
            *(("create", Paths.node_domain(n, uuid), b"") for n in sorted(new - old))]


def folders(nodes: Iterable[str]) -> list[str]:
    return [Paths.node_domains_of(n) for n in sorted(set(nodes))]


def entries(domains: Iterable[Domain]) -> dict[str, set[str]]:
    """The whole index for these records: node -> uuids (to build it, or to check it)."""
    index: dict[str, set[str]] = {}
    for dom in domains:
        for node in nodes_of(dom):
            index.setdefault(node, set()).add(dom.uuid)
    return index
