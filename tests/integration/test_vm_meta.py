"""VM metadata, tags, rename and autostart of VMs pvc had to stop, against a real two-node cluster:
`pvc vm meta`, `pvc vm tag add|remove`, `pvc vm list --tag/--node/--state/--sort`, `pvc vm rename` (the
XML, the console log file and the node's libvirt follow) and a flush's policy-shutdown VM started by the
next `pvc node ready` with room."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import running_cluster, wait_until


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, 2)


def fails(c, *args: str) -> str:
    """A refused command: non-zero exit and one line saying why (returned)."""
    proc = c.pvc(*args, check=False)
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def names(c, *args: str) -> list[str]:
    return [v["name"] for v in c.pvc_json("vm", "list", *args)]


def test_meta_tags_and_list_filters(c):
    c.define("web1", node="hv1", memory_mib=128, start=True)
    c.define("db1", node="hv2", memory_mib=256)

    # Changed while it runs: the VM keeps running where it is.
    c.pvc("vm", "meta", "web1", "--autostart", "--node-limit", "hv1,hv2", "--selector", "load",
          "--migration-method", "live", "--description", "front end")
    info = c.vm("web1")
    assert (info["autostart"], info["node_limit"], info["selector"], info["migration_method"], info["description"]) \
        == (True, ["hv1", "hv2"], "load", "live", "front end")
    assert c.where_running("web1") == ["hv1"] and info["state"] == "start"

    # A node limit the current node breaks: reported, the VM not moved.
    proc = c.pvc("vm", "meta", "web1", "--node-limit", "hv2")
    assert "warning: VM web1 is on node hv1, outside its node limit (hv2)" in proc.stderr
    assert c.vm("web1")["node"] == "hv1" and c.where_running("web1") == ["hv1"]
    c.pvc("vm", "meta", "web1", "--no-node-limit", "--no-autostart", "--selector", "")
    info = c.vm("web1")
    assert (info["node_limit"], info["autostart"], info["selector"]) == ([], False, "")

    # Bad input: one line, non-zero, nothing written.
    before = c.vm("web1")
    assert "unknown node 'hv9'" in fails(c, "vm", "meta", "web1", "--node-limit", "hv1,hv9", "--autostart")
    assert "unknown selector" in fails(c, "vm", "meta", "web1", "--selector", "fastest")
    assert "unknown migration method" in fails(c, "vm", "meta", "web1", "--migration-method", "teleport")
    assert "nothing to change" in fails(c, "vm", "meta", "web1")
    assert "a tag has 1 to 64 characters" in fails(c, "vm", "tag", "add", "web1", "ok", "not ok")
    assert c.vm("web1") == before

    # Tags: added, removed, shown; list selects VMs carrying all of them.
    c.pvc("vm", "tag", "add", "web1", "web", "env=prod")
    c.pvc("vm", "tag", "add", "db1", "web", "db")
    c.pvc("vm", "tag", "remove", "db1", "db", "absent")
    assert c.vm("web1")["tags"] == ["env=prod", "web"] and c.vm("db1")["tags"] == ["web"]
    shown = c.pvc("vm", "info", "web1").stdout
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in shown.splitlines()}
    assert (lines["tags"], lines["description"]) == ("env=prod, web", "front end")
    assert names(c, "--tag", "web") == ["db1", "web1"]
    assert names(c, "--tag", "web", "--tag", "env=prod") == ["web1"]
    assert names(c, "--node", "hv2") == ["db1"] and names(c, "--state", "start") == ["web1"]
    assert names(c, "--sort", "memory") == ["db1", "web1"] and names(c, "--sort", "node") == ["web1", "db1"]
    assert "unknown sort key" in fails(c, "vm", "list", "--sort", "size")


def test_rename_a_stopped_vm(c, tmp_path):
    log_dir = Path(c.dev.node("hv2").console_log_directory)
    log_dir.mkdir(parents=True, exist_ok=True)
    c.define("old1", node="hv2")
    (log_dir / "old1.log").write_text("booted as old1\n")
    # A persistent libvirt definition of it on its node (made outside pvc, which starts transient
    # domains): it must follow too.
    xml = tmp_path / "old1.xml"
    xml.write_text(c.pvc("vm", "dump", "old1").stdout)
    c.virsh("hv2", "define", str(xml))
    uuid = c.vm("old1")["uuid"]

    assert "is running" in fails(c, "vm", "rename", "web1", "web9")
    assert "already defined" in fails(c, "vm", "rename", "old1", "web1")
    assert "refused" in fails(c, "vm", "rename", "old1", "bad name")
    c.pvc("vm", "rename", "old1", "new1")

    info = c.vm("new1")
    assert info["uuid"] == uuid and info["console_log_file"] == str(log_dir / "new1.log")
    dumped = c.pvc("vm", "dump", "new1").stdout
    assert "<name>new1</name>" in dumped and "new1.log" in dumped and "old1" not in dumped
    assert "unknown VM 'old1'" in fails(c, "vm", "info", "old1")
    # Its node follows: the console log file and libvirt's definition take the new name.
    wait_until(lambda: c.vm("new1")["renamed_from"] == "", timeout=20)
    assert (log_dir / "new1.log").read_text() == "booted as old1\n" and not (log_dir / "old1.log").exists()
    assert c.virsh("hv2", "domname", uuid).stdout.strip() == "new1"
    c.virsh("hv2", "undefine", "new1")
    c.pvc("vm", "start", "new1", "--wait")
    assert c.where_running("new1") == ["hv2"]
    # The log pvc keeps under the VM is the renamed file's (its node tails <directory>/<name>.log).
    wait_until(lambda: "booted as old1" in c.pvc("vm", "log", "new1").stdout, timeout=20)
    c.pvc("vm", "stop", "new1", "--wait")

    # A new <name> through `vm modify` is a rename too: refused while the VM runs, followed once stopped.
    running = tmp_path / "web1.xml"
    running.write_text(c.pvc("vm", "dump", "web1").stdout.replace("<name>web1</name>", "<name>web8</name>"))
    assert "only a stopped VM can be renamed" in fails(c, "vm", "modify", "web1", str(running))
    assert c.vm("web1")["renamed_from"] == "" and "unknown VM 'web8'" in fails(c, "vm", "info", "web8")
    xml.write_text(c.pvc("vm", "dump", "new1").stdout.replace("new1", "new2"))
    c.pvc("vm", "modify", "new1", str(xml))
    wait_until(lambda: c.vm("new2")["renamed_from"] == "", timeout=20)
    assert (log_dir / "new2.log").read_text().startswith("booted as old1\n") and not (log_dir / "new1.log").exists()


def test_autostart_vm_shut_down_by_a_flush_starts_when_a_node_becomes_ready(c):
    c.dev.restart_node_with("hv1", "vm", flush_unmovable_policy="shutdown")
    c.define("big", node="hv1", memory_mib=2500, start=True, extra=("--autostart",))
    c.define("filler", node="hv2", memory_mib=2500, start=True)
    proc = c.pvc("node", "flush", "hv1", "--wait", check=False)
    assert proc.returncode != 0 and "big: not moved" in proc.stderr and "shut down (policy shutdown)" in proc.stderr
    wait_until(lambda: c.vm("big")["state"] == "stop", timeout=30)
    assert "no eligible target node" in c.vm("big")["displaced"] and c.where_running("big") == []

    # Room on hv2 again; its ready starts the VM there (handed over by hv1, still flushed).
    c.pvc("vm", "stop", "filler", "--wait")
    wait_until(lambda: c.pvc_json("node", "info", "hv2")["memory_allocated_mib"] < 2500, timeout=30)
    c.pvc("node", "ready", "hv2", "--wait")
    wait_until(lambda: c.where_running("big") == ["hv2"], timeout=30)
    info = c.vm("big")
    assert (info["node"], info["state"], info["displaced"], info["previous_node"]) == ("hv2", "start", "", "hv1")
    c.pvc("node", "ready", "hv1", "--wait")  # brings it home (previous_node)
    wait_until(lambda: c.where_running("big") == ["hv1"], timeout=30)
    for name in ("big", "web1"):
        c.pvc("vm", "stop", name, "--wait")
