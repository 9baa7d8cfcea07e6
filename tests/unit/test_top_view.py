"""`pvc top`'s pure view: every line fits 80 columns, sorting, flushes and migrations shown."""

from __future__ import annotations

from pvc.cli.top import NODE_SORTS, VM_SORTS, WIDTH, ClusterView
from pvc.schema import Domain, FlushProgress, Keepalive, MovedVM, NodeInfo


def view() -> ClusterView:
    v = ClusterView(primary="hv1")
    for i, (name, load, free) in enumerate([("hv1", 0.5, 9000), ("hv2-with-a-very-long-node-name", 3.25, 100),
                                            ("hv3", 1.0, 5000)]):
        v.node_values[name] = {
            "info": NodeInfo(name=name).encode(), "alive": b"1", "daemon_state": b"run",
            "domain_state": b"flush" if i == 2 else b"ready", "coordinator_state": b"primary" if i == 0 else b"client",
            "keepalive": Keepalive(memory_total_mib=1_048_576, memory_used_mib=524_288, memory_free_mib=free,
                                   memory_allocated_mib=999_999, load=load, domains_count=i * 100).encode(),
            "flush_progress": FlushProgress(id="x", op="flush", status="running", total=5,
                                            moved=[MovedVM("a", "hv1")]).encode() if i == 2 else None,
        }
    v.node_values["unregistered"] = {}
    for i in range(5):
        v.vms[f"u{i}"] = Domain(uuid=f"{i:08d}-0000-4000-8000-000000000000", name=f"vm{i}" + "x" * (30 * (i == 4)),
                                state="migrate" if i == 1 else "start", node="hv1", target_node="hv2" if i == 1 else "",
                                memory_mib=1000 * i, vcpus=2)
    return v


def test_every_line_fits_80_columns_in_every_order() -> None:
    v = view()
    for sort in NODE_SORTS:
        for lines in (v.node_lines(sort), v.node_lines(sort, True)):
            assert all(len(line) <= WIDTH for line in lines), [line for line in lines if len(line) > WIDTH]
    for sort in VM_SORTS:
        assert all(len(line) <= WIDTH for line in v.vm_lines(sort, True))
    assert all(len(line) <= WIDTH for line in v.summary(now=0))


def test_sorting_and_what_is_shown() -> None:
    v = view()
    names = [line.split()[0] for line in v.node_lines("load")[1:4]]
    assert names == ["hv2-with-a-…", "hv3", "hv1"]  # busiest first; a long name cut, not the table
    assert [line.split()[0] for line in v.vm_lines("memory")[1:3]] == ["vm4xxxxxxxxxxxxxxxxx…", "vm3"]
    assert "unregistered" not in "\n".join(v.node_lines())
    text = "\n".join(v.node_lines())
    assert "flush hv3: running, 1/5 VMs done" in text and "vm1: hv1 -> hv2" in text
    v.node_values["hv1"]["domain_state"] = b"unflush"  # asked for, not picked up by the node yet
    assert "  ready hv1: requested" in v.node_lines()
    assert v.summary(now=0)[1] == "5 VMs: 4 start, 1 migrate"
    assert "3 nodes (3 run)  primary hv1" in v.summary(now=0)[0]
