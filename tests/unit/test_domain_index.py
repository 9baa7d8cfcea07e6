"""The per-node VM index (pvc.domain_index): which nodes a record concerns, and the transaction
operations that keep the index in step with a record change."""

from pvc import domain_index
from pvc.schema import Domain, Paths

U = "0b5a5a2c-1b8e-4f5e-9a53-000000000001"


def dom(**kw) -> Domain:
    return Domain(uuid=U, name="vm1", **kw)


def test_nodes_of_names_node_target_and_copies():
    assert domain_index.nodes_of(None) == frozenset()
    assert domain_index.nodes_of(dom()) == frozenset()  # no node yet
    assert domain_index.nodes_of(dom(node="hv1")) == {"hv1"}
    assert domain_index.nodes_of(dom(node="hv1", target_node="hv2", duplicate_on=["hv3"])) == {"hv1", "hv2", "hv3"}


def test_ops_follow_a_migration_and_an_undefine():
    defined = dom(node="hv1")
    assert domain_index.ops(U, None, defined) == [("create", Paths.node_domain("hv1", U), b"")]
    asked = dom(node="hv1", state="migrate", target_node="hv2")
    assert domain_index.ops(U, defined, asked) == [("create", "/node_domains/hv2/" + U, b"")]
    arrived = dom(node="hv2", state="start", previous_node="hv1")
    assert domain_index.ops(U, asked, arrived) == [("delete", "/node_domains/hv1/" + U)]
    assert domain_index.ops(U, arrived, dom(node="hv2", state="stop")) == []  # most writes move nothing
    assert domain_index.ops(U, arrived, None) == [("delete", "/node_domains/hv2/" + U)]


def test_entries_build_the_whole_index():
    other = Domain(uuid="u2", name="vm2", node="hv2", target_node="hv1")
    assert domain_index.entries([dom(node="hv1"), other]) == {"hv1": {U, "u2"}, "hv2": {"u2"}}
    assert domain_index.folders(["hv2", "hv1", "hv2"]) == ["/node_domains/hv1", "/node_domains/hv2"]
