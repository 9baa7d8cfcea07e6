"""A VM's metadata, changed at any time (also while it runs): what may be set, and what it means (pure).

Autostart, node limit, selector, migration method, description and tags are pvc's own record of a
VM: none of them is in libvirt's definition, so a change takes effect without touching a running VM.
A node limit that the VM's current node no longer satisfies is not enforced by moving the VM (an
operator decides that): ``node_limit_warning`` says so.
"""

from __future__ import annotations

import re

import msgspec

from pvc import placement
from pvc.errors import InvalidInput, NotFound
from pvc.schema import MIGRATION_METHODS, VM_STATES, Domain

TAG_MAX = 64
TAG_RULE = (f"a tag has 1 to {TAG_MAX} characters: letters, digits, '.', '-', '_', ':' and '=', "
            "beginning with a letter or digit")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=-]*")
DESCRIPTION_MAX = 1024
SORT_KEYS = ("name", "node", "state", "memory")


def check_tag(tag: str) -> str:
    if len(tag) > TAG_MAX or not _TAG.fullmatch(tag):
        raise InvalidInput(f"tag {tag!r} refused: {TAG_RULE}")
    return tag


def check_migration_method(method: str) -> str:
    """``method`` if it is one ("" is the default, any), else why not."""
    if method and method not in MIGRATION_METHODS:
        raise InvalidInput(f"unknown migration method {method!r}; choose one of {', '.join(MIGRATION_METHODS)}")
    return method


def check_description(text: str) -> str:
    if len(text) > DESCRIPTION_MAX:
        raise InvalidInput(f"description refused: {len(text)} characters, at most {DESCRIPTION_MAX}")
    if any(not c.isprintable() for c in text):
        raise InvalidInput("description refused: one line of printable characters (no newlines or tabs)")
    return text


def change(dom: Domain, nodes: list[str], *, autostart: bool | None = None, node_limit: list[str] | None = None,
           selector: str | None = None, migration_method: str | None = None,
           description: str | None = None) -> Domain:
    """The record with the given fields changed (None: left as it is; "" or [] clears), or raise
    why one of them cannot be (then nothing is changed). ``nodes``: the cluster's node names."""
    changes: dict = {}
    if autostart is not None:
        changes["autostart"] = autostart
    if node_limit is not None:
        limit = list(dict.fromkeys(n.strip() for n in node_limit if n.strip()))
        unknown = [n for n in limit if n not in nodes]
        if unknown:
            raise NotFound(f"unknown node {unknown[0]!r} in node limit; nodes are {', '.join(sorted(nodes))}")
        changes["node_limit"] = limit
    if selector is not None:
        changes["selector"] = selector and placement.check_selector(selector)
    if migration_method is not None:
        changes["migration_method"] = check_migration_method(migration_method)
    if description is not None:
        changes["description"] = check_description(description)
    return msgspec.structs.replace(dom, **changes)


def with_tags(dom: Domain, add: list[str] = (), remove: list[str] = ()) -> Domain:
    """The record with tags added or removed (kept sorted, no duplicates); every tag is checked first."""
    for tag in [*add, *remove]:
        check_tag(tag)
    tags = (set(dom.tags) | set(add)) - set(remove)
    return msgspec.structs.replace(dom, tags=sorted(tags))


def node_limit_warning(dom: Domain) -> str:
    """Why the VM's current node breaks its node limit ("" when it does not)."""
    if not dom.node_limit or not dom.node or dom.node in dom.node_limit:
        return ""
    return (f"VM {dom.name} is on node {dom.node}, outside its node limit ({','.join(dom.node_limit)}); "
            f"it is not moved: `pvc vm move {dom.name}` moves it")


def check_filter(state: str, tags: list[str], sort: str) -> None:
    if state and state not in VM_STATES:
        raise InvalidInput(f"unknown VM state {state!r}; choose one of {', '.join(VM_STATES)}")
    for tag in tags:
        check_tag(tag)
    if sort not in SORT_KEYS:
        raise InvalidInput(f"unknown sort key {sort!r}; choose one of {', '.join(SORT_KEYS)}")


def select(doms: list[Domain], *, node: str = "", state: str = "", tags: list[str] = (),
           sort: str = "name") -> list[Domain]:
    """The VMs on ``node``, in ``state``, carrying every one of ``tags``, ordered by ``sort`` (then name)."""
    wanted = set(tags)
    found = [d for d in doms if (not node or d.node == node) and (not state or d.state == state)
             and wanted <= set(d.tags)]
    keys = {"name": lambda d: d.name, "node": lambda d: (d.node, d.name), "state": lambda d: (d.state, d.name),
            "memory": lambda d: (-d.memory_mib, d.name)}
    return sorted(found, key=keys[sort])
