"""VM metadata rules (pvc.vm_meta): what may be set, tags, filters and the node-limit warning."""

from __future__ import annotations

import pytest

from pvc import vm_meta
from pvc.errors import InvalidInput, NotFound
from pvc.schema import Domain

NODES = ["hv1", "hv2", "hv3"]


def dom(**kw) -> Domain:
    return Domain(uuid="u-" + kw.get("name", "a"), **{"name": "a", "node": "hv1", **kw})


def test_change_sets_given_fields_only_and_clears_with_empty():
    d = dom(selector="load", migration_method="live", autostart=True)
    new = vm_meta.change(d, NODES, node_limit=["hv2", " hv3", "hv2", ""], description="web front")
    assert (new.node_limit, new.description, new.selector, new.migration_method, new.autostart) == \
        (["hv2", "hv3"], "web front", "load", "live", True)
    cleared = vm_meta.change(new, NODES, node_limit=[], selector="", migration_method="", autostart=False)
    assert (cleared.node_limit, cleared.selector, cleared.migration_method, cleared.autostart) == ([], "", "", False)


@pytest.mark.parametrize("kw, error, words", [
    ({"node_limit": ["hv2", "hv9"]}, NotFound, "unknown node 'hv9'"),
    ({"selector": "fastest"}, InvalidInput, "unknown selector"),
    ({"migration_method": "teleport"}, InvalidInput, "live, shutdown"),
    ({"description": "two\nlines"}, InvalidInput, "one line"),
    ({"description": "x" * 1025}, InvalidInput, "at most 1024"),
])
def test_change_refuses_bad_input(kw, error, words):
    with pytest.raises(error, match=words):
        vm_meta.change(dom(), NODES, autostart=True, **kw)


def test_tags_add_remove_and_rule():
    d = vm_meta.with_tags(dom(), add=["web", "env=prod", "web"])
    assert d.tags == ["env=prod", "web"]
    assert vm_meta.with_tags(d, remove=["web", "absent"]).tags == ["env=prod"]
    for bad in ("", "-x", "a b", "x/y", "é", "t" * 65):
        with pytest.raises(InvalidInput, match="a tag has 1 to 64 characters"):
            vm_meta.with_tags(d, add=["ok", bad])


def test_node_limit_warning():
    assert vm_meta.node_limit_warning(dom(node_limit=["hv1", "hv2"])) == ""
    assert vm_meta.node_limit_warning(dom(node_limit=[])) == ""
    warning = vm_meta.node_limit_warning(dom(node_limit=["hv2", "hv3"]))
    assert "on node hv1, outside its node limit (hv2,hv3)" in warning and "not moved" in warning
    assert "\n" not in warning


def test_select_filters_all_tags_and_sorts():
    doms = [dom(name="c", node="hv2", state="start", memory_mib=512, tags=["web", "prod"]),
            dom(name="a", node="hv1", state="stop", memory_mib=128, tags=["web"]),
            dom(name="b", node="hv1", state="start", memory_mib=1024, tags=["prod", "web", "db"])]
    names = lambda found: [d.name for d in found]  # noqa: E731
    assert names(vm_meta.select(doms)) == ["a", "b", "c"]
    assert names(vm_meta.select(doms, tags=["web", "prod"])) == ["b", "c"]
    assert names(vm_meta.select(doms, node="hv1", state="start")) == ["b"]
    assert names(vm_meta.select(doms, sort="memory")) == ["b", "c", "a"]
    assert names(vm_meta.select(doms, sort="node")) == ["a", "b", "c"]
    assert names(vm_meta.select(doms, sort="state")) == ["b", "c", "a"]
    for state, tags, sort in (("running", [], "name"), ("", ["a b"], "name"), ("", [], "size")):
        with pytest.raises(InvalidInput):
            vm_meta.check_filter(state, tags, sort)


def test_old_records_decode_with_defaults():
    old = b'{"uuid": "u1", "name": "a", "node": "hv1"}'
    d = Domain.decode(old)
    assert (d.tags, d.description) == ([], "")
