"""Rename (pvc.domain_xml.renamed, vm_states.renamed, the FOLLOW_RENAME step) and autostart of VMs pvc
stopped for lack of a node (pvc.autostart, vm_outcomes, fencing's recovery marks them)."""

from __future__ import annotations

import pytest

from pvc import autostart, fencing, vm_outcomes, vm_states
from pvc.domain_xml import parse_domain_xml, renamed
from pvc.errors import Conflict, InvalidInput
from pvc.placement import Candidate
from pvc.reconcile import Step, decide
from pvc.schema import Domain

XML = """<domain type='test'>
  <!-- keep me -->
  <name>web1</name><uuid>11111111-2222-3333-4444-555555555555</uuid><memory unit='MiB'>64</memory>
  <devices><serial type='pty'><log file="/var/log/pvc/web1.log" append='on'/></serial>
  <disk><source><host name='web1'/></source></disk></devices>
</domain>"""


def test_renamed_xml_changes_name_and_log_file_only():
    out = renamed(XML, "web1", "db-2")
    spec = parse_domain_xml(out)
    assert (spec.name, spec.console_log_file) == ("db-2", "/var/log/pvc/db-2.log")
    assert "<!-- keep me -->" in out and "host name='web1'" in out
    other_log = XML.replace("/var/log/pvc/web1.log", "/srv/console.log")
    assert parse_domain_xml(renamed(other_log, "web1", "x")).console_log_file == "/srv/console.log"
    with pytest.raises(InvalidInput, match="named 'web1', not 'web9'"):
        renamed(XML, "web9", "x")


def test_rename_rules():
    d = Domain(uuid="u", name="a", node="hv1", state="stop")
    once = vm_states.renamed(d, "b")
    assert (once.name, once.renamed_from) == ("b", "a")
    assert vm_states.renamed(once, "c").renamed_from == "a"  # the node still has "a"
    assert vm_states.renamed(once, "a").renamed_from == ""  # back to what the node has
    for busy, words in ((dict(state="start", libvirt_state="running"), "is running"),
                        (dict(state="shutdown", libvirt_state="running"), "is running"),
                        (dict(state="stop", target_node="hv2"), "handed over")):
        with pytest.raises(Conflict, match=words):
            vm_states.renamed(Domain(uuid="u", name="a", node="hv1", **busy), "b")
    with pytest.raises(Conflict, match="already named"):
        vm_states.renamed(d, "a")


def test_follow_rename_step_and_outcome():
    d = Domain(uuid="u", name="b", node="hv1", state="start", renamed_from="a")
    assert decide(d, "hv1", running_here=False) is Step.FOLLOW_RENAME  # before its start
    assert decide(d, "hv2", running_here=False) is Step.NOTHING
    followed = vm_outcomes.rename_followed(d, "hv1", "b")
    assert followed.renamed_from == "" and decide(followed, "hv1", False) is Step.START
    assert vm_outcomes.rename_followed(d, "hv1", "c") is None  # renamed again meanwhile


def node(name: str, state: str = "run", free: int = 1000) -> Candidate:
    return Candidate(name, state, "ready", 1000, free, 1000 - free, 0, 0.0, 0)


def test_autostart_plan():
    stopped_here = Domain(uuid="1", name="a-here", node="hv3", state="stop", autostart=True)
    plain_elsewhere = Domain(uuid="2", name="b-plain", node="hv1", state="stop", autostart=True)
    flushed = vm_outcomes.shut_down_unmovable(Domain(uuid="3", name="c-flushed", node="hv1", state="start",
                                                     autostart=True, memory_mib=300), "hv1")
    flushed = vm_outcomes.stopped(flushed, "hv1")
    assert flushed.state == "stop" and "no node had room" in flushed.displaced
    recovered = fencing.recover_one(Domain(uuid="4", name="d-fenced", node="hv2", state="start", autostart=True,
                                           memory_mib=300), "hv2", [], "mem")
    fenced_vm = Domain(uuid="4", name="d-fenced", node="hv2", autostart=True, memory_mib=300,
                       **{k: v for k, v in recovered.items() if k != "node"})
    assert fenced_vm.state == "fail" and fenced_vm.displaced
    too_big = Domain(uuid="5", name="e-big", node="hv1", state="stop", autostart=True, memory_mib=600,
                     displaced="x")
    limited = Domain(uuid="6", name="f-limited", node="hv1", state="stop", autostart=True, displaced="x",
                     node_limit=["hv1"])
    no_autostart = Domain(uuid="7", name="g-manual", node="hv1", state="stop", displaced="x")
    doms = [stopped_here, plain_elsewhere, flushed, fenced_vm, too_big, limited, no_autostart]
    nodes = [node("hv1"), node("hv2", "fenced"), node("hv3", free=700)]
    starts, skipped = autostart.plan("hv3", doms, nodes)
    after = {d.uuid: change(d) for d in doms for uuid, change in starts if uuid == d.uuid}
    assert set(after) == {"1", "3", "4"}
    assert after["1"].state == "start"
    assert (after["3"].state, after["3"].target_node, after["3"].node, after["3"].previous_node) == \
        ("migrate", "hv3", "hv1", "hv1")
    assert (after["4"].state, after["4"].node, after["4"].displaced) == ("start", "hv3", "")
    # 700 MiB free: c-flushed and d-fenced (300 each) fit, e-big (600) then does not.
    assert skipped == ["VM e-big stays stopped: node hv3 has not enough free memory (100 MiB available, "
                       "600 MiB needed)"]
    # Its own node's daemon away (not fenced): nothing can confirm it off there.
    _, skipped = autostart.plan("hv3", [flushed], [node("hv1", "dead"), node("hv3")])
    assert "the daemon on node hv1 is dead" in skipped[0]


def test_operator_request_clears_displaced():
    d = Domain(uuid="u", name="a", node="hv1", state="stop", autostart=True, displaced="x")
    assert vm_states.request(d, "start").displaced == ""
    assert vm_states.migrate_request(d, "move", "hv2").displaced == ""
    own = vm_outcomes.autostarted(Domain(uuid="u", name="a", node="hv1", state="fail", autostart=True,
                                         displaced="x"), "hv1")
    assert (own.state, own.displaced) == ("start", "")
    assert vm_outcomes.autostarted(Domain(uuid="u", name="a", node="hv1", state="fail", autostart=True), "hv1") is None
