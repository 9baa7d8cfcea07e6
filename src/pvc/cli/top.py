"""`pvc top`: a live, full-screen view of the cluster, kept current by ZooKeeper watches.

Three parts: ``ClusterView`` (pure: what is known, and how it is shown as lines that fit 80 columns),
``ClusterWatch`` (the adapter: one children watch on ``/nodes`` and on ``/domains``, one data watch per
node key and per VM record; a change re-renders within ``RENDER_DELAY``, never a poll) and the terminal
app, built on textual (imported only when `pvc top` runs, so other commands start as fast as before).
textual rather than rich's Live: it owns the terminal (alternate screen, raw keys, resize, restoring
the terminal on exit) and key bindings with a footer that lists them, which Live leaves to the caller.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the module is imported by every `pvc` command: the schema only when `pvc top` runs
    import asyncio

    from pvc.schema import Domain
    from pvc.store import NodeView

RENDER_DELAY = 0.2  # changes within this are shown together: a flush moving 100 VMs is not 100 repaints
WIDTH = 80
NODE_SORTS = ("name", "load", "memory", "vms")
VM_SORTS = ("name", "state", "node", "memory")


def _fit(text: str, width: int) -> str:
    """``text`` in exactly ``width`` columns: padded, or cut with an ellipsis."""
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f}"


# (header, width, align): 79 columns with the spaces between, whatever the values (a long one is cut).
_NODE_COLUMNS = [("NODE", 12, "<"), ("DAEMON", 8, "<"), ("DOMAIN", 8, "<"), ("COORD", 9, "<"), ("VMS", 7, ">"),
                 ("LOAD", 6, ">"), ("MEM USED/TOTAL", 15, ">"), ("ALLOC", 7, ">")]
_VM_COLUMNS = [("NAME", 21, "<"), ("UUID", 8, "<"), ("STATE", 8, "<"), ("LIBVIRT", 8, "<"), ("NODE", 12, "<"),
               ("MEM MiB", 8, ">"), ("VCPUS", 6, ">")]


def _row(columns: list[tuple[str, int, str]], values: list[str]) -> str:
    cells = []
    for (_, width, align), value in zip(columns, values):
        value = _fit(value, width).rstrip()
        cells.append(value.ljust(width) if align == "<" else value.rjust(width))
    return " ".join(cells).rstrip()


class ClusterView:
    """What `pvc top` knows of the cluster: per node the raw values of its watched keys, per VM its record."""

    def __init__(self, primary: str = "") -> None:
        self.node_values: dict[str, dict[str, bytes | None]] = {}
        self.vms: dict[str, Domain] = {}
        self.primary = primary

    # -- what is shown ---------------------------------------------------------------------------

    def nodes(self) -> list[NodeView]:
        import msgspec

        from pvc import store

        views = []
        for name, values in self.node_values.items():
            if values.get("info") is None:
                continue  # not registered (yet), or removed
            try:
                views.append(store.node_view(name, values["info"], [values.get(k) for k in store.NODE_KEYS]))
            except msgspec.DecodeError:  # shown again once it is rewritten
                continue
        return views

    def flushes(self) -> list[tuple[str, str]]:
        """(node, what) for each flush or ready asked for and not done: the node's account of it
        (``flush_progress``), or "requested" while the node has not picked the request up."""
        import msgspec

        from pvc.schema import FlushProgress

        out = []
        for name, values in sorted(self.node_values.items()):
            try:
                p = FlushProgress.decode(values["flush_progress"]) if values.get("flush_progress") else None
            except msgspec.DecodeError:
                p = None
            if p and p.status in ("queued", "running"):
                failed = f", {len(p.failed)} failed" if p.failed else ""
                out.append((name, f"{p.op} {name}: {p.status}, {len(p.moved) + len(p.failed)}/{p.total} VMs done{failed}"))
            elif values.get("domain_state") in (b"flush", b"unflush"):
                out.append((name, f"{'flush' if values['domain_state'] == b'flush' else 'ready'} {name}: requested"))
        return out

    def migrations(self) -> list[Domain]:
        return sorted((d for d in self.vms.values() if d.state == "migrate"), key=lambda d: d.name)

    def summary(self, now: float | None = None) -> list[str]:
        from pvc.schema import VM_STATES

        nodes = self.nodes()
        daemons = Counter(n.daemon_state for n in nodes)
        states = Counter(d.state for d in self.vms.values())
        head = (f"pvc top  {len(nodes)} node{'s' if len(nodes) != 1 else ''} ("
                + ", ".join(f"{c} {s}" for s, c in sorted(daemons.items())) + ")"
                + f"  primary {self.primary or 'none'}")
        clock = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
        head = _fit(head, WIDTH - len(clock) - 1) + " " + clock
        vm_line = f"{len(self.vms)} VM{'s' if len(self.vms) != 1 else ''}: " + (
            ", ".join(f"{states[s]} {s}" for s in VM_STATES if states[s]) or "none")
        return [head, _fit(vm_line, WIDTH).rstrip()]

    def node_lines(self, sort: str = "name", reverse: bool = False) -> list[str]:
        keys = {"name": lambda n: n.name, "load": lambda n: (-n.load, n.name),
                "memory": lambda n: (n.memory_free_mib, n.name), "vms": lambda n: (-n.domains_count, n.name)}
        assigned = Counter(d.node for d in self.vms.values())
        lines = [_row(_NODE_COLUMNS, [c[0] for c in _NODE_COLUMNS])]
        for n in sorted(self.nodes(), key=keys[sort], reverse=reverse):
            lines.append(_row(_NODE_COLUMNS, [
                n.name, n.daemon_state, n.domain_state, n.coordinator_state,
                f"{n.domains_count}/{assigned.get(n.name, 0)}", f"{n.load:.2f}",
                f"{_gib(n.memory_used_mib)}/{_gib(n.memory_total_mib)}", _gib(n.memory_allocated_mib)]))
        lines += ["", "VMS: running/assigned; memory in GiB (ALLOC: of running VMs).", ""] + self.activity_lines()
        return lines

    def activity_lines(self) -> list[str]:
        flushes = self.flushes()
        lines = ["FLUSHES IN PROGRESS" if flushes else "No flush in progress."]
        lines += [_fit(f"  {what}", WIDTH).rstrip() for _, what in flushes]
        migrations = self.migrations()
        lines += ["", "MIGRATIONS IN PROGRESS" if migrations else "No migration in progress."]
        for d in migrations:
            lines.append(_fit(f"  {d.name}: {d.node} -> {d.target_node or '?'}", WIDTH).rstrip())
        return lines

    def vm_lines(self, sort: str = "name", reverse: bool = False) -> list[str]:
        keys = {"name": lambda d: d.name, "state": lambda d: (d.state, d.name),
                "node": lambda d: (d.node, d.name), "memory": lambda d: (-d.memory_mib, d.name)}
        lines = [_row(_VM_COLUMNS, [c[0] for c in _VM_COLUMNS])]
        for d in sorted(self.vms.values(), key=keys[sort], reverse=reverse):
            lines.append(_row(_VM_COLUMNS, [d.name, d.uuid[:8], d.state, d.libvirt_state, d.node,
                                            str(d.memory_mib), str(d.vcpus)]))
        return lines


class ClusterWatch:
    """Keeps a ``ClusterView`` current from ZooKeeper watches; ``on_change()`` after every change."""

    def __init__(self, zk, on_change) -> None:
        self.zk, self.view, self.on_change = zk, ClusterView(), on_change
        self._node_watches: dict[str, list[asyncio.Task]] = {}
        self._vm_watches: dict[str, asyncio.Task] = {}
        self._watches: list[asyncio.Task] = []

    def start(self) -> None:
        from pvc.schema import Paths

        self._watches = [self.zk.watch_children(Paths.nodes, self._on_nodes),
                         self.zk.watch_children(Paths.domains, self._on_domains),
                         self.zk.watch_data(Paths.primary_node, self._on_primary)]

    def stop(self) -> None:
        for task in [*self._watches, *self._vm_watches.values(), *(t for ts in self._node_watches.values() for t in ts)]:
            task.cancel()

    def _on_primary(self, data: bytes | None, _version: int) -> None:
        self.view.primary = (data or b"").decode()
        self.on_change()

    def _on_nodes(self, names: list[str] | None) -> None:
        from pvc import store
        from pvc.schema import Paths

        names = set(names or ())
        for name in set(self._node_watches) - names:
            for task in self._node_watches.pop(name):
                task.cancel()
            self.view.node_values.pop(name, None)
        for name in names - set(self._node_watches):
            self.view.node_values[name] = {}
            self._node_watches[name] = [self.zk.watch_data(Paths.node(name), self._setter(name, "info"))] + [
                self.zk.watch_data(Paths.node_key(name, key), self._setter(name, key))
                for key in (*store.NODE_KEYS, "flush_progress")]
        self.on_change()

    def _setter(self, name: str, key: str):
        def set_value(data: bytes | None, _version: int) -> None:
            values = self.view.node_values.get(name)
            if values is not None:
                values[key] = data
                self.on_change()
        return set_value

    def _on_domains(self, uuids: list[str] | None) -> None:
        from pvc.schema import Paths

        uuids = set(uuids or ())
        for uuid in set(self._vm_watches) - uuids:
            self._vm_watches.pop(uuid).cancel()
            self.view.vms.pop(uuid, None)
        for uuid in uuids - set(self._vm_watches):
            self._vm_watches[uuid] = self.zk.watch_data(Paths.domain(uuid), self._vm_setter(uuid))
        self.on_change()

    def _vm_setter(self, uuid: str):
        import msgspec

        from pvc.schema import Domain

        def set_vm(data: bytes | None, _version: int) -> None:
            if data is None:
                self.view.vms.pop(uuid, None)
            else:
                try:
                    self.view.vms[uuid] = Domain.decode(data)
                except msgspec.DecodeError:  # keep the last good one
                    return
            self.on_change()
        return set_vm


def _app(zk):
    """The textual app (textual is imported here, only for `pvc top`)."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import VerticalScroll
    from textual.widgets import Footer, Static

    class Top(App):
        CSS = "#summary { height: 2; background: $panel; } #body { width: auto; }"
        ENABLE_COMMAND_PALETTE = False
        BINDINGS = [
            Binding("q", "quit", "Quit"),
            Binding("tab", "switch", "Nodes/VMs", priority=True),
            Binding("n", "show('nodes')", "Nodes"),
            Binding("v", "show('vms')", "VMs"),
            Binding("s", "sort", "Sort"),
            Binding("r", "reverse", "Reverse"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.mode_name, self.sorts = "nodes", {"nodes": 0, "vms": 0}
            self.descending = False
            self.cluster = ClusterWatch(zk, self._changed)
            self._pending = False

        def compose(self) -> ComposeResult:
            yield Static(id="summary", markup=False)
            with VerticalScroll():
                yield Static(id="body", markup=False)
            yield Footer()

        def on_mount(self) -> None:
            self.cluster.start()
            self.set_interval(1.0, self._repaint_summary)  # the clock; the data itself comes by watch

        def on_unmount(self) -> None:
            self.cluster.stop()

        def _changed(self) -> None:
            if not self._pending:
                self._pending = True
                self.set_timer(RENDER_DELAY, self._repaint)

        def _sort(self) -> str:
            sorts = NODE_SORTS if self.mode_name == "nodes" else VM_SORTS
            return sorts[self.sorts[self.mode_name] % len(sorts)]

        def _repaint_summary(self) -> None:
            order = f"{self.mode_name} by {self._sort()}{' (reversed)' if self.descending else ''}"
            head = self.cluster.view.summary()
            if not zk.connected.is_set():  # the watches resume when it is back
                head[1] = "ZooKeeper unreachable: what is shown may be out of date"
            head[1] = _fit(head[1], WIDTH - len(order) - 2) + "  " + order
            self.query_one("#summary", Static).update("\n".join(head))

        def _repaint(self) -> None:
            self._pending = False
            self._repaint_summary()
            view = self.cluster.view
            lines = view.node_lines(self._sort(), self.descending) if self.mode_name == "nodes" \
                else view.vm_lines(self._sort(), self.descending)
            self.query_one("#body", Static).update("\n".join(lines))

        def action_switch(self) -> None:
            self.action_show("vms" if self.mode_name == "nodes" else "nodes")

        def action_show(self, mode: str) -> None:
            self.mode_name = mode
            self._repaint()

        def action_sort(self) -> None:
            self.sorts[self.mode_name] += 1
            self._repaint()

        def action_reverse(self) -> None:
            self.descending = not self.descending
            self._repaint()

    return Top()


def top() -> None:
    """A live full-screen view of nodes, VMs, flushes and migrations (q quits; tab, n, v switch views; s sorts)."""
    import sys

    from pvc.cli.common import fail, run

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("pvc top needs a terminal (for a snapshot use `pvc cluster status`, `pvc node list`, `pvc vm list`)")

    async def work(zk) -> None:
        await _app(zk).run_async()

    run(work)
